"""Document ingestion and retrieval: Qt-free."""

"""Document ingestion and retrieval: Qt-free."""

DEFAULT_COLLECTION = "My documents"  # where files go unless the user names a collection

"""Chat persistence in SQLite: Qt-free."""

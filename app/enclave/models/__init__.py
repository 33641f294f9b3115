"""Model catalog, hardware probe and downloads: Qt-free."""

"""Typed user settings, stored as JSON: Qt-free."""

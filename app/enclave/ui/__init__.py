"""Widgets and Qt item models. Talks to the core only through workers/."""

"""What happened to a document: the one list of statuses the index stores and the UI and CLI show.

The values are stored in the index (``documents.status``) and printed by the CLI: never change one.
"""

from __future__ import annotations

import enum

__all__ = ["DocStatus"]


class DocStatus(enum.StrEnum):
    # Stored in the index.
    OK = "ok"
    INDEXING = "indexing"  # chunks stored, embeddings not all there yet
    CANCELLED = "cancelled"  # stopped half-embedded: keeps its chunks, adding it again finishes it
    # What the file reader said (the values of parsers.ParseStatus, which is compared equal); stored in the index.
    EMPTY = "empty"  # readable, but no text (e.g. a scanned PDF without OCR)
    ENCRYPTED = "encrypted"
    UNSUPPORTED = "unsupported"
    TOO_LARGE = "too_large"  # also: embedding took longer than a file of its size may (limits.py)
    DAMAGED = "damaged"
    TIMEOUT = "timeout"
    TOO_MANY_PASSAGES = "too_many_passages"  # more passages than a file of its size may make (limits.py)
    # Reported for a file as it is added or re-scanned; not stored.
    UNCHANGED = "unchanged"  # already indexed as it is
    MISSING = "missing"
    SKIPPED = "skipped"  # a file of an unknown type found inside a folder (named alone, it is UNSUPPORTED)
    REMOVED = "removed"  # a re-scan found the file deleted from its watched folder and removed it from the index
    UNREADABLE = "unreadable"  # a link loop, a pipe or device, no permission, an I/O error, a name that is not text

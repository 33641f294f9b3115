"""Document statuses are stored in the index: their values must never change."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from enclave.docs.index import DocumentIndex
from enclave.docs.parsers import ParseStatus
from enclave.docs.status import DocStatus


def test_the_stored_values_are_the_old_strings() -> None:
    assert {s.name: s.value for s in DocStatus} == {
        "OK": "ok",
        "INDEXING": "indexing",
        "CANCELLED": "cancelled",
        "EMPTY": "empty",
        "ENCRYPTED": "encrypted",
        "UNSUPPORTED": "unsupported",
        "TOO_LARGE": "too_large",
        "DAMAGED": "damaged",
        "TIMEOUT": "timeout",
        "TOO_MANY_PASSAGES": "too_many_passages",
        "UNCHANGED": "unchanged",
        "MISSING": "missing",
        "SKIPPED": "skipped",
        "REMOVED": "removed",
        "UNREADABLE": "unreadable",
    }


def test_every_parse_status_is_a_document_status() -> None:
    for parsed in ParseStatus:
        assert DocStatus(parsed) == parsed
        assert DocStatus(parsed).value == parsed.value


def test_the_index_stores_plain_text(tmp_path: Path) -> None:
    path = tmp_path / "documents.sqlite3"
    index = DocumentIndex(path)
    try:
        doc_id = index.store_document(
            "c", "/a.txt", kind="text", sha256="0", size=1, mtime=1.0, status=DocStatus.TOO_MANY_PASSAGES
        )
        index.set_status(doc_id, DocStatus.CANCELLED)
        [info] = [d for d in index.documents() if d.id == doc_id]
        assert info.status == DocStatus.CANCELLED
    finally:
        index.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT status, typeof(status) FROM documents").fetchall() == [("cancelled", "text")]

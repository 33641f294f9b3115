"""Starting the app with damaged files explains the problem instead of crashing."""

from __future__ import annotations

from pathlib import Path

import pytest

from enclave.ui import app as ui_app


def test_a_damaged_chat_database_is_kept_aside_and_a_fresh_one_started(tmp_path: Path) -> None:
    db = tmp_path / "chats.sqlite3"
    db.write_bytes(b"this is not a database" * 100)
    store, problem = ui_app.open_store(db)
    assert store is not None
    try:
        assert store.list_conversations() == []
        assert problem is not None and "kept as chats.sqlite3.corrupt-" in problem
        assert list(tmp_path.glob("chats.sqlite3.corrupt-*"))
    finally:
        store.close()


def test_a_database_that_cannot_be_replaced_is_reported_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "chats.sqlite3"
    db.write_bytes(b"this is not a database" * 100)

    def refuse(path: Path, *, sqlite_sidecars: bool = False) -> Path:
        raise PermissionError(13, "permission denied")

    monkeypatch.setattr(ui_app, "quarantine", refuse)
    store, problem = ui_app.open_store(db)
    assert store is None
    assert problem is not None and "permission denied" in problem

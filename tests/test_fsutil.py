"""The one quarantine rule for damaged data files, against real files in tmp_path."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from enclave import fsutil
from enclave.fsutil import quarantine

STAMP = "20240102-030405"


@pytest.fixture
def fixed_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every quarantine in the test happens in the same second, so the names collide."""
    monkeypatch.setattr(fsutil.time, "strftime", lambda fmt, *args: STAMP)


def test_the_file_is_moved_aside_with_its_content(tmp_path: Path) -> None:
    damaged = tmp_path / "settings.json"
    damaged.write_bytes(b"{not json")
    kept = quarantine(damaged)
    assert not damaged.exists()
    assert kept.parent == tmp_path
    assert re.fullmatch(r"settings\.json\.corrupt-\d{8}-\d{6}", kept.name)
    assert kept.read_bytes() == b"{not json"


@pytest.mark.usefixtures("fixed_time")
def test_a_collision_gets_a_counter_and_nothing_is_overwritten(tmp_path: Path) -> None:
    damaged = tmp_path / "models.json"
    kept = []
    for content in (b"first", b"second", b"third"):
        damaged.write_bytes(content)
        kept.append(quarantine(damaged))
    assert [p.name for p in kept] == [
        f"models.json.corrupt-{STAMP}",
        f"models.json.corrupt-{STAMP}-2",
        f"models.json.corrupt-{STAMP}-3",
    ]
    assert [p.read_bytes() for p in kept] == [b"first", b"second", b"third"]
    assert sorted(tmp_path.iterdir()) == sorted(kept)


@pytest.mark.usefixtures("fixed_time")
def test_sqlite_side_files_go_along_when_asked(tmp_path: Path) -> None:
    db = tmp_path / "chats.sqlite3"
    db.write_bytes(b"main")
    Path(f"{db}-wal").write_bytes(b"wal")
    Path(f"{db}-journal").write_bytes(b"journal")  # no -shm: absent side files are skipped
    kept = quarantine(db, sqlite_sidecars=True)
    assert kept.name == f"chats.sqlite3.corrupt-{STAMP}"
    assert sorted(p.name for p in tmp_path.iterdir()) == [kept.name, f"{kept.name}-journal", f"{kept.name}-wal"]
    assert kept.read_bytes() == b"main"
    assert Path(f"{kept}-wal").read_bytes() == b"wal"
    assert Path(f"{kept}-journal").read_bytes() == b"journal"


def test_side_files_stay_where_they_are_unless_asked(tmp_path: Path) -> None:
    settings = tmp_path / "settings.json"
    settings.write_bytes(b"{")
    Path(f"{settings}-wal").write_bytes(b"not a side file of this one")
    kept = quarantine(settings)
    assert Path(f"{settings}-wal").read_bytes() == b"not a side file of this one"
    assert not Path(f"{kept}-wal").exists()


@pytest.mark.usefixtures("fixed_time")
def test_a_side_file_of_an_earlier_backup_is_never_overwritten(tmp_path: Path) -> None:
    db = tmp_path / "documents.sqlite3"
    earlier_wal = tmp_path / f"documents.sqlite3.corrupt-{STAMP}-wal"  # its main file was since moved elsewhere
    earlier_wal.write_bytes(b"old wal")
    db.write_bytes(b"main")
    Path(f"{db}-wal").write_bytes(b"new wal")
    kept = quarantine(db, sqlite_sidecars=True)
    assert kept.name == f"documents.sqlite3.corrupt-{STAMP}-2"
    assert earlier_wal.read_bytes() == b"old wal"
    assert Path(f"{kept}-wal").read_bytes() == b"new wal"
    assert kept.read_bytes() == b"main"


def test_a_missing_file_raises_and_nothing_is_created(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        quarantine(tmp_path / "gone.json", sqlite_sidecars=True)
    assert list(tmp_path.iterdir()) == []

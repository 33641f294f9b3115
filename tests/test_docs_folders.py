"""Watched folders: folders added once are remembered, and a re-scan brings the index up to date with the disk.

Real files, the real Ingester and DocumentIndex, the in-process parser (it counts the files it parses) and the
deterministic fake embedder of tests/fixtures/docs_fakes.py, as in test_docs_ingest.py.
"""

from __future__ import annotations

import shutil
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from enclave.docs import index as index_module
from enclave.docs.index import DocumentIndex
from enclave.docs.ingest import DEFAULT_COLLECTION, FileStatus, Ingester, is_under
from enclave.docs.isolation import InProcessParser
from enclave.docs.search import Searcher
from enclave.docs.status import DocStatus

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
from docs_fakes import FakeEmbedder

NOTES = {
    "volcanoes.md": "# Volcanoes\n\nMount Etna in Sicily is one of the most active volcanoes in Europe.\n",
    "bread.md": "# Baking bread\n\nKnead the dough for ten minutes and let it rise for two hours.\n",
    "taxes.txt": "The annual income tax return is due on the fifteenth of April.\n",
    "sub/garden.md": "# Garden\n\nTomato plants need six to eight hours of direct sunlight.\n",
}

NAMES = [Path(n).name for n in NOTES]


def write_notes(folder: Path) -> Path:
    for name, text in NOTES.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def names(statuses: list[FileStatus]) -> dict[str, str]:
    return {Path(s.path).name: s.status for s in statuses}


@pytest.fixture
def index(tmp_path: Path) -> Iterator[DocumentIndex]:
    db = DocumentIndex(tmp_path / "index" / "documents.sqlite3")
    yield db
    db.close()


@pytest.fixture
def parser() -> InProcessParser:
    return InProcessParser()


@pytest.fixture
def embedder() -> FakeEmbedder:
    return FakeEmbedder()


@pytest.fixture
def ingester(index: DocumentIndex, embedder: FakeEmbedder, parser: InProcessParser) -> Iterator[Ingester]:
    worker = Ingester(index, embedder, parser=parser)
    yield worker
    worker.close()


@pytest.fixture
def notes(tmp_path: Path, ingester: Ingester) -> Path:
    """A folder of four notes, indexed."""
    folder = write_notes(tmp_path / "notes")
    assert ingester.add([folder]) == []
    assert names(ingester.run()) == dict.fromkeys(NAMES, "ok")
    return folder


def test_added_folders_are_remembered_once(index: DocumentIndex, ingester: Ingester, notes: Path) -> None:
    assert index.folders() == [(DEFAULT_COLLECTION, str(notes.resolve()))]
    ingester.add([notes])  # the same folder again
    ingester.add([notes / ".." / "notes"])  # the same folder, spelled differently
    ingester.add([notes / "bread.md"])  # a file is not a folder to watch
    ingester.rescan()
    assert index.folders() == [(DEFAULT_COLLECTION, str(notes.resolve()))]
    ingester.add([notes], "Work")  # the same folder in another collection is watched for that one too
    ingester.run()
    assert index.folders() == [(DEFAULT_COLLECTION, str(notes.resolve())), ("Work", str(notes.resolve()))]
    assert index.add_folder("Work", str(notes.resolve())) is False
    assert index.remove_folder("Work", str(notes.resolve())) is True
    assert index.remove_folder("Work", str(notes.resolve())) is False
    assert index.folders() == [(DEFAULT_COLLECTION, str(notes.resolve()))]
    assert len(index.documents("Work")) == 4  # not watching a folder any more keeps its documents


def test_unchanged_files_are_reported_and_not_read_again(
    ingester: Ingester, parser: InProcessParser, embedder: FakeEmbedder, notes: Path
) -> None:
    parsed, embedded = parser.calls, len(embedder.embedded)
    statuses = ingester.rescan()
    assert names(statuses) == dict.fromkeys(NAMES, "unchanged")
    assert all(s.document_id is not None for s in statuses)
    assert ingester.idle and ingester.run() == []
    assert parser.calls == parsed and len(embedder.embedded) == embedded


def test_rescan_adds_new_requeues_changed_and_removes_deleted_files(
    index: DocumentIndex, ingester: Ingester, parser: InProcessParser, embedder: FakeEmbedder, notes: Path
) -> None:
    parsed = parser.calls
    (notes / "sub" / "deeper").mkdir()
    (notes / "sub" / "deeper" / "new.md").write_text("# Sourdough\n\nA starter is fed with flour and water.\n")
    (notes / "bread.md").write_text("# Bread\n\nRye bread keeps for a week when wrapped in linen.\n")
    (notes / "taxes.txt").unlink()
    taxes = index.document(DEFAULT_COLLECTION, str((notes / "taxes.txt").resolve()))
    assert taxes is not None

    immediate = ingester.rescan()
    assert names(immediate) == {"volcanoes.md": "unchanged", "garden.md": "unchanged", "taxes.txt": DocStatus.REMOVED}
    [removed] = [s for s in immediate if s.status == DocStatus.REMOVED]
    assert removed.document_id == taxes.id and removed.path == taxes.path and removed.collection == DEFAULT_COLLECTION
    assert index.queue_size() == 2
    assert names(ingester.run()) == {"new.md": "ok", "bread.md": "ok"}
    assert parser.calls == parsed + 2  # only the new and the changed file were read

    assert {d.name for d in index.documents()} == {"volcanoes.md", "bread.md", "garden.md", "new.md"}
    searcher = Searcher(index)
    assert searcher.search("income tax return").results == ()
    query = "rye bread linen"
    top = searcher.search(query, embedder.embed_query(query), embedder.model_id).results[0]
    assert top.name == "bread.md" and "Rye" in top.text
    assert all("Knead" not in r.text for r in searcher.search("knead dough").results)

    shutil.rmtree(notes / "sub")  # a whole subfolder deleted
    assert names(ingester.rescan()) == {
        "volcanoes.md": "unchanged",
        "bread.md": "unchanged",
        "garden.md": DocStatus.REMOVED,
        "new.md": DocStatus.REMOVED,
    }
    assert {d.name for d in index.documents()} == {"volcanoes.md", "bread.md"}
    assert ingester.idle


def test_a_vanished_folder_keeps_its_documents(index: DocumentIndex, ingester: Ingester, notes: Path) -> None:
    away = notes.with_name("unplugged")
    notes.rename(away)  # as if the drive holding it were disconnected
    [status] = ingester.rescan()
    assert (status.path, status.collection, status.status) == (
        str(notes.resolve()),
        DEFAULT_COLLECTION,
        DocStatus.MISSING,
    )
    assert status.error and "not found" in status.error
    assert len(index.documents()) == 4 and index.folders() == [(DEFAULT_COLLECTION, str(notes.resolve()))]
    assert ingester.idle
    away.rename(notes)  # plugged in again: nothing to redo
    assert set(names(ingester.rescan()).values()) == {"unchanged"}


def test_an_emptied_folder_is_treated_like_an_unmounted_drive(
    index: DocumentIndex, ingester: Ingester, notes: Path
) -> None:
    """A mount point left empty by an unplugged drive looks like "every file deleted": keep everything."""
    shutil.rmtree(notes)
    notes.mkdir()
    [status] = ingester.rescan()
    assert status.status == DocStatus.MISSING and status.error and "empty" in status.error
    assert len(index.documents()) == 4


def test_only_files_under_the_folder_and_in_its_collection_are_removed(
    tmp_path: Path, index: DocumentIndex, ingester: Ingester
) -> None:
    notes = write_notes(tmp_path / "notes")
    sibling = tmp_path / "notes-old"  # "notes-old/x" starts with "notes" but is not inside "notes"
    sibling.mkdir()
    (sibling / "old.md").write_text("Old notes about the harvest festival.\n")
    (tmp_path / "elsewhere.md").write_text("A note kept outside any watched folder.\n")
    ingester.add([notes])
    ingester.add([sibling / "old.md", tmp_path / "elsewhere.md"])  # files, not folders: not watched
    ingester.add([notes / "taxes.txt"], "Finance")  # the same file in another collection
    ingester.run()
    (sibling / "old.md").unlink()
    (tmp_path / "elsewhere.md").unlink()
    (notes / "taxes.txt").unlink()

    statuses = ingester.rescan([(DEFAULT_COLLECTION, str(notes))])
    assert [Path(s.path).name for s in statuses if s.status == DocStatus.REMOVED] == ["taxes.txt"]
    remaining = {(d.collection, d.name) for d in index.documents()}
    assert {(DEFAULT_COLLECTION, "old.md"), (DEFAULT_COLLECTION, "elsewhere.md"), ("Finance", "taxes.txt")} <= remaining
    assert (DEFAULT_COLLECTION, "taxes.txt") not in remaining


def test_is_under_compares_whole_path_components() -> None:
    assert is_under("/a/b/c.md", "/a/b")
    assert is_under("/a/b/deep/c.md", "/a/b")
    assert not is_under("/a/bc/c.md", "/a/b")
    assert not is_under("/a/b.md", "/a/b/")
    assert is_under("/a/b.md", "/")


def test_an_index_from_before_folders_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "documents.sqlite3"
    old = sqlite3.connect(path)
    index_module._migration_1(old)
    old.execute("INSERT INTO collections(name, created_at) VALUES ('Documents', 0)")
    old.execute("PRAGMA user_version = 1")
    old.commit()
    old.close()
    with DocumentIndex(path) as index:
        assert [c.name for c in index.collections()] == ["Documents"]
        assert index.folders() == []
        assert index.add_folder(DEFAULT_COLLECTION, str(tmp_path)) is True
        assert index.folders() == [(DEFAULT_COLLECTION, str(tmp_path))]

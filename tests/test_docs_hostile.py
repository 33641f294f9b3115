"""Strange paths and oversized files: each ends as that file's status with a plain reason, and the run goes on.

Symbolic-link loops, links to nothing, named pipes, devices, names that are not valid text, files that vanish while
being read; files that would make far more passages than their size suggests; files whose embedding takes too long;
a big file that must not hold up the small ones behind it. Through the ingester, the CLI and the documents thread.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from enclave.docs.index import DocumentIndex
from enclave.docs.ingest import FileStatus, Ingester, ingest
from enclave.docs.isolation import InProcessParser
from enclave.docs.limits import Limits
from enclave.docs.parsers import ParsedDocument, parse_file
from enclave.docs.search import Searcher
from enclave.workers.docs_worker import DocsController

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import minilm_gguf
from docs_fakes import FakeEmbedder

BAD_NAME = os.fsdecode(b"caf\xe9 notes.txt")  # Latin-1 bytes in a UTF-8 system: not valid text
TIMEOUT_MS = 20_000


def hostile_folder(folder: Path) -> Path:
    """A folder with one good note and every kind of path that is not a readable document."""
    folder.mkdir(parents=True)
    (folder / "good.md").write_text("# Good\n\nThe lighthouse keeper trims the wick every evening.\n")
    os.symlink("self.md", folder / "self.md")  # a link to itself
    os.symlink("pong.txt", folder / "ping.txt")  # two links pointing at each other
    os.symlink("ping.txt", folder / "pong.txt")
    os.symlink("nowhere.md", folder / "dangling.md")
    os.mkfifo(folder / "pipe.txt")  # reading it would block forever
    os.symlink("/dev/zero", folder / "device.txt")  # and this would never end
    (folder / BAD_NAME).write_text("Bonjour")
    (folder / "sub").mkdir()
    os.symlink("..", folder / "sub" / "up")  # a folder loop: never followed
    (folder / "sub" / "deep.md").write_text("Deep notes about the tides.\n")
    return folder


def by_name(statuses: list[FileStatus]) -> dict[str, FileStatus]:
    return {Path(s.path).name: s for s in statuses}


@pytest.fixture
def index(tmp_path: Path) -> Iterator[DocumentIndex]:
    db = DocumentIndex(tmp_path / "index" / "documents.sqlite3")
    yield db
    db.close()


def test_every_strange_path_gets_a_reason_and_the_rest_is_indexed(index: DocumentIndex, tmp_path: Path) -> None:
    folder = hostile_folder(tmp_path / "mixed")
    statuses = by_name(ingest(index, FakeEmbedder(), [folder, folder / "ping.txt", tmp_path / "nowhere.md"]))
    shown_bad_name = "caf\ufffd notes.txt"
    assert {name: s.status for name, s in statuses.items()} == {
        "good.md": "ok",
        "deep.md": "ok",
        "self.md": "unreadable",
        "ping.txt": "unreadable",
        "pong.txt": "unreadable",
        "dangling.md": "unreadable",
        "pipe.txt": "unreadable",
        "device.txt": "unreadable",
        shown_bad_name: "unreadable",
        "nowhere.md": "missing",
    }
    assert "loop" in (statuses["self.md"].error or "") and "loop" in (statuses["ping.txt"].error or "")
    assert "does not exist" in (statuses["dangling.md"].error or "")
    assert "named pipe" in (statuses["pipe.txt"].error or "") and "device" in (statuses["device.txt"].error or "")
    assert "rename" in (statuses[shown_bad_name].error or "")
    assert all(s.error for s in statuses.values() if s.status != "ok")
    assert {d.name for d in index.documents()} == {"good.md", "deep.md"}  # nothing half-stored
    assert index.folders() == [("My documents", str(folder.resolve()))]

    # A later re-scan meets the same paths (and a watched folder that became a loop) without raising.
    os.symlink("loop", tmp_path / "loop")
    index.add_folder("Loops", str(tmp_path / "loop"))
    rescanned = Ingester(index, FakeEmbedder()).rescan()
    assert by_name(rescanned)["loop"].status == "missing"
    assert by_name(rescanned)["good.md"].status == "unchanged"
    assert by_name(rescanned)["self.md"].status == "unreadable"


def test_a_file_that_vanishes_while_being_read_is_missing_not_damaged(index: DocumentIndex, tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    for name in ("early.md", "late.md", "stays.md"):
        (folder / name).write_text(f"# {name}\n\nSome words about {name}.\n")

    def delete_then_read(path: Path, limits: Limits) -> ParsedDocument:
        if path.name == "late.md":
            path.unlink()  # deleted by the user after the reader was asked for it
        return parse_file(path, limits)

    ingester = Ingester(index, FakeEmbedder(), parser=InProcessParser(delete_then_read))
    assert ingester.add([folder]) == []
    (folder / "early.md").unlink()  # deleted between the scan and its turn
    statuses = by_name(ingester.run())
    assert {n: s.status for n, s in statuses.items()} == {"early.md": "missing", "late.md": "missing", "stays.md": "ok"}
    assert "while it was being read" in (statuses["late.md"].error or "")
    assert [d.name for d in index.documents()] == ["stays.md"]


def test_a_file_with_too_many_passages_for_its_size_is_refused_before_embedding(
    index: DocumentIndex, tmp_path: Path
) -> None:
    """A CSV with a million columns (9.9 MB) with the real MiniLM tokenizer: refused, nothing embedded; the small
    file added with it goes first and is indexed."""
    wide = tmp_path / "wide.csv"
    columns = 1_000_000
    with wide.open("w") as out:
        out.write(",".join(f"c{i}" for i in range(columns)) + "\n")
        out.write(",".join(str(i % 10) for i in range(columns)) + "\n")
    note = tmp_path / "note.md"
    note.write_text("The ferry leaves the harbour at seven.\n")
    from enclave.docs.embedder import Embedder

    with Embedder(minilm_gguf.cached_model_path(), n_threads=1) as embedder:
        statuses = ingest(index, embedder, [wide, note])
    assert [(Path(s.path).name, s.status) for s in statuses] == [("note.md", "ok"), ("wide.csv", "too_many_passages")]
    error = statuses[1].error or ""
    assert "more than 21,314 passages" in error and "9.9 MB" in error and "not indexed" in error
    [doc] = [d for d in index.documents() if d.name == "wide.csv"]
    assert doc.status == "too_many_passages" and doc.chunks == 0 and doc.error == error


def test_embedding_time_is_bounded_and_a_big_file_does_not_hold_the_queue(index: DocumentIndex, tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    big.write_text(" ".join(f"Sentence {i} describes the gadget number {i} in detail." for i in range(2000)))
    small = [tmp_path / f"small{i}.md" for i in range(3)]
    for i, path in enumerate(small):
        path.write_text(f"Small note {i} about the orchard.\n")

    # Slices: after 0.1 s of embedding, big.txt goes to the back of the queue, behind files added meanwhile.
    embedder = FakeEmbedder(delay_s=0.02)
    ingester = Ingester(index, embedder, limits=Limits(slice_seconds=0.1))
    ingester.add([big])
    while not embedder.embedded:
        assert ingester.step() is None
    ingester.add(small)
    order = [Path(s.path).name for s in ingester.run()]
    assert order == ["small0.md", "small1.md", "small2.md", "big.txt"]
    big_doc = index.document("My documents", str(big))
    assert big_doc is not None and big_doc.status == "ok"
    assert len(embedder.embedded) == big_doc.chunks + 3  # resumed where it stopped: nothing embedded twice

    # Cancelling marks a file waiting at the back of the queue, half-embedded, as cancelled (not left "indexing").
    big.write_text(big.read_text() + " One more sentence.")
    ingester.add([big])

    def status_of(path: Path) -> str | None:
        document = index.document("My documents", str(path))
        return document.status if document is not None else None

    while status_of(big) != "indexing":  # read and stored again; embedding starts
        ingester.step()
    small[0].write_text("Small note 0, edited.\n")
    ingester.add([small[0]])
    while index.queued(1)[0].path == str(big):
        ingester.step()
    assert ingester.cancel() == 2
    assert status_of(big) == "cancelled" and status_of(small[0]) == "ok"

    # A total budget: past it the file is stopped as too large, and keyword search keeps all of its text.
    big.write_text(big.read_text() + " The last sentence mentions a zeppelin.")
    limits = Limits(base_embed_seconds=0.2, embed_seconds_per_mib=0.0)
    [status] = ingest(index, FakeEmbedder(delay_s=0.05), [big], limits=limits)
    assert status.status == "too_large" and "longer than the 0 s allowed" in (status.error or "")
    assert "Keyword search" in (status.error or "")
    stopped = index.document("My documents", str(big))
    assert stopped is not None and stopped.status == "too_large" and stopped.chunks == status.chunks
    assert Searcher(index).search("zeppelin").results[0].name == "big.txt"
    assert ingest(index, FakeEmbedder(), [big])[0].status == "unchanged"  # not retried until the file changes


def test_the_cli_reports_link_loops_and_goes_on(tmp_path: Path) -> None:
    folder = hostile_folder(tmp_path / "mixed")
    env = {k: v for k, v in os.environ.items() if k != "ENCLAVE_EMBEDDING_MODEL"}  # keywords only: no model needed
    env["ENCLAVE_HOME"] = str(tmp_path / "home")

    def enclave(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "enclave", "docs", *args], capture_output=True, text=True, env=env, timeout=120
        )

    added = enclave("add", str(folder), "--json")
    assert added.returncode == 0, added.stderr
    assert "Traceback" not in added.stderr
    statuses = {Path(o["path"]).name: o["status"] for o in json.loads(added.stdout)}
    assert statuses["good.md"] == statuses["deep.md"] == "ok"
    assert statuses["self.md"] == statuses["ping.txt"] == statuses["pipe.txt"] == "unreadable"
    loop = enclave("add", str(folder / "self.md"))
    assert loop.returncode == 0 and loop.stdout.startswith("unreadable") and "loop" in loop.stdout
    rescan = enclave("rescan")
    assert rescan.returncode == 0 and "Traceback" not in rescan.stderr
    assert "unreadable" in rescan.stdout and "unchanged" in rescan.stdout
    found = json.loads(enclave("search", "lighthouse wick", "--json").stdout)
    assert Path(found[0]["path"]).name == "good.md"


def test_the_documents_thread_reports_link_loops_and_goes_on(tmp_path: Path, qtbot: Any) -> None:
    folder = hostile_folder(tmp_path / "mixed")
    index_path = tmp_path / "data" / "documents.sqlite3"

    def controller() -> DocsController:
        fake = FakeEmbedder()
        return DocsController(
            index_path=index_path,
            embedding_model=tmp_path / "fake.gguf",
            embedder_factory=lambda path: fake,
            parser_factory=InProcessParser,
        )

    first = controller()
    statuses: list[FileStatus] = []
    errors: list[str] = []
    first.fileStatus.connect(statuses.append)
    first.error.connect(errors.append)
    try:
        with qtbot.waitSignal(first.ingestFinished, timeout=TIMEOUT_MS):
            first.add_paths([folder])
    finally:
        first.shutdown()
    assert by_name(statuses)["good.md"].status == "ok" and by_name(statuses)["self.md"].status == "unreadable"
    assert not errors

    # The start-up re-scan meets the loops again, and still indexes what is new.
    (folder / "new.md").write_text("A new note about the harbour.\n")
    second = controller()
    later: list[FileStatus] = []
    second.fileStatus.connect(later.append)
    second.error.connect(errors.append)
    try:
        with qtbot.waitSignal(second.ingestFinished, timeout=TIMEOUT_MS):
            second.start()
    finally:
        second.shutdown()
    assert by_name(later)["new.md"].status == "ok" and by_name(later)["ping.txt"].status == "unreadable"
    assert not errors

"""The documents thread: indexing off the GUI thread, per-file statuses, progress, pause/resume/cancel, searches
answered between indexing steps, resuming after a restart, and a clean shutdown."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from enclave.docs.index import DocumentIndex
from enclave.docs.ingest import FileStatus, IngestProgress
from enclave.docs.isolation import InProcessParser
from enclave.docs.search import SearchResponse
from enclave.workers.docs_worker import DocsController, EmbedderInfo, running_controllers

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
from docs_fakes import FakeEmbedder

TIMEOUT_MS = 20_000


class Recorder:
    def __init__(self, controller: DocsController) -> None:
        self.statuses: list[FileStatus] = []
        self.progress: list[IngestProgress] = []
        self.searches: dict[str, SearchResponse] = {}
        self.errors: list[str] = []
        self.documents: list[list[Any]] = []
        self.finished = 0
        self.paused = 0
        self.embedders: list[EmbedderInfo | None] = []
        controller.fileStatus.connect(self.statuses.append)
        controller.progress.connect(self.progress.append)
        controller.searchFinished.connect(lambda rid, response: self.searches.__setitem__(rid, response))
        controller.searchFailed.connect(lambda rid, message: self.errors.append(message))
        controller.error.connect(self.errors.append)
        controller.documentsChanged.connect(self.documents.append)
        controller.ingestFinished.connect(self._finished)
        controller.ingestPaused.connect(self._paused)
        controller.embedderChanged.connect(self.embedders.append)

    def _finished(self) -> None:
        self.finished += 1

    def _paused(self) -> None:
        self.paused += 1

    def by_name(self) -> dict[str, str]:
        return {Path(s.path).name: s.status for s in self.statuses}


def write_notes(folder: Path, count: int = 6, sentences: int = 120) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        text = " ".join(f"Note {i} sentence {j} mentions the keyword topic{i}." for j in range(sentences))
        (folder / f"note{i}.md").write_text(f"# Note {i}\n\n{text}\n")
    return folder


@pytest.fixture
def make_controller(tmp_path: Path, qtbot: Any) -> Iterator[Any]:
    made: list[DocsController] = []

    def make(embedder: FakeEmbedder | None = None, **kwargs: Any) -> DocsController:
        fake = embedder or FakeEmbedder()
        kwargs.setdefault("parser_factory", InProcessParser)
        controller = DocsController(
            index_path=tmp_path / "data" / "documents.sqlite3",
            embedding_model=tmp_path / "fake.gguf",
            embedder_factory=lambda path: fake,
            **kwargs,
        )
        made.append(controller)
        return controller

    yield make
    for controller in made:
        controller.shutdown()
    assert not running_controllers()


def test_indexing_runs_on_the_documents_thread_and_reports_each_file(
    make_controller: Any, tmp_path: Path, qtbot: Any
) -> None:
    embedder = FakeEmbedder()
    folder = write_notes(tmp_path / "notes", 3)
    (folder / "broken.pdf").write_bytes(b"%PDF-1.7 cut")
    (folder / "image.png").write_bytes(b"\x89PNG")
    controller = make_controller(embedder)
    got = Recorder(controller)
    with qtbot.waitSignal(controller.ingestFinished, timeout=TIMEOUT_MS):
        controller.add_paths([folder])
    assert got.by_name() == {
        "image.png": "skipped",
        "note0.md": "ok",
        "note1.md": "ok",
        "note2.md": "ok",
        "broken.pdf": "damaged",
    }
    assert embedder.threads and threading.get_ident() not in embedder.threads  # never on the GUI thread
    assert got.embedders[0] is not None and got.embedders[0].model_id == embedder.model_id
    last = got.progress[-1]
    assert (last.files_done, last.files_total, last.current_path, last.phase) == (4, 4, "", "idle")
    in_flight = [p for p in got.progress if p.current_path]
    assert in_flight and any(p.current_chunks_total for p in in_flight)
    assert {Path(d.path).name for d in got.documents[-1]} == {"note0.md", "note1.md", "note2.md", "broken.pdf"}
    assert controller.progress_state == last and len(controller.documents) == 4

    with qtbot.waitSignal(controller.searchFinished, timeout=TIMEOUT_MS):
        request_id = controller.search("topic1", k=3)
    response = got.searches[request_id]
    assert response.mode == "hybrid" and response.results[0].name == "note1.md"
    assert not got.errors


def test_pause_resume_and_cancel(make_controller: Any, tmp_path: Path, qtbot: Any) -> None:
    embedder = FakeEmbedder(delay_s=0.02)
    controller = make_controller(embedder)
    got = Recorder(controller)
    folder = write_notes(tmp_path / "notes", 6)
    controller.pause()
    with qtbot.waitSignal(controller.ingestPaused, timeout=TIMEOUT_MS):
        controller.add_paths([folder])
    qtbot.wait(200)
    assert got.statuses == [] and embedder.embedded == []  # paused: nothing is read or embedded
    assert controller.paused

    with qtbot.waitSignal(controller.ingestPaused, timeout=TIMEOUT_MS):
        controller.resume()
        qtbot.waitUntil(lambda: len(got.statuses) >= 1, timeout=TIMEOUT_MS)
        controller.pause()
    done_when_paused = len(got.statuses)
    qtbot.wait(200)
    assert len(got.statuses) == done_when_paused < 6

    with qtbot.waitSignal(controller.ingestFinished, timeout=TIMEOUT_MS):
        controller.cancel()
    assert got.progress[-1].files_total == got.progress[-1].files_done  # the queue is empty
    with DocumentIndex(tmp_path / "data" / "documents.sqlite3") as index:
        assert index.queue_size() == 0
    assert len([s for s in got.statuses if s.status == "ok"]) == done_when_paused


def test_a_search_is_answered_between_indexing_steps(make_controller: Any, tmp_path: Path, qtbot: Any) -> None:
    embedder = FakeEmbedder(delay_s=0.05)  # ~6 batches per file: the folder takes over a second
    controller = make_controller(embedder)
    got = Recorder(controller)
    controller.add_paths([write_notes(tmp_path / "notes", 4, sentences=2000)])
    qtbot.waitUntil(lambda: len(got.statuses) >= 1, timeout=TIMEOUT_MS)
    with qtbot.waitSignal(controller.searchFinished, timeout=TIMEOUT_MS):
        controller.search("topic0")
    assert got.finished == 0 and len(got.statuses) < 4  # answered while the folder was still being indexed
    with qtbot.waitSignal(controller.ingestFinished, timeout=TIMEOUT_MS):
        pass


def test_work_left_at_shutdown_resumes_at_the_next_start(make_controller: Any, tmp_path: Path, qtbot: Any) -> None:
    first = make_controller(FakeEmbedder(delay_s=0.02))
    got = Recorder(first)
    first.add_paths([write_notes(tmp_path / "notes", 5)])
    qtbot.waitUntil(lambda: len(got.statuses) >= 1, timeout=TIMEOUT_MS)
    first.shutdown()
    assert not first.thread_running
    done_before = {s.path for s in got.statuses}

    second = make_controller(FakeEmbedder())
    again = Recorder(second)
    with qtbot.waitSignal(second.ingestFinished, timeout=TIMEOUT_MS):
        second.start()  # nothing asked: the queue left by the first session is resumed
    assert {s.status for s in again.statuses} == {"ok"}
    assert {s.path for s in again.statuses} | done_before == {str(p) for p in (tmp_path / "notes").glob("*.md")}
    assert not {s.path for s in again.statuses} & done_before


def test_model_switch_remove_and_the_real_reader_process(make_controller: Any, tmp_path: Path, qtbot: Any) -> None:
    from enclave.docs.isolation import IsolatedParser

    embedders = {"a.gguf": FakeEmbedder("model-a:1"), "b.gguf": FakeEmbedder("model-b:2")}
    controller = DocsController(
        index_path=tmp_path / "data" / "documents.sqlite3",
        embedding_model=tmp_path / "a.gguf",
        embedder_factory=lambda path: embedders[path.name],
        parser_factory=IsolatedParser,  # the app's reader: a child process
    )
    got = Recorder(controller)
    try:
        with qtbot.waitSignal(controller.ingestFinished, timeout=TIMEOUT_MS):
            controller.add_paths([write_notes(tmp_path / "notes", 2)])
        assert got.by_name() == {"note0.md": "ok", "note1.md": "ok"}
        with qtbot.waitSignal(controller.ingestFinished, timeout=TIMEOUT_MS):
            controller.set_embedding_model(tmp_path / "b.gguf")
        assert embedders["a.gguf"].closed
        assert len(embedders["b.gguf"].embedded) == len(embedders["a.gguf"].embedded)  # every chunk re-embedded
        assert got.embedders[-1] is not None and got.embedders[-1].model_id == "model-b:2"

        note0 = next(d for d in got.documents[-1] if d.name == "note0.md")
        with qtbot.waitSignal(controller.documentsChanged, timeout=TIMEOUT_MS):
            controller.remove([note0.id])
        assert [d.name for d in got.documents[-1]] == ["note1.md"]
        with qtbot.waitSignal(controller.searchFinished, timeout=TIMEOUT_MS):
            request_id = controller.search("topic0 topic1")
        assert {r.name for r in got.searches[request_id].results} == {"note1.md"}
    finally:
        controller.shutdown()
    assert not got.errors


def test_a_broken_embedding_model_leaves_keyword_search(tmp_path: Path, qtbot: Any) -> None:
    from enclave.docs.embedder import EmbedderError

    def refuse(path: Path) -> FakeEmbedder:
        raise EmbedderError(f"{path.name} is not an embedding model")

    controller = DocsController(
        index_path=tmp_path / "documents.sqlite3",
        embedding_model=tmp_path / "chat-model.gguf",
        embedder_factory=refuse,
        parser_factory=InProcessParser,
    )
    got = Recorder(controller)
    try:
        with qtbot.waitSignal(controller.ingestFinished, timeout=TIMEOUT_MS):
            controller.add_paths([write_notes(tmp_path / "notes", 2)])
        assert got.embedders == [None]
        assert any("keywords only" in e and "chat-model.gguf" in e for e in got.errors)
        assert got.by_name() == {"note0.md": "ok", "note1.md": "ok"}
        with qtbot.waitSignal(controller.searchFinished, timeout=TIMEOUT_MS):
            request_id = controller.search("topic1")
        response = got.searches[request_id]
        assert response.mode == "keyword" and response.results[0].name == "note1.md"
    finally:
        controller.shutdown()


def test_hold_while_the_chat_model_answers(make_controller: Any, tmp_path: Path, qtbot: Any) -> None:
    """The chat holds indexing while R1 answers (not shown as paused); searches still work; release resumes."""
    embedder = FakeEmbedder(delay_s=0.02)
    controller = make_controller(embedder)
    got = Recorder(controller)
    controller.start()
    controller.hold(True)
    controller.add_paths([write_notes(tmp_path / "notes", 3)])
    qtbot.wait(300)
    assert not [s for s in got.statuses if s.status == "ok"] and embedder.embedded == []
    assert not controller.paused and got.paused == 0
    with qtbot.waitSignal(controller.searchFinished, timeout=TIMEOUT_MS):
        controller.search("topic1")
    with qtbot.waitSignal(controller.ingestFinished, timeout=TIMEOUT_MS):
        controller.hold(False)
    assert got.by_name() == {"note0.md": "ok", "note1.md": "ok", "note2.md": "ok"}


def test_files_added_to_a_watched_folder_are_indexed(make_controller: Any, tmp_path: Path, qtbot: Any) -> None:
    controller = make_controller()
    got = Recorder(controller)
    folder = write_notes(tmp_path / "notes", 2)
    with qtbot.waitSignal(controller.ingestFinished, timeout=TIMEOUT_MS):
        controller.add_paths([folder])
    (folder / "sub").mkdir()
    with qtbot.waitSignal(controller.ingestFinished, timeout=TIMEOUT_MS):
        (folder / "sub" / "late.md").write_text("# Late\n\nA note that arrived after the folder was added.\n")
    assert got.by_name()["late.md"] == "ok"
    with qtbot.waitSignal(controller.ingestFinished, timeout=TIMEOUT_MS):
        (folder / "sub" / "later.md").write_text("# Later\n\nThe new subfolder is watched too.\n")
    assert got.by_name()["later.md"] == "ok"
    (folder / "note0.md").unlink()
    qtbot.waitUntil(
        lambda: (
            got.by_name().get("note0.md") == "removed"
            and "note0.md" not in {Path(d.path).name for d in controller.documents}
        ),
        timeout=TIMEOUT_MS,
    )


def test_a_damaged_index_is_kept_aside_and_a_new_one_started(make_controller: Any, tmp_path: Path, qtbot: Any) -> None:
    index_path = tmp_path / "data" / "documents.sqlite3"
    index_path.parent.mkdir(parents=True)
    index_path.write_bytes(b"this is not a database" * 100)
    controller = make_controller()
    got = Recorder(controller)
    with qtbot.waitSignal(controller.error, timeout=TIMEOUT_MS):
        controller.start()
    assert "damaged" in got.errors[0] and "add them again" in got.errors[0]
    [kept] = list(index_path.parent.glob("documents.sqlite3.corrupt-*"))
    assert kept.read_bytes().startswith(b"this is not a database")
    with qtbot.waitSignal(controller.ingestFinished, timeout=TIMEOUT_MS):
        controller.add_paths([write_notes(tmp_path / "notes", 1)])
    assert got.by_name() == {"note0.md": "ok"}

"""Window paths no other test walks: a model switch from Settings mid-chat, real drag-and-drop events, the partial
answer a killed window leaves in the database, and the message for a multi-file GGUF with a part missing.

The chat model is the scripted backend (tests/fakes.py) except where the engine's own check is under test (the
missing shard: LlamaCppBackend refuses the file before llama.cpp opens it).
"""

from __future__ import annotations

import itertools
import os
import selectors
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QTimer, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication, QDialogButtonBox, QFileDialog, QLabel

import stream_writer_child as child
from enclave.docs.ingest import DEFAULT_COLLECTION
from enclave.docs.isolation import InProcessParser
from enclave.engine.backend import Backend
from enclave.engine.types import LoadRequest, ModelInfo
from enclave.paths import app_paths
from enclave.settings.settings import Settings, SettingsStore
from enclave.storage.chats import ChatStore, MessageStatus
from enclave.ui.main_window import MainWindow
from enclave.ui.settings_dialog import SettingsDialog
from enclave.ui.style import apply_appearance
from enclave.workers.docs_worker import DocsController
from enclave.workers.engine_worker import EngineController
from engine_host_helpers import child_pids
from fake_hub import write_tiny_gguf
from fakes import Script, ScriptedBackend

TESTS = Path(__file__).parent
PDF = TESTS / "data" / "pdf" / "001-trivial" / "minimal-document.pdf"
ANSWER = "Paris is the capital of France."


@dataclass
class GatedBackend(ScriptedBackend):
    """A scripted backend whose loads wait while ``gate`` is clear (to look at the window mid-load)."""

    gate: threading.Event = field(default_factory=threading.Event)
    loads: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.gate.set()

    def load(
        self,
        request: LoadRequest,
        cancel: threading.Event | None = None,
        progress: Callable[[float], None] | None = None,
    ) -> ModelInfo:
        assert self.gate.wait(20), "the test never opened the gate"
        self.loads.append(request.path)
        return super().load(request, cancel)


class Window:
    """A MainWindow over a fresh store in this test's ENCLAVE_HOME."""

    def __init__(
        self,
        qtbot: Any,
        factory: Callable[[], Backend],
        settings: Settings | None = None,
        documents: DocsController | None = None,
    ) -> None:
        self.qtbot = qtbot
        self.paths = app_paths().ensure()
        self.store = ChatStore(self.paths.chats_db)
        self.controller = EngineController(factory)
        self.documents = documents
        self.window = MainWindow(
            self.store, self.controller, SettingsStore(self.paths.settings_file), settings or Settings(), documents
        )
        qtbot.addWidget(self.window)
        self.window.show()

    def send(self, text: str) -> None:
        self.window.composer.editor.setPlainText(text)
        self.qtbot.keyClick(self.window.composer.editor, Qt.Key.Key_Return)
        self.qtbot.waitUntil(lambda: not self.window.session.busy, timeout=10_000)

    def messages(self) -> list[Any]:
        conversation_id = self.window.session.conversation_id
        assert conversation_id is not None
        return self.store.messages(conversation_id)

    def stored_model_path(self) -> str | None:
        return SettingsStore(self.paths.settings_file).load().settings.model_path

    def file_action(self, text: str) -> Any:
        """The action of the File menu whose text is ``text`` (what a user clicks)."""
        menu = next(a.menu() for a in self.window.menuBar().actions() if a.text() == "&File")
        return next(a for a in menu.actions() if a.text() == text)

    def notes(self) -> list[str]:
        return [
            w.text()
            for w in self.window.transcript._widgets()
            if isinstance(w, QLabel) and w.objectName() == "chatNote"
        ]

    def close(self) -> None:
        self.window.close()
        self.store.close()


@pytest.fixture
def scripted() -> GatedBackend:
    return GatedBackend(Script(reasoning="Thinking.", answer=ANSWER, chunk_chars=6, delay_s=0.002))


def model_file(folder: Path, name: str) -> Path:
    path = folder / name
    path.write_bytes(b"scripted")  # the scripted backend only needs the file to exist
    return path


# --- 1. switching the model from Settings in the middle of a chat ---------------------------------------------------


def run_settings_dialog(app: Window, fill: Callable[[SettingsDialog], None]) -> list[object]:
    """File → Settings…, then, inside the modal dialog's own event loop, ``fill`` it and press OK.

    Returns what happened in the dialog: the dialog, or the exception that made the helper cancel it (so a failure
    can never leave the test stuck in ``exec()``)."""
    seen: list[object] = []

    def interact() -> None:
        dialog = QApplication.activeModalWidget()
        try:
            assert isinstance(dialog, SettingsDialog), f"the modal window is {dialog!r}"
            seen.append(dialog)
            fill(dialog)
            buttons = dialog.findChild(QDialogButtonBox)
            assert buttons is not None
            buttons.button(QDialogButtonBox.StandardButton.Ok).click()
        except BaseException as exc:
            seen.append(exc)
            if dialog is not None:
                dialog.close()

    QTimer.singleShot(0, interact)
    app.file_action("Settings…").trigger()  # returns once the modal dialog has closed
    return seen


def test_switching_the_model_in_settings_keeps_the_chat_and_the_next_answer_uses_it(
    qtbot: Any, scripted: GatedBackend, tmp_path: Path
) -> None:
    first = model_file(tmp_path, "first-model.gguf")
    second = model_file(tmp_path, "second-model.gguf")
    SettingsStore(app_paths().ensure().settings_file).save(Settings(model_path=str(first)))
    app = Window(qtbot, lambda: scripted, Settings(model_path=str(first)))
    try:
        with qtbot.waitSignal(app.controller.modelLoaded, timeout=5000):
            app.window.load_model(str(first))  # what the start does with the remembered model
        app.send("What is the capital of France?")
        conversation_id = app.window.session.conversation_id
        before = [(m.role, m.content) for m in app.messages()]
        assert before == [("user", "What is the capital of France?"), ("assistant", ANSWER)]

        scripted.gate.clear()  # the second model's load waits: look at the window while it loads

        def choose_second(dialog: SettingsDialog) -> None:
            assert dialog.model_path.text() == str(first)
            dialog.model_path.clear()
            qtbot.keyClicks(dialog.model_path, str(second))

        seen = run_settings_dialog(app, choose_second)
        assert len(seen) == 1 and isinstance(seen[0], SettingsDialog), seen
        qtbot.waitUntil(lambda: app.controller.loading, timeout=5000)
        # Not remembered yet: a model that never loads must not become the one every start opens.
        assert app.window.settings.model_path == app.stored_model_path() == str(first)
        assert app.window.session.conversation_id == conversation_id
        with qtbot.waitSignal(app.controller.modelLoaded, timeout=5000) as loaded:
            scripted.gate.set()
        assert loaded.args[0].path == str(second)
        assert scripted.loads == [str(first), str(second)]
        assert app.window.settings.model_path == app.stored_model_path() == str(second)

        # The same chat is still open, with its messages, and a note says the model changed.
        assert app.window.session.conversation_id == conversation_id
        assert app.window.pages.currentWidget() is app.window.chat_page
        cards = app.window.transcript.cards()
        assert [c.role for c in cards] == ["user", "assistant"]
        assert cards[-1].answer.markdown() == ANSWER
        assert app.notes() == ["Switched to second-model: the next answers come from it."]
        assert app.window.model_label.text().startswith("second-model · ")

        app.send("And of Italy?")
        messages = app.messages()
        assert messages[0].conversation_id == conversation_id
        assert [(m.role, m.model) for m in messages] == [
            ("user", None),
            ("assistant", "first-model"),
            ("user", None),
            ("assistant", "second-model"),
        ]
        assert messages[-1].status is MessageStatus.COMPLETE
        # The new model was sent the whole chat, the first model's answer included.
        assert [m.content for m in scripted.requests[-1].messages] == [
            "What is the capital of France?",
            ANSWER,
            "And of Italy?",
        ]
    finally:
        scripted.gate.set()
        app.close()


def test_a_model_chosen_in_settings_that_fails_to_load_is_not_remembered(
    qtbot: Any, scripted: GatedBackend, tmp_path: Path
) -> None:
    first = model_file(tmp_path, "first-model.gguf")
    missing = tmp_path / "not-there.gguf"
    app = Window(qtbot, lambda: scripted, Settings(model_path=str(first)))
    try:
        with qtbot.waitSignal(app.controller.modelLoaded, timeout=5000):
            app.window.load_model(str(first))

        def choose_missing(dialog: SettingsDialog) -> None:
            dialog.model_path.setText(str(missing))
            dialog.max_tokens.setValue(77)  # a non-model setting changed in the same dialog is kept

        with qtbot.waitSignal(app.controller.modelLoadFailed, timeout=5000) as failed:
            seen = run_settings_dialog(app, choose_missing)
        assert len(seen) == 1 and isinstance(seen[0], SettingsDialog), seen
        assert failed.args[0].startswith(f"Model file not found: {missing}")
        assert app.window.statusBar().currentMessage() == failed.args[0]
        assert app.window.settings.model_path == app.stored_model_path() == str(first)
        assert app.window.settings.max_tokens == 77
        assert SettingsStore(app.paths.settings_file).load().settings.max_tokens == 77
    finally:
        app.close()


# --- 2. dropping files on the window (real drag-enter and drop events) ---------------------------------------------


@dataclass(frozen=True)
class Dragged:
    """What the window answered: whether it accepted the drag (QDragEnterEvent) and the drop (None: not sent)."""

    enter_accepted: bool
    enter_action: Qt.DropAction
    drop_accepted: bool | None


def drag_and_drop(window: MainWindow, paths: list[Path] | list[QUrl]) -> Dragged:
    """Send the window what the platform sends on a drag and a drop: a QDragEnterEvent, then (if the drag was
    accepted) a QDropEvent, both through QApplication.sendEvent (the window's event(), not its handlers).

    Only plain values come back: an event keeps a bare pointer to its QMimeData, so touching it after ``data`` is
    gone (pytest's repr of a failed assertion does) crashes the process."""
    data = QMimeData()
    data.setUrls([p if isinstance(p, QUrl) else QUrl.fromLocalFile(str(p)) for p in paths])
    enter = QDragEnterEvent(
        QPoint(300, 300), Qt.DropAction.CopyAction, data, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier
    )
    QApplication.sendEvent(window, enter)
    if not enter.isAccepted():
        return Dragged(False, enter.dropAction(), None)
    drop = QDropEvent(
        QPointF(300, 300), Qt.DropAction.CopyAction, data, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier
    )
    QApplication.sendEvent(window, drop)
    return Dragged(True, enter.dropAction(), drop.isAccepted())


@pytest.fixture
def docs_window(qtbot: Any, scripted: GatedBackend) -> Iterator[Window]:
    paths = app_paths().ensure()
    docs = DocsController(
        index_path=paths.data / "documents.sqlite3", embedding_model=None, parser_factory=InProcessParser
    )
    app = Window(qtbot, lambda: scripted, documents=docs)
    yield app
    app.close()  # shuts the documents thread down too


def test_dropping_a_text_file_and_a_pdf_indexes_them_for_the_chat(docs_window: Window, tmp_path: Path) -> None:
    app = docs_window
    assert app.documents is not None
    notes = tmp_path / "drop" / "kettle-notes.txt"
    notes.parent.mkdir()
    notes.write_text("The kettle warranty lasts five years from the date of purchase.\n", encoding="utf-8")
    pdf = shutil.copyfile(PDF, tmp_path / "drop" / "minimal-document.pdf")
    model = model_file(tmp_path, "chat-model.gguf")
    with app.qtbot.waitSignal(app.controller.modelLoaded, timeout=5000):
        app.window.load_model(str(model))
    conversation_id = app.window.session.conversation_id
    assert conversation_id is not None

    # A drag of something that is not a local file is refused, and nothing is indexed.
    refused = drag_and_drop(app.window, [QUrl("https://example.com/notes.txt")])
    assert not refused.enter_accepted and refused.drop_accepted is None

    dragged = drag_and_drop(app.window, [notes, pdf])
    assert dragged == Dragged(enter_accepted=True, enter_action=Qt.DropAction.CopyAction, drop_accepted=True)
    assert app.window.statusBar().currentMessage() == (
        f"Indexing 2 items into “{DEFAULT_COLLECTION}” — this chat and new chats answer from it"
    )
    assert app.store.conversation(conversation_id).collections == (DEFAULT_COLLECTION,)
    assert app.window.composer.documents_button.text() == f"Documents: {DEFAULT_COLLECTION}"

    def indexed() -> bool:
        docs = app.documents.documents if app.documents is not None else []
        return len(docs) == 2 and all(d.status == "ok" for d in docs)

    app.qtbot.waitUntil(indexed, timeout=60_000)
    by_name = {Path(d.path).name: d for d in app.documents.documents}
    assert sorted(by_name) == ["kettle-notes.txt", "minimal-document.pdf"]
    assert all(d.collection == DEFAULT_COLLECTION and d.chunks > 0 and d.chars > 0 for d in by_name.values())
    assert by_name["minimal-document.pdf"].kind == "pdf" and by_name["minimal-document.pdf"].page_count == 1
    with app.qtbot.waitSignal(app.documents.searchFinished, timeout=20_000) as found:
        app.documents.search("kettle warranty", collections=(DEFAULT_COLLECTION,), k=4)
    assert Path(found.args[1].results[0].path).name == "kettle-notes.txt"
    assert app.controller.model is not None and app.controller.model.name == "chat-model"  # the model was kept


def test_dropping_a_gguf_opens_it_and_remembers_it(docs_window: Window, tmp_path: Path) -> None:
    app = docs_window
    [dropped] = write_tiny_gguf(tmp_path / "dropped-model.gguf", data_bytes=64 * 1024)
    notes = tmp_path / "notes.txt"
    notes.write_text("Not indexed: the model file wins.\n", encoding="utf-8")
    assert app.window.pages.currentWidget() is app.window.welcome
    with app.qtbot.waitSignal(app.controller.modelLoaded, timeout=5000) as loaded:
        dragged = drag_and_drop(app.window, [dropped, notes])
    assert dragged == Dragged(enter_accepted=True, enter_action=Qt.DropAction.CopyAction, drop_accepted=True)
    assert loaded.args[0].path == str(dropped)
    assert app.window.settings.model_path == app.stored_model_path() == str(dropped)
    assert app.window.pages.currentWidget() is app.window.chat_page
    from enclave.models.installed import ModelRegistry

    imported = ModelRegistry(app.paths.data / "models.json").models()
    assert [(m.source, m.paths) for m in imported] == [("imported", (str(dropped.resolve()),))]
    # The model file wins: the text file dropped with it is not indexed, and the chat uses no documents.
    assert not app.window.statusBar().currentMessage().startswith("Indexing")
    conversation_id = app.window.session.conversation_id
    assert conversation_id is not None and app.store.conversation(conversation_id).collections == ()


# --- 3. the partial answer a killed window leaves behind ----------------------------------------------------------


def read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The child's next stdout line, or fail after ``timeout`` seconds (no reader thread to leave behind)."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise AssertionError(f"the child printed nothing for {timeout} s")
    return proc.stdout.readline().strip()


def stored_answer(db: Path, message_id: int) -> tuple[str, str, str, str | None]:
    """(status, content, reasoning, model) read with plain sqlite3: ChatStore would mark the answer interrupted."""
    with closing(sqlite3.connect(db, timeout=5)) as conn:
        row = conn.execute(
            "SELECT status, content, reasoning, model FROM messages WHERE id = ?", (message_id,)
        ).fetchone()
    assert row is not None
    return row[0], row[1], row[2], row[3]


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_a_killed_window_leaves_the_streamed_text_saved_at_least_once_a_second(qtbot: Any, tmp_path: Path) -> None:
    model = model_file(tmp_path, "slow-model.gguf")
    db = app_paths().ensure().chats_db
    before = child_pids()
    proc = subprocess.Popen(
        [sys.executable, str(TESTS / "stream_writer_child.py"), str(model)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "QT_QPA_PLATFORM": "offscreen"},  # ENCLAVE_HOME: this test's folder
    )
    samples: list[tuple[float, str, str]] = []  # (seconds since the first text, status, content)
    try:
        line = read_line(proc, timeout=60)
        assert line.startswith("streaming "), line
        started = time.monotonic()
        conversation_id, message_id = (int(x) for x in line.split()[1:])
        while time.monotonic() - started < 3.3:
            status, content, _reasoning, _model = stored_answer(db, message_id)
            samples.append((time.monotonic() - started, status, content))
            time.sleep(0.1)
        assert proc.poll() is None, "the child finished before it was killed"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        stderr = proc.stderr.read() if proc.stderr is not None else ""
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    assert not child_pids() - before
    assert "Traceback" not in stderr, stderr[-3000:]

    # While it streamed, the answer in the database grew at least once a second (with slack for a busy machine).
    assert all(s == MessageStatus.STREAMING.value for _t, s, _c in samples)
    assert all(child.ANSWER.startswith(c) for _t, _s, c in samples)
    # When the stored text changed (the first sample counts: no save yet ~0.1 s after the first text).
    changes = [samples[0][0]] + [t for (_t0, _s0, c0), (t, _s, c) in itertools.pairwise(samples) if c != c0]
    saved = sorted({c for _t, _s, c in samples if c})
    assert len(saved) >= 2, f"saved lengths seen: {[len(c) for c in saved]}"
    gaps = [b - a for a, b in itertools.pairwise(changes)]
    assert gaps and max(gaps) < 2.0, f"content changed at {changes}"

    # After the kill: the last save survived, unfinished and still marked as streaming.
    status, content, reasoning, model_name = stored_answer(db, message_id)
    assert status == MessageStatus.STREAMING.value
    assert content.startswith(samples[-1][2]) and content and child.ANSWER.startswith(content)
    assert len(content) < len(child.ANSWER)
    assert reasoning == child.REASONING and model_name == "slow-model"

    # The next start turns it into an interrupted answer, shown as such in the same chat.
    app = Window(qtbot, lambda: ScriptedBackend())
    try:
        question, answer = app.store.messages(conversation_id)
        assert (question.role, question.content) == ("user", child.QUESTION)
        assert answer.id == message_id and answer.status is MessageStatus.INTERRUPTED and answer.content == content
        assert app.window.session.conversation_id == conversation_id
        card = app.window.transcript.cards()[-1]
        assert card.answer.markdown() == content
        assert card.status.text().startswith("Interrupted")
    finally:
        app.close()


# --- 4. a multi-file GGUF with a part missing ---------------------------------------------------------------------


def test_a_split_model_with_a_missing_part_names_the_part_and_is_not_remembered(
    qtbot: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from enclave.engine.llama_backend import LlamaCppBackend

    part1, part2, part3 = write_tiny_gguf(tmp_path / "split" / "tiny.gguf", data_bytes=96 * 1024, shards=3)
    assert (part1.name, part3.name) == ("tiny-00001-of-00003.gguf", "tiny-00003-of-00003.gguf")
    part2.unlink()
    part3.unlink()
    previous = str(tmp_path / "previous-model.gguf")  # what the last start opened
    SettingsStore(app_paths().ensure().settings_file).save(Settings(model_path=previous))
    asked: list[str] = []

    def choose(_parent: object, title: str, *_args: object) -> tuple[str, str]:
        asked.append(title)
        return str(part1), ""

    monkeypatch.setattr(QFileDialog, "getOpenFileName", choose)  # the native dialog can't be clicked offscreen
    app = Window(qtbot, LlamaCppBackend, replace(Settings(), model_path=previous, context_length=1024, threads=2))
    try:
        with qtbot.waitSignal(app.controller.modelLoadFailed, timeout=30_000) as failed:
            app.file_action("Open model…").trigger()
        assert asked == ["Open a model"]
        message = (
            "tiny-00001-of-00003.gguf is part 1 of a 3-part model, but these parts are missing: "
            "tiny-00002-of-00003.gguf, tiny-00003-of-00003.gguf. Put all parts in the same folder."
        )
        assert failed.args[0] == message
        assert app.window.pages.currentWidget() is app.window.welcome
        assert app.window.welcome.status.text() == f"Could not open the model. {message}"
        assert app.window.welcome.open_button.isEnabled()
        assert app.window.statusBar().currentMessage() == message
        assert app.window.model_label.text() == "No model"
        assert app.controller.model is None and not app.controller.loading
        assert app.window.settings.model_path == app.stored_model_path() == previous
    finally:
        app.close()


# --- appearance -----------------------------------------------------------------------------------------------------


def test_the_appearance_setting_switches_light_and_dark_live_and_is_kept(
    qtbot: Any, scripted: GatedBackend, qapp: QApplication
) -> None:
    from PySide6.QtGui import QPalette

    from enclave.ui.style import contrast

    def window_color() -> Any:
        return qapp.palette().color(QPalette.ColorRole.Window)

    app = Window(qtbot, lambda: scripted, Settings())
    try:
        light = window_color()
        previewed: list[Any] = []

        def choose_dark(dialog: SettingsDialog) -> None:
            assert [dialog.groups.itemAt(i).widget().title() for i in range(7)] == [
                "Model",
                "Thinking",
                "Documents",
                "Appearance",
                "Privacy",
                "Local API server",
                "Advanced",
            ]
            dialog.appearance.setCurrentIndex(dialog.appearance.findData("dark"))
            previewed.append(window_color())  # applied before OK: a live preview

        assert len(run_settings_dialog(app, choose_dark)) == 1
        assert contrast(previewed[0], light) > 5 and window_color() == previewed[0]
        assert SettingsStore(app.paths.settings_file).load().settings.appearance == "dark"
        text = qapp.palette().color(QPalette.ColorRole.Text)
        assert contrast(window_color(), text) >= 7
    finally:
        app.close()
        apply_appearance(qapp, "light")
        qapp.processEvents()

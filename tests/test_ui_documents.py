"""Documents in the window, end to end: drop a folder, ask, get an answer with numbered sources that open the file.

The chat model is the scripted backend (the GUI is under test); the documents side is real: the real index in
SQLite, the real file readers, and the real MiniLM embedding model through llama.cpp on the documents thread.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent
from PySide6.QtWidgets import QFileDialog

from enclave.docs.ingest import DEFAULT_COLLECTION
from enclave.docs.isolation import InProcessParser
from enclave.docs.prompt import NOTHING_FOUND
from enclave.paths import app_paths
from enclave.settings.settings import Settings, SettingsStore
from enclave.storage.chats import ChatStore, MessageStatus
from enclave.ui.documents_dialog import DocumentsDialog, distinct_names
from enclave.ui.main_window import MainWindow
from enclave.ui.sources_view import NOTHING_RELEVANT
from enclave.workers.docs_worker import DocsController, running_controllers
from enclave.workers.engine_worker import EngineController
from fakes import Script, ScriptedBackend

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import minilm_gguf

ANSWER = "The warranty lasts **five years** [1]. Batteries are covered for two years [2]."

NOTES = {
    "warranty.md": "# Warranty\n\nEvery Enclave kettle comes with a warranty of five years from the date of "
    "purchase. The warranty covers the heating element and the body.\n",
    "batteries.txt": "Batteries of the cordless base are covered for two years. Replacement batteries can be "
    "ordered from the service centre.\n",
    "recipes.md": "# Tea\n\nGreen tea is best brewed at eighty degrees for three minutes.\n",
}


@pytest.fixture(scope="module")
def minilm_path() -> Path:
    return minilm_gguf.cached_model_path()


class DocsApp:
    def __init__(self, qtbot: Any, tmp_path: Path, minilm: Path) -> None:
        self.qtbot = qtbot
        self.paths = app_paths().ensure()
        self.model = tmp_path / "DeepSeek-R1-0528-Qwen3-8B-Q4_K_M.gguf"
        self.model.write_bytes(b"scripted")
        self.minilm = minilm
        self.backend = ScriptedBackend(Script(reasoning="Looking at the sources.", answer=ANSWER, chunk_chars=8))
        self.open()

    def open(self) -> None:
        self.store = ChatStore(self.paths.chats_db)
        self.controller = EngineController(lambda: self.backend)
        self.docs = DocsController(
            index_path=self.paths.data / "documents.sqlite3",
            embedding_model=self.minilm,
            parser_factory=InProcessParser,
        )
        settings = SettingsStore(self.paths.settings_file)
        self.window = MainWindow(self.store, self.controller, settings, Settings(), self.docs)
        self.qtbot.addWidget(self.window)
        self.window.show()
        with self.qtbot.waitSignal(self.controller.modelLoaded, timeout=5000):
            self.window.load_model(str(self.model))

    def close(self) -> None:
        self.window.close()  # shuts the documents thread down too
        self.store.close()

    def drop(self, *paths: Path) -> None:
        data = QMimeData()
        data.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
        event = QDropEvent(
            QPointF(QPoint(200, 200)),
            Qt.DropAction.CopyAction,
            data,
            Qt.MouseButton.LeftButton,
            Qt.KeyboardModifier.NoModifier,
        )
        self.window.dropEvent(event)
        assert event.isAccepted()

    def wait_indexed(self, count: int) -> None:
        self.qtbot.waitUntil(
            lambda: (
                (sum(d.status == "ok" for d in self.docs.documents) >= count and not self.docs.progress_state)
                or (
                    sum(d.status == "ok" for d in self.docs.documents) >= count
                    and self.docs.progress_state is not None
                    and self.docs.progress_state.phase == "idle"
                )
            ),
            timeout=60_000,
        )

    def send(self, text: str) -> None:
        self.window.composer.editor.setPlainText(text)
        self.qtbot.keyClick(self.window.composer.editor, Qt.Key.Key_Return)
        self.qtbot.waitUntil(lambda: not self.window.session.busy, timeout=20_000)

    def messages(self) -> list[Any]:
        conversation_id = self.window.session.conversation_id
        assert conversation_id is not None
        return self.store.messages(conversation_id)


@pytest.fixture
def docs_app(qtbot: Any, tmp_path: Path, minilm_path: Path) -> Iterator[DocsApp]:
    app = DocsApp(qtbot, tmp_path, minilm_path)
    yield app
    app.close()
    assert not running_controllers()


def write_notes(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in NOTES.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def test_drop_a_folder_ask_and_get_an_answer_that_cites_its_sources(docs_app: DocsApp, tmp_path: Path) -> None:
    app = docs_app
    folder = write_notes(tmp_path / "manuals")
    app.window.new_chat()
    app.drop(folder)
    # The chat now answers from the collection the files went into, and says so where the user types.
    assert app.window.composer.documents_button.text() == f"Documents: {DEFAULT_COLLECTION}"
    app.qtbot.waitUntil(lambda: app.window.indexing_button.isVisible() or len(app.docs.documents) == 3, timeout=30_000)
    app.wait_indexed(3)

    app.send("How long is the kettle warranty?")
    user, answer = app.messages()
    assert user.content == "How long is the kettle warranty?"  # the bare question is what the chat shows
    sent = app.backend.requests[-1].messages[-1].content
    assert sent.endswith("Question: How long is the kettle warranty?")
    assert "[1] warranty.md" in sent and "five years from the date of purchase" in sent
    assert answer.status is MessageStatus.COMPLETE and answer.content == ANSWER
    assert answer.sources is not None and answer.sources[0].path.endswith("warranty.md")

    card = app.window.transcript.cards()[-1]
    # Offscreen there is no desktop to open files with: test what the window is asked to open.
    app.window.session.sourceOpenRequested.disconnect(app.window.open_source)
    assert card.sources.isVisible()
    assert "warranty.md" in card.sources.rows[0].text()
    assert 'href="cite:1"' in card.answer.toHtml()  # [1] in the answer is a link to source 1
    with app.qtbot.waitSignal(app.window.session.sourceOpenRequested) as opened:
        card.sources.rows[0].linkActivated.emit("source:1")
    assert opened.args[0].path.endswith("warranty.md")
    with app.qtbot.waitSignal(app.window.session.sourceOpenRequested) as opened:
        card.answer.anchorClicked.emit(QUrl("cite:1"))
    assert opened.args[0].number == 1
    # Indexing was held while the model answered, and released afterwards.
    assert not app.docs._control.hold.is_set()

    # The sources are part of the stored chat: they come back after a restart.
    app.close()
    app.open()
    card = app.window.transcript.cards()[-1]
    assert [s.label for s in card.sources.sources][:1] == ["warranty.md"]
    assert app.window.composer.documents_button.text() == f"Documents: {DEFAULT_COLLECTION}"


def test_file_menu_add_documents_asks_for_files_and_indexes_them(
    docs_app: DocsApp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write_notes(tmp_path / "picked")
    picked = [str(p) for p in sorted(folder.iterdir())]
    asked: list[str] = []

    def choose(_parent: object, title: str, *_args: object) -> tuple[list[str], str]:
        asked.append(title)
        return picked, ""

    monkeypatch.setattr(QFileDialog, "getOpenFileNames", choose)  # the native file dialog can't be clicked offscreen
    app = docs_app
    app.window.new_chat()
    app.qtbot.keyClick(
        app.window, Qt.Key.Key_D, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier
    )
    assert asked == ["Add documents"]  # File → Add documents… (Ctrl+Shift+D) really asked for files
    app.wait_indexed(len(picked))
    assert sorted(Path(d.path).name for d in app.docs.documents) == sorted(Path(p).name for p in picked)
    assert app.window.composer.documents_button.text() == f"Documents: {DEFAULT_COLLECTION}"


def test_a_question_the_documents_do_not_cover_is_answered_as_such(docs_app: DocsApp, tmp_path: Path) -> None:
    app = docs_app
    app.window.new_chat()
    app.drop(write_notes(tmp_path / "manuals"))
    app.wait_indexed(3)
    app.backend.script.answer = "Your documents do not say."
    app.send("What is the capital of Mongolia?")
    sent = app.backend.requests[-1].messages[-1].content
    assert sent.startswith(NOTHING_FOUND)
    answer = app.messages()[-1]
    assert answer.sources == ()
    card = app.window.transcript.cards()[-1]
    assert card.sources.note.text() == NOTHING_RELEVANT and card.sources.isVisible()


def test_stop_while_searching_sends_nothing_to_the_model(docs_app: DocsApp, tmp_path: Path) -> None:
    app = docs_app
    app.window.new_chat()
    app.drop(write_notes(tmp_path / "manuals"))
    app.wait_indexed(3)
    before = len(app.backend.requests)
    app.window.composer.editor.setPlainText("How long is the warranty?")
    app.qtbot.keyClick(app.window.composer.editor, Qt.Key.Key_Return)
    assert app.window.session.busy and app.window.session.live is not None
    assert app.window.session.live.pending is not None  # the search has not answered yet
    app.window.session.stop()
    assert not app.window.session.busy
    assert app.messages()[-1].status is MessageStatus.CANCELLED
    app.qtbot.wait(300)  # the search answer arrives later and must be ignored
    assert len(app.backend.requests) == before


def test_new_chats_answer_from_the_documents_last_used_and_can_turn_them_off(docs_app: DocsApp, tmp_path: Path) -> None:
    app = docs_app
    app.window.new_chat()
    app.drop(write_notes(tmp_path / "manuals"))
    app.wait_indexed(3)
    app.send("How long is the warranty?")
    app.window.new_chat()  # the rule: a new chat uses the documents of the chat you were in, and says so
    assert app.window.composer.documents_button.text() == f"Documents: {DEFAULT_COLLECTION}"
    assert app.window.session.conversation().collections == (DEFAULT_COLLECTION,)
    # The menu lists the collection; unchecking it makes this chat a plain chat.
    app.window._fill_documents_menu()
    action = next(a for a in app.window.composer.documents_menu.actions() if a.text() == DEFAULT_COLLECTION)
    action.setChecked(False)
    assert app.window.composer.documents_button.text() == "Documents: off"
    app.send("How long is the warranty?")
    assert app.backend.requests[-1].messages[-1].content == "How long is the warranty?"
    assert app.messages()[-1].sources is None
    assert not app.window.transcript.cards()[-1].sources.isVisible()
    app.window.new_chat()  # …and the next new chat follows: off
    assert app.window.composer.documents_button.text() == "Documents: off"
    app.window._fill_documents_menu()
    action = next(a for a in app.window.composer.documents_menu.actions() if a.text() == DEFAULT_COLLECTION)
    action.setChecked(True)
    conversation = app.window.session.conversation()
    assert conversation is not None and conversation.collections == (DEFAULT_COLLECTION,)


def test_documents_window_lists_files_and_problems_and_pauses(docs_app: DocsApp, tmp_path: Path) -> None:
    app = docs_app
    folder = write_notes(tmp_path / "manuals")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.7\nthis is not really a PDF")
    (folder / "photo.jpg").write_bytes(b"\xff\xd8\xff")
    dialog = app.window.open_documents()
    assert isinstance(dialog, DocumentsDialog)
    dialog.add_paths([str(folder)])
    app.wait_indexed(3)
    app.qtbot.waitUntil(lambda: dialog.tree.topLevelItemCount() >= 4, timeout=30_000)
    rows = {
        dialog.tree.topLevelItem(i).text(0): dialog.tree.topLevelItem(i).text(4)
        for i in range(dialog.tree.topLevelItemCount())
    }
    assert rows["warranty.md"] == "Indexed"
    assert rows["broken.pdf"] == "Damaged or unreadable"
    assert "photo.jpg" not in rows  # an unsupported file inside a folder is skipped, not an error
    assert "MiniLM" in dialog.model_label.text() or "minilm" in dialog.model_label.text().lower()

    dialog.toggle_pause()
    assert app.docs.paused and dialog.pause_button.text() == "Resume"
    dialog.toggle_pause()
    assert not app.docs.paused and dialog.pause_button.text() == "Pause"

    dialog.tree.topLevelItem(0).setSelected(True)
    removed = dialog.tree.topLevelItem(0).text(0)
    with app.qtbot.waitSignal(app.docs.documentsChanged, timeout=10_000):
        dialog.remove_selected()
    assert removed not in {d.name for d in app.docs.documents}


def test_documents_window_fills_while_indexing_and_tells_same_named_files_apart(
    docs_app: DocsApp, tmp_path: Path
) -> None:
    """Queued files are rows at once ("Waiting"), not "No documents yet" until the end; two report.md files from
    different folders are told apart by their folder."""
    app = docs_app
    root = tmp_path / "reports"
    for year, text in (("2023", "Revenue in 2023 was four million."), ("2024", "Revenue in 2024 was six million.")):
        (root / year).mkdir(parents=True)
        (root / year / "report.md").write_text(f"# Report\n\n{text}\n", encoding="utf-8")
    write_notes(root / "2024")
    dialog = app.window.open_documents()
    assert isinstance(dialog, DocumentsDialog)
    app.docs.pause()  # hold the queue so its state can be looked at
    dialog.add_paths([str(root)])

    def rows() -> dict[str, str]:
        items = (dialog.tree.topLevelItem(i) for i in range(dialog.tree.topLevelItemCount()))
        return {item.text(0): item.text(4) for item in items}

    app.qtbot.waitUntil(lambda: len(rows()) == 5, timeout=30_000)
    assert set(rows().values()) == {"Waiting"}
    assert {"report.md — 2023", "report.md — 2024", "warranty.md"} <= set(rows())
    assert dialog.empty_label.isHidden()
    tips = {dialog.tree.topLevelItem(i).toolTip(0) for i in range(5)}
    assert str(root / "2023" / "report.md") in tips

    seen: list[dict[str, str]] = []
    app.docs.progress.connect(lambda _progress: seen.append(rows()))  # after the dialog's own slot
    app.docs.resume()
    app.wait_indexed(5)
    app.qtbot.waitUntil(lambda: set(rows().values()) == {"Indexed"}, timeout=30_000)
    assert {"report.md — 2023", "report.md — 2024"} <= set(rows())
    # while indexing ran, the table named the file in progress among the waiting ones
    assert any(list(r.values()).count("Indexing…") == 1 and "Waiting" in r.values() and len(r) == 5 for r in seen), seen


def test_a_dropped_folder_is_watched_for_new_changed_and_deleted_files(docs_app: DocsApp, tmp_path: Path) -> None:
    app = docs_app
    folder = write_notes(tmp_path / "manuals")
    app.window.new_chat()
    app.drop(folder)
    app.wait_indexed(3)
    (folder / "descaling.md").write_text("# Descaling\n\nDescale the kettle with citric acid every month.\n")
    app.qtbot.waitUntil(
        lambda: any(d.name == "descaling.md" and d.status == "ok" for d in app.docs.documents), timeout=30_000
    )
    (folder / "recipes.md").unlink()
    app.qtbot.waitUntil(lambda: "recipes.md" not in {d.name for d in app.docs.documents}, timeout=30_000)
    app.backend.script.answer = "Use citric acid [1]."
    app.send("How do I descale the kettle?")
    assert "citric acid" in app.backend.requests[-1].messages[-1].content


def test_the_embedding_model_is_chosen_in_settings(docs_app: DocsApp, qtbot: Any) -> None:
    from enclave.models.installed import ModelRegistry, import_model
    from enclave.ui.settings_dialog import SettingsDialog

    app = docs_app
    registry = ModelRegistry(app_paths().data / "models.json")
    model = import_model(registry, app.minilm)
    assert model.role == "embedding"
    dialog = SettingsDialog(Settings(), embedding_models=[(model.id, model.name)], embedding_active=None)
    qtbot.addWidget(dialog)
    assert dialog.embedding.currentIndex() == 0 and dialog.chosen_embedding is None
    dialog.embedding.setCurrentIndex(1)
    assert dialog.embedding_changed() and dialog.chosen_embedding == model.id

    # What the window does with the choice: the documents thread switches models (or to keywords only).
    with qtbot.waitSignal(app.docs.embedderChanged, timeout=30_000):
        app.docs.start()
    with qtbot.waitSignal(app.docs.embedderChanged, timeout=30_000) as changed:
        app.window._use_embedding_model(None)
    assert changed.args[0] is None
    with qtbot.waitSignal(app.docs.embedderChanged, timeout=30_000) as changed:
        app.window._use_embedding_model(model.path)
    assert changed.args[0] is not None and changed.args[0].dimension == 384


def test_distinct_names_add_just_enough_folders() -> None:
    names = distinct_names(
        ["/a/x/2023/report.pdf", "/a/y/2023/report.pdf", "/a/2024/report.pdf", "/b/notes.md", "report.pdf"]
    )
    assert names["/b/notes.md"] == "notes.md"
    assert names["/a/x/2023/report.pdf"] == "report.pdf — x/2023"
    assert names["/a/y/2023/report.pdf"] == "report.pdf — y/2023"
    assert names["/a/2024/report.pdf"] == "report.pdf — a/2024"
    assert names["report.pdf"] == "report.pdf"  # nothing above it to show

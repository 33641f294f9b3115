"""The main window: chats on the left, the conversation in the middle, model and context state at the bottom."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QByteArray, Qt, QTimer, QUrl, Signal, Slot
from PySide6.QtGui import QAction, QCloseEvent, QDesktopServices, QDragEnterEvent, QDropEvent, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QFileDialog,
    QInputDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from enclave.docs import DEFAULT_COLLECTION
from enclave.engine.types import GenerationStats, ModelInfo
from enclave.models.hardware_child import last_probe

# The model manager (this, and the download worker below) is imported with the window, not when Models first opens:
# importing it then stalled the GUI thread 150-190 ms (tests/test_ui_responsive.py), more than it costs the first paint.
from enclave.models.recommend import Recommendation
from enclave.paths import app_paths
from enclave.settings.settings import Settings, SettingsStore
from enclave.storage.chats import ChatStore, MessageSource
from enclave.ui.chat_session import ChatSession
from enclave.ui.composer import Composer
from enclave.ui.conversations import ConversationPanel
from enclave.ui.header import ChatHeader, EmptyChat
from enclave.ui.style import apply_appearance
from enclave.ui.transcript import Transcript
from enclave.ui.welcome import WelcomePage
from enclave.usecases.loading import LoadGuard, load_request, model_overrides
from enclave.usecases.models import activate_first_embedder, choose_embedder, import_file, read_registry
from enclave.workers.api_server_worker import ApiServerController
from enclave.workers.docs_worker import DocsController
from enclave.workers.download_worker import DownloadController
from enclave.workers.engine_worker import EngineController
from enclave.workers.tasks import URGENT, TaskRunner

if TYPE_CHECKING:
    from enclave.docs.ingest import IngestProgress
    from enclave.models.installed import ModelRegistry
    from enclave.ui.documents_dialog import DocumentsDialog

log = logging.getLogger(__name__)


class MainWindow(QMainWindow):
    recommendation_ready = Signal()

    def __init__(
        self,
        store: ChatStore,
        controller: EngineController,
        settings_store: SettingsStore,
        settings: Settings,
        documents: DocsController | None = None,
    ) -> None:
        super().__init__()
        self.setWindowTitle("Enclave")
        self.resize(1180, 780)
        self.store = store
        self.controller = controller
        self.settings_store = settings_store
        self.settings = settings
        self._load_started = 0.0
        self._load_guard = LoadGuard()  # a model that crashes the engine while loading is not reopened at start
        self._load_fraction: float | None = None  # of the load in progress, once llama.cpp reports it
        self._loading_name = ""
        self._previous_model: str | None = None
        self._remember_on_load: str | None = None  # becomes settings.model_path once it has loaded
        self._reading_without_model = False  # a past chat picked from the list while no model is loaded
        self._last_collections: tuple[str, ...] = ()  # documents last added or used: new chats answer from them
        self.downloads: DownloadController | None = None  # created when the Models dialog first opens
        self.recommendation: Recommendation | None = None  # for the first-run page, computed in the background
        self.documents = documents
        self.documents_dialog: DocumentsDialog | None = None
        # Model files and the installed-model list are read on worker threads, never on this one.
        self.tasks = TaskRunner(self, name="enclave-window-tasks")
        self.registry: ModelRegistry | None = None  # the installed models as last read (refresh_installed)
        self._open_request = 0  # a model import then load is dropped when another load was asked for meanwhile
        self._models_opening = False
        self._installed_shown: list[tuple[str, str]] | None = None  # what the model picker lists

        # --- widgets ---
        self.conversations = ConversationPanel(self)
        self.transcript = Transcript(self)
        self.composer = Composer(self)
        self.welcome = WelcomePage(self)
        chat_page = QWidget(self)
        chat_layout = QVBoxLayout(chat_page)
        chat_layout.setContentsMargins(0, 0, 0, 0)
        chat_layout.setSpacing(0)
        self.header = ChatHeader(self)
        self.empty_chat = EmptyChat(self)
        self.chat_body = QStackedWidget(self)
        self.chat_body.addWidget(self.empty_chat)
        self.chat_body.addWidget(self.transcript)
        chat_layout.addWidget(self.header)
        chat_layout.addWidget(self.chat_body, 1)
        chat_layout.addWidget(self.composer)
        self.chat_page = chat_page
        self.pages = QStackedWidget(self)
        self.pages.addWidget(self.welcome)
        self.pages.addWidget(chat_page)
        splitter = QSplitter(Qt.Orientation.Horizontal, self)
        splitter.addWidget(self.conversations)
        splitter.addWidget(self.pages)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([240, 940])
        self.setCentralWidget(splitter)

        # --- status bar ---
        self.model_label = QLabel("No model", self)
        self.model_label.setAccessibleName("Model in use")
        self.speed_label = QLabel(self)
        self.speed_label.setAccessibleName("Speed of the last answer")
        self.load_progress = QProgressBar(self)
        self.load_progress.setRange(0, 0)
        self.load_progress.setMaximumWidth(120)
        self.load_progress.setTextVisible(False)
        self.load_progress.setAccessibleName("Model loading progress")
        self.load_progress.hide()
        self.cancel_load_button = QPushButton("Cancel", self)
        self.cancel_load_button.setToolTip("Stop loading this model (Esc)")
        self.cancel_load_button.clicked.connect(self.cancel_load)
        self.cancel_load_button.hide()
        self.context_gauge = QProgressBar(self)
        self.context_gauge.setAccessibleName("How full the model's context is")
        self.context_gauge.setMinimumWidth(210)
        self.context_gauge.setFormat("Context %v / %m")
        self.context_gauge.setRange(0, 1)
        self.context_gauge.setValue(0)
        self.context_gauge.setTextVisible(True)
        self.context_gauge.hide()  # shown once a model (and so a context size) exists
        self.indexing_button = QPushButton(self)  # "Indexing 3 / 10": shown while documents are being indexed
        self.indexing_button.setFlat(True)
        self.indexing_button.setAccessibleName("Document indexing progress; opens Documents")
        self.indexing_button.clicked.connect(lambda: self.open_documents())
        self.indexing_button.hide()
        bar = self.statusBar()
        bar.addWidget(self.model_label, 1)
        bar.addPermanentWidget(self.indexing_button)
        bar.addPermanentWidget(self.load_progress)
        bar.addPermanentWidget(self.cancel_load_button)
        bar.addPermanentWidget(self.speed_label)
        bar.addPermanentWidget(self.context_gauge)
        # The local API server (Settings → Local API server; off by default), on the same engine as the chats.
        self.api_label = QLabel(self)
        self.api_label.setAccessibleName("Local API server activity")
        self.api_label.hide()
        bar.addPermanentWidget(self.api_label)
        self.api_server = ApiServerController(controller, self)
        self.api_server.activityChanged.connect(self._show_api_activity)
        self.api_server.failed.connect(lambda message: self.statusBar().showMessage(message, 15000))
        self.api_server.apply(settings)
        self._show_api_activity(0, 0)

        self.session = ChatSession(store, controller, self.transcript, self._answer_settings, self, documents)
        self._load_timer = QTimer(self)
        self._load_timer.setInterval(1000)
        self._load_timer.timeout.connect(self._show_load_progress)

        self.apply_appearance(settings.appearance)
        app = QApplication.instance()
        if isinstance(app, QApplication):  # "Same as the system" follows a change of the desktop's scheme
            app.styleHints().colorSchemeChanged.connect(self._on_color_scheme)
        self.setAcceptDrops(True)  # drop a .gguf to open it, documents or folders to index them
        self._make_actions()
        self._connect()
        self._refresh_conversations()
        if self.settings.window_geometry:
            self.restoreGeometry(QByteArray.fromBase64(self.settings.window_geometry.encode()))
        recent = self.store.list_conversations()
        if recent:
            self.session.open_conversation(recent[0].id)
            self._last_collections = recent[0].collections
        self._update_page()
        self.refresh_installed()

    def _answer_settings(self) -> Settings:
        """Settings for the next answer: the composer's thinking budget, when one is chosen, wins."""
        budget = self.composer.think_budget()
        return self.settings if budget is None else replace(self.settings, think_budget=budget)

    # --- setup ------------------------------------------------------------------------------------------------

    def _action(
        self, text: str, shortcut: QKeySequence | QKeySequence.StandardKey | str | None, slot: object
    ) -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        action.triggered.connect(slot)
        self.addAction(action)
        return action

    def _make_actions(self) -> None:
        self.open_action = self._action("Open model…", QKeySequence.StandardKey.Open, self.choose_model)
        self.new_action = self._action("New chat", "Ctrl+N", self.new_chat)
        self.export_action = self._action("Export chat…", "Ctrl+E", self.export_current)
        self.settings_action = self._action("Settings…", "Ctrl+,", self.open_settings)
        self.models_action = self._action("Models…", "Ctrl+M", lambda: self.open_models())
        self.documents_action = self._action("Documents…", "Ctrl+D", lambda: self.open_documents())
        # A lambda: QAction.triggered passes ``checked`` (False), which add_documents would take for its paths.
        self.add_documents_action = self._action("Add documents…", "Ctrl+Shift+D", lambda: self.add_documents())
        self.find_action = self._action("Search chats", QKeySequence.StandardKey.Find, self.focus_search)
        self.stop_action = self._action("Stop", "Esc", self.escape)
        self.quit_action = self._action("Quit", QKeySequence.StandardKey.Quit, self.close)
        file_menu = self.menuBar().addMenu("&File")
        for action in (self.new_action, self.open_action, self.export_action):
            file_menu.addAction(action)
        file_menu.addSeparator()
        file_menu.addAction(self.add_documents_action)
        file_menu.addAction(self.documents_action)
        file_menu.addSeparator()
        file_menu.addAction(self.models_action)
        file_menu.addAction(self.settings_action)
        file_menu.addSeparator()
        file_menu.addAction(self.quit_action)
        chat_menu = self.menuBar().addMenu("&Chat")
        chat_menu.addAction(self.find_action)
        chat_menu.addAction(self.stop_action)

    def _connect(self) -> None:
        c = self.controller
        c.modelLoading.connect(self._on_model_loading)
        c.loadProgress.connect(self._on_load_progress)
        c.modelLoaded.connect(self._on_model_loaded)
        c.modelLoadFailed.connect(self._on_model_failed)
        c.promptProgress.connect(self._on_prompt_progress)
        self.welcome.openModelRequested.connect(self.choose_model)
        picker = self.header.picker
        picker.modelChosen.connect(self._use_model)
        picker.openRequested.connect(self.choose_model)
        picker.manageRequested.connect(lambda: self.open_models())
        picker.menu_.aboutToShow.connect(self._fill_model_picker)
        self.empty_chat.exampleChosen.connect(self._ask_example)
        self.welcome.downloadRequested.connect(self._download_recommended)
        self.composer.sendRequested.connect(self._send)
        self.composer.stopRequested.connect(self.session.stop)
        self.composer.systemPromptRequested.connect(self.edit_system_prompt)
        self.session.busyChanged.connect(self.composer.set_busy)
        if self.documents is not None:
            self.session.busyChanged.connect(lambda _busy: self._on_index_progress(self.documents.progress_state))
        self.session.statsChanged.connect(self._on_stats)
        self.session.conversationsChanged.connect(self._refresh_conversations)
        self.session.conversationOpened.connect(self._on_conversation_opened)
        self.session.problem.connect(lambda text: self.statusBar().showMessage(text, 8000))
        panel = self.conversations
        panel.conversationSelected.connect(self._open_conversation)
        panel.conversationActivated.connect(self._activate_conversation)
        panel.newRequested.connect(self.new_chat)
        panel.renameRequested.connect(self.rename_conversation)
        panel.deleteRequested.connect(self.delete_conversation)
        panel.exportRequested.connect(self.export_conversation)
        panel.searchChanged.connect(lambda _text: self._refresh_conversations())
        self.session.editRequested.connect(self.begin_edit)
        self.session.regenerateRequested.connect(self.regenerate)
        self.session.sourceOpenRequested.connect(self.open_source)
        self.composer.documents_menu.aboutToShow.connect(self._fill_documents_menu)
        if self.documents is not None:
            self.documents.progress.connect(self._on_index_progress)
            self.documents.ingestPaused.connect(lambda: self._on_index_progress(self.documents.progress_state))
            self.documents.ingestFinished.connect(self._on_index_finished)
            self.documents.error.connect(lambda message: self.statusBar().showMessage(message, 20000))

    # --- models -----------------------------------------------------------------------------------------------

    def load_model(self, path: str, *, remember: bool = False) -> None:
        """Load ``path`` with the global settings, overridden by that model's own (Models dialog) if it has any.

        ``remember``: the user chose this model; it is opened at the next start, but only once it has loaded here, so
        a model that crashes llama.cpp never becomes the one every start opens.
        """

        self._open_request += 1  # supersedes an import still checking its file (_import_and_load)
        if remember:
            self._remember_on_load = path
        self._load_guard.begin(path)

        # The same load `enclave chat` asks for: settings, then this model's own overrides; the rest is Auto and the
        # engine's load plan decides (the status bar then says where the model runs).
        self.controller.load_model(load_request(path, self.settings, model_overrides(path)))

    @Slot()
    def choose_model(self) -> None:
        start = str(Path(self.settings.model_path).parent) if self.settings.model_path else str(Path.home())
        path, _ = QFileDialog.getOpenFileName(self, "Open a model", start, "GGUF models (*.gguf);;All files (*)")
        if path:
            # Listed in Models like a dropped file; a file that can't be listed still gets the engine's own word.
            self._import_and_load(path, refuse=False)

    @staticmethod
    def _dropped_model(event: QDragEnterEvent | QDropEvent) -> str | None:
        for url in event.mimeData().urls():
            if url.isLocalFile() and url.toLocalFile().lower().endswith(".gguf"):
                return url.toLocalFile()
        return None

    def _dropped_documents(self, event: QDragEnterEvent | QDropEvent) -> list[str]:
        if self.documents is None:
            return []
        files = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        return [f for f in files if not f.lower().endswith(".gguf")]

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if self._dropped_model(event) or self._dropped_documents(event):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event: QDropEvent) -> None:
        path = self._dropped_model(event)
        if path is None:
            documents = self._dropped_documents(event)
            if not documents:
                event.ignore()
                return
            event.acceptProposedAction()
            self.add_documents(documents)
            return
        event.acceptProposedAction()
        self._open_model_file(path)

    def _open_model_file(self, path: str) -> None:
        """A file opened or dropped becomes an imported (unverified) model, listed in Models, and is loaded."""
        self._import_and_load(path, refuse=True)

    def _import_and_load(self, path: str, *, refuse: bool) -> None:
        """Check and list ``path`` on a worker thread (reading a large header takes a while), then load it.

        ``refuse``: a file the import rejects is not loaded and the reason is shown; otherwise it is loaded anyway and
        the engine says what is wrong with it."""
        self._open_request += 1
        request = self._open_request
        checking = f"Checking {Path(path).name}…"
        self.statusBar().showMessage(checking)
        self.welcome.show_loading(checking)
        self.tasks.run(
            import_file,
            app_paths().models_file,
            Path(path),
            on_done=partial(self._on_model_imported, path, request),
            on_error=partial(self._on_model_import_failed, path, request, refuse),
            priority=URGENT,
        )

    def _on_model_imported(self, path: str, request: int, imported: tuple[ModelRegistry, object]) -> None:
        self._set_installed(imported[0])
        self._checked(path)
        if request == self._open_request:  # nothing else was opened meanwhile
            self.load_model(path, remember=True)

    def _on_model_import_failed(self, path: str, request: int, refuse: bool, exc: BaseException) -> None:
        from enclave.models.installed import ModelError

        self._checked(path)
        if request != self._open_request:
            return
        if not refuse:
            if not isinstance(exc, ModelError):
                log.warning("could not list %s among the installed models: %s", path, exc)
            self.load_model(path, remember=True)
            return
        text = str(exc) if isinstance(exc, ModelError) else f"Could not open {Path(path).name}: {exc}"
        self.statusBar().showMessage(text, 15000)
        self.welcome.show_error(text)

    def _checked(self, path: str) -> None:
        """The file has been checked: its "Checking …" message goes (another message stays)."""
        if self.statusBar().currentMessage() == f"Checking {Path(path).name}…":
            self.statusBar().clearMessage()

    @Slot(str)
    def _on_model_loading(self, path: str) -> None:
        self._load_started = time.monotonic()
        self._loading_name = Path(path).name
        self._load_fraction = None
        self.load_progress.setRange(0, 0)  # busy until llama.cpp reports how much it has read
        self.load_progress.show()
        self.cancel_load_button.show()
        self._load_timer.start()
        self._show_load_progress()
        self._update_page()

    def _fill_model_picker(self) -> None:
        """The installed models as last read, at once; the menu is filled again when a fresh read has answered."""
        self._show_installed()
        self.refresh_installed()

    def refresh_installed(self) -> None:
        """Read the installed-model list on a worker thread; the picker and Settings use what was read last."""
        self.tasks.run(
            read_registry, app_paths().models_file, on_done=self._set_installed, on_error=self._on_installed_unreadable
        )

    def _set_installed(self, registry: ModelRegistry) -> None:
        self.registry = registry
        self._show_installed()

    def _on_installed_unreadable(self, exc: BaseException) -> None:
        log.warning("could not read the installed models: %s", exc)  # the picker keeps what it last showed

    def _show_installed(self) -> None:
        models = self.registry.models() if self.registry is not None else []
        installed = [(m.name, m.path) for m in models if m.role == "chat"]
        if installed != self._installed_shown:  # an open menu is only rebuilt when the list has changed
            self._installed_shown = installed
            self.header.picker.set_installed(installed)

    @Slot(str)
    def _ask_example(self, text: str) -> None:
        self.composer.editor.setPlainText(text)
        self._send(text)

    @Slot(float)
    def _on_load_progress(self, fraction: float) -> None:
        if not self.load_progress.isVisible():
            return  # a late report of a load that has already ended
        self._load_fraction = fraction
        self.load_progress.setRange(0, 100)
        self.load_progress.setValue(round(fraction * 100))
        self._show_load_progress()

    @Slot()
    def cancel_load(self) -> None:
        if self.controller.loading:
            self.controller.cancel_load()
            self.model_label.setText(f"Cancelling the load of {self._loading_name}…")

    def _show_load_progress(self) -> None:
        elapsed = time.monotonic() - self._load_started
        fraction = self._load_fraction
        done = f"{fraction:.0%} · " if fraction is not None else ""
        text = f"Loading {self._loading_name}… {done}{elapsed:.0f} s"
        self.model_label.setText(text)
        self.header.show_model(None, text)
        self.welcome.show_loading(text)

    @Slot(object)
    def _on_model_loaded(self, info: ModelInfo) -> None:
        self._load_guard.succeeded()
        remember = self._remember_on_load
        if remember is not None and Path(remember) == Path(info.path):
            self._remember_on_load = None
            if self.settings.model_path != remember:
                self._save_settings(replace(self.settings, model_path=remember))
        self._load_timer.stop()
        self.load_progress.hide()
        self.cancel_load_button.hide()
        self.welcome.reset()
        self.header.show_model(info)
        self.empty_chat.set_model(info.name, reasoning=info.reasoning)
        self.model_label.setText(f"{info.name} · {info.placement or info.chat_format}")
        self.model_label.setToolTip(
            f"{info.path}\nRuns on: {info.placement}\nPrompt format: {info.chat_format} ({info.chat_format_source})\n"
            f"Context: {info.n_ctx:,} tokens (trained for {info.n_ctx_train:,}) · loaded in {info.load_seconds:.1f} s"
        )
        self._show_context(0, info.n_ctx)
        self.context_gauge.show()
        if self._previous_model and self._previous_model != info.name and self.transcript.cards():
            self.transcript.add_note(f"Switched to {info.name}: the next answers come from it.")
        self._previous_model = info.name
        if self.session.conversation_id is None:
            recent = self.store.list_conversations()
            if recent:
                self.session.open_conversation(recent[0].id)
            else:
                self.new_chat()
        self._update_page()
        self.composer.editor.setFocus()

    @Slot(str, bool)
    def _on_model_failed(self, message: str, crashed: bool = False) -> None:
        self._load_guard.failed(crashed=crashed, message=message)
        self.show_model_problem(message)

    def show_model_problem(self, message: str) -> None:
        """No model is in use, and why (a failed load, or a model not reopened at start after a crash)."""
        self._load_timer.stop()
        self.load_progress.hide()
        self.cancel_load_button.hide()
        self.model_label.setText("No model")
        self.header.show_model(self.controller.model)
        self.welcome.show_error(message)
        self.statusBar().showMessage(message, 15000)
        self._update_page()

    @Slot(str, int, int)
    def _on_prompt_progress(self, request_id: str, evaluated: int, total: int, seconds_left: float) -> None:
        """Long prompts (documents, long chats) take a while before the first word: say how far, in the answer
        itself and in the status bar."""
        if total > 256 and evaluated < total:
            text = f"Reading the conversation ({total:,} tokens)… {100 * evaluated // total} %"
            if seconds_left >= 1:
                text += f", about {round(seconds_left)} s left"
            self.statusBar().showMessage(text, 2000)
            self.session.show_progress(request_id, text)
        elif total > 256:
            self.statusBar().clearMessage()
            self.session.show_progress(request_id, "Read the conversation; the answer starts…")

    def _update_page(self) -> None:
        """The chat needs a model: without one (and none loading) the welcome page says how to get one. Past chats
        stay readable: picking one in the list shows it, and asking there brings the welcome page back."""
        has_model = self.controller.model is not None
        reading = self._reading_without_model and not self.controller.loading
        show_chat = self.session.conversation_id is not None and (has_model or reading)
        self.pages.setCurrentWidget(self.chat_page if show_chat else self.welcome)
        self._update_body()
        if not show_chat:
            self.welcome.focus_first()

    def _update_body(self) -> None:
        """A chat with no messages yet shows the page that helps start one."""
        empty = not self.transcript.cards() and self.controller.model is not None
        self.chat_body.setCurrentWidget(self.empty_chat if empty else self.transcript)

    # --- chats ------------------------------------------------------------------------------------------------

    def _refresh_conversations(self) -> None:
        query = self.conversations.search.text().strip()
        rows = self.store.search_conversations(query) if query else self.store.list_conversations()
        self.conversations.set_conversations(rows, self.session.conversation_id)

    @Slot(int)
    def _open_conversation(self, conversation_id: int) -> None:
        self.composer.cancel_edit()
        self.session.open_conversation(conversation_id)
        self._reading_without_model = self.controller.model is None
        self._update_page()

    @Slot(int)
    def _on_conversation_opened(self, conversation_id: int) -> None:
        self._refresh_conversations()
        self._show_chat_collections()
        self._update_body()
        messages = self.store.messages(conversation_id)
        last = next((m for m in reversed(messages) if m.stats is not None), None)
        if last is not None and last.stats is not None and last.stats.context_size:
            self._show_context(last.stats.context_used, last.stats.context_size)
        elif self.controller.model is not None:
            self._show_context(0, self.controller.model.n_ctx)

    @Slot(int)
    def _activate_conversation(self, conversation_id: int) -> None:
        self._open_conversation(conversation_id)
        if self.pages.currentWidget() is self.chat_page:
            self.composer.editor.setFocus(Qt.FocusReason.OtherFocusReason)

    def _needs_model(self) -> None:
        """Asked for a chat with no model: the welcome page explains how to get one (nothing is saved)."""
        self._reading_without_model = False
        self.welcome.show_needs_model()
        self._update_page()

    @Slot()
    def new_chat(self) -> None:
        """Start a chat. It answers from the same documents as the chat you were in (or the documents you last
        added), shown on the composer's Documents button; an empty chat is reused rather than saved again."""
        if self.session.busy:
            return
        self.composer.cancel_edit()
        if self.controller.model is None and not self.controller.loading:
            self._needs_model()
            return
        collections = self._chat_collections() or self._last_collections
        current = self.session.conversation()
        if current is not None and not self.store.messages(current.id):
            conversation_id = current.id  # already a blank chat: don't pile up empty ones
        else:
            conversation_id = self.session.new_conversation()
        if collections and not self._chat_collections():
            self.store.set_collections(conversation_id, list(collections))
        self._show_chat_collections()
        self._update_page()
        self.composer.editor.setFocus()

    @Slot(str)
    def _send(self, text: str) -> None:
        if self.controller.model is None:
            self._needs_model()  # the typed text stays in the composer
            return
        editing = self.composer.editing_message_id
        if self.session.send(text, replace_from=editing):
            self.composer.finish_edit()
            self.composer.editor.clear()
            self._update_page()

    @Slot(int)
    def regenerate(self, message_id: int) -> None:
        """Write an answer again; when later messages would be replaced, say how many and ask first."""
        later = self.session.messages_after(message_id)
        if later and not self.session.busy:
            noun = "message" if later == 1 else "messages"
            answer = QMessageBox.question(
                self,
                "Regenerate this answer?",
                f"Regenerating this answer also deletes the {later} later {noun} in this chat. This cannot be undone.",
                QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel,
                QMessageBox.StandardButton.Cancel,
            )
            if answer != QMessageBox.StandardButton.Yes:
                return
        self.session.regenerate(message_id)

    @Slot(int)
    def begin_edit(self, message_id: int) -> None:
        if self.session.busy or self.session.conversation_id is None:
            return
        message = next((m for m in self.store.messages(self.session.conversation_id) if m.id == message_id), None)
        if message is not None:
            self.composer.begin_edit(message_id, message.content)

    @Slot()
    def escape(self) -> None:
        search = self.conversations.search
        if search.hasFocus() and search.text():
            search.clear()  # Esc in the search box clears it (and lists every chat again)
            return
        if self.controller.loading:
            self.cancel_load()
        elif self.session.busy:
            self.session.stop()
        else:
            self.composer.cancel_edit()

    @Slot()
    def focus_search(self) -> None:
        self.conversations.search.setFocus()
        self.conversations.search.selectAll()

    @Slot(int)
    def rename_conversation(self, conversation_id: int) -> None:
        current = self.store.conversation(conversation_id).title
        title, ok = QInputDialog.getText(self, "Rename chat", "Title:", text=current)
        if ok and title.strip():
            self.store.rename_conversation(conversation_id, title.strip())
            self._refresh_conversations()

    @Slot(int)
    def delete_conversation(self, conversation_id: int) -> None:
        title = self.store.conversation(conversation_id).title
        question = f"Delete “{title}” and all its messages? This cannot be undone."
        answer = QMessageBox.question(self, "Delete chat", question)
        if answer == QMessageBox.StandardButton.Yes:
            self.session.delete_conversation(conversation_id)
            self._update_page()

    @Slot()
    def export_current(self) -> None:
        if self.session.conversation_id is not None:
            self.export_conversation(self.session.conversation_id)

    @Slot(int)
    def export_conversation(self, conversation_id: int) -> None:
        title = self.store.conversation(conversation_id).title
        safe = "".join(ch if ch.isalnum() or ch in " -_" else "_" for ch in title).strip() or "chat"
        path, _ = QFileDialog.getSaveFileName(
            self, "Export chat", str(Path.home() / f"{safe}.md"), "Markdown (*.md);;JSON (*.json)"
        )
        if not path:
            return
        try:
            from enclave.storage.export import export_conversation

            export_conversation(self.store, conversation_id, Path(path))
        except (OSError, ValueError) as exc:
            QMessageBox.warning(self, "Export failed", f"Could not write {path}: {exc}")
        else:
            self.statusBar().showMessage(f"Exported to {path}", 6000)

    @Slot()
    def edit_system_prompt(self) -> None:
        conversation = self.session.conversation()
        if conversation is None:
            conversation = self.store.conversation(self.session.new_conversation())
        text, ok = QInputDialog.getMultiLineText(
            self, "System prompt", "Instructions the model follows in this chat:", conversation.system_prompt
        )
        if ok:
            self.store.set_system_prompt(conversation.id, text)

    def _show_context(self, used: int, size: int) -> None:
        """ "Context 1,234 / 4,096": QProgressBar's own %v/%m placeholders print no thousands separators."""
        used = min(used, size)
        self.context_gauge.setRange(0, max(1, size))
        self.context_gauge.setValue(used)
        self.context_gauge.setFormat(f"Context {used:,} / {size:,}")
        self.context_gauge.setToolTip(f"{used:,} of the model's {size:,} context tokens are in use")

    @Slot(object)
    def _on_stats(self, stats: GenerationStats) -> None:
        if stats.context_size:
            self._show_context(stats.context_used, stats.context_size)
        if stats.tokens_per_second:
            self.speed_label.setText(f"{stats.tokens_per_second:.1f} tok/s")

    # --- models -----------------------------------------------------------------------------------------------

    def fetch_recommendation(self) -> None:
        """Find the DeepSeek R1 for this computer in the background, for the first-run page."""
        from enclave.workers.recommendation_worker import RecommendationFetcher

        self._fetcher = RecommendationFetcher(app_paths().models_dir, self)
        self._fetcher.ready.connect(self._on_recommendation)
        self._fetcher.start()

    @Slot(object)
    def _on_recommendation(self, recommendation: object) -> None:
        if isinstance(recommendation, Recommendation):
            self.recommendation = recommendation
            entry = recommendation.entry
            self.welcome.show_recommendation(entry.display_name, entry.total_size / 1e9, recommendation.estimate.reason)
        self.recommendation_ready.emit()

    @Slot()
    def _download_recommended(self) -> None:
        self.open_models(start_recommended=self.recommendation is not None)

    @Slot()
    def open_models(self, start_recommended: bool = False) -> None:
        """File → Models: opened as soon as the installed-model list has been read (on a worker thread)."""
        if self._models_opening:
            return
        self._models_opening = True
        self.tasks.run(
            read_registry,
            app_paths().models_file,
            on_done=partial(self._show_models, start_recommended),
            on_error=self._on_models_unreadable,
            priority=URGENT,
        )

    def _on_models_unreadable(self, exc: BaseException) -> None:
        self._models_opening = False
        self.statusBar().showMessage(f"Could not read the list of installed models: {exc}", 15000)

    def _show_models(self, start_recommended: bool, registry: ModelRegistry) -> None:
        from enclave.ui.models_dialog import ModelsDialog

        self._set_installed(registry)
        paths = app_paths()
        if self.downloads is None:
            self.downloads = DownloadController(paths.models_file, paths.models_dir, self)
        dialog = ModelsDialog(registry, self.downloads, paths.models_dir, self, tasks=self.tasks)
        dialog.useModel.connect(self._use_model)
        dialog.useEmbeddingModel.connect(self._use_embedding_model)
        dialog.downloads.finished.connect(self._on_downloaded)
        if start_recommended and not self.downloads.busy:
            dialog.download_recommended()
        try:
            dialog.exec()
        finally:
            self._models_opening = False
            dialog.downloads.finished.disconnect(self._on_downloaded)
            dialog.deleteLater()
        self.refresh_installed()  # models imported or removed there

    @Slot(object)
    def _on_downloaded(self, model: object) -> None:
        """The first model downloaded from the first-run page is opened right away."""
        from enclave.models.installed import InstalledModel

        if isinstance(model, InstalledModel) and model.role == "chat" and self.controller.model is None:
            self._use_model(model.path)
        if isinstance(model, InstalledModel) and model.role == "embedding" and self.documents is not None:
            # The first embedding model is put to use at once.
            self.tasks.run(
                activate_first_embedder,
                app_paths().models_file,
                model.id,
                self.documents.embedder_info is None,
                on_done=partial(self._on_first_embedder, model.path),
                on_error=self._on_embedder_not_changed,
                priority=URGENT,
            )
        else:
            self.refresh_installed()

    def _on_first_embedder(self, path: str, result: tuple[ModelRegistry, bool]) -> None:
        registry, activated = result
        self._set_installed(registry)
        if activated:
            self._use_embedding_model(path)

    def _on_embedder_not_changed(self, exc: BaseException) -> None:
        self.statusBar().showMessage(f"Could not change the embedding model: {exc}", 10000)

    @Slot(str)
    def _use_model(self, path: str) -> None:
        self.load_model(path, remember=True)

    # --- documents --------------------------------------------------------------------------------------------

    def _chat_collections(self) -> tuple[str, ...]:
        conversation = self.session.conversation()
        return conversation.collections if conversation is not None else ()

    def _show_chat_collections(self) -> None:
        self.composer.set_collections(self._chat_collections())

    def _use_collection(self, name: str, used: bool) -> None:
        """Turn a collection on or off for the current chat (a chat is created when there is none)."""
        conversation = self.session.conversation()
        if conversation is None:
            conversation = self.store.conversation(self.session.new_conversation())
        names = [c for c in conversation.collections if c != name]
        if used:
            names.append(name)
        self.store.set_collections(conversation.id, names)
        self._last_collections = tuple(names)
        self._show_chat_collections()

    @Slot()
    def _fill_documents_menu(self) -> None:
        menu = self.composer.documents_menu
        menu.clear()
        used = self._chat_collections()
        known = sorted({d.collection for d in self.documents.documents} if self.documents is not None else set())
        for name in [*known, *(n for n in used if n not in known)]:
            action = menu.addAction(name)
            action.setCheckable(True)
            action.setChecked(name in used)
            action.toggled.connect(lambda checked, n=name: self._use_collection(n, checked))
        if known or used:
            menu.addSeparator()
        menu.addAction("Add documents…", self.add_documents).setEnabled(self.documents is not None)
        menu.addAction("Manage documents…", lambda: self.open_documents()).setEnabled(self.documents is not None)

    @Slot()
    def add_documents(self, paths: list[str] | None = None) -> None:
        """Index ``paths`` (asked for when None) into the chat's first collection, and use it in this chat."""
        if self.documents is None:
            return
        if paths is None:
            from enclave.ui.documents_dialog import FILE_FILTER

            chosen, _ = QFileDialog.getOpenFileNames(self, "Add documents", str(Path.home()), FILE_FILTER)
            paths = list(chosen)
        if not paths:
            return
        collection = next(iter(self._chat_collections()), DEFAULT_COLLECTION)
        self.documents.add_paths(paths, collection)
        if self.session.conversation_id is not None and collection not in self._chat_collections():
            self._use_collection(collection, True)
        self._last_collections = self._chat_collections() or (collection,)
        count = f"{len(paths)} item{'s' if len(paths) != 1 else ''}"
        where = "this chat and new chats answer from it" if self.session.conversation_id else "new chats answer from it"
        self.statusBar().showMessage(f"Indexing {count} into “{collection}” — {where}", 8000)

    def open_documents(self, collection: str | None = None) -> DocumentsDialog | None:
        if self.documents is None:
            return None
        if self.documents_dialog is None:
            self.documents.start()
            from enclave.ui.documents_dialog import DocumentsDialog

            dialog = DocumentsDialog(self.documents, collection or next(iter(self._chat_collections()), None), self)
            dialog.collectionUsed.connect(lambda name: self._use_collection(name, True))
            dialog.modelsRequested.connect(lambda: self.open_models())
            self.documents_dialog = dialog
        self.documents_dialog.show()
        self.documents_dialog.raise_()
        self.documents_dialog.activateWindow()
        return self.documents_dialog

    @Slot(object)
    def _on_index_progress(self, progress: IngestProgress | None) -> None:
        if progress is None or progress.files_total <= progress.files_done or progress.phase == "idle":
            self.indexing_button.setVisible(self.documents is not None and self.documents.paused)
            self.indexing_button.setText("Indexing paused")
            return
        paused = self.documents is not None and self.documents.paused
        done = f"{progress.files_done:,} / {progress.files_total:,}"
        if paused:
            self.indexing_button.setText(f"Indexing paused · {done}")
        elif self.session.busy:  # indexing waits while the model answers: both want every core
            self.indexing_button.setText(f"Indexing waits for the answer · {done}")
        else:
            self.indexing_button.setText(f"Indexing {done}")
        from enclave.ui.documents_dialog import progress_text

        self.indexing_button.setToolTip(progress_text(progress))
        self.indexing_button.show()

    @Slot()
    def _on_index_finished(self) -> None:
        self.indexing_button.hide()

    @Slot(object)
    def open_source(self, source: MessageSource) -> None:
        """Open a cited file, at its page when the PDF viewer can be told one; say so when the file is gone."""
        if not Path(source.path).exists():
            self.statusBar().showMessage(f"{source.path} is no longer there (moved or deleted).", 10000)
            return
        from enclave.docs.viewer import launch, page_command

        command = page_command(source.path, source.page)
        if command is not None:
            try:
                launch(command)
                return
            except OSError:
                pass  # fall back to the desktop's default application
        if not QDesktopServices.openUrl(QUrl.fromLocalFile(source.path)):
            self.statusBar().showMessage(f"No application could open {source.path}.", 10000)

    # --- settings ---------------------------------------------------------------------------------------------

    @Slot()
    def open_settings(self) -> None:
        # The installed models as last read in the background (refresh_installed). Only in the first moments after
        # the start, before that read has answered, is the small list read here.
        registry = self.registry if self.registry is not None else read_registry(app_paths().models_file)
        embedders = [(m.id, m.name) for m in registry.models() if m.role == "embedding"]
        active = registry.active("embedding")
        model = self.controller.model
        from enclave.ui.settings_dialog import SettingsDialog

        probed = last_probe()  # llama.cpp's devices, from the hardware probe's child process (None until it ran)
        dialog = SettingsDialog(
            self.settings,
            self,
            embedding_models=embedders,
            embedding_active=active.id if active else None,
            placement=model.placement if model is not None else "",
            devices=[(g.device, f"{g.name} ({g.device})") for g in (probed.gpus if probed else ()) if g.device],
        )
        dialog.appearanceChanged.connect(self.apply_appearance)  # previewed live
        accepted = dialog.exec()
        if not accepted or dialog.result_settings is None:
            self.apply_appearance(self.settings.appearance)
        if accepted and dialog.result_settings is not None:
            reload = dialog.model_changed()
            chosen_settings = dialog.result_settings
            model_path = chosen_settings.model_path
            if reload and model_path:  # a new model is remembered once it has loaded
                chosen_settings = replace(chosen_settings, model_path=self.settings.model_path)
            self._save_settings(chosen_settings)
            self.api_server.apply(self.settings)
            self._show_api_activity(0, 0)
            if reload and model_path:
                self.load_model(model_path, remember=True)  # the chat stays; the next answer uses the new model
            if dialog.embedding_changed():
                self.tasks.run(
                    choose_embedder,
                    app_paths().models_file,
                    dialog.chosen_embedding,
                    on_done=self._on_embedder_chosen,
                    on_error=self._on_embedder_not_changed,
                    priority=URGENT,
                )

    def _on_embedder_chosen(self, result: tuple[ModelRegistry, str | None]) -> None:
        registry, path = result
        self._set_installed(registry)
        self._use_embedding_model(path)

    @Slot(str)
    def apply_appearance(self, appearance: str) -> None:
        app = QApplication.instance()
        if isinstance(app, QApplication):
            apply_appearance(app, appearance)

    def _on_color_scheme(self, _scheme: object) -> None:
        if self.settings.appearance == "system":
            self.apply_appearance("system")

    @Slot(str)
    def _use_embedding_model(self, path: str | None) -> None:
        """Documents lacking this model's vectors are re-embedded in the background (files are not read again)."""
        if self.documents is not None:
            self.documents.set_embedding_model(Path(path) if path else None)
            message = (
                f"Documents are re-embedded with {Path(path).name} in the background; search keeps working."
                if path
                else "Document search now matches keywords only."
            )
            self.statusBar().showMessage(message, 8000)

    @Slot(int, int)
    def _show_api_activity(self, running: int, waiting: int) -> None:
        url = self.api_server.url
        self.api_label.setVisible(url is not None)
        if url is None:
            return
        self.api_label.setToolTip(f"Local API server at {url}")
        if running:
            self.api_label.setText("API: answering" + (f" · {waiting} waiting" if waiting else ""))
        else:
            self.api_label.setText("API on")

    def _save_settings(self, settings: Settings) -> None:
        self.settings = settings
        try:
            self.settings_store.save(settings)
        except OSError as exc:
            self.statusBar().showMessage(f"Could not save settings: {exc}", 10000)

    def closeEvent(self, event: QCloseEvent) -> None:
        self.tasks.shutdown()  # an import or a list read still running ends first; its result is dropped
        self.session.shutdown()
        geometry = bytes(self.saveGeometry().toBase64().data()).decode()
        self._save_settings(replace(self.settings, window_geometry=geometry))
        if self.downloads is not None:
            self.downloads.shutdown()  # pauses: the partial file resumes next time
        if self.documents_dialog is not None:
            self.documents_dialog.close()
        if self.documents is not None:
            self.documents.shutdown()  # the queue is kept in the index and resumes next time
        self.api_server.stop()  # before the engine: a request in flight is cancelled, not left waiting
        self.controller.shutdown()
        super().closeEvent(event)

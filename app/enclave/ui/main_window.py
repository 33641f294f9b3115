"""The main window: chats on the left, the conversation in the middle, model and context state at the bottom."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from PySide6.QtCore import QByteArray, Qt, QTimer, Signal, Slot
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDropEvent, QKeySequence
from PySide6.QtWidgets import (
    QFileDialog,
    QInputDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QSplitter,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from enclave.engine.types import GenerationStats, LoadRequest, ModelInfo
from enclave.models.recommend import Recommendation
from enclave.paths import app_paths
from enclave.settings.settings import Settings, SettingsStore
from enclave.storage.chats import ChatStore
from enclave.storage.export import export_conversation
from enclave.ui.chat_session import ChatSession
from enclave.ui.composer import Composer
from enclave.ui.conversations import ConversationPanel
from enclave.ui.settings_dialog import SettingsDialog
from enclave.ui.transcript import Transcript
from enclave.ui.welcome import WelcomePage
from enclave.workers.download_worker import DownloadController
from enclave.workers.engine_worker import EngineController


class MainWindow(QMainWindow):
    recommendation_ready = Signal()

    def __init__(
        self,
        store: ChatStore,
        controller: EngineController,
        settings_store: SettingsStore,
        settings: Settings,
    ) -> None:
        super().__init__()
        self.setWindowTitle("Enclave")
        self.resize(1180, 780)
        self.store = store
        self.controller = controller
        self.settings_store = settings_store
        self.settings = settings
        self._load_started = 0.0
        self._loading_name = ""
        self._previous_model: str | None = None
        self.downloads: DownloadController | None = None  # created when the Models dialog first opens
        self.recommendation: Recommendation | None = None  # for the first-run page, computed in the background

        # --- widgets ---
        self.conversations = ConversationPanel(self)
        self.transcript = Transcript(self)
        self.composer = Composer(self)
        self.welcome = WelcomePage(self)
        chat_page = QWidget(self)
        chat_layout = QVBoxLayout(chat_page)
        chat_layout.setContentsMargins(0, 0, 0, 0)
        chat_layout.setSpacing(0)
        chat_layout.addWidget(self.transcript, 1)
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
        self.load_progress.hide()
        self.context_gauge = QProgressBar(self)
        self.context_gauge.setAccessibleName("How full the model's context is")
        self.context_gauge.setMinimumWidth(210)
        self.context_gauge.setFormat("Context %v / %m")
        self.context_gauge.setRange(0, 1)
        self.context_gauge.setValue(0)
        self.context_gauge.setTextVisible(True)
        self.context_gauge.hide()  # shown once a model (and so a context size) exists
        bar = self.statusBar()
        bar.addWidget(self.model_label, 1)
        bar.addPermanentWidget(self.load_progress)
        bar.addPermanentWidget(self.speed_label)
        bar.addPermanentWidget(self.context_gauge)

        self.session = ChatSession(store, controller, self.transcript, lambda: self.settings, self)
        self._load_timer = QTimer(self)
        self._load_timer.setInterval(1000)
        self._load_timer.timeout.connect(self._show_load_progress)

        self.setAcceptDrops(True)  # drop a .gguf file anywhere on the window to open it
        self._make_actions()
        self._connect()
        self._refresh_conversations()
        if self.settings.window_geometry:
            self.restoreGeometry(QByteArray.fromBase64(self.settings.window_geometry.encode()))
        recent = self.store.list_conversations()
        if recent:
            self.session.open_conversation(recent[0].id)
        self._update_page()

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
        self.find_action = self._action("Search chats", QKeySequence.StandardKey.Find, self.focus_search)
        self.stop_action = self._action("Stop", "Esc", self.escape)
        self.quit_action = self._action("Quit", QKeySequence.StandardKey.Quit, self.close)
        file_menu = self.menuBar().addMenu("&File")
        for action in (self.new_action, self.open_action, self.export_action):
            file_menu.addAction(action)
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
        c.modelLoaded.connect(self._on_model_loaded)
        c.modelLoadFailed.connect(self._on_model_failed)
        c.promptProgress.connect(self._on_prompt_progress)
        self.welcome.openModelRequested.connect(self.choose_model)
        self.welcome.downloadRequested.connect(self._download_recommended)
        self.composer.sendRequested.connect(self._send)
        self.composer.stopRequested.connect(self.session.stop)
        self.composer.systemPromptRequested.connect(self.edit_system_prompt)
        self.session.busyChanged.connect(self.composer.set_busy)
        self.session.statsChanged.connect(self._on_stats)
        self.session.conversationsChanged.connect(self._refresh_conversations)
        self.session.conversationOpened.connect(self._on_conversation_opened)
        self.session.problem.connect(lambda text: self.statusBar().showMessage(text, 8000))
        panel = self.conversations
        panel.conversationSelected.connect(self._open_conversation)
        panel.newRequested.connect(self.new_chat)
        panel.renameRequested.connect(self.rename_conversation)
        panel.deleteRequested.connect(self.delete_conversation)
        panel.exportRequested.connect(self.export_conversation)
        panel.searchChanged.connect(lambda _text: self._refresh_conversations())
        self.session.editRequested.connect(self.begin_edit)

    # --- models -----------------------------------------------------------------------------------------------

    def load_model(self, path: str) -> None:
        """Load ``path`` with the global settings, overridden by that model's own (Models dialog) if it has any."""
        from enclave.models.installed import ModelRegistry

        s = self.settings
        overrides = {}
        registry_path = app_paths().data / "models.json"
        if registry_path.exists():
            model = ModelRegistry(registry_path).find(path)
            overrides = dict(model.overrides) if model is not None else {}
        self.controller.load_model(
            LoadRequest(
                path=path,
                n_ctx=int(overrides.get("context_length", s.context_length)),
                n_gpu_layers=int(overrides.get("gpu_layers", s.gpu_layers)),
                n_threads=s.threads,
                kv_cache_type=str(overrides.get("kv_cache_type", "f16")),
            )
        )

    @Slot()
    def choose_model(self) -> None:
        start = str(Path(self.settings.model_path).parent) if self.settings.model_path else str(Path.home())
        path, _ = QFileDialog.getOpenFileName(self, "Open a model", start, "GGUF models (*.gguf);;All files (*)")
        if path:
            self._save_settings(replace(self.settings, model_path=path))
            self.load_model(path)

    @staticmethod
    def _dropped_model(event: QDragEnterEvent | QDropEvent) -> str | None:
        for url in event.mimeData().urls():
            if url.isLocalFile() and url.toLocalFile().lower().endswith(".gguf"):
                return url.toLocalFile()
        return None

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if self._dropped_model(event):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event: QDropEvent) -> None:
        path = self._dropped_model(event)
        if path is None:
            event.ignore()
            return
        event.acceptProposedAction()
        from enclave.models.installed import ModelError, ModelRegistry, import_model

        try:  # dropped files become imported (unverified) models, listed in Settings → Models
            import_model(ModelRegistry(app_paths().ensure().data / "models.json"), Path(path))
        except ModelError as exc:
            self.statusBar().showMessage(str(exc), 15000)
            self.welcome.show_error(str(exc))
            return
        self._save_settings(replace(self.settings, model_path=path))
        self.load_model(path)

    @Slot(str)
    def _on_model_loading(self, path: str) -> None:
        self._load_started = time.monotonic()
        self._loading_name = Path(path).name
        self.load_progress.show()
        self._load_timer.start()
        self._show_load_progress()
        self._update_page()

    def _show_load_progress(self) -> None:
        elapsed = time.monotonic() - self._load_started
        text = f"Loading {self._loading_name}… {elapsed:.0f} s"
        self.model_label.setText(text)
        self.welcome.show_loading(text)

    @Slot(object)
    def _on_model_loaded(self, info: ModelInfo) -> None:
        self._load_timer.stop()
        self.load_progress.hide()
        self.welcome.reset()
        self.model_label.setText(f"{info.name} · {info.chat_format}")
        self.model_label.setToolTip(
            f"{info.path}\nPrompt format: {info.chat_format} ({info.chat_format_source})\n"
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
                self.session.new_conversation()
        self._update_page()
        self.composer.editor.setFocus()

    @Slot(str)
    def _on_model_failed(self, message: str) -> None:
        self._load_timer.stop()
        self.load_progress.hide()
        self.model_label.setText("No model")
        self.welcome.show_error(message)
        self.statusBar().showMessage(message, 15000)
        self._update_page()

    @Slot(str, int, int)
    def _on_prompt_progress(self, _request_id: str, evaluated: int, total: int) -> None:
        if total > 256:
            self.statusBar().showMessage(f"Reading the conversation… {100 * evaluated // total} %", 2000)

    def _update_page(self) -> None:
        has_model = self.controller.model is not None
        show_chat = has_model or (self.session.conversation_id is not None and not self.controller.loading)
        if not has_model and self.session.conversation_id is None:
            show_chat = False
        self.pages.setCurrentWidget(self.chat_page if show_chat else self.welcome)

    # --- chats ------------------------------------------------------------------------------------------------

    def _refresh_conversations(self) -> None:
        query = self.conversations.search.text().strip()
        rows = self.store.search_conversations(query) if query else self.store.list_conversations()
        self.conversations.set_conversations(rows, self.session.conversation_id)

    @Slot(int)
    def _open_conversation(self, conversation_id: int) -> None:
        self.composer.cancel_edit()
        self.session.open_conversation(conversation_id)
        self._update_page()

    @Slot(int)
    def _on_conversation_opened(self, conversation_id: int) -> None:
        self._refresh_conversations()
        messages = self.store.messages(conversation_id)
        last = next((m for m in reversed(messages) if m.stats is not None), None)
        if last is not None and last.stats is not None and last.stats.context_size:
            self._show_context(last.stats.context_used, last.stats.context_size)
        elif self.controller.model is not None:
            self._show_context(0, self.controller.model.n_ctx)

    @Slot()
    def new_chat(self) -> None:
        if self.session.busy:
            return
        self.composer.cancel_edit()
        self.session.new_conversation()
        self._update_page()
        self.composer.editor.setFocus()

    @Slot(str)
    def _send(self, text: str) -> None:
        editing = self.composer.editing_message_id
        if self.session.send(text, replace_from=editing):
            self.composer.finish_edit()
            self.composer.editor.clear()
            self._update_page()

    @Slot(int)
    def begin_edit(self, message_id: int) -> None:
        if self.session.busy or self.session.conversation_id is None:
            return
        message = next((m for m in self.store.messages(self.session.conversation_id) if m.id == message_id), None)
        if message is not None:
            self.composer.begin_edit(message_id, message.content)

    @Slot()
    def escape(self) -> None:
        if self.session.busy:
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
        from enclave.models.installed import ModelRegistry
        from enclave.ui.models_dialog import ModelsDialog

        paths = app_paths().ensure()
        registry_path = paths.data / "models.json"
        if self.downloads is None:
            self.downloads = DownloadController(registry_path, paths.models_dir, self)
        dialog = ModelsDialog(ModelRegistry(registry_path), self.downloads, paths.models_dir, self)
        dialog.useModel.connect(self._use_model)
        dialog.downloads.finished.connect(self._on_downloaded)
        if start_recommended and not self.downloads.busy:
            dialog.download_recommended()
        dialog.exec()
        dialog.downloads.finished.disconnect(self._on_downloaded)

    @Slot(object)
    def _on_downloaded(self, model: object) -> None:
        """The first model downloaded from the first-run page is opened right away."""
        from enclave.models.installed import InstalledModel

        if isinstance(model, InstalledModel) and model.role == "chat" and self.controller.model is None:
            self._use_model(model.path)

    @Slot(str)
    def _use_model(self, path: str) -> None:
        self._save_settings(replace(self.settings, model_path=path))
        self.load_model(path)

    # --- settings ---------------------------------------------------------------------------------------------

    @Slot()
    def open_settings(self) -> None:
        dialog = SettingsDialog(self.settings, self)
        if dialog.exec() and dialog.result_settings is not None:
            reload = dialog.model_changed()
            self._save_settings(dialog.result_settings)
            if reload and self.settings.model_path:
                self.load_model(self.settings.model_path)  # the chat stays; the next answer uses the new model

    def _save_settings(self, settings: Settings) -> None:
        self.settings = settings
        try:
            self.settings_store.save(settings)
        except OSError as exc:
            self.statusBar().showMessage(f"Could not save settings: {exc}", 10000)

    def closeEvent(self, event: QCloseEvent) -> None:
        self.session.shutdown()
        geometry = bytes(self.saveGeometry().toBase64().data()).decode()
        self._save_settings(replace(self.settings, window_geometry=geometry))
        if self.downloads is not None:
            self.downloads.shutdown()  # pauses: the partial file resumes next time
        self.controller.shutdown()
        super().closeEvent(event)

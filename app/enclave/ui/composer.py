"""Where the user writes: Enter sends, Shift+Enter starts a new line, and the Send button turns into Stop."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QMenu,
    QPlainTextEdit,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from enclave.ui.style import mute

MIN_LINES = 2
MAX_LINES = 10


class PromptEdit(QPlainTextEdit):
    submitted = Signal()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        enter = event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter)
        if enter and not event.modifiers() & Qt.KeyboardModifier.ShiftModifier:
            self.submitted.emit()
            return
        super().keyPressEvent(event)


class Composer(QWidget):
    sendRequested = Signal(str)
    stopRequested = Signal()
    systemPromptRequested = Signal()
    editCancelled = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._busy = False
        self._editing: int | None = None

        self.edit_banner = QLabel("Editing a message: sending replaces it and every later message. Esc cancels.")
        mute(self.edit_banner)
        self.edit_banner.hide()

        self.editor = PromptEdit(self)
        self.editor.setPlaceholderText("Ask anything — Enter sends, Shift+Enter for a new line")
        self.editor.setAccessibleName("Message")
        self.editor.setTabChangesFocus(True)
        self.editor.submitted.connect(self._submit)
        self.editor.textChanged.connect(self._fit_height)

        self.send_button = QPushButton("Send", self)
        self.send_button.setAccessibleName("Send message")
        self.send_button.setDefault(True)
        self.send_button.clicked.connect(self._on_button)
        self.system_button = QPushButton("System prompt…", self)
        self.system_button.setAccessibleName("Edit this chat's system prompt")
        self.system_button.setToolTip("Instructions the model follows for this chat")
        self.system_button.clicked.connect(self.systemPromptRequested)
        # Which document collections this chat answers from; the window fills the menu as it opens.
        self.documents_button = QToolButton(self)
        self.documents_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.documents_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        self.documents_menu = QMenu(self.documents_button)
        self.documents_button.setMenu(self.documents_menu)
        self.set_collections(())

        buttons = QVBoxLayout()
        buttons.addWidget(self.send_button)
        buttons.addWidget(self.system_button)
        buttons.addWidget(self.documents_button)
        buttons.addStretch(1)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.editor, 1)
        row.addLayout(buttons)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 6, 12, 10)
        layout.setSpacing(4)
        layout.addWidget(self.edit_banner)
        layout.addLayout(row)
        self._fit_height()

    @property
    def text(self) -> str:
        return self.editor.toPlainText()

    @property
    def editing_message_id(self) -> int | None:
        return self._editing

    def set_busy(self, busy: bool) -> None:
        self._busy = busy
        self.send_button.setText("Stop" if busy else "Send")
        self.send_button.setAccessibleName("Stop the answer" if busy else "Send message")

    def set_collections(self, names: tuple[str, ...]) -> None:
        """Show which collections the chat uses ("Documents: off" when none)."""
        shown = ", ".join(names) if len(names) <= 2 else f"{names[0]} +{len(names) - 1}"
        self.documents_button.setText(f"Documents: {shown}" if names else "Documents: off")
        self.documents_button.setAccessibleName(
            f"Documents this chat answers from: {', '.join(names)}" if names else "This chat uses no documents"
        )
        self.documents_button.setToolTip(
            "Answers search these collections and cite them" if names else "Choose documents for this chat to use"
        )
        self.editor.setPlaceholderText(
            f"Ask anything — answers search “{shown}” and cite it · Enter sends, Shift+Enter for a new line"
            if names
            else "Ask anything — Enter sends, Shift+Enter for a new line"
        )

    def begin_edit(self, message_id: int, text: str) -> None:
        self._editing = message_id
        self.editor.setPlainText(text)
        self.edit_banner.show()
        self.editor.setFocus()

    def cancel_edit(self) -> None:
        if self._editing is not None:
            self._editing = None
            self.edit_banner.hide()
            self.editor.clear()
            self.editCancelled.emit()

    def finish_edit(self) -> None:
        self._editing = None
        self.edit_banner.hide()

    def _on_button(self) -> None:
        if self._busy:
            self.stopRequested.emit()
        else:
            self._submit()

    def _submit(self) -> None:
        text = self.editor.toPlainText().strip()
        if not text or self._busy:
            return
        self.sendRequested.emit(text)

    def _fit_height(self) -> None:
        lines = max(MIN_LINES, min(MAX_LINES, self.editor.document().blockCount()))
        height = self.editor.fontMetrics().lineSpacing() * lines + 14
        self.editor.setFixedHeight(height)

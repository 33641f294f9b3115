"""Where the user writes: Enter sends, Shift+Enter starts a new line, and the Send button turns into Stop.

Under the text, one line of controls that never changes width: documents, system prompt, this message's thinking
budget, and Send/Stop.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QRectF, Qt, Signal
from PySide6.QtGui import QKeyEvent, QPainter, QPaintEvent, QPalette, QPen
from PySide6.QtWidgets import (
    QComboBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QMenu,
    QPlainTextEdit,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from enclave.ui.style import RADIUS, SPACE_M, SPACE_S, SPACE_XS, IconButton, icon, mute, subtle_border

# Thinking budget for the next message: (label, tokens); None follows Settings, 0 means no limit.
THINKING_CHOICES: tuple[tuple[str, int | None], ...] = (
    ("Thinking: as in Settings", None),
    ("Thinking: short (512)", 512),
    ("Thinking: medium (2,048)", 2048),
    ("Thinking: long (8,192)", 8192),
    ("Thinking: no limit", 0),
)

ICON_ROOM = 24  # the Send/Stop icon and its gap
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

        self.editor.setFrameShape(QFrame.Shape.NoFrame)

        self.send_button = QPushButton("Send", self)
        self.send_button.setAccessibleName("Send message")
        self.send_button.setDefault(True)
        self.send_button.clicked.connect(self._on_button)
        # Send and Stop take the same room: the row never jumps when an answer starts or ends.
        widths = []
        for text in ("Send", "Stop"):
            self.send_button.setText(text)
            widths.append(self.send_button.sizeHint().width() + ICON_ROOM)
        self.send_button.setFixedWidth(max(widths))
        self.send_button.setText("Send")
        self.system_button = IconButton("script-text-outline", "Edit this chat's system prompt", self)
        self.system_button.setToolTip("System prompt: instructions the model follows in this chat")
        self.system_button.clicked.connect(self.systemPromptRequested)
        # Which document collections this chat answers from; the window fills the menu as it opens.
        self.documents_button = IconButton("paperclip", "Documents", self, text="Documents: off")
        self.documents_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.documents_menu = QMenu(self.documents_button)
        self.documents_button.setMenu(self.documents_menu)
        self.thinking_box = QComboBox(self)
        self.thinking_box.setAccessibleName("How long the model may think before this answer")
        self.thinking_box.setToolTip("A thinking budget for the next message (Settings sets the default)")
        for label, tokens in THINKING_CHOICES:
            self.thinking_box.addItem(label, tokens)
        self.thinking_box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.set_collections(())
        self._set_send_icon()

        controls = QHBoxLayout()
        controls.setContentsMargins(0, 0, 0, 0)
        controls.setSpacing(SPACE_XS)
        controls.addWidget(self.documents_button)
        controls.addWidget(self.system_button)
        controls.addStretch(1)
        controls.addWidget(self.thinking_box)
        controls.addWidget(self.send_button)
        self.box = QFrame(self)  # the rounded field around text and controls
        self.box.setObjectName("composerBox")
        box_layout = QVBoxLayout(self.box)
        box_layout.setContentsMargins(SPACE_M, SPACE_S, SPACE_S, SPACE_S)
        box_layout.setSpacing(SPACE_XS)
        box_layout.addWidget(self.editor)
        box_layout.addLayout(controls)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(SPACE_M, SPACE_XS, SPACE_M, SPACE_M)
        layout.setSpacing(SPACE_XS)
        layout.addWidget(self.edit_banner)
        layout.addWidget(self.box)
        self._fit_height()

    def paintEvent(self, event: QPaintEvent) -> None:
        """The field: the palette's base colour with a thin border, both taken when painted (follows dark mode)."""
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        palette = self.palette()
        painter.setPen(QPen(subtle_border(palette), 1))
        painter.setBrush(palette.color(QPalette.ColorRole.Base))
        painter.drawRoundedRect(QRectF(self.box.geometry()).adjusted(0.5, 0.5, -0.5, -0.5), RADIUS, RADIUS)
        painter.end()
        super().paintEvent(event)

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange and hasattr(self, "send_button"):
            self._set_send_icon()

    def _set_send_icon(self) -> None:
        name = "stop" if self._busy else "send"
        self.send_button.setIcon(icon(name, self.palette()))

    def think_budget(self) -> int | None:
        """The thinking budget chosen for the next message; None: the one in Settings."""
        value = self.thinking_box.currentData()
        return int(value) if value is not None else None

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
        self._set_send_icon()

    def set_collections(self, names: tuple[str, ...]) -> None:
        """Show which collections the chat uses ("Documents: off" when none)."""
        shown = ", ".join(names) if len(names) <= 2 else f"{names[0]} +{len(names) - 1}"
        if len(shown) > 24:
            shown = shown[:23] + "…"
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
        height = self.editor.fontMetrics().lineSpacing() * lines + SPACE_S
        self.editor.setFixedHeight(height)

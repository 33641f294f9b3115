"""The collapsible block that shows R1's reasoning above its answer.

While the model thinks the block is open and its header ticks ("Thinking… 12 s"); once the answer starts it folds
away ("Thought for 41 s") so the answer is what the user reads first. Text is appended at the end of the document
(laid out incrementally), so a long reasoning costs O(delta) per update.
"""

from __future__ import annotations

import time

from PySide6.QtCore import QEvent, Qt, QTimer, Signal
from PySide6.QtGui import QPalette, QTextCursor
from PySide6.QtWidgets import QHBoxLayout, QPushButton, QToolButton, QVBoxLayout, QWidget

from enclave.ui.markdown_view import AutoHeightBrowser
from enclave.ui.style import mute

BODY_MAX_HEIGHT = 260


def format_seconds(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, rest = divmod(seconds, 60)
    return f"{minutes} min {rest} s"


class ThinkingSection(QWidget):
    answerNowRequested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._started = 0.0
        self._running = False
        self._seconds: float | None = None

        self.header = QToolButton(self)
        self.header.setCheckable(True)
        self.header.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.header.setAutoRaise(True)
        self.header.setAccessibleName("Show or hide the model's thinking")
        self.header.toggled.connect(self._set_expanded)
        mute(self.header)

        self.answer_now = QPushButton("Answer now", self)
        self.answer_now.setAccessibleName("Stop thinking and answer now")
        self.answer_now.setToolTip("Close the thinking and let the model answer with what it has")
        self.answer_now.clicked.connect(self.answerNowRequested)
        self.answer_now.hide()

        self.body = AutoHeightBrowser(self, max_height=BODY_MAX_HEIGHT)
        self.body.setAccessibleName("The model's thinking")
        self.body.setAcceptRichText(False)
        self._tint_body()
        self.body.document().setDocumentMargin(4)

        self._tick = QTimer(self)
        self._tick.setInterval(1000)
        self._tick.timeout.connect(self._update_header)

        top = QHBoxLayout()
        top.setContentsMargins(0, 0, 0, 0)
        top.addWidget(self.header)
        top.addStretch(1)
        top.addWidget(self.answer_now)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addLayout(top)
        layout.addWidget(self.body)
        self.hide()
        self._set_expanded(False)

    # --- streaming --------------------------------------------------------------------------------------------

    def _tint_body(self) -> None:
        """Thinking reads as secondary text: the palette's placeholder colour, taken again when the palette changes."""
        palette = QPalette(self.palette())
        palette.setColor(QPalette.ColorRole.Text, palette.color(QPalette.ColorRole.PlaceholderText))
        self.body.setPalette(palette)

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange and hasattr(self, "body"):
            self._tint_body()

    def start(self, started_at: float | None = None) -> None:
        """The model began thinking (at ``started_at``, a time.monotonic() value; default: now): open, start clock."""
        self._started = time.monotonic() if started_at is None else started_at
        self._running = True
        self.show()
        self.answer_now.show()
        self.header.setChecked(True)
        self._tick.start()
        self._update_header()

    def append(self, text: str) -> None:
        if not text:
            return
        if not self._running and self._seconds is None:
            self.start()
        cursor = QTextCursor(self.body.document())
        cursor.movePosition(QTextCursor.MoveOperation.End)
        cursor.insertText(text)
        if self.header.isChecked():
            bar = self.body.verticalScrollBar()
            bar.setValue(bar.maximum())

    def finish(self, seconds: float | None = None) -> None:
        """Thinking ended (the answer started, or the reply stopped): fold the block away."""
        if not self._running:
            return
        self._running = False
        self._tick.stop()
        self._seconds = seconds if seconds is not None else time.monotonic() - self._started
        self.answer_now.hide()
        self.header.setChecked(False)
        self._update_header()

    def stop_clock(self) -> None:
        """Stop ticking without folding (the reply ended while still thinking)."""
        if self._running:
            self._running = False
            self._tick.stop()
            self._seconds = time.monotonic() - self._started
            self.answer_now.hide()
            self._update_header()

    # --- history ----------------------------------------------------------------------------------------------

    def set_history(self, reasoning: str, seconds: float | None) -> None:
        self.body.setPlainText(reasoning)
        self._seconds = seconds
        self._running = False
        self.setVisible(bool(reasoning))
        self.header.setChecked(False)
        self._update_header()

    @property
    def running(self) -> bool:
        return self._running

    @property
    def text(self) -> str:
        return self.body.toPlainText()

    @property
    def seconds(self) -> float | None:
        if self._running:
            return time.monotonic() - self._started
        return self._seconds

    # --- internals --------------------------------------------------------------------------------------------

    def _update_header(self) -> None:
        arrow = Qt.ArrowType.DownArrow if self.header.isChecked() else Qt.ArrowType.RightArrow
        self.header.setArrowType(arrow)
        if self._running:
            self.header.setText(f"Thinking… {format_seconds(time.monotonic() - self._started)}")
        elif self._seconds is not None:
            self.header.setText(f"Thought for {format_seconds(self._seconds)}")
        else:
            self.header.setText("Thoughts")

    def _set_expanded(self, expanded: bool) -> None:
        self.body.setVisible(expanded)
        self._update_header()

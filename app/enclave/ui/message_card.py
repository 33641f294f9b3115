"""One message in the transcript: who said it, the thinking block, the answer, and what can be done with it."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QSizePolicy, QVBoxLayout, QWidget

from enclave.docs.prompt import cited_numbers
from enclave.storage.chats import Message, MessageSource, MessageStats, MessageStatus
from enclave.ui.markdown_view import MarkdownView
from enclave.ui.sources_view import NOTHING_RELEVANT, SourcesView
from enclave.ui.style import mute, scaled_font, subtle_background
from enclave.ui.thinking_section import ThinkingSection

STATUS_TEXT = {
    MessageStatus.INTERRUPTED: "Interrupted — Enclave closed while this answer was being written. "
    "Regenerate to get a complete answer.",
    MessageStatus.CANCELLED: "Stopped.",
}


def stats_text(stats: MessageStats | None, model: str | None) -> str:
    parts: list[str] = []
    if stats is not None:
        if stats.tokens_per_second > 0:
            parts.append(f"{stats.tokens_per_second:.1f} tok/s")
        if stats.completion_tokens:
            parts.append(f"{stats.completion_tokens:,} tokens")
    if model:
        parts.append(model)
    return " · ".join(parts)


class MessageCard(QFrame):
    """A user or assistant message. Assistant cards stream: ``append`` then ``finish``."""

    regenerateRequested = Signal(int)
    editRequested = Signal(int)
    answerNowRequested = Signal()
    sourceOpenRequested = Signal(object)  # MessageSource

    def __init__(self, role: str, message_id: int, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.role = role
        self.message_id = message_id
        self.setObjectName("userCard" if role == "user" else "assistantCard")
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setAccessibleName("Your message" if role == "user" else "Answer")
        if role == "user":
            self.setAutoFillBackground(True)
            palette = self.palette()
            palette.setColor(self.backgroundRole(), subtle_background(palette, 0.07))
            self.setPalette(palette)

        self.who = QLabel("You" if role == "user" else "Enclave", self)
        self.who.setFont(scaled_font(self, 0.95, bold=True))
        self.thinking = ThinkingSection(self)
        self.thinking.answerNowRequested.connect(self.answerNowRequested)
        self.answer = MarkdownView(self)
        self.answer.citationClicked.connect(self._open_source)
        self.sources = SourcesView(self)
        self.sources.sourceClicked.connect(self._open_source)
        self.status = QLabel(self)
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.status.hide()
        self.footer = QLabel(self)
        mute(self.footer)
        self.footer.setFont(scaled_font(self, 0.85))

        self.copy_button = self._button("Copy", "Copy this message as Markdown", self._copy)
        self.regenerate_button = self._button(
            "Regenerate", "Write this answer again", lambda: self.regenerateRequested.emit(self.message_id)
        )
        self.edit_button = self._button(
            "Edit", "Edit this message and send it again", lambda: self.editRequested.emit(self.message_id)
        )
        self.regenerate_button.setVisible(role == "assistant")
        self.edit_button.setVisible(role == "user")

        actions = QHBoxLayout()
        actions.setContentsMargins(0, 0, 0, 0)
        actions.addWidget(self.footer, 1)
        actions.addWidget(self.edit_button)
        actions.addWidget(self.regenerate_button)
        actions.addWidget(self.copy_button)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 8, 12, 6)
        layout.setSpacing(4)
        layout.addWidget(self.who)
        layout.addWidget(self.thinking)
        layout.addWidget(self.answer)
        layout.addWidget(self.sources)
        layout.addWidget(self.status)
        layout.addLayout(actions)

    def _button(self, text: str, accessible: str, slot: object) -> QPushButton:
        button = QPushButton(text, self)
        button.setFlat(True)
        button.setAccessibleName(accessible)
        button.setToolTip(accessible)
        button.setCursor(Qt.CursorShape.PointingHandCursor)
        button.clicked.connect(slot)
        return button

    # --- history ----------------------------------------------------------------------------------------------

    @classmethod
    def from_message(cls, message: Message, parent: QWidget | None = None) -> MessageCard:
        card = cls(message.role, message.id, parent)
        card.thinking.set_history(message.reasoning, message.thinking_seconds)
        if message.sources is not None:
            card.set_sources(message.sources, None if message.sources else NOTHING_RELEVANT)
            card.sources.mark_cited(cited_numbers(message.content))
        card.answer.set_markdown(message.content)
        card.answer.setVisible(bool(message.content))  # an empty view would still take a line of height
        card.set_status(message.status, message.error)
        card.footer.setText(stats_text(message.stats, message.model if message.role == "assistant" else None))
        return card

    # --- streaming --------------------------------------------------------------------------------------------

    def start_streaming(self, model: str | None) -> None:
        self.regenerate_button.setEnabled(False)
        self.copy_button.setEnabled(False)
        self.answer.hide()  # until the first answer text: no blank line under the thinking block
        self.footer.setText(model or "")

    def append(self, reasoning: str, content: str) -> None:
        if reasoning:
            self.thinking.append(reasoning)
        if content:
            if self.thinking.running:
                self.thinking.finish()
            self.answer.show()
            self.answer.append(content)

    def show_searching(self) -> None:
        self.sources.show_searching()

    def set_sources(self, sources: tuple[MessageSource, ...], note: str | None = None) -> None:
        """The passages this answer is given; set before its text arrives so [n] become links as they stream."""
        self.answer.citations = frozenset(s.number for s in sources)
        self.sources.set_sources(sources, note)

    def _open_source(self, number: int) -> None:
        source = next((s for s in self.sources.sources if s.number == number), None)
        if source is not None:
            self.sourceOpenRequested.emit(source)

    def close_thinking(self, seconds: float | None = None) -> None:
        self.thinking.finish(seconds)

    def finish(
        self, status: MessageStatus, stats: MessageStats | None, model: str | None, error: str | None = None
    ) -> None:
        self.thinking.stop_clock()
        self.answer.finish()
        if self.sources.sources:
            self.sources.mark_cited(cited_numbers(self.answer.markdown()))
        elif self.sources.searching:
            self.sources.hide()  # stopped, or failed, before the search answered
        self.regenerate_button.setEnabled(True)
        self.copy_button.setEnabled(True)
        self.set_status(status, error)
        self.footer.setText(stats_text(stats, model))

    def set_status(self, status: MessageStatus, error: str | None) -> None:
        if status is MessageStatus.FAILED:
            self.status.setText(f"Something went wrong: {error or 'unknown error'}")
        elif status is MessageStatus.INTERRUPTED and error:  # the engine process died, not the app
            self.status.setText(f"Interrupted — {error}")
        else:
            self.status.setText(STATUS_TEXT.get(status, ""))
        self.status.setVisible(bool(self.status.text()))

    @property
    def thinking_seconds(self) -> float | None:
        return self.thinking.seconds

    def _copy(self) -> None:
        QGuiApplication.clipboard().setText(self.answer.markdown())

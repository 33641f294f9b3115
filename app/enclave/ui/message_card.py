"""One message in the transcript: who said it, the thinking block, the answer, and what can be done with it."""

from __future__ import annotations

from PySide6.QtCore import QEvent, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QEnterEvent, QGuiApplication, QPainter, QPaintEvent
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QSizePolicy, QVBoxLayout, QWidget

from enclave.docs.prompt import cited_numbers
from enclave.storage.chats import Message, MessageSource, MessageStats, MessageStatus
from enclave.ui.markdown_view import MarkdownView
from enclave.ui.sources_view import NOTHING_RELEVANT, SourcesView
from enclave.ui.style import (
    RADIUS,
    SPACE_M,
    SPACE_S,
    SPACE_XS,
    TYPE_CAPTION,
    IconButton,
    mute,
    scaled_font,
    subtle_background,
)
from enclave.ui.thinking_section import ThinkingSection

STATUS_TEXT = {
    MessageStatus.INTERRUPTED: "Interrupted — Enclave closed while this answer was being written. "
    "Regenerate to get a complete answer.",
    MessageStatus.CANCELLED: "Stopped.",
}


def cut_off_text(limit: int) -> str:
    return f"Cut off after {limit:,} tokens: the answer reached its length limit (Settings → Maximum answer length)."


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
    continueRequested = Signal(int)
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
        self._hovered = False

        # Answers are signed by the model that wrote them (set when streaming starts or from history).
        self.who = QLabel("You" if role == "user" else "Answer", self)
        self.who.setFont(scaled_font(self, TYPE_CAPTION, bold=True))
        mute(self.who)
        self.who.setVisible(role == "assistant")  # a user message is recognisable by its bubble
        self.thinking = ThinkingSection(self)
        self.thinking.answerNowRequested.connect(self.answerNowRequested)
        self.answer = MarkdownView(self)
        self.answer.citationClicked.connect(self._open_source)
        self.sources = SourcesView(self)
        self.sources.sourceClicked.connect(self._open_source)
        # Until the first word arrives: what the model is doing ("Reading the conversation… 40 %"), never a blank.
        self.progress = QLabel(self)
        self.progress.setAccessibleName("What the model is doing")
        mute(self.progress)
        self.progress.hide()
        self.status = QLabel(self)
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.status.hide()
        # An answer that reached the length limit says so and offers to go on.
        self.cut_off = QLabel(self)
        self.cut_off.setWordWrap(True)
        self.cut_off.setAccessibleName("This answer was cut off")
        self.continue_button = QPushButton("Continue", self)
        self.continue_button.setAccessibleName("Continue this answer")
        self.continue_button.setToolTip("Ask the model to carry on where the answer was cut off")
        self.continue_button.clicked.connect(lambda: self.continueRequested.emit(self.message_id))
        cut_row = QHBoxLayout()
        cut_row.setContentsMargins(0, 0, 0, 0)
        cut_row.addWidget(self.cut_off, 1)
        cut_row.addWidget(self.continue_button)
        self.cut_off.hide()
        self.continue_button.hide()
        self.footer = QLabel(self)
        mute(self.footer)
        self.footer.setFont(scaled_font(self, TYPE_CAPTION))

        # Created in reading order, which is also the Tab order: Edit, Regenerate, Copy.
        self.edit_button = IconButton("pencil-outline", "Edit this message and send it again", self)
        self.edit_button.clicked.connect(lambda: self.editRequested.emit(self.message_id))
        self.regenerate_button = IconButton("refresh", "Write this answer again", self)
        self.regenerate_button.clicked.connect(lambda: self.regenerateRequested.emit(self.message_id))
        self.copy_button = IconButton("content-copy", "Copy this message as Markdown", self)
        self.copy_button.clicked.connect(self._copy)
        self.regenerate_button.setVisible(role == "assistant")
        self.edit_button.setVisible(role == "user")
        self.action_buttons = (self.edit_button, self.regenerate_button, self.copy_button)
        self._reveal_actions(False)

        actions = QHBoxLayout()
        actions.setContentsMargins(0, 0, 0, 0)
        actions.setSpacing(SPACE_XS)
        if role == "user":
            actions.addStretch(1)
        else:
            actions.addWidget(self.footer)  # speed and length first: the icons beside it appear on hover
        self.footer.setVisible(role == "assistant")
        actions.addWidget(self.edit_button)
        actions.addWidget(self.regenerate_button)
        actions.addWidget(self.copy_button)
        actions.addStretch(1)

        layout = QVBoxLayout(self)
        if role == "user":
            layout.setContentsMargins(SPACE_M + SPACE_S, SPACE_M, SPACE_M + SPACE_S, SPACE_XS)
        else:
            layout.setContentsMargins(SPACE_XS, SPACE_S, SPACE_XS, SPACE_XS)
        layout.setSpacing(SPACE_XS)
        layout.addWidget(self.who)
        layout.addWidget(self.progress)
        layout.addWidget(self.thinking)
        layout.addWidget(self.answer)
        layout.addWidget(self.sources)
        layout.addWidget(self.status)
        layout.addLayout(cut_row)
        layout.addLayout(actions)

    # --- look -------------------------------------------------------------------------------------------------

    def paintEvent(self, event: QPaintEvent) -> None:
        """A user message is a rounded bubble in a tint of the current palette (light or dark, changed live)."""
        if self.role == "user":
            painter = QPainter(self)
            painter.setRenderHint(QPainter.RenderHint.Antialiasing)
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(self.bubble_color())
            bottom = self.edit_button.geometry().top() - SPACE_XS // 2
            painter.drawRoundedRect(QRectF(0, 0, self.width(), max(0, bottom)), RADIUS, RADIUS)
            painter.end()
        super().paintEvent(event)

    def bubble_color(self) -> QColor:
        return subtle_background(self.palette(), 0.08)

    def enterEvent(self, event: QEnterEvent) -> None:
        super().enterEvent(event)
        self._hovered = True
        self._reveal_actions(True)

    def leaveEvent(self, event: QEvent) -> None:
        super().leaveEvent(event)
        self._hovered = False
        self._reveal_actions(False)

    def _reveal_actions(self, shown: bool) -> None:
        for button in self.action_buttons:
            button.set_revealed(shown)

    @property
    def actions_revealed(self) -> bool:
        return self.copy_button.revealed

    def set_model_name(self, model: str | None) -> None:
        if self.role == "assistant":
            self.who.setText(model or "Answer")
            self.who.setAccessibleName(f"Answer from {model}" if model else "Answer")

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
        card.set_model_name(message.model)
        card.footer.setText(stats_text(message.stats, None))
        card.show_cut_off(message.stats.length_limit if message.stats is not None else 0)
        return card

    # --- streaming --------------------------------------------------------------------------------------------

    def start_streaming(self, model: str | None) -> None:
        self.regenerate_button.setEnabled(False)
        self.copy_button.setEnabled(False)
        self.answer.hide()  # until the first answer text: no blank line under the thinking block
        self.set_model_name(model)
        self.footer.setText("")
        self.show_progress("Reading your question…")

    def show_progress(self, text: str) -> None:
        """A line of what happens before the first word (prompt reading, waiting for the model); hidden by text."""
        self.progress.setText(text)
        self.progress.setVisible(bool(text))

    def append(self, reasoning: str, content: str) -> None:
        if (reasoning or content) and self.progress.isVisibleTo(self):
            self.progress.hide()
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
        self.progress.hide()
        self.answer.finish()
        if self.sources.sources:
            self.sources.mark_cited(cited_numbers(self.answer.markdown()))
        elif self.sources.searching:
            self.sources.hide()  # stopped, or failed, before the search answered
        self.regenerate_button.setEnabled(True)
        self.copy_button.setEnabled(True)
        self.set_status(status, error)
        self.set_model_name(model)
        self.footer.setText(stats_text(stats, None))
        self.show_cut_off(stats.length_limit if stats is not None and status is MessageStatus.COMPLETE else 0)

    def show_cut_off(self, limit: int) -> None:
        """``limit`` > 0: the answer stopped at the length limit, mid-sentence; say so and offer Continue."""
        self.cut_off.setText(cut_off_text(limit) if limit else "")
        self.cut_off.setVisible(bool(limit))
        self.continue_button.setVisible(bool(limit))

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

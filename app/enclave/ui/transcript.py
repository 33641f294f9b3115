"""The scrolling conversation: message cards in a column, following the newest text unless the user scrolled up."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QScrollArea, QSizePolicy, QVBoxLayout, QWidget

from enclave.ui.message_card import MessageCard
from enclave.ui.style import mute

MAX_TEXT_WIDTH = 860


class ContextMarker(QLabel):
    """A visible line where earlier messages stopped being sent to the model."""

    def __init__(self, dropped: int, parent: QWidget | None = None) -> None:
        noun = "message" if dropped == 1 else "messages"
        super().__init__(
            f"⋯ {dropped} earlier {noun} no longer fit in the model's context and were not sent with this question ⋯",
            parent,
        )
        self.dropped = dropped
        self.setObjectName("contextMarker")
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setWordWrap(True)
        self.setAccessibleName("Context limit marker")
        mute(self)


class Transcript(QScrollArea):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setAccessibleName("Conversation")
        self._column = QWidget()
        self._column.setMaximumWidth(MAX_TEXT_WIDTH)
        self._column.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Minimum)
        self._layout = QVBoxLayout(self._column)
        self._layout.setContentsMargins(16, 12, 16, 12)
        self._layout.setSpacing(10)
        self._layout.addStretch(1)
        outer = QWidget()
        outer_layout = QHBoxLayout(outer)
        outer_layout.setContentsMargins(0, 0, 0, 0)
        outer_layout.setSpacing(0)
        # Stretches either side: the column takes the width up to MAX_TEXT_WIDTH and stays centred (an alignment
        # flag would shrink it to its size hint instead).
        outer_layout.addStretch(1)
        outer_layout.addWidget(self._column, 100)
        outer_layout.addStretch(1)
        self.setWidget(outer)
        self._follow = True
        bar = self.verticalScrollBar()
        bar.rangeChanged.connect(self._on_range_changed)
        bar.valueChanged.connect(self._on_scrolled)

    # --- content ----------------------------------------------------------------------------------------------

    def clear(self) -> None:
        while self._layout.count() > 1:
            item = self._layout.takeAt(0)
            widget = item.widget() if item is not None else None
            if widget is not None:
                widget.hide()
                widget.deleteLater()
        self._follow = True

    def add_card(self, card: MessageCard) -> MessageCard:
        self._layout.insertWidget(self._layout.count() - 1, card)
        return card

    def cards(self) -> list[MessageCard]:
        return [w for w in self._widgets() if isinstance(w, MessageCard)]

    def card_for(self, message_id: int) -> MessageCard | None:
        return next((c for c in self.cards() if c.message_id == message_id), None)

    def markers(self) -> list[ContextMarker]:
        return [w for w in self._widgets() if isinstance(w, ContextMarker)]

    def show_context_marker(self, dropped: int, before_message_id: int) -> ContextMarker:
        """Put the marker before the first message still sent to the model (replacing an older marker)."""
        for marker in self.markers():
            self._layout.removeWidget(marker)
            marker.deleteLater()
        anchor = self.card_for(before_message_id)
        position = self._layout.indexOf(anchor) if anchor is not None else self._layout.count() - 1
        marker = ContextMarker(dropped)
        self._layout.insertWidget(position, marker)
        return marker

    def add_note(self, text: str) -> QLabel:
        """A one-line notice in the flow of the chat (e.g. the model changed)."""
        note = QLabel(text)
        note.setObjectName("chatNote")
        note.setAlignment(Qt.AlignmentFlag.AlignCenter)
        note.setWordWrap(True)
        note.setAccessibleName("Notice")
        mute(note)
        self._layout.insertWidget(self._layout.count() - 1, note)
        return note

    def scroll_to_end(self) -> None:
        self._follow = True
        bar = self.verticalScrollBar()
        bar.setValue(bar.maximum())

    # --- following the stream ---------------------------------------------------------------------------------

    def _widgets(self) -> list[QWidget]:
        result: list[QWidget] = []
        for i in range(self._layout.count()):
            item = self._layout.itemAt(i)
            widget = item.widget() if item is not None else None
            if widget is not None:
                result.append(widget)
        return result

    def _on_range_changed(self, _minimum: int, maximum: int) -> None:
        if self._follow:
            self.verticalScrollBar().setValue(maximum)

    def _on_scrolled(self, value: int) -> None:
        bar = self.verticalScrollBar()
        self._follow = value >= bar.maximum() - 4

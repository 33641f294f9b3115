"""Above the chat: the model picker (which model answers, where it runs, whether it is loaded) and a link to Models.

And the page a new, empty chat shows: the model's name, what it is good at, three example prompts and a hint that
documents can be dropped on the window.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PySide6.QtCore import QEvent, Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QMenu, QPushButton, QToolButton, QVBoxLayout, QWidget

from enclave.engine.types import ModelInfo
from enclave.ui.style import (
    SPACE_L,
    SPACE_M,
    SPACE_S,
    SPACE_XL,
    SPACE_XS,
    TYPE_CAPTION,
    TYPE_SUBTITLE,
    TYPE_TITLE,
    IconButton,
    mute,
    scaled_font,
)

REASONING_EXAMPLES = (
    "A bat and a ball cost $1.10 together; the bat costs $1 more than the ball. What does the ball cost?",
    "Write a Python function that checks whether a string is a palindrome, with tests.",
    "Explain why the sky is blue, step by step, for a curious twelve-year-old.",
)
CHAT_EXAMPLES = (
    "Summarise the idea of photosynthesis in three sentences.",
    "Suggest five names for a small bakery.",
    "Write a friendly reminder email about tomorrow's meeting.",
)


EMPTY_WIDTH = 620


def where_it_runs(placement: str) -> str:
    """The first part of the load plan's summary ("GPU: 28 of 36 layers" or "CPU")."""
    return placement.split(" · ", 1)[0] if placement else ""


NO_MENU_INDICATOR = "QToolButton::menu-indicator { image: none; width: 0px; }"


class ModelPicker(QToolButton):
    """Shows the model in use and where it runs; the menu lists installed models, Open… and Manage models…."""

    modelChosen = Signal(str)  # a path
    openRequested = Signal()
    manageRequested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        self.setAutoRaise(True)
        self.setAccessibleName("Model")
        self.setFont(scaled_font(self, TYPE_SUBTITLE, bold=True))
        self.menu_ = QMenu(self)
        self.setMenu(self.menu_)
        self.setStyleSheet(NO_MENU_INDICATOR)  # the text ends in ▾
        self._installed: list[tuple[str, str]] = []  # (name, path)
        self._current: str | None = None
        self.set_state("none")

    def restyle(self) -> None:
        """A child widget with a style sheet keeps the palette it was polished with and is told nothing when the
        application's palette changes (a live light/dark switch left the model name dark on dark): the parent calls
        this on its own palette change, and setting the sheet again polishes the button with the new colours."""
        self.setStyleSheet("")
        self.setStyleSheet(NO_MENU_INDICATOR)

    def set_installed(self, models: Sequence[tuple[str, str]]) -> None:
        self._installed = list(models)
        self._fill()

    def set_state(self, state: str, info: ModelInfo | None = None, text: str = "") -> None:
        """``state``: "none", "loading" (``text`` says what) or "loaded" (``info``)."""
        if state == "loaded" and info is not None:
            self._current = info.path
            self.setText(f"{info.name}  ▾")
            self.setToolTip(
                f"{info.path}\nRuns on: {info.placement or 'the CPU'}\n"
                f"Context: {info.n_ctx:,} tokens · loaded in {info.load_seconds:.1f} s\nClick to switch models"
            )
        elif state == "loading":
            self.setText(f"{text}  ▾")
            self.setToolTip("The model is loading; you can switch to another one")
        else:
            self._current = None
            self.setText("Choose a model  ▾")
            self.setToolTip("No model is loaded: pick an installed one, open a GGUF file, or download one")
        self.setAccessibleDescription(self.toolTip())
        self._fill()

    def _fill(self) -> None:
        menu = self.menu_
        menu.clear()
        if self._installed:
            section = menu.addSection("Installed models")
            section.setEnabled(False)
        for name, path in self._installed:
            action = menu.addAction(name)
            action.setCheckable(True)
            action.setChecked(self._current is not None and Path(path) == Path(self._current))
            action.setToolTip(path)
            action.triggered.connect(lambda _checked=False, p=path: self.modelChosen.emit(p))
        if self._installed:
            menu.addSeparator()
        menu.addAction("Open a GGUF file…", self.openRequested.emit)
        menu.addAction("Manage models…", self.manageRequested.emit)


class ChatHeader(QWidget):
    """The model picker, where the model runs, and the Models button."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.picker = ModelPicker(self)
        self.where = QLabel(self)
        self.where.setAccessibleName("Where the model runs")
        mute(self.where)
        self.where.setFont(scaled_font(self, TYPE_CAPTION))
        self.models_button = IconButton("tune-variant", "Models: download, import and configure models", self)
        self.models_button.clicked.connect(self.picker.manageRequested)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(SPACE_M, SPACE_S, SPACE_M, SPACE_XS)
        layout.setSpacing(SPACE_S)
        layout.addWidget(self.picker)
        layout.addWidget(self.where)
        layout.addStretch(1)
        layout.addWidget(self.models_button)

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange:
            self.picker.restyle()

    def show_model(self, info: ModelInfo | None, loading_text: str = "") -> None:
        if loading_text:
            self.picker.set_state("loading", text=loading_text)
            self.where.setText("")
        elif info is not None:
            self.picker.set_state("loaded", info)
            where = where_it_runs(info.placement)
            self.where.setText(f"● Ready · runs on {where}" if where else "● Ready")
        else:
            self.picker.set_state("none")
            self.where.setText("")


class EmptyChat(QWidget):
    """A new chat's page: which model answers, what it is good at, example prompts, and the documents hint."""

    exampleChosen = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAccessibleName("New chat")
        self.title = QLabel(self)
        self.title.setFont(scaled_font(self, TYPE_TITLE, bold=True))
        self.title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.title.setWordWrap(True)
        self.about = QLabel(self)
        self.about.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.about.setWordWrap(True)
        mute(self.about)
        self.examples: list[QPushButton] = []
        self.hint = QLabel(
            "Drop documents or folders on the window to ask about them — PDF, Word, EPUB, Markdown, text, code. "
            "They are read on this computer and answers cite them.",
            self,
        )
        self.hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.hint.setWordWrap(True)
        self.hint.setFont(scaled_font(self, TYPE_CAPTION))
        mute(self.hint)
        column = QWidget(self)
        column.setMaximumWidth(EMPTY_WIDTH)
        self._layout = QVBoxLayout(column)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._layout.setSpacing(SPACE_S)
        self._layout.addWidget(self.title)
        self._layout.addWidget(self.about)
        self._layout.addSpacing(SPACE_L)
        self._examples_at = self._layout.count()
        self._layout.addSpacing(SPACE_L)
        self._layout.addWidget(self.hint)
        # Stretches either side keep the column centred at up to EMPTY_WIDTH (an alignment flag would shrink it to
        # its size hint and clip the wrapped text).
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(column, 100)
        row.addStretch(1)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(SPACE_XL, SPACE_XL, SPACE_XL, SPACE_XL)
        outer.addStretch(2)
        outer.addLayout(row)
        outer.addStretch(3)
        self.set_model("", reasoning=True)

    def set_model(self, name: str, *, reasoning: bool) -> None:
        self.title.setText(f"Ask {name}" if name else "Ask anything")
        self.about.setText(
            "A reasoning model: it thinks step by step before it answers — good at maths, logic, code and careful "
            "explanations. Everything runs on this computer."
            if reasoning
            else "A general chat model, running entirely on this computer."
        )
        for button in self.examples:
            self._layout.removeWidget(button)
            button.deleteLater()
        self.examples = []
        for i, text in enumerate(REASONING_EXAMPLES if reasoning else CHAT_EXAMPLES):
            button = QPushButton(text, self)
            button.setMinimumHeight(button.fontMetrics().height() * 2 + SPACE_S)
            button.setAccessibleName(f"Example prompt: {text}")
            button.setToolTip("Ask this")
            button.setCursor(Qt.CursorShape.PointingHandCursor)
            button.clicked.connect(lambda _checked=False, t=text: self.exampleChosen.emit(t))
            self._layout.insertWidget(self._examples_at + i, button)
            self.examples.append(button)

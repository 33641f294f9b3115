"""The sources under an answer: which passages of which files it was given, each a link that opens the file.

An answer's [n] citations point here. Sources the finished answer never cites stay listed (the model saw them) but
shrink to one dimmed line, so a reader can tell what the answer actually rests on.
"""

from __future__ import annotations

import html
from collections.abc import Collection, Sequence

from PySide6.QtCore import QEvent, Qt, Signal
from PySide6.QtWidgets import QFrame, QLabel, QVBoxLayout, QWidget

from enclave.storage.chats import MessageSource
from enclave.ui.style import mute, muted_text, scaled_font

SNIPPET_PREVIEW_CHARS = 240
SEARCHING = "Searching this chat's documents…"
NOTHING_RELEVANT = "Nothing in this chat's documents matched the question, so this answer does not come from them."
NO_ROOM = "Matching passages did not fit: this conversation is too long. Start a new chat to answer from documents."


def _snippet(text: str) -> str:
    flat = " ".join(text.split())
    if len(flat) <= SNIPPET_PREVIEW_CHARS:
        return flat
    cut = flat[:SNIPPET_PREVIEW_CHARS]
    space = cut.rfind(" ")
    return (cut[:space] if space > SNIPPET_PREVIEW_CHARS // 2 else cut) + " …"


class SourcesView(QFrame):
    """A titled list of sources; ``sourceClicked(number)`` when one is activated (mouse or keyboard)."""

    sourceClicked = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAccessibleName("Sources of this answer")
        self.sources: tuple[MessageSource, ...] = ()
        self._cited: frozenset[int] | None = None
        self.title = QLabel("Sources", self)
        self.title.setFont(scaled_font(self, 0.85, bold=True))
        self.note = QLabel(self)
        self.note.setWordWrap(True)
        mute(self.note)
        self.rows: list[QLabel] = []
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(0, 4, 0, 0)
        self._layout.setSpacing(4)
        self._layout.addWidget(self.title)
        self._layout.addWidget(self.note)
        self.hide()

    @property
    def searching(self) -> bool:
        return not self.sources and self.note.text() == SEARCHING

    def show_searching(self) -> None:
        self._set((), SEARCHING)

    def set_sources(self, sources: Sequence[MessageSource], note: str | None = None) -> None:
        self._cited = None
        self._set(tuple(sources), note)

    def mark_cited(self, numbers: Collection[int]) -> None:
        """Dim the sources the finished answer does not cite."""
        self._cited = frozenset(numbers)
        self._refresh()

    def _set(self, sources: tuple[MessageSource, ...], note: str | None) -> None:
        self.sources = sources
        for row in self.rows:
            self._layout.removeWidget(row)
            row.deleteLater()
        self.rows = []
        for source in sources:
            row = QLabel(self)
            row.setWordWrap(True)
            row.setTextFormat(Qt.TextFormat.RichText)
            row.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
            row.setToolTip(f"Open {source.path}" + (f" at page {source.page}" if "page" in source.label else ""))
            row.setAccessibleName(f"Source {source.number}: {source.label}")
            row.linkActivated.connect(lambda _link, n=source.number: self.sourceClicked.emit(n))
            self._layout.addWidget(row)
            self.rows.append(row)
        self.note.setText(note or "")
        self.note.setVisible(bool(note))
        self.title.setVisible(bool(sources))
        self._refresh()
        self.setVisible(bool(sources) or bool(note))

    def changeEvent(self, event: QEvent) -> None:
        """Links and muted text are written into the rows' HTML: write them again in the new palette's colours."""
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange:
            self._refresh()

    def _refresh(self) -> None:
        muted = muted_text(self.palette()).name()
        for source, row in zip(self.sources, self.rows, strict=True):
            cited = self._cited is None or source.number in self._cited
            label = html.escape(source.label)
            snippet = html.escape(_snippet(source.snippet))
            href = f"source:{source.number}"
            if cited:
                row.setText(
                    f'<a href="{href}">[{source.number}] {label}</a><br><span style="color:{muted}">{snippet}</span>'
                )
            else:  # one line: the model was shown it, the answer does not rest on it
                row.setText(
                    f'<span style="color:{muted}">[{source.number}]</span> <a href="{href}">{label}</a>'
                    f'<span style="color:{muted}"> · not cited</span>'
                )
                row.setToolTip(f"{source.path}\n\n{_snippet(source.snippet)}")


__all__ = ["NOTHING_RELEVANT", "NO_ROOM", "SEARCHING", "SourcesView"]

"""A read-only Markdown view that streams in O(delta).

The text is cut (see ``StableSplitter``) into a settled prefix, rendered once and appended at the end of the
document, and a short unsettled tail that is re-rendered on each update. An unindented code fence that is still open
is drawn natively and streamed into character by character, so a long code block costs no more than a paragraph.
``set_markdown`` goes through the same cuts, so a reply looks the same streamed and reloaded from history.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from PySide6.QtCore import QElapsedTimer, QEvent, QSize, QSizeF, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import (
    QDesktopServices,
    QGuiApplication,
    QPalette,
    QTextBlockFormat,
    QTextCharFormat,
    QTextCursor,
    QTextDocument,
    QTextDocumentFragment,
    QTextFrameFormat,
    QTextLength,
    QTextOption,
    QWheelEvent,
)
from PySide6.QtWidgets import QFrame, QSizePolicy, QTextBrowser, QWidget

from enclave.ui.markdown_render import (
    CITE_SCHEME,
    COPY_SCHEME,
    CodePiece,
    HtmlPiece,
    MarkdownRenderer,
    OpenFence,
    Piece,
    StableSplitter,
    merge_pieces,
)
from enclave.ui.style import fixed_font, muted_text, subtle_background, subtle_border

UPDATE_INTERVAL_MS = 100  # at most ~10 renders a second while streaming
OPEN_LINK_SCHEMES = frozenset({"http", "https", "mailto"})

_renderer: MarkdownRenderer | None = None


def renderer() -> MarkdownRenderer:
    """One shared renderer: building the markdown-it parser costs more than rendering a paragraph."""
    global _renderer
    if _renderer is None:
        _renderer = MarkdownRenderer()
    return _renderer


class AutoHeightBrowser(QTextBrowser):
    """A read-only text view exactly as tall as its document, so the chat's scroll area is the only scroller.

    With ``max_height`` it stops growing there and scrolls itself (the thinking block). QTextDocumentLayout reports
    the height in pixels after every change, including re-wrapping when the width changes.
    """

    def __init__(self, parent: QWidget | None = None, *, max_height: int | None = None) -> None:
        super().__init__(parent)
        self._max_height = max_height
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setTabChangesFocus(True)
        self.setOpenLinks(False)
        self.setWordWrapMode(QTextOption.WrapMode.WrapAtWordBoundaryOrAnywhere)
        self.viewport().setAutoFillBackground(False)
        self.viewport().setCursor(Qt.CursorShape.IBeamCursor)
        document = self.document()
        document.setUndoRedoEnabled(False)  # an undo stack would keep every streamed edit alive
        document.setDocumentMargin(2)
        document.documentLayout().documentSizeChanged.connect(self._fit_height)
        self.setFixedHeight(self._height_for(document.size()))

    def _height_for(self, size: QSizeF) -> int:
        margins = self.contentsMargins()
        return math.ceil(size.height()) + margins.top() + margins.bottom()

    def _fit_height(self, size: QSizeF) -> None:
        height = self._height_for(size)
        if self._max_height is not None:
            # No scroll bar below the cap: it would narrow the text and re-wrap it into more lines.
            capped = height > self._max_height
            policy = Qt.ScrollBarPolicy.ScrollBarAsNeeded if capped else Qt.ScrollBarPolicy.ScrollBarAlwaysOff
            if self.verticalScrollBarPolicy() != policy:
                self.setVerticalScrollBarPolicy(policy)
            height = min(height, self._max_height)
        if height != self.height():
            self.setFixedHeight(height)

    @property
    def scrolls_itself(self) -> bool:
        return self.verticalScrollBar().maximum() > 0

    def sizeHint(self) -> QSize:
        return QSize(super().sizeHint().width(), self.height())

    def minimumSizeHint(self) -> QSize:
        return QSize(80, self.height())

    def wheelEvent(self, event: QWheelEvent) -> None:
        if self.scrolls_itself:
            super().wheelEvent(event)
        else:
            event.ignore()  # nothing to scroll here: let the chat view scroll


@dataclass
class _LiveCode:
    """The open code fence being streamed into a native frame."""

    fence: OpenFence
    cursor: QTextCursor  # at the end of the code, inside the frame
    index: int  # its number for the Copy link
    emitted: int = 0  # characters of code already in the document


class MarkdownView(AutoHeightBrowser):
    """Markdown answer text: ``append`` while streaming, then ``finish``; ``set_markdown`` for history."""

    citationClicked = Signal(int)  # the n of a [n] citation link

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.citations: frozenset[int] = frozenset()  # source numbers [n] links are made for; set before text
        self.setAccessibleName("Answer text")
        self.anchorClicked.connect(self._on_anchor_clicked)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._render_pending)
        self._since_render = QElapsedTimer()
        self._apply_style()
        self._reset()

    # --- public API -------------------------------------------------------------------------------------------

    def append(self, text: str) -> None:
        """Queue streamed text; the view renders at most every ``UPDATE_INTERVAL_MS``."""
        if not text:
            return
        self._pending.append(text)
        if not self._timer.isActive():
            elapsed = self._since_render.elapsed() if self._since_render.isValid() else UPDATE_INTERVAL_MS
            self._timer.start(max(0, UPDATE_INTERVAL_MS - elapsed))

    def flush(self) -> None:
        """Render what has arrived now instead of at the next tick (before a screenshot, in tests)."""
        self._timer.stop()
        self._render_pending()

    def finish(self) -> None:
        """Render everything received as final; stops the update timer."""
        self._timer.stop()
        self._take_pending()
        self._splitter.finish(self._source)
        self._render(final=True)

    def set_markdown(self, text: str) -> None:
        """Show a complete text (history) through the same cuts streaming uses."""
        self._timer.stop()
        self._reset()
        self._source = text
        self._splitter.finish(text)
        self._render(final=True)

    def markdown(self) -> str:
        """Everything received so far, rendered or not."""
        return self._source + "".join(self._pending)

    def code_block(self, index: int) -> str | None:
        """The code behind the Copy link ``copy:<index>``."""
        if self._live is not None and index == self._live.index:
            return self._live_code_text(final=False)  # what is shown: not a half-typed closing fence
        codes = self._codes + self._tail_codes
        return codes[index] if 0 <= index < len(codes) else None

    @property
    def updating(self) -> bool:
        return self._timer.isActive()

    # --- rendering --------------------------------------------------------------------------------------------

    def _reset(self) -> None:
        self.document().clear()
        self._pending: list[str] = []
        self._source = ""
        self._splitter = StableSplitter()
        self._next_cut = 0  # index into the splitter's cuts: the first not yet rendered
        self._committed = 0  # source index up to which the document holds the final rendering
        self._tail_start = 0  # document position where the tail starts
        self._codes: list[str] = []
        self._tail_codes: list[str] = []
        self._tail_text = ""
        self._live: _LiveCode | None = None

    def _take_pending(self) -> None:
        if self._pending:
            self._source += "".join(self._pending)
            self._pending.clear()

    def _render_pending(self) -> None:
        self._take_pending()
        self._splitter.feed(self._source)
        self._render(final=False)

    def _render(self, *, final: bool) -> None:
        self._since_render.start()
        self._commit_cuts()
        if final:
            if self._live is not None:  # a fence the model never closed
                self._close_live(len(self._source))
            self._remove_tail()
        else:
            self._render_tail()

    def _commit_cuts(self) -> None:
        """Render each newly settled piece once and append it after what is already final."""
        cuts = self._splitter.cuts
        pieces: list[Piece] = []
        codes: list[str] = []
        while self._next_cut < len(cuts):
            cut = cuts[self._next_cut]
            self._next_cut += 1
            if self._live is not None:
                # The live fence closed (or the text ended inside it): the frame already shows the final code.
                content_end, _end = self._splitter.closed_fences.pop(self._live.fence.start, (cut, cut))
                self._close_live(content_end)
                self._committed = cut
                continue
            chunk = self._source[self._committed : cut]
            self._committed = cut
            if chunk.strip():
                chunk_pieces, chunk_codes = renderer().render(chunk, len(self._codes) + len(codes), self.citations)
                pieces.extend(chunk_pieces)
                codes.extend(chunk_codes)
        if pieces:
            self._remove_tail()
            self._insert_pieces(merge_pieces(pieces), len(self._codes))
            self._codes.extend(codes)
            self._tail_start = self._end().position()

    def _render_tail(self) -> None:
        fence = self._splitter.open_fence
        if fence is not None and fence.top_level and fence.start == self._committed:
            if self._live is None:
                self._remove_tail()
                cursor = self._insert_code_frame(fence.language, len(self._codes), "")
                self._live = _LiveCode(fence, cursor, len(self._codes))
            self._sync_live(final=False)
            return
        tail = self._source[self._committed :]
        if tail == self._tail_text:
            return
        self._remove_tail()
        self._tail_text = tail
        if tail.strip():
            pieces, self._tail_codes = renderer().render(tail, len(self._codes), self.citations)
            self._insert_pieces(merge_pieces(pieces), len(self._codes))

    def _remove_tail(self) -> None:
        self._live = None
        self._tail_codes = []
        self._tail_text = ""
        cursor = self._end()
        if cursor.position() > self._tail_start:
            cursor.setPosition(self._tail_start, QTextCursor.MoveMode.KeepAnchor)
            cursor.removeSelectedText()
        if cursor.block().length() == 1:  # an empty last block keeps no format from the removed tail
            cursor.setBlockFormat(self._spacer_format())
            cursor.setBlockCharFormat(QTextCharFormat())

    # --- live code ------------------------------------------------------------------------------------------------

    def _live_code_text(self, *, final: bool, end: int | None = None) -> str:
        assert self._live is not None
        content = self._source[self._live.fence.content_start : end]
        if not final:
            # Hold back a last partial line that may turn out to be the closing fence.
            line_start = content.rfind("\n") + 1
            partial = content[line_start:]
            if partial.strip(" ").strip(self._live.fence.char) == "":
                content = content[:line_start]
        return content.removesuffix("\n")

    def _sync_live(self, *, final: bool, end: int | None = None) -> None:
        assert self._live is not None
        code = self._live_code_text(final=final, end=end)
        if len(code) > self._live.emitted:
            self._live.cursor.insertText(code[self._live.emitted :], self._code_char_format())
            self._live.emitted = len(code)

    def _close_live(self, content_end: int) -> None:
        """Turn the live frame into final content: its code is complete up to ``content_end``."""
        assert self._live is not None
        self._sync_live(final=True, end=content_end)
        self._codes.append(self._live_code_text(final=True, end=content_end))
        self._live = None
        self._tail_start = self._end().position()
        self._committed = max(self._committed, content_end)

    # --- document edits ---------------------------------------------------------------------------------------

    def _end(self) -> QTextCursor:
        cursor = QTextCursor(self.document())
        cursor.movePosition(QTextCursor.MoveOperation.End)
        return cursor

    def _insert_pieces(self, pieces: list[Piece], first_code_index: int) -> None:
        index = first_code_index
        for piece in pieces:
            if isinstance(piece, HtmlPiece):
                self._insert_html(piece.html)
            elif isinstance(piece, CodePiece):
                self._insert_code_frame(piece.language, index, piece.code)
                index += 1

    def _insert_html(self, html: str) -> None:
        """Append HTML as new blocks. Inserting a fragment merges its first block into the current one and drops that
        block's format, so the fragment gets an empty first block to sacrifice."""
        cursor = self._end()
        start = cursor.position()
        was_empty = cursor.block().length() == 1
        cursor.insertFragment(self._fragment(html.strip()))
        if was_empty:  # the empty block we inserted into (document start, or after a code frame) is now surplus
            self._remove_block_separator(start)
        self._tidy_blocks(start)

    def _remove_block_separator(self, position: int) -> None:
        """Drop the empty block starting at ``position``; the block after it keeps its own format."""
        cursor = QTextCursor(self.document())
        cursor.setPosition(position)
        cursor.setPosition(position + 1, QTextCursor.MoveMode.KeepAnchor)
        cursor.removeSelectedText()

    def _tidy_blocks(self, start: int) -> None:
        """Flatten the empty blocks Qt's HTML import leaves around tables, so history matches streaming."""
        document = self.document()
        root = document.rootFrame()
        block = document.findBlock(start)
        while block.isValid():
            following = block.next()
            if block.length() == 1 and document.frameAt(block.position()) is root and following.isValid():
                previous = block.previous()
                if document.frameAt(following.position()) is root and following.length() > 1:
                    self._remove_block_separator(block.position())  # before text: the text's block takes its place
                    block = document.findBlock(block.position())
                    continue
                if previous.isValid() and previous.length() > 1 and document.frameAt(previous.position()) is root:
                    self._remove_block_separator(block.position() - 1)  # before a table: join the text above
                    block = document.findBlock(block.position() - 1).next()
                    continue
                QTextCursor(block).setBlockFormat(self._spacer_format())
            block = following

    def _fragment(self, html: str) -> QTextDocumentFragment:
        scratch = QTextDocument()
        scratch.setDefaultFont(self.document().defaultFont())
        scratch.setDefaultStyleSheet(self.document().defaultStyleSheet())
        scratch.setHtml(html)
        first = scratch.begin()
        cursor = QTextCursor(scratch)
        cursor.insertBlock(first.blockFormat(), first.charFormat())
        cursor.movePosition(QTextCursor.MoveOperation.Start)
        cursor.setBlockFormat(QTextBlockFormat())
        cursor.setBlockCharFormat(QTextCharFormat())
        cursor.select(QTextCursor.SelectionType.Document)
        return QTextDocumentFragment(cursor)

    def _insert_code_frame(self, language: str, index: int, code: str) -> QTextCursor:
        """Append a code block (header with the language and a Copy link, then the code); returns a cursor at the end
        of the code so streamed code can follow."""
        cursor = self._end()
        if cursor.block().length() == 1:
            cursor.setBlockFormat(self._spacer_format())
        cursor.insertFrame(self._frame_format())
        header = QTextBlockFormat()
        header.setAlignment(Qt.AlignmentFlag.AlignRight)
        header.setBottomMargin(2)
        cursor.setBlockFormat(header)
        label = QTextCharFormat()
        label.setForeground(muted_text(self.palette()))
        label.setFontPointSize(max(6.0, self.font().pointSizeF() * 0.85))
        cursor.insertText(f"{language or 'code'}  ·  ", label)
        link = QTextCharFormat(label)
        link.setAnchor(True)
        link.setAnchorHref(f"{COPY_SCHEME}:{index}")
        link.setForeground(self.palette().color(QPalette.ColorRole.Link))
        link.setToolTip("Copy this code")
        cursor.insertText("Copy", link)
        cursor.insertBlock(QTextBlockFormat(), self._code_char_format())
        if code:
            cursor.insertText(code, self._code_char_format())
        end = QTextCursor(cursor)
        tail = self._end()
        tail.setBlockFormat(self._spacer_format())
        return end

    # --- formats ----------------------------------------------------------------------------------------------

    def _frame_format(self) -> QTextFrameFormat:
        frame = QTextFrameFormat()
        frame.setBackground(subtle_background(self.palette()))
        frame.setBorder(1)
        frame.setBorderBrush(subtle_border(self.palette()))
        frame.setBorderStyle(QTextFrameFormat.BorderStyle.BorderStyle_Solid)
        frame.setPadding(8)
        frame.setTopMargin(6)
        frame.setBottomMargin(6)
        frame.setWidth(QTextLength(QTextLength.Type.PercentageLength, 100))
        return frame

    def _code_char_format(self) -> QTextCharFormat:
        fmt = QTextCharFormat()
        fmt.setFont(fixed_font())
        return fmt

    @staticmethod
    def _spacer_format() -> QTextBlockFormat:
        """Empty blocks Qt needs around frames: as flat as possible."""
        fmt = QTextBlockFormat()
        fmt.setLineHeight(1, QTextBlockFormat.LineHeightTypes.FixedHeight.value)
        return fmt

    def _apply_style(self) -> None:
        palette = self.palette()
        code_bg = subtle_background(palette).name()
        border = subtle_border(palette).name()
        family = fixed_font().family()
        self.document().setDefaultStyleSheet(
            f"code {{ font-family: '{family}'; background-color: {code_bg}; }}"
            f"pre.code {{ font-family: '{family}'; background-color: {code_bg}; white-space: pre-wrap; }}"
            f"p.codeheader {{ margin-bottom: 0px; }}"
            f"table.md {{ border-collapse: collapse; border-color: {border}; margin-top: 6px; margin-bottom: 6px; }}"
            "th, td { padding: 4px; }"
            "h1 { font-size: x-large; } h2 { font-size: large; } h3 { font-size: medium; }"
            "blockquote { margin-left: 12px; }"
        )

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange:
            self._apply_style()
            if not self.updating and self._live is None:
                self.set_markdown(self.markdown())

    # --- links ------------------------------------------------------------------------------------------------

    def _on_anchor_clicked(self, url: QUrl) -> None:
        if url.scheme() == CITE_SCHEME:
            if url.path().isdigit():
                self.citationClicked.emit(int(url.path()))
        elif url.scheme() == COPY_SCHEME:
            try:
                code = self.code_block(int(url.path()))
            except ValueError:
                code = None
            if code is not None:
                QGuiApplication.clipboard().setText(code)
        elif url.scheme() in OPEN_LINK_SCHEMES:
            QDesktopServices.openUrl(url)

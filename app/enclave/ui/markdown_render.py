"""Markdown → pieces a QTextDocument can take, and the splitter that finds the settled prefix of a streaming reply.

Qt-free on purpose so the tricky part (where a growing text may be cut) is testable on its own. Top-level code
blocks come out as ``CodePiece`` so the view can draw them natively, append streamed code in O(delta) and give them a
"Copy" link; everything else is HTML. Raw HTML in the model's output is escaped and images become links: a reply must
never make the app load a file or a URL by itself.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml

from enclave.docs.prompt import CITATION

__all__ = [
    "CodePiece",
    "HtmlPiece",
    "MarkdownRenderer",
    "OpenFence",
    "Piece",
    "StableSplitter",
    "code_language",
    "merge_pieces",
]

COPY_SCHEME = "copy"
CITE_SCHEME = "cite"


@dataclass(frozen=True)
class HtmlPiece:
    html: str


@dataclass(frozen=True)
class CodePiece:
    code: str  # without the trailing newline
    language: str


Piece = HtmlPiece | CodePiece


def code_language(info: str) -> str:
    """The first word of a fence's info string: "python {linenos}" → "python"."""
    return info.strip().split(maxsplit=1)[0] if info.strip() else ""


def merge_pieces(pieces: Sequence[Piece]) -> list[Piece]:
    """Join neighbouring HTML pieces so the view inserts one fragment instead of many."""
    merged: list[Piece] = []
    for piece in pieces:
        if isinstance(piece, HtmlPiece) and merged and isinstance(merged[-1], HtmlPiece):
            merged[-1] = HtmlPiece(merged[-1].html + piece.html)
        elif not (isinstance(piece, HtmlPiece) and not piece.html.strip()):
            merged.append(piece)
    return merged


class MarkdownRenderer:
    """CommonMark + tables + strikethrough, with HTML tuned for Qt's rich-text subset."""

    def __init__(self) -> None:
        self._md = MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])
        rules = self._md.add_render_rule
        rules("fence", self._render_nested_code)
        rules("code_block", self._render_nested_code)
        rules("image", self._render_image)
        rules("text", self._render_text)
        rules("table_open", lambda *_: '<table border="1" cellspacing="0" cellpadding="4" class="md">\n')

    def render(
        self, text: str, first_code_index: int = 0, citations: frozenset[int] = frozenset()
    ) -> tuple[list[Piece], list[str]]:
        """Render ``text``; code blocks are numbered from ``first_code_index``. Returns (pieces, code of each block).

        ``[n]`` outside code becomes a ``cite:n`` link when ``n`` is one of ``citations`` (the answer's sources)."""
        codes: list[str] = []
        env: dict[str, Any] = {"codes": codes, "base": first_code_index, "citations": citations}
        tokens = self._md.parse(text, env)
        pieces: list[Piece] = []
        run: list[Any] = []

        def flush() -> None:
            if run:
                pieces.append(HtmlPiece(self._md.renderer.render(run, self._md.options, env)))
                run.clear()

        for token in tokens:
            if token.level == 0 and token.type in ("fence", "code_block"):
                flush()
                code = token.content.removesuffix("\n")
                codes.append(code)
                pieces.append(CodePiece(code, code_language(token.info) if token.type == "fence" else ""))
            else:
                run.append(token)
        flush()
        return pieces, codes

    # Render rules follow markdown-it's signature: (renderer, tokens, idx, options, env).

    @staticmethod
    def _render_nested_code(_renderer: Any, tokens: Sequence[Any], idx: int, _options: Any, env: dict[str, Any]) -> str:
        """Code inside a list or a quote: plain HTML, still with a Copy link."""
        code = tokens[idx].content.removesuffix("\n")
        codes: list[str] = env["codes"]
        codes.append(code)
        index = env["base"] + len(codes) - 1
        return (
            f'<p align="right" class="codeheader"><a href="{COPY_SCHEME}:{index}">Copy</a></p>'
            f'<pre class="code">{html.escape(code)}</pre>\n'
        )

    @staticmethod
    def _render_text(_renderer: Any, tokens: Sequence[Any], idx: int, _options: Any, env: dict[str, Any]) -> str:
        content = tokens[idx].content
        citations: frozenset[int] = env.get("citations", frozenset())
        if not citations or "[" not in content:
            return escapeHtml(content)  # markdown-it's own text rule
        out: list[str] = []
        last = 0
        for match in CITATION.finditer(content):
            out.append(escapeHtml(content[last : match.start()]))
            parts = re.split(r"(\s*[,;]\s*)", match.group(1))
            linked = [
                f'<a href="{CITE_SCHEME}:{int(part)}">{part}</a>'
                if part.isdigit() and int(part) in citations
                else escapeHtml(part)
                for part in parts
            ]
            out.append("[" + "".join(linked) + "]")
            last = match.end()
        out.append(escapeHtml(content[last:]))
        return "".join(out)

    @staticmethod
    def _render_image(_renderer: Any, tokens: Sequence[Any], idx: int, _options: Any, _env: dict[str, Any]) -> str:
        token = tokens[idx]
        alt = html.escape(token.content or "image")
        src = html.escape(str(token.attrGet("src") or ""), quote=True)
        return f'<a href="{src}">[image: {alt}]</a>'


_FENCE_OPEN = re.compile(r"^( {0,3})(`{3,}|~{3,})(.*)$")
_FENCE_CLOSE = re.compile(r"^ {0,3}(`{3,}|~{3,})[ \t]*$")


@dataclass(frozen=True)
class OpenFence:
    """A fence that is still open. ``top_level``: unindented, so the view may stream it natively."""

    start: int  # index of the opening line
    content_start: int  # index just after the opening line
    char: str
    length: int
    language: str
    top_level: bool


@dataclass
class StableSplitter:
    """Finds cut points in a growing Markdown text: rendering the text in pieces between cuts gives the same result
    no matter how much text follows, so each piece is rendered exactly once.

    Cuts fall after blank lines outside code fences, and around unindented fences (a fence interrupts a paragraph,
    and a closed fence cannot change). Only complete lines are examined; ``finish`` treats the last line as complete.
    """

    cuts: list[int] = field(default_factory=list)
    open_fence: OpenFence | None = None
    closed_fences: dict[int, tuple[int, int]] = field(default_factory=dict)  # start → (content end, end)
    _scanned: int = 0

    @property
    def boundary(self) -> int:
        return self.cuts[-1] if self.cuts else 0

    def feed(self, text: str) -> None:
        """Scan the complete lines of ``text`` that were not scanned yet (``text`` only ever grows)."""
        while True:
            newline = text.find("\n", self._scanned)
            if newline < 0:
                return
            self._scan_line(text, self._scanned, newline + 1)

    def finish(self, text: str) -> None:
        """Scan the rest, including a last line without a newline, and cut at the very end."""
        self.feed(text)
        if self._scanned < len(text):
            self._scan_line(text, self._scanned, len(text))
        self._cut(len(text))

    def _cut(self, position: int) -> None:
        if position > self.boundary:
            self.cuts.append(position)

    def _scan_line(self, text: str, start: int, end: int) -> None:
        self._scanned = end
        line = text[start:end].rstrip("\r\n")
        fence = self.open_fence
        if fence is not None:
            close = _FENCE_CLOSE.match(line)
            if close and close.group(1)[0] == fence.char and len(close.group(1)) >= fence.length:
                self.open_fence = None
                if fence.top_level:
                    self.closed_fences[fence.start] = (start, end)
                    self._cut(end)
            return
        opening = _FENCE_OPEN.match(line)
        if opening and not (opening.group(2)[0] == "`" and "`" in opening.group(3)):
            indent, marker, info = opening.groups()
            top_level = not indent
            self.open_fence = OpenFence(start, end, marker[0], len(marker), code_language(info), top_level)
            if top_level:
                self._cut(start)
        elif not line.strip():
            self._cut(end)

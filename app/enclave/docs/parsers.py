"""Turn a user's file into text with page numbers, or a clear per-file status — never an exception.

Every file is parsed on its own, under limits (file size, pages, characters, unpacked size of zip-based formats,
time), so an encrypted, truncated, malformed or hostile file is reported and the rest of a folder carries on.
Unknown file types are reported as unsupported, not guessed at.
"""

from __future__ import annotations

import csv
import enum
import io
import posixpath
import re
import stat
import time
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from enclave.docs.limits import DEFAULT_LIMITS, Limits


class ParseStatus(enum.StrEnum):
    OK = "ok"
    EMPTY = "empty"  # readable, but no text (e.g. a scanned PDF without OCR)
    ENCRYPTED = "encrypted"
    UNSUPPORTED = "unsupported"
    TOO_LARGE = "too_large"
    DAMAGED = "damaged"
    TIMEOUT = "timeout"


@dataclass(frozen=True)
class Page:
    number: int  # 1-based: PDF page, EPUB chapter; 1 for formats without pages
    text: str


@dataclass(frozen=True)
class Heading:
    """A section heading: where it starts (page and character offset in that page's text), its depth and title."""

    page: int
    start: int
    level: int  # 0: chapter (top level), 1: section, ...
    title: str


@dataclass(frozen=True)
class ParsedDocument:
    path: str
    kind: str
    status: ParseStatus
    pages: tuple[Page, ...] = ()  # pages with text; blank pages are left out
    error: str | None = None  # a sentence for the user when status is not OK
    page_count: int | None = None  # pages in the file, blank ones included (PDF, EPUB)
    title: str = ""  # the document's title (PDF metadata, its first line, or the file name)
    headings: tuple[Heading, ...] = ()  # in reading order: PDF bookmarks, Markdown "#" lines

    @property
    def chars(self) -> int:
        return sum(len(p.text) for p in self.pages)


class _Refused(Exception):
    def __init__(self, status: ParseStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


CODE_EXTENSIONS = frozenset(
    [
        ".py",
        ".pyi",
        ".js",
        ".mjs",
        ".ts",
        ".tsx",
        ".jsx",
        ".java",
        ".kt",
        ".scala",
        ".c",
        ".h",
        ".cc",
        ".cpp",
        ".hpp",
        ".cs",
        ".go",
        ".rs",
        ".rb",
        ".php",
        ".swift",
        ".m",
        ".lua",
        ".r",
        ".jl",
        ".sh",
        ".bash",
        ".zsh",
        ".ps1",
        ".sql",
        ".css",
        ".scss",
        ".json",
        ".yaml",
        ".yml",
        ".toml",
        ".ini",
        ".cfg",
        ".xml",
        ".tex",
        ".dart",
        ".hs",
        ".ex",
        ".exs",
        ".erl",
        ".clj",
        ".vue",
        ".svelte",
    ]
)
KINDS: dict[str, str] = {
    ".pdf": "pdf",
    ".docx": "docx",
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".text": "text",
    ".log": "text",
    ".rst": "rst",
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".epub": "epub",
    ".csv": "csv",
    ".tsv": "csv",
    **dict.fromkeys(CODE_EXTENSIONS, "code"),
}


def kind_of(path: Path) -> str | None:
    return KINDS.get(path.suffix.lower())


def parse_file(path: Path, limits: Limits = DEFAULT_LIMITS) -> ParsedDocument:
    """Parse one file; any problem becomes a status with a message, never an exception."""
    kind = kind_of(path)
    if kind is None:
        return ParsedDocument(
            str(path),
            "unknown",
            ParseStatus.UNSUPPORTED,
            error=f"{path.suffix or 'Files without an extension'} files are not supported (PDF, DOCX, Markdown, "
            "text, reStructuredText, HTML, EPUB, CSV and source code are).",
        )
    deadline = time.monotonic() + limits.max_seconds
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):  # reading a pipe or a device could block forever
            raise _Refused(ParseStatus.UNSUPPORTED, "This is not a regular file (a pipe, a device or a folder).")
        size = info.st_size
        cap = limits.max_text_file_bytes if kind in TEXT_KINDS else limits.max_file_bytes
        if size > cap:
            raise _Refused(
                ParseStatus.TOO_LARGE, f"The file is {size / 1e6:,.0f} MB; the limit is {cap / 1e6:,.0f} MB."
            )
        pages = [Page(p.number, clean_text(p.text)) for p in _PARSERS[kind](path, limits, deadline)]
        # The PDF and EPUB parsers return every page, blank ones too, so the last number is the count.
        page_count = max((p.number for p in pages), default=0) if kind in PAGED_KINDS else None
    except _Refused as exc:
        return ParsedDocument(str(path), kind, exc.status, error=str(exc))
    except MemoryError:
        return ParsedDocument(
            str(path), kind, ParseStatus.TOO_LARGE, error="Reading this file needs more memory than allowed."
        )
    except RecursionError:
        return ParsedDocument(str(path), kind, ParseStatus.DAMAGED, error="The file is nested too deeply to read.")
    except OSError as exc:
        return ParsedDocument(str(path), kind, ParseStatus.DAMAGED, error=f"The file could not be read: {exc}")
    except Exception as exc:  # a parser library choking on a malformed file
        return ParsedDocument(
            str(path),
            kind,
            ParseStatus.DAMAGED,
            error=f"The file looks damaged or malformed ({type(exc).__name__}: {exc}).",
        )
    pages = [p for p in pages if p.text.strip()]
    if not pages:
        return ParsedDocument(
            str(path), kind, ParseStatus.EMPTY, error="No text was found in this file.", page_count=page_count
        )
    title, headings = _structure(path, kind, pages)
    return ParsedDocument(
        str(path), kind, ParseStatus.OK, tuple(pages), page_count=page_count, title=title, headings=headings
    )


MAX_TITLE_CHARS = 120
_MARKDOWN_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.M)


def _structure(path: Path, kind: str, pages: list[Page]) -> tuple[str, tuple[Heading, ...]]:
    """The title and section headings, for the context a passage is embedded with. Never fails the file."""
    title = ""
    headings: list[Heading] = []
    try:
        if kind == "pdf":
            title, outline = _pdf_outline(path)
            headings = _place_headings(outline, pages)
        elif kind == "markdown":
            for page in pages:
                for match in _MARKDOWN_HEADING.finditer(page.text):
                    headings.append(Heading(page.number, match.start(), len(match.group(1)) - 1, match.group(2)))
    except Exception:  # a broken outline is no reason to lose the text
        headings = []
    if not title:
        first = next((line.strip() for line in pages[0].text.splitlines() if line.strip()), "")
        title = first if 3 <= len(first) <= 80 and kind in ("pdf", "docx", "epub") else ""
    return (title or path.stem)[:MAX_TITLE_CHARS], tuple(headings)


def _pdf_outline(path: Path) -> tuple[str, list[tuple[int, int, str]]]:
    """(metadata title, [(page, level, title)]) from the PDF's bookmarks."""
    import pypdfium2 as pdfium  # type: ignore[import-untyped]

    document = pdfium.PdfDocument(str(path))
    try:
        title = " ".join(str(document.get_metadata_dict().get("Title", "")).split())
        outline = []
        for bookmark in document.get_toc(max_depth=8):
            destination = bookmark.get_dest()
            index = destination.get_index() if destination is not None else None
            name = " ".join((bookmark.get_title() or "").split())
            if index is not None and name:
                outline.append((index + 1, bookmark.level, name[:MAX_TITLE_CHARS]))
        return title, outline
    finally:
        document.close()


def _place_headings(outline: list[tuple[int, int, str]], pages: list[Page]) -> list[Heading]:
    """Bookmarks with the offset of their title in the page's text (0 when the title is not found there)."""
    texts = {p.number: p.text for p in pages}
    placed = []
    for page, level, title in outline:
        text = texts.get(page)
        if text is None:
            continue
        words = [re.escape(w) for w in title.split()]
        match = re.search(r"\s+".join(words), text, re.I) if words else None
        placed.append(Heading(page, match.start() if match else 0, level, title))
    placed.sort(key=lambda h: (h.page, h.start))
    return placed


def parse_many(paths: Iterable[Path], limits: Limits = DEFAULT_LIMITS) -> list[ParsedDocument]:
    return [parse_file(path, limits) for path in paths]


# --- helpers ----------------------------------------------------------------------------------------------------------

# C0 controls other than tab and newline, DEL, lone surrogates (SQLite and UTF-8 reject them) and the non-characters
# PDF text extraction sometimes yields.
_CONTROL = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f\ud800-\udfff\ufffe\uffff]")


def clean_text(text: str) -> str:
    """Unix newlines, form feeds as line breaks, no control characters (they would only confuse tokenizers)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x0c", "\n")
    return _CONTROL.sub("", text)


def _check(deadline: float, pages: int, chars: int, limits: Limits) -> None:
    if time.monotonic() > deadline:
        raise _Refused(ParseStatus.TIMEOUT, f"Reading this file took longer than {limits.max_seconds:.0f} s.")
    if pages > limits.max_pages:
        raise _Refused(ParseStatus.TOO_LARGE, f"The file has more than {limits.max_pages:,} pages.")
    if chars > limits.max_chars:
        raise _Refused(ParseStatus.TOO_LARGE, f"The file has more than {limits.max_chars:,} characters of text.")


def decode_text(data: bytes) -> str:
    """Decode a text file whose encoding nobody declared.

    UTF-8 (with or without BOM), UTF-16 with a BOM; a file that is UTF-8 but for a few bad bytes stays UTF-8 (the bad
    bytes become U+FFFD) rather than turning every accented letter into mojibake; anything else is read as
    Windows-1252, the usual legacy encoding. Binary data (NUL bytes, mostly control characters) is refused.
    """
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace")
    sample = data[:8192]
    controls = sum(1 for b in sample if b < 32 and b not in (9, 10, 12, 13))
    if b"\x00" in sample or controls > len(sample) // 10:
        raise _Refused(ParseStatus.DAMAGED, "This looks like a binary file, not text.")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    lenient = data.decode("utf-8-sig", errors="replace")
    bad = lenient.count("\ufffd")
    valid_non_ascii = sum(1 for ch in lenient if ord(ch) > 127) - bad
    if valid_non_ascii > bad:
        return lenient
    return data.decode("cp1252", errors="replace")


def _read_text(path: Path, limits: Limits) -> str:
    text = decode_text(path.read_bytes())
    _check(float("inf"), 1, len(text), limits)
    return text


class _HTMLText(HTMLParser):
    """Visible text of an HTML/XHTML document: scripts and styles dropped, block elements on their own lines."""

    SKIP = frozenset({"script", "style", "noscript", "template", "head", "svg"})
    BLOCKS = frozenset(
        {
            "p",
            "div",
            "br",
            "li",
            "tr",
            "h1",
            "h2",
            "h3",
            "h4",
            "h5",
            "h6",
            "section",
            "article",
            "pre",
            "table",
            "blockquote",
            "dt",
            "dd",
            "hr",
            "td",
            "th",
        }
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self._skipping += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.BLOCKS:  # <br/>: a self-closing tag opens nothing to skip
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP and self._skipping:
            self._skipping -= 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)

    def text(self) -> str:
        lines = (" ".join(line.split()) for line in "".join(self.parts).splitlines())
        return "\n".join(line for line in lines if line)


def html_to_text(markup: str) -> str:
    parser = _HTMLText()
    parser.feed(markup)
    parser.close()
    return parser.text()


def _open_zip(path: Path, limits: Limits) -> zipfile.ZipFile:
    """Open a zip-based document after checking what it claims to hold.

    The declared sizes bound what can come out: ``zipfile`` stops a member at its declared ``file_size`` and checks
    its CRC, so an archive that lies about sizes fails instead of inflating past the limit.
    """
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise _Refused(ParseStatus.DAMAGED, "The file is damaged (it is not a valid zip container).") from exc
    members = archive.infolist()
    unpacked = sum(info.file_size for info in members)
    packed = max(1, sum(info.compress_size for info in members))
    if len(members) > limits.max_zip_members:
        archive.close()
        raise _Refused(ParseStatus.TOO_LARGE, f"The file holds {len(members):,} parts: refused as a possible zip bomb.")
    if unpacked > limits.max_unzipped_bytes or unpacked / packed > limits.max_zip_ratio:
        archive.close()
        raise _Refused(
            ParseStatus.TOO_LARGE,
            f"The file would unpack to {unpacked / 1e6:,.0f} MB ({unpacked / packed:,.0f}× its size): refused as a "
            "possible zip bomb.",
        )
    return archive


# --- formats ----------------------------------------------------------------------------------------------------------


def _pdf(path: Path, limits: Limits, deadline: float) -> Iterable[Page]:
    import pypdfium2 as pdfium

    try:
        document = pdfium.PdfDocument(str(path))
    except pdfium.PdfiumError as exc:
        if "password" in str(exc).lower():
            raise _Refused(
                ParseStatus.ENCRYPTED, "The PDF is password-protected. Save an unprotected copy to add it."
            ) from exc
        raise _Refused(
            ParseStatus.DAMAGED, f"The PDF is damaged or incomplete and could not be opened ({exc})."
        ) from exc
    try:
        count = len(document)
        _check(deadline, count, 0, limits)
        chars = 0
        pages = []
        for index in range(count):
            page = document[index]
            try:
                textpage = page.get_textpage()
                text = textpage.get_text_bounded()
                textpage.close()
            finally:
                page.close()
            chars += len(text)
            _check(deadline, index + 1, chars, limits)
            pages.append(Page(index + 1, text))
        return pages
    finally:
        document.close()


def _docx_blocks(document: Any) -> Iterator[str]:
    """Paragraphs and tables in document order (a table's rows as ``a | b | c``; merged cells once)."""
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    for element in document.element.body.iterchildren():
        tag = element.tag.rsplit("}", 1)[-1]
        if tag == "p":
            yield Paragraph(element, document).text
        elif tag == "tbl":
            for row in Table(element, document).rows:
                cells: list[str] = []
                for cell in row.cells:
                    text = " ".join(cell.text.split())
                    if not cells or cells[-1] != text:  # a merged cell is returned once per grid column
                        cells.append(text)
                yield " | ".join(cells)


def _docx(path: Path, limits: Limits, deadline: float) -> Iterable[Page]:
    from docx import Document

    _open_zip(path, limits).close()
    document = Document(str(path))
    parts: list[str] = []
    chars = 0
    for block in _docx_blocks(document):
        parts.append(block)
        chars += len(block) + 1
        if len(parts) % 256 == 0:
            _check(deadline, 1, chars, limits)
    _check(deadline, 1, chars, limits)
    return [Page(1, "\n".join(parts))]


def _plain(path: Path, limits: Limits, deadline: float) -> Iterable[Page]:
    return [Page(1, _read_text(path, limits))]


def _html(path: Path, limits: Limits, deadline: float) -> Iterable[Page]:
    return [Page(1, html_to_text(_read_text(path, limits)))]


MAX_LABELLED_COLUMNS = 64


def _csv(path: Path, limits: Limits, deadline: float) -> Iterable[Page]:
    text = _read_text(path, limits)
    dialect = "excel-tab" if path.suffix.lower() == ".tsv" else "excel"
    rows = csv.reader(io.StringIO(text), dialect=dialect)
    header = next(rows, [])
    lines = [" | ".join(header)]
    # "column: value" keeps each row meaningful once it is cut into chunks; a table too wide for a row to fit in a
    # passage gains nothing from it and would only double its text, so its rows are kept as they are.
    labelled = 0 < len(header) <= MAX_LABELLED_COLUMNS
    chars = len(lines[0])
    for row in rows:
        lines.append("; ".join(f"{h}: {v}" for h, v in zip(header, row, strict=False)) if labelled else " | ".join(row))
        chars += len(lines[-1]) + 1
        if len(lines) % 1024 == 0:
            _check(deadline, 1, chars, limits)
    return [Page(1, "\n".join(lines))]


def _epub(path: Path, limits: Limits, deadline: float) -> Iterable[Page]:
    """Chapters (spine items) in reading order; each chapter is a "page" numbered from 1."""
    with _open_zip(path, limits) as archive:
        try:
            container = ElementTree.fromstring(archive.read("META-INF/container.xml"))
            rootfile = next(e for e in container.iter() if e.tag.endswith("rootfile")).get("full-path", "")
            opf = ElementTree.fromstring(archive.read(rootfile))
        except (KeyError, StopIteration, ElementTree.ParseError) as exc:
            raise _Refused(ParseStatus.DAMAGED, "The EPUB has no readable table of contents.") from exc
        base = posixpath.dirname(rootfile)
        manifest = {e.get("id"): e.get("href", "") for e in opf.iter() if e.tag.endswith("}item") or e.tag == "item"}
        spine = [e.get("idref") for e in opf.iter() if e.tag.endswith("itemref") or e.tag == "itemref"]
        _check(deadline, len(spine), 0, limits)
        pages = []
        chars = 0
        for number, idref in enumerate(spine, start=1):
            href = manifest.get(idref)
            if not href:
                continue
            name = posixpath.normpath(posixpath.join(base, href.split("#")[0]))
            try:
                text = html_to_text(decode_text(archive.read(name)))
            except (KeyError, _Refused):
                continue  # a missing or binary spine item: skip that chapter, keep the book
            chars += len(text)
            _check(deadline, number, chars, limits)
            pages.append(Page(number, text))
        return pages


_PARSERS = {
    "pdf": _pdf,
    "docx": _docx,
    "markdown": _plain,
    "text": _plain,
    "rst": _plain,
    "code": _plain,
    "html": _html,
    "csv": _csv,
    "epub": _epub,
}
TEXT_KINDS = frozenset({"markdown", "text", "rst", "code", "html", "csv"})
PAGED_KINDS = frozenset({"pdf", "epub"})

__all__ = [
    "DEFAULT_LIMITS",
    "KINDS",
    "Heading",
    "Limits",
    "Page",
    "ParseStatus",
    "ParsedDocument",
    "clean_text",
    "decode_text",
    "html_to_text",
    "kind_of",
    "parse_file",
    "parse_many",
]

"""Document parsing: every real PDF in tests/data/pdf, each other format, and broken or hostile files."""

from __future__ import annotations

import json
import re
import sys
import time
import zipfile
from pathlib import Path

import pypdfium2 as pdfium
import pytest

from enclave.docs.isolation import IsolatedParser
from enclave.docs.limits import Limits
from enclave.docs.parsers import ParseStatus, clean_text, decode_text, parse_file, parse_many

DATA = Path(__file__).parent / "data"
CORPUS = DATA / "pdf"  # real PDFs from py-pdf/sample-files (CC-BY-SA-4.0, see tests/data/README.md)
FILES = json.loads((CORPUS / "files.json").read_text())["data"]
FOUR_PAGES = CORPUS / "004-pdflatex-4-pages" / "pdflatex-4-pages.pdf"
LIBREOFFICE = CORPUS / "002-trivial-libre-office-writer" / "002-trivial-libre-office-writer.pdf"
# Scans without a text layer: readable, but there is nothing to index (no OCR); every other PDF must yield text.
IMAGE_ONLY = {
    "007-imagemagick-images/imagemagick-images.pdf",
    "007-imagemagick-images/imagemagick-CCITTFaxDecode.pdf",
}


def test_files_json_and_the_readme_list_every_pdf_in_tests_data() -> None:
    on_disk = {str(p.relative_to(CORPUS)) for p in CORPUS.rglob("*.pdf")}
    assert len(on_disk) >= 15 and on_disk == {e["path"] for e in FILES}
    assert {e["path"] for e in FILES if e["encrypted"]} and IMAGE_ONLY.issubset(on_disk)
    readme = (DATA / "README.md").read_text()
    assert all(f"`{path}`" in readme for path in on_disk)  # each copied file has its attribution


@pytest.mark.parametrize("entry", FILES, ids=lambda e: e["path"])
def test_every_corpus_pdf_gives_its_pages_or_a_clear_status(entry: dict[str, object]) -> None:
    result = parse_file(CORPUS / str(entry["path"]))
    if entry["encrypted"]:
        assert result.status is ParseStatus.ENCRYPTED
        assert result.error is not None and "password" in result.error
        assert not result.pages
        return
    assert result.page_count == entry["pages"]
    if entry["path"] in IMAGE_ONLY:
        assert result.status is ParseStatus.EMPTY and "No text" in str(result.error)
    else:
        assert result.status is ParseStatus.OK, result.error
        assert all(1 <= p.number <= result.page_count for p in result.pages)
        assert all(p.text.strip() for p in result.pages)


def test_page_numbers_follow_the_pdf(tmp_path: Path) -> None:
    result = parse_file(FOUR_PAGES)
    assert result.status is ParseStatus.OK
    assert [p.number for p in result.pages] == [1, 2, 3, 4]
    # A long document: real pages from four producers' files (pdfTeX, two-column, rotated Arabic, Google Docs), three
    # rounds, each file followed by a blank page, so blank pages are left out but never shift the numbers after them.
    sources = [
        FOUR_PAGES,
        CORPUS / "026-latex-multicolumn" / "multicolumn.pdf",
        CORPUS / "015-arabic" / "habibi-rotated.pdf",
        CORPUS / "011-google-doc-document" / "google-doc-document.pdf",
    ]
    source_text = {s: [p.text for p in parse_file(s).pages] for s in sources}
    expected: dict[int, str] = {}
    long_pdf = pdfium.PdfDocument.new()
    for _ in range(3):
        for source in sources:
            pdf = pdfium.PdfDocument(str(source))
            for index in range(len(pdf)):
                long_pdf.import_pages(pdf, [index])
                expected[len(long_pdf)] = source_text[source][index]
            pdf.close()
            long_pdf.new_page(612, 792)  # blank
    page_count = len(long_pdf)
    long_pdf.save(str(tmp_path / "long.pdf"))
    long_pdf.close()
    assert page_count == 48 and len(expected) == 36
    big = parse_file(tmp_path / "long.pdf")
    assert big.status is ParseStatus.OK and big.page_count == page_count  # the blank last page counts too
    assert [p.number for p in big.pages] == sorted(expected)
    assert {p.number: p.text for p in big.pages} == expected  # each page's own text, under its own number
    assert "\r\n" in raw_text(FOUR_PAGES, 0)  # PDFium ends its lines with CRLF ...
    assert all("\r" not in p.text and "\x00" not in p.text for p in big.pages)  # ... which are cleaned away


def raw_text(path: Path, index: int) -> str:
    """A page's text as PDFium gives it, before any cleaning."""
    pdf = pdfium.PdfDocument(str(path))
    try:
        textpage = pdf[index].get_textpage()
        text: str = textpage.get_text_bounded()
        textpage.close()
        return text
    finally:
        pdf.close()


def unreadable_copy(path: Path) -> bytes:
    """The PDF with its catalog and page tree wiped with NUL bytes and no /Root in its trailer: the damage of
    py-pdf/sample-files' 017-unreadable-meta-data (2.8 MB, too big to keep here), on a small file."""
    data = bytearray(path.read_bytes())
    wiped = 0
    for obj in re.finditer(rb"\d+ 0 obj\b.*?endobj", bytes(data), re.S):
        if re.search(rb"/Type\s*/(Catalog|Pages)\b", obj.group()):
            data[obj.start() : obj.end()] = bytes(obj.end() - obj.start())
            wiped += 1
    assert wiped == 2, "the catalog and the page tree"
    return re.sub(rb"/Root \d+ 0 R", lambda m: b" " * len(m.group()), bytes(data))


def test_unreadable_pdf_is_reported_as_damaged_without_stopping_the_others(tmp_path: Path) -> None:
    (tmp_path / "unreadable.pdf").write_bytes(unreadable_copy(LIBREOFFICE))
    (tmp_path / "good.pdf").write_bytes(LIBREOFFICE.read_bytes())
    (tmp_path / "four.pdf").write_bytes(FOUR_PAGES.read_bytes())
    results = {Path(r.path).name: r for r in parse_many(sorted(tmp_path.iterdir()))}
    unreadable = results["unreadable.pdf"]
    assert unreadable.status is ParseStatus.DAMAGED and "could not be opened" in str(unreadable.error)
    assert not unreadable.pages
    assert results["good.pdf"].status is ParseStatus.OK and results["good.pdf"].page_count == 1
    assert results["four.pdf"].status is ParseStatus.OK and results["four.pdf"].page_count == 4


def test_truncated_pdf_is_reported_as_damaged(tmp_path: Path) -> None:
    data = FOUR_PAGES.read_bytes()
    for fraction in (0.1, 0.5, 0.9):
        path = tmp_path / f"cut-{fraction}.pdf"
        path.write_bytes(data[: int(len(data) * fraction)])
        result = parse_file(path)
        assert result.status is ParseStatus.DAMAGED and "damaged or incomplete" in str(result.error)


def test_broken_files_each_get_a_status_and_do_not_stop_the_others(tmp_path: Path) -> None:
    files = {
        "notes.md": b"# Notes\n\nThe launch is on Tuesday.\n",
        "broken.pdf": b"%PDF-1.7\n1 0 obj << /Type /Catalog >>\n",
        "binary.txt": bytes(range(256)) * 10,
        "controls.txt": bytes(range(1, 9)) * 500,  # no NUL byte, but nothing a person would call text
        "empty.txt": b"",
        "empty.pdf": b"",
        "empty.docx": b"",
        "empty.epub": b"",
        "empty.html": b"",
        "empty.csv": b"",
        "garbage.docx": b"PK\x03\x04" + bytes(range(256)) * 4,
        "photo.heic": b"\x00\x01",
        "Makefile": b"all:\n\techo hi\n",
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    not_a_docx = tmp_path / "not-word.docx"
    with zipfile.ZipFile(not_a_docx, "w") as archive:
        archive.writestr("hello.txt", "a zip, but not a Word document")
    results = {Path(r.path).name: r for r in parse_many(sorted(tmp_path.iterdir()))}
    assert results["notes.md"].status is ParseStatus.OK and "Tuesday" in results["notes.md"].pages[0].text
    expected = {
        "broken.pdf": ParseStatus.DAMAGED,
        "binary.txt": ParseStatus.DAMAGED,
        "controls.txt": ParseStatus.DAMAGED,
        "empty.txt": ParseStatus.EMPTY,
        "empty.html": ParseStatus.EMPTY,
        "empty.csv": ParseStatus.EMPTY,
        "empty.pdf": ParseStatus.DAMAGED,
        "empty.docx": ParseStatus.DAMAGED,
        "empty.epub": ParseStatus.DAMAGED,
        "garbage.docx": ParseStatus.DAMAGED,
        "not-word.docx": ParseStatus.DAMAGED,
        "photo.heic": ParseStatus.UNSUPPORTED,
        "Makefile": ParseStatus.UNSUPPORTED,  # unknown types are reported, not guessed
    }
    for name, status in expected.items():
        assert results[name].status is status, (name, results[name])
        assert results[name].error, name
        assert not results[name].pages, name
    assert "binary" in str(results["binary.txt"].error)
    assert "not supported" in str(results["photo.heic"].error)


def test_text_encodings(tmp_path: Path) -> None:
    latin = tmp_path / "latin.txt"
    latin.write_bytes("Café crème, déjà vu".encode("cp1252"))
    assert parse_file(latin).pages[0].text == "Café crème, déjà vu"
    bom = tmp_path / "bom.txt"
    bom.write_bytes("\ufeffhello".encode())
    assert parse_file(bom).pages[0].text == "hello"
    utf16 = tmp_path / "utf16.txt"
    utf16.write_bytes("wide text".encode("utf-16"))
    assert parse_file(utf16).pages[0].text == "wide text"
    crlf = tmp_path / "dos.txt"
    crlf.write_bytes(b"line one\r\nline two\rline three\x0cnext page")
    assert parse_file(crlf).pages[0].text == "line one\nline two\nline three\nnext page"
    assert clean_text("a\ud800b\x00c\x07d\ufffee\tf") == "abcde\tf"  # nothing SQLite or a tokenizer chokes on


def test_invalid_utf8_keeps_the_valid_text(tmp_path: Path) -> None:
    # Mostly UTF-8 with one stray byte: the accents survive and the bad byte becomes U+FFFD (not cp1252 mojibake).
    path = tmp_path / "mostly-utf8.md"
    path.write_bytes("Überprüfung der Größe: naïve café\n".encode() + b"\xff broken byte\n")
    result = parse_file(path)
    assert result.status is ParseStatus.OK
    assert result.pages[0].text.startswith("Überprüfung der Größe: naïve café\n\ufffd broken byte")
    assert decode_text(b"caf\xe9") == "café"  # no valid UTF-8 at all: a legacy Windows-1252 file


def test_docx_paragraphs_and_tables_in_document_order(tmp_path: Path) -> None:
    from docx import Document

    document = Document()
    document.add_paragraph("Quarterly report")
    table = document.add_table(rows=2, cols=3)
    for col, text in enumerate(("Region", "Revenue", "Growth")):
        table.cell(0, col).text = text
    table.cell(1, 0).text = "North"
    table.cell(1, 1).merge(table.cell(1, 2)).text = "42"
    document.add_paragraph("Closing remarks")
    path = tmp_path / "report.docx"
    document.save(str(path))
    result = parse_file(path)
    assert result.status is ParseStatus.OK
    assert result.pages[0].text.splitlines() == [
        "Quarterly report",
        "Region | Revenue | Growth",
        "North | 42",  # a merged cell once, not once per grid column
        "Closing remarks",
    ]


def test_zip_bombs_are_refused_before_unpacking(tmp_path: Path) -> None:
    for name in ("bomb.docx", "bomb.epub"):
        path = tmp_path / name
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("word/document.xml", b"\0" * (50 << 20))
        started = time.monotonic()
        result = parse_file(path)
        assert result.status is ParseStatus.TOO_LARGE and "zip bomb" in str(result.error)
        assert time.monotonic() - started < 1.0  # refused from the directory, not by inflating 50 MB
    many = tmp_path / "many.docx"
    with zipfile.ZipFile(many, "w") as archive:
        for i in range(30):
            archive.writestr(f"part{i}.xml", "x")
    assert parse_file(many, Limits(max_zip_members=20)).status is ParseStatus.TOO_LARGE


def test_html_drops_scripts_and_keeps_blocks(tmp_path: Path) -> None:
    path = tmp_path / "page.html"
    path.write_text(
        "<html><head><title>T</title><style>p{}</style></head><body><script>alert(1)</script>"
        "<h1>Heading</h1><p>First &amp; second.</p><p>Third<br/>line</p></body></html>"
    )
    assert parse_file(path).pages[0].text.splitlines() == ["Heading", "First & second.", "Third", "line"]


def write_epub(path: Path, chapters: dict[str, str], spine: list[str]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("mimetype", "application/epub+zip")
        archive.writestr(
            "META-INF/container.xml",
            '<container xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles>'
            '<rootfile full-path="OEBPS/content.opf"/></rootfiles></container>',
        )
        items = "".join(f'<item id="{name}" href="{name}.xhtml"/>' for name in chapters)
        refs = "".join(f'<itemref idref="{name}"/>' for name in spine)
        archive.writestr(
            "OEBPS/content.opf",
            f'<package xmlns="http://www.idpf.org/2007/opf"><manifest>{items}</manifest><spine>{refs}</spine></package>',
        )
        for name, body in chapters.items():
            archive.writestr(f"OEBPS/{name}.xhtml", f"<html><body>{body}</body></html>")


def test_epub_chapters_in_spine_order(tmp_path: Path) -> None:
    path = tmp_path / "book.epub"
    write_epub(
        path, {"two": "<p>Chapter two text.</p>", "one": "<p>Chapter one text.</p>", "toc": ""}, ["one", "toc", "two"]
    )
    result = parse_file(path)
    assert result.page_count == 3
    assert [(p.number, p.text) for p in result.pages] == [(1, "Chapter one text."), (3, "Chapter two text.")]


def test_csv_rows_keep_their_column_names(tmp_path: Path) -> None:
    path = tmp_path / "people.csv"
    path.write_text("name,city\nAda,London\nGrace,Arlington\n")
    assert "name: Grace; city: Arlington" in parse_file(path).pages[0].text


def test_code_and_restructured_text(tmp_path: Path) -> None:
    code = tmp_path / "tool.py"
    code.write_text("def area(r: float) -> float:\n    return 3.14159 * r * r\n")
    rst = tmp_path / "guide.rst"
    rst.write_text("Guide\n=====\n\nInstall with ``pip``.\n")
    assert parse_file(code).kind == "code" and "3.14159" in parse_file(code).pages[0].text
    assert parse_file(rst).kind == "rst" and "Install with" in parse_file(rst).pages[0].text


def test_limits(tmp_path: Path) -> None:
    path = tmp_path / "long.txt"
    path.write_text("word " * 1000)
    assert parse_file(path, Limits(max_text_file_bytes=100)).status is ParseStatus.TOO_LARGE
    assert parse_file(path, Limits(max_chars=100)).status is ParseStatus.TOO_LARGE
    assert parse_file(FOUR_PAGES, Limits(max_file_bytes=1000)).status is ParseStatus.TOO_LARGE
    assert parse_file(FOUR_PAGES, Limits(max_pages=2)).status is ParseStatus.TOO_LARGE
    timed_out = parse_file(FOUR_PAGES, Limits(max_seconds=0))
    assert timed_out.status is ParseStatus.TIMEOUT and "longer than" in str(timed_out.error)


# --- reading in a child process -----------------------------------------------------------------------------------

HOSTILE_SERVER = """
import os, sys, time
from pathlib import Path
from enclave.docs.isolation import serve
from enclave.docs.parsers import parse_file

def parse(path, limits):
    if "hang" in path.name:
        time.sleep(600)
    if "crash" in path.name:
        os.abort()
    return parse_file(path, limits)

sys.exit(serve(parse))
"""


def test_isolated_reader_survives_hangs_and_crashes(tmp_path: Path) -> None:
    good = tmp_path / "good.md"
    good.write_text("# Fine\n\nReadable text.\n")
    hang, crash = tmp_path / "hang.txt", tmp_path / "crash.pdf"
    hang.write_text("x")
    crash.write_bytes(b"%PDF")
    parser = IsolatedParser([sys.executable, "-c", HOSTILE_SERVER])
    try:
        assert parser.parse(good).status is ParseStatus.OK
        started = time.monotonic()
        hung = parser.parse(hang, Limits(max_seconds=1.0))
        assert hung.status is ParseStatus.TIMEOUT and "stopped" in str(hung.error)
        assert time.monotonic() - started < 5
        crashed = parser.parse(crash)
        assert crashed.status is ParseStatus.DAMAGED and "crashed" in str(crashed.error)
        after = parser.parse(good)  # a fresh child takes over
        assert after.status is ParseStatus.OK and after.pages[0].text == "# Fine\n\nReadable text.\n"
        assert parser.restarts == 3
    finally:
        parser.close()


def test_the_real_reader_process_matches_in_process_parsing(tmp_path: Path) -> None:
    unreadable = tmp_path / "unreadable.pdf"
    unreadable.write_bytes(unreadable_copy(LIBREOFFICE))
    paths = [CORPUS / e["path"] for e in FILES] + [unreadable]
    parser = IsolatedParser()  # `python -m enclave docs parse-server`, as the app and the CLI use it
    try:
        for path in paths:  # every status: ok, encrypted, no text, damaged
            assert parser.parse(path) == parse_file(path)
    finally:
        parser.close()

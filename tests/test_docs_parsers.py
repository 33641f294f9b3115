"""Document parsing: every real PDF of the shared corpus, each other format, and broken or hostile files."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from enclave.docs.parsers import Limits, ParseStatus, parse_file, parse_many

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "pdf-samples"
FILES = json.loads((CORPUS / "files.json").read_text())["data"] if CORPUS.is_dir() else []
# PDFium refuses this one ("data format error"): it must be reported per file, not crash or stop the others.
KNOWN_UNREADABLE = {"017-unreadable-meta-data/unreadablemetadata.pdf"}


@pytest.mark.skipif(not FILES, reason="the shared PDF corpus is not beside this checkout")
@pytest.mark.parametrize("entry", FILES, ids=lambda e: e["path"])
def test_every_corpus_pdf_gives_its_pages_or_a_clear_status(entry: dict[str, object]) -> None:
    result = parse_file(CORPUS / str(entry["path"]))
    if entry["encrypted"]:
        assert result.status is ParseStatus.ENCRYPTED
        assert result.error is not None and "password" in result.error
        return
    if entry["path"] in KNOWN_UNREADABLE:
        assert result.status is ParseStatus.DAMAGED and result.error and "could not be opened" in result.error
        return
    assert result.status in (ParseStatus.OK, ParseStatus.EMPTY), result.error
    assert result.page_count == entry["pages"]
    assert all(1 <= p.number <= entry["pages"] for p in result.pages)  # type: ignore[operator]


@pytest.mark.skipif(not FILES, reason="the shared PDF corpus is not beside this checkout")
def test_page_numbers_follow_the_pdf() -> None:
    result = parse_file(CORPUS / "004-pdflatex-4-pages" / "pdflatex-4-pages.pdf")
    assert result.status is ParseStatus.OK
    assert [p.number for p in result.pages] == [1, 2, 3, 4]
    big = parse_file(CORPUS / "009-pdflatex-geotopo" / "GeoTopo-komprimiert.pdf")
    assert big.status is ParseStatus.OK and max(p.number for p in big.pages) == 117


def test_one_broken_file_does_not_stop_the_others(tmp_path: Path) -> None:
    good = tmp_path / "notes.md"
    good.write_text("# Notes\n\nThe launch is on Tuesday.\n")
    truncated = tmp_path / "broken.pdf"
    truncated.write_bytes(b"%PDF-1.7\n1 0 obj << /Type /Catalog >>\n")
    garbage = tmp_path / "binary.txt"
    garbage.write_bytes(bytes(range(256)) * 10)
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    unknown = tmp_path / "photo.heic"
    unknown.write_bytes(b"\x00\x01")
    results = {Path(r.path).name: r for r in parse_many([truncated, garbage, empty, unknown, good])}
    assert results["notes.md"].status is ParseStatus.OK and "Tuesday" in results["notes.md"].pages[0].text
    assert results["broken.pdf"].status is ParseStatus.DAMAGED and results["broken.pdf"].error
    assert results["binary.txt"].status is ParseStatus.DAMAGED and "binary" in str(results["binary.txt"].error)
    assert results["empty.txt"].status is ParseStatus.EMPTY
    assert results["photo.heic"].status is ParseStatus.UNSUPPORTED and "not supported" in str(
        results["photo.heic"].error
    )


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


def test_docx_with_a_table(tmp_path: Path) -> None:
    from docx import Document

    document = Document()
    document.add_paragraph("Quarterly report")
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "Region", "Revenue"
    table.cell(1, 0).text, table.cell(1, 1).text = "North", "42"
    path = tmp_path / "report.docx"
    document.save(str(path))
    result = parse_file(path)
    assert result.status is ParseStatus.OK
    assert "Quarterly report" in result.pages[0].text and "North | 42" in result.pages[0].text


def test_zip_bomb_docx_is_refused_before_unpacking(tmp_path: Path) -> None:
    path = tmp_path / "bomb.docx"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("word/document.xml", b"\0" * (50 << 20))
    result = parse_file(path)
    assert result.status is ParseStatus.TOO_LARGE and "zip bomb" in str(result.error)


def test_html_drops_scripts_and_keeps_blocks(tmp_path: Path) -> None:
    path = tmp_path / "page.html"
    path.write_text(
        "<html><head><title>T</title><style>p{}</style></head><body><script>alert(1)</script>"
        "<h1>Heading</h1><p>First &amp; second.</p><p>Third</p></body></html>"
    )
    text = parse_file(path).pages[0].text
    assert text.splitlines() == ["Heading", "First & second.", "Third"]


def test_epub_chapters_in_spine_order(tmp_path: Path) -> None:
    path = tmp_path / "book.epub"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("mimetype", "application/epub+zip")
        archive.writestr(
            "META-INF/container.xml",
            '<container xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles>'
            '<rootfile full-path="OEBPS/content.opf"/></rootfiles></container>',
        )
        archive.writestr(
            "OEBPS/content.opf",
            '<package xmlns="http://www.idpf.org/2007/opf"><manifest>'
            '<item id="b" href="two.xhtml"/><item id="a" href="one.xhtml"/></manifest>'
            '<spine><itemref idref="a"/><itemref idref="b"/></spine></package>',
        )
        archive.writestr("OEBPS/one.xhtml", "<html><body><p>Chapter one text.</p></body></html>")
        archive.writestr("OEBPS/two.xhtml", "<html><body><p>Chapter two text.</p></body></html>")
    result = parse_file(path)
    assert [(p.number, p.text) for p in result.pages] == [(1, "Chapter one text."), (2, "Chapter two text.")]


def test_csv_rows_keep_their_column_names(tmp_path: Path) -> None:
    path = tmp_path / "people.csv"
    path.write_text("name,city\nAda,London\nGrace,Arlington\n")
    assert "name: Grace; city: Arlington" in parse_file(path).pages[0].text


def test_limits(tmp_path: Path) -> None:
    path = tmp_path / "long.txt"
    path.write_text("word " * 1000)
    assert parse_file(path, Limits(max_file_bytes=100)).status is ParseStatus.TOO_LARGE
    assert parse_file(path, Limits(max_chars=100)).status is ParseStatus.TOO_LARGE

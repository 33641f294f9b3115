"""Limits on what one file may cost to read.

A folder dropped on the app can hold anything: a 2 GB log, a 10,000-page scan, a DOCX that is a zip bomb, a PDF that
makes a parser spin. Every file is read under these limits so a hostile or broken one ends as a per-file status and
never stops the rest or freezes the app.
"""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1 << 20


@dataclass(frozen=True)
class Limits:
    max_file_bytes: int = 512 * MiB
    # Plain-text formats (text, Markdown, code, CSV, HTML) are read whole into memory and decoded: a lower cap.
    max_text_file_bytes: int = 64 * MiB
    max_pages: int = 10_000
    max_chars: int = 50_000_000
    # DOCX and EPUB are zip files: refused before anything is unpacked when the members' declared sizes add up to
    # more than this, or when they compress better than max_zip_ratio (the signature of a zip bomb).
    max_unzipped_bytes: int = 512 * MiB
    max_zip_ratio: float = 200.0
    max_zip_members: int = 20_000
    # Wall-clock time to read one file. In-process parsing checks it between pages; the isolated parser (a child
    # process, used by the app and the CLI) enforces it by killing the child.
    max_seconds: float = 120.0
    # Address space of the parser child (Linux and BSD; other systems ignore it): a memory bomb fails that process.
    max_memory_bytes: int = 4096 * MiB


DEFAULT_LIMITS = Limits()

__all__ = ["DEFAULT_LIMITS", "Limits", "MiB"]

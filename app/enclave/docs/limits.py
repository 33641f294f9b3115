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
    # Passages (chunks) one file may make, proportional to its size: a base allowance plus one passage per
    # ``bytes_per_passage`` bytes of file. Plain prose makes a passage per ~650 bytes and a PDF per several KB; a file
    # that makes far more (a table with a million columns, where every cell becomes a token or two) holds more text
    # than it looks and is refused before anything is embedded ("too_many_passages").
    base_passages: int = 2_000
    bytes_per_passage: int = 512
    max_passages: int = 100_000
    # Embedding time one file may take, proportional to its size (a base plus seconds per MiB); past it the file is
    # stopped ("too_large"), keeping what was embedded for keyword search. Generous: a slow machine is no reason.
    base_embed_seconds: float = 600.0
    embed_seconds_per_mib: float = 600.0
    # A file may hold the queue this long at a time: after it, a file still being embedded goes to the back of the
    # queue (it resumes from its first passage without a vector), so the files behind it are not held up.
    slice_seconds: float = 60.0

    def passage_budget(self, size: int) -> int:
        """How many passages a file of ``size`` bytes may make."""
        return min(self.max_passages, self.base_passages + size // max(1, self.bytes_per_passage))

    def embed_seconds_budget(self, size: int) -> float:
        """How long embedding a file of ``size`` bytes may take in all."""
        return self.base_embed_seconds + self.embed_seconds_per_mib * size / MiB


DEFAULT_LIMITS = Limits()

__all__ = ["DEFAULT_LIMITS", "Limits", "MiB"]

"""Cut page text into overlapping chunks measured in the embedding model's tokens, keeping where each came from.

Text is split at sentence and line ends into pieces whose token counts are measured once; pieces are packed into
chunks up to a budget, and the last pieces of a chunk are repeated at the start of the next (overlap), so an answer
that straddles a boundary is still found. Every chunk keeps its page and character offsets for citations.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from enclave.docs.parsers import Page

PIECE = re.compile(r"[^\n.!?]*(?:[.!?]+|\n+|$)")


@dataclass(frozen=True)
class Chunk:
    page: int
    start: int  # character offsets in the page text
    end: int
    text: str


def _pieces(text: str) -> Iterable[tuple[int, int]]:
    for match in PIECE.finditer(text):
        if match.end() > match.start():
            yield match.start(), match.end()


def chunk_pages(
    pages: Iterable[Page], count_tokens: Callable[[str], int], *, budget: int = 200, overlap: int = 40
) -> list[Chunk]:
    chunks: list[Chunk] = []
    for page in pages:
        spans: list[tuple[int, int, int]] = []  # (start, end, tokens)
        for start, end in _pieces(page.text):
            tokens = count_tokens(page.text[start:end])
            if tokens <= budget:
                spans.append((start, end, tokens))
                continue
            # An overlong sentence (tables, code, no punctuation): fall back to word windows.
            words = [(m.start() + start, m.end() + start) for m in re.finditer(r"\S+", page.text[start:end])]
            step = max(1, budget * 3 // 4)
            for i in range(0, len(words), step):
                window = words[i : i + step]
                spans.append((window[0][0], window[-1][1], count_tokens(page.text[window[0][0] : window[-1][1]])))
        current: list[tuple[int, int, int]] = []
        used = 0
        for span in spans:
            if current and used + span[2] > budget:
                chunks.append(_make(page, current))
                kept: list[tuple[int, int, int]] = []
                kept_tokens = 0
                for previous in reversed(current):
                    if kept_tokens + previous[2] > overlap:
                        break
                    kept.insert(0, previous)
                    kept_tokens += previous[2]
                current, used = kept, kept_tokens
            current.append(span)
            used += span[2]
        if current:
            chunks.append(_make(page, current))
    return [c for c in chunks if c.text.strip()]


def _make(page: Page, spans: list[tuple[int, int, int]]) -> Chunk:
    start, end = spans[0][0], spans[-1][1]
    return Chunk(page.number, start, end, page.text[start:end].strip())

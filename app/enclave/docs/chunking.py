"""Cut page text into overlapping chunks measured in the embedding model's tokens, keeping where each came from.

Text is split at sentence and line ends into pieces whose token counts are measured once with the embedding model's
own tokenizer; pieces are packed into chunks up to a budget, and the last pieces of a chunk are repeated at the start
of the next (overlap), so an answer that straddles a boundary is still found whole. A piece longer than the budget (a
table row, code, text without punctuation, CJK without spaces) is cut at words, and a word longer than the budget at
characters, so no chunk ever exceeds what the model can read: an embedding model silently drops what is past its
context, and llama.cpp aborts the process on some oversize inputs.

Every chunk keeps its page and the exact character offsets of its text in that page (``page_text[start:end] ==
chunk.text``), so a citation can point at, and a viewer highlight, the passage.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from enclave.docs.parsers import Page

# A sentence or line: up to and including sentence punctuation followed by space, or a run of newlines.
PIECE = re.compile(r".*?(?:[.!?。！？]+(?=\s|$)\s*|\n+|$)", re.S)
WORD = re.compile(r"\S+\s*")

DEFAULT_BUDGET = 200  # tokens per chunk: room for a few sentences of context, well under MiniLM's 256
DEFAULT_OVERLAP = 40


@dataclass(frozen=True)
class Chunk:
    page: int
    start: int  # character offsets in the page text: page_text[start:end] == text
    end: int
    text: str
    tokens: int  # the pieces' token counts summed (without the model's special tokens)


Span = tuple[int, int, int]  # start, end, tokens


def chunk_pages(
    pages: Iterable[Page],
    count_tokens: Callable[[str], int],
    *,
    budget: int = DEFAULT_BUDGET,
    overlap: int = DEFAULT_OVERLAP,
) -> list[Chunk]:
    """Chunks of at most ``budget`` tokens (as ``count_tokens`` measures them), consecutive ones sharing up to
    ``overlap`` tokens of whole sentences."""
    if budget < 8:
        raise ValueError(f"chunk budget of {budget} tokens is too small")
    overlap = max(0, min(overlap, budget // 2))
    chunks: list[Chunk] = []
    for page in pages:
        chunks.extend(_chunk_page(page, count_tokens, budget, overlap))
    return chunks


def _chunk_page(page: Page, count_tokens: Callable[[str], int], budget: int, overlap: int) -> Iterator[Chunk]:
    current: list[Span] = []
    used = 0
    for span in _spans(page.text, count_tokens, budget):
        if current and used + span[2] > budget:
            yield _make(page, current)
            kept: list[Span] = []
            kept_tokens = 0
            for previous in reversed(current):
                if kept_tokens + previous[2] > overlap:
                    break
                kept.insert(0, previous)
                kept_tokens += previous[2]
            while kept and kept_tokens + span[2] > budget:  # the overlap must leave room for the new piece
                kept_tokens -= kept.pop(0)[2]
            current, used = kept, kept_tokens
        current.append(span)
        used += span[2]
    if current and any(span[2] for span in current):
        yield _make(page, current)


def _spans(text: str, count_tokens: Callable[[str], int], budget: int) -> Iterator[Span]:
    for match in PIECE.finditer(text):
        start, end = match.span()
        if end == start or not text[start:end].strip():
            continue
        tokens = count_tokens(text[start:end])
        if tokens <= budget:
            yield start, end, tokens
        else:
            yield from _split_long(text, start, end, count_tokens, budget)


def _split_long(text: str, start: int, end: int, count_tokens: Callable[[str], int], budget: int) -> Iterator[Span]:
    """Pack words (measured one by one) into spans of at most ``budget`` tokens; cut words that alone exceed it."""
    group_start, group_tokens = -1, 0
    group_end = start
    for match in WORD.finditer(text, start, end):
        w_start, w_end = match.span()
        tokens = count_tokens(text[w_start:w_end])
        if tokens > budget:
            if group_start >= 0:
                yield group_start, group_end, group_tokens
                group_start, group_tokens = -1, 0
            yield from _split_chars(text, w_start, w_end, tokens, count_tokens, budget)
            continue
        if group_start >= 0 and group_tokens + tokens > budget:
            yield group_start, group_end, group_tokens
            group_start, group_tokens = -1, 0
        if group_start < 0:
            group_start = w_start
        group_end = w_end
        group_tokens += tokens
    if group_start >= 0:
        yield group_start, group_end, group_tokens


def _split_chars(
    text: str, start: int, end: int, tokens: int, count_tokens: Callable[[str], int], budget: int
) -> Iterator[Span]:
    position = start
    while position < end:
        # Start from the average characters per token, then shrink until the piece fits.
        size = max(1, (end - position) * budget // max(tokens, 1))
        piece_tokens = count_tokens(text[position : position + size])
        while piece_tokens > budget and size > 1:
            size = max(1, size * 3 // 4)
            piece_tokens = count_tokens(text[position : position + size])
        yield position, min(end, position + size), piece_tokens
        position += size


def _make(page: Page, spans: list[Span]) -> Chunk:
    start, end = spans[0][0], spans[-1][1]
    raw = page.text[start:end]
    stripped = raw.strip()
    start += len(raw) - len(raw.lstrip())
    return Chunk(page.number, start, start + len(stripped), stripped, sum(span[2] for span in spans))


__all__ = ["DEFAULT_BUDGET", "DEFAULT_OVERLAP", "Chunk", "chunk_pages"]

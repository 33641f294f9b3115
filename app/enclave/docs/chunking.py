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
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from enclave.docs.parsers import Heading, Page

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
    limit: int | None = None,
) -> list[Chunk]:
    """Chunks of at most ``budget`` tokens (as ``count_tokens`` measures them), consecutive ones sharing up to
    ``overlap`` tokens of whole sentences. With ``limit``, chunking stops once that many chunks are made (a caller
    that refuses files past a number of chunks need not cut the rest)."""
    if budget < 8:
        raise ValueError(f"chunk budget of {budget} tokens is too small")
    overlap = max(0, min(overlap, budget // 2))
    chunks: list[Chunk] = []
    for page in pages:
        for chunk in _chunk_page(page, count_tokens, budget, overlap):
            chunks.append(chunk)
            if limit is not None and len(chunks) >= limit:
                return chunks
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
        if end - start > budget * 16:  # surely over the budget: measuring it whole would only cost time
            yield from _split_long(text, start, end, count_tokens, budget)
            continue
        tokens = count_tokens(text[start:end])
        if tokens <= budget:
            yield start, end, tokens
        else:
            yield from _split_long(text, start, end, count_tokens, budget)


def _split_long(text: str, start: int, end: int, count_tokens: Callable[[str], int], budget: int) -> Iterator[Span]:
    """Pack words into spans of at most ``budget`` tokens; cut words that alone exceed it.

    Words are measured a run at a time, a run being about a quarter of the budget (measuring each word alone would be
    too many calls: a line of a million table cells would take minutes); a run that comes out too long is halved
    until it fits or is one word. A span may end up to a run short of the budget.
    """
    target = max(1, budget // 4)
    chars_per_token = 4.0  # adjusted to the text as runs are measured
    group_start, group_tokens = -1, 0
    group_end = start
    position = start
    while position < end:
        run_end = _word_end(text, position, end, int(target * chars_per_token))
        run_tokens = count_tokens(text[position:run_end])
        if run_tokens:
            chars_per_token = max(1.0, (run_end - position) / run_tokens)
        for p_start, p_end, tokens in _fit_run(text, position, run_end, run_tokens, count_tokens, budget // 2):
            if tokens > budget:
                if group_start >= 0:
                    yield group_start, group_end, group_tokens
                    group_start, group_tokens = -1, 0
                yield from _split_chars(text, p_start, p_end, tokens, count_tokens, budget)
                continue
            if group_start >= 0 and group_tokens + tokens > budget:
                yield group_start, group_end, group_tokens
                group_start, group_tokens = -1, 0
            if group_start < 0:
                group_start = p_start
            group_end = p_end
            group_tokens += tokens
        position = run_end
    if group_start >= 0:
        yield group_start, group_end, group_tokens


def _word_end(text: str, start: int, end: int, size: int) -> int:
    """The end of the first whole word (with its trailing space) at or past ``start + size``, or ``end``."""
    if start + size >= end:
        return end
    match = WORD.search(text, start + size, end)
    if match is None:
        return end
    if match.start() == start + size or text[start + size - 1].isspace():
        return start + size  # ``start + size`` is already a word's start
    return match.end()


def _fit_run(
    text: str, start: int, end: int, tokens: int, count_tokens: Callable[[str], int], most: int
) -> Iterator[Span]:
    """The run as one span, or halved at a word boundary (recursively) until each part has at most ``most`` tokens
    or is a single word."""
    if tokens <= most:
        yield start, end, tokens
        return
    middle = _word_end(text, start, end, (end - start) // 2)
    if middle >= end or middle <= start:
        yield start, end, tokens  # one word: the caller cuts it at characters if it exceeds the budget
        return
    left = count_tokens(text[start:middle])
    yield from _fit_run(text, start, middle, left, count_tokens, most)
    yield from _fit_run(text, middle, end, count_tokens(text[middle:end]), count_tokens, most)


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


MAX_CONTEXT_CHARS = 160
HEADING_SLACK = 100  # characters


def chunk_contexts(chunks: Sequence[Chunk], title: str, headings: Sequence[Heading]) -> list[str]:
    """For each chunk, the document title and the section headings in force where it starts ("R Data Import/Export
    > 2 Spreadsheet-like data > Variations on read.table"): embedded with the chunk, so a passage that never names
    its topic is still found by it. At most MAX_CONTEXT_CHARS characters, deepest headings kept."""
    ordered = sorted(headings, key=lambda h: (h.page, h.start))
    contexts = []
    position = 0
    chain: list[Heading] = []
    for chunk in sorted(range(len(chunks)), key=lambda i: (chunks[i].page, chunks[i].start)):
        # A heading that opens the chunk (within its first few lines) counts as the chunk's own.
        slack = min(HEADING_SLACK, (chunks[chunk].end - chunks[chunk].start) // 4)
        where = (chunks[chunk].page, chunks[chunk].start + slack)
        while position < len(ordered) and (ordered[position].page, ordered[position].start) <= where:
            heading = ordered[position]
            chain = [h for h in chain if h.level < heading.level] + [heading]
            position += 1
        contexts.append((chunk, _context_text(title, [h.title for h in chain])))
    contexts.sort()
    return [text for _, text in contexts]


def _context_text(title: str, chain: list[str]) -> str:
    parts = [title] + [t for t in chain if t != title] if title else list(chain)
    while len(parts) > 1 and len(" > ".join(parts)) > MAX_CONTEXT_CHARS:
        parts.pop(1 if len(parts) > 2 else 0)  # drop the outer headings first, then the title
    return " > ".join(parts)[:MAX_CONTEXT_CHARS]


def _make(page: Page, spans: list[Span]) -> Chunk:
    start, end = spans[0][0], spans[-1][1]
    raw = page.text[start:end]
    stripped = raw.strip()
    start += len(raw) - len(raw.lstrip())
    return Chunk(page.number, start, start + len(stripped), stripped, sum(span[2] for span in spans))


__all__ = ["DEFAULT_BUDGET", "DEFAULT_OVERLAP", "Chunk", "chunk_contexts", "chunk_pages"]

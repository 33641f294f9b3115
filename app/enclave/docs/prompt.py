"""Turn search results into the message R1 answers from: numbered sources, within a token budget.

DeepSeek recommends putting every instruction in the user message (no system prompt) for R1, so the whole grounded
prompt is one user message: a short instruction, the numbered sources, the question. R1 thinks before it answers,
often for a thousand tokens or more, so the sources get only what is left of the context after the conversation
*and* a reserve for that thinking (``sources_budget``). Chunks of one page are merged into one source first, so the
overlap between neighbouring chunks is not paid twice and no answer lists the same file and page twice. When nothing
relevant was found the prompt says so, and ``DocumentContext.nothing_relevant`` lets the UI show it instead of
pretending to cite.

Citations are ``[n]``; ``cited_sources`` maps an answer's citations back to files and pages for the sources panel.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from enclave.docs.search import SearchResult


MAX_SOURCE_TOKENS = 6000  # more sources than this dilute rather than help, even with a long context
MIN_SOURCE_TOKENS = 48  # a source cut shorter than this is left out rather than sent as a fragment
CITATION = re.compile(r"\[(\d{1,3}(?:\s*[,;]\s*\d{1,3})*)\]")

INSTRUCTIONS = (
    "Answer the question using the numbered sources from my documents below. Cite every source you use with its "
    "number in square brackets, like [1] or [2][3]. If the sources do not contain the answer, say so plainly "
    "instead of guessing."
)
NOTHING_FOUND = (
    "I searched my documents for this question and nothing relevant was found. Tell me that my documents do not "
    "seem to cover it. If you can answer from general knowledge, do so briefly and say clearly that the answer does "
    "not come from my documents."
)

NO_ROOM = (
    "Passages from my documents match this question, but this conversation is too long to include them. Answer if "
    "you can, say that the answer does not use my documents, and suggest starting a new chat to use them."
)


def estimate_tokens(text: str) -> int:
    """A deliberately high estimate (3 characters per token; real text averages about 4) for when the chat model's
    tokenizer is not at hand, e.g. on the GUI thread: overestimating only leaves more room for thinking."""
    return len(text) // 3 + 1


def sources_budget(n_ctx: int, conversation_tokens: int, *, thinking_reserve: int | None = None) -> int:
    """Tokens the sources may use: the context minus the conversation so far and the room R1 needs to think and
    answer (by default half the context, at least 1,024 and at most 8,192 tokens), capped at MAX_SOURCE_TOKENS."""
    reserve = thinking_reserve if thinking_reserve is not None else min(8192, max(1024, n_ctx // 2))
    return max(0, min(MAX_SOURCE_TOKENS, n_ctx - conversation_tokens - reserve))


@dataclass(frozen=True)
class Source:
    number: int  # the [n] the model cites
    path: str
    kind: str
    page: int
    start: int  # character offsets in that page (the merged span when chunks were merged)
    end: int
    text: str
    document_id: int
    chunk_ids: tuple[int, ...]
    similarity: float | None

    @property
    def name(self) -> str:
        return self.path.replace("\\", "/").rsplit("/", 1)[-1]

    @property
    def label(self) -> str:
        """``report.pdf, page 3`` / ``book.epub, chapter 2`` / ``notes.md``: how the source is named to the model."""
        if self.kind == "pdf":
            return f"{self.name}, page {self.page}"
        if self.kind == "epub":
            return f"{self.name}, chapter {self.page}"
        return self.name


@dataclass(frozen=True)
class DocumentContext:
    prompt: str  # the user message to send to the model in place of the bare question
    sources: tuple[Source, ...]
    nothing_relevant: bool
    tokens: int  # of ``prompt``, as counted by the count_tokens given
    truncated: bool  # some relevant passages did not fit the budget


def _union(a_start: int, a_text: str, b_start: int, b_text: str) -> str:
    """The text covered by two overlapping slices of one page (chunk text is exactly ``page[start:end]``)."""
    if b_start < a_start:
        a_start, a_text, b_start, b_text = b_start, b_text, a_start, a_text
    a_end, b_end = a_start + len(a_text), b_start + len(b_text)
    return a_text if b_end <= a_end else a_text + b_text[a_end - b_start :]


def _join_pieces(pieces: Sequence[tuple[int, str]]) -> str:
    """One text from slices of one page: overlapping or touching slices are united, gaps become " … "."""
    ordered = sorted(pieces)
    start, text = ordered[0]
    parts: list[str] = []
    for next_start, next_text in ordered[1:]:
        if next_start <= start + len(text):
            text = _union(start, text, next_start, next_text)
        else:
            parts.append(text)
            start, text = next_start, next_text
    parts.append(text)
    return " … ".join(part.strip() for part in parts)


def _merge(results: Sequence[SearchResult]) -> list[Source]:
    """One source per document page, in the rank order of its best chunk.

    Chunks of the same page are merged into that page's source (overlaps counted once, gaps shown as " … "), so an
    answer never lists the same file and page twice and the model sees the page's passages together.
    """
    order: list[tuple[int, int]] = []
    groups: dict[tuple[int, int], list[SearchResult]] = {}
    for r in results:
        key = (r.document_id, r.page)
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(r)
    merged: list[Source] = []
    for key in order:
        group = groups[key]
        best = group[0]
        similarities = [r.similarity for r in group if r.similarity is not None]
        merged.append(
            Source(
                number=len(merged) + 1,
                path=best.path,
                kind=best.kind,
                page=best.page,
                start=min(r.start for r in group),
                end=max(r.end for r in group),
                text=_join_pieces([(r.start, r.text) for r in group]),
                document_id=best.document_id,
                chunk_ids=tuple(r.chunk_id for r in group),
                similarity=max(similarities) if similarities else None,
            )
        )
    return merged


def _trim(text: str, tokens: int, count_tokens: Callable[[str], int]) -> str:
    """The longest prefix of ``text``, cut at a word and marked with an ellipsis, that fits ``tokens``."""

    def cut(size: int) -> str:
        head = text[:size]
        space = head.rfind(" ")
        return (head[:space] if space > size // 2 else head).rstrip() + " …"

    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if count_tokens(cut(middle)) <= tokens:
            low = middle
        else:
            high = middle - 1
    return cut(low)


def build_document_prompt(
    question: str,
    results: Sequence[SearchResult],
    *,
    budget_tokens: int,
    count_tokens: Callable[[str], int] = estimate_tokens,
) -> DocumentContext:
    """The grounded user message for ``question`` from search results (only relevant ones are used).

    ``budget_tokens`` bounds the whole message (see ``sources_budget``); sources are added best first, and the last
    one that does not fit whole is cut at a word if enough room is left.
    """
    relevant = [r for r in results if r.relevant]
    if not relevant:
        prompt = f"{NOTHING_FOUND}\n\nQuestion: {question}"
        return DocumentContext(prompt, (), True, count_tokens(prompt), False)
    head = f"{INSTRUCTIONS}\n\nSources:\n"
    tail = f"\nQuestion: {question}"
    used = count_tokens(head) + count_tokens(tail)
    sources: list[Source] = []
    blocks: list[str] = []
    truncated = False
    for source in _merge(relevant):
        number = len(sources) + 1
        text = " ".join(source.text.split())
        block = f"[{number}] {source.label}\n{text}\n\n"
        cost = count_tokens(block)
        if used + cost > budget_tokens:
            truncated = True
            room = budget_tokens - used - count_tokens(f"[{number}] {source.label}\n\n\n")
            if room < MIN_SOURCE_TOKENS:
                break
            text = _trim(text, room, count_tokens)
            block = f"[{number}] {source.label}\n{text}\n\n"
            cost = count_tokens(block)
            if used + cost > budget_tokens:
                break
        sources.append(replace(source, number=number, text=text))
        blocks.append(block)
        used += cost
        if truncated:
            break
    if not sources:  # relevant passages exist, but the conversation left no room for them
        prompt = f"{NO_ROOM}\n\nQuestion: {question}"
        return DocumentContext(prompt, (), False, count_tokens(prompt), True)
    prompt = head + "".join(blocks).rstrip("\n") + "\n" + tail
    return DocumentContext(prompt, tuple(sources), False, count_tokens(prompt), truncated)


def cited_numbers(answer: str) -> list[int]:
    """The source numbers an answer cites, in order of first citation: ``[2]``, ``[1, 3]`` and ``[4][5]`` forms."""
    seen: dict[int, None] = {}
    for match in CITATION.finditer(answer):
        for part in re.split(r"\s*[,;]\s*", match.group(1)):
            seen.setdefault(int(part))
    return list(seen)


def cited_sources(answer: str, sources: Sequence[Source]) -> list[Source]:
    """The sources an answer actually cites (numbers that match no source are ignored)."""
    by_number = {s.number: s for s in sources}
    return [by_number[n] for n in cited_numbers(answer) if n in by_number]


__all__ = [
    "DocumentContext",
    "Source",
    "build_document_prompt",
    "cited_numbers",
    "cited_sources",
    "estimate_tokens",
    "sources_budget",
]

"""The grounded prompt: numbered sources within a token budget, merged overlaps, "nothing relevant", citations."""

from __future__ import annotations

from dataclasses import replace

from enclave.docs.prompt import (
    NO_ROOM,
    NOTHING_FOUND,
    build_document_prompt,
    cited_numbers,
    cited_sources,
    estimate_tokens,
    sources_budget,
)
from enclave.docs.search import SearchResult

PAGE = "Alpha beta gamma. " * 40  # one page of text; chunks below are exact slices of it


def result(chunk_id: int, path: str, kind: str, page: int, start: int, end: int, **kw: object) -> SearchResult:
    base = SearchResult(
        chunk_id=chunk_id,
        document_id=hash(path) % 1000,
        collection="Documents",
        path=path,
        kind=kind,
        page=page,
        start=start,
        end=end,
        text=PAGE[start:end],
        score=1.0 / chunk_id,
        bm25_rank=None,
        vector_rank=chunk_id,
        similarity=0.6,
        relevant=True,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def words(text: str) -> int:
    return len(text.split())


def test_sources_are_numbered_labelled_and_followed_by_the_question() -> None:
    results = [
        result(1, "/docs/report.pdf", "pdf", 3, 0, 90),
        result(2, "/docs/book.epub", "epub", 2, 0, 54),
        result(3, "/docs/notes.md", "markdown", 1, 0, 36),
    ]
    context = build_document_prompt("What is beta?", results, budget_tokens=2000)
    assert not context.nothing_relevant and not context.truncated
    assert [s.number for s in context.sources] == [1, 2, 3]
    assert "[1] report.pdf, page 3\n" in context.prompt
    assert "[2] book.epub, chapter 2\n" in context.prompt
    assert "[3] notes.md\n" in context.prompt
    assert context.prompt.rstrip().endswith("Question: What is beta?")
    assert "square brackets" in context.prompt  # the model is told how to cite
    assert context.tokens == estimate_tokens(context.prompt)


def test_overlapping_chunks_of_one_page_are_merged_into_one_source() -> None:
    results = [
        result(1, "/docs/a.pdf", "pdf", 1, 0, 100),
        result(2, "/docs/a.pdf", "pdf", 1, 80, 200),  # overlaps the first
        result(3, "/docs/a.pdf", "pdf", 2, 80, 200),  # same offsets, another page: separate
    ]
    context = build_document_prompt("q", results, budget_tokens=2000)
    assert len(context.sources) == 2
    merged = context.sources[0]
    assert (merged.start, merged.end, merged.chunk_ids) == (0, 200, (1, 2))
    assert merged.text == " ".join(PAGE[0:200].split())
    assert context.sources[1].page == 2 and context.sources[1].number == 2


def test_separate_chunks_of_one_page_make_one_source_in_page_order() -> None:
    """The same file and page never appears twice in an answer's sources: apart chunks join with an ellipsis."""
    results = [
        result(1, "/docs/a.pdf", "pdf", 4, 360, 450),  # the better match comes later on the page
        result(2, "/docs/b.pdf", "pdf", 4, 0, 90),
        result(3, "/docs/a.pdf", "pdf", 4, 0, 90),
    ]
    context = build_document_prompt("q", results, budget_tokens=2000)
    assert [(s.name, s.page, s.number) for s in context.sources] == [("a.pdf", 4, 1), ("b.pdf", 4, 2)]
    first = context.sources[0]
    assert first.chunk_ids == (1, 3) and (first.start, first.end) == (0, 450)
    assert first.text == " ".join(PAGE[0:90].split()) + " … " + " ".join(PAGE[360:450].split())
    assert context.prompt.count("a.pdf, page 4") == 1


def test_the_budget_is_respected_and_the_last_source_is_cut_at_a_word() -> None:
    results = [result(i, f"/docs/{i}.md", "markdown", 1, 0, 720) for i in range(1, 6)]  # ~120 words each
    for budget in (120, 200, 300, 380, 500):
        context = build_document_prompt("What is gamma?", results, budget_tokens=budget, count_tokens=words)
        assert words(context.prompt) <= budget, budget
        assert context.truncated and context.sources
        assert all(not s.text.endswith("…") for s in context.sources[:-1])
        if budget in (120, 380):  # enough room left for part of one more source: it is cut at a word
            assert context.sources[-1].text.endswith(" …")
    whole = build_document_prompt("What is gamma?", results, budget_tokens=10_000, count_tokens=words)
    assert not whole.truncated and len(whole.sources) == 5
    no_room = build_document_prompt("What is gamma?", results, budget_tokens=60, count_tokens=words)
    assert no_room.sources == () and no_room.truncated and not no_room.nothing_relevant
    assert no_room.prompt.startswith(NO_ROOM)


def test_irrelevant_results_are_left_out_and_none_relevant_says_so() -> None:
    weak = [result(1, "/docs/a.md", "markdown", 1, 0, 50, relevant=False, similarity=0.05)]
    context = build_document_prompt("Who won in 1998?", weak, budget_tokens=2000)
    assert context.nothing_relevant and context.sources == ()
    assert context.prompt.startswith(NOTHING_FOUND) and context.prompt.endswith("Question: Who won in 1998?")
    assert build_document_prompt("q", [], budget_tokens=2000).nothing_relevant
    mixed = [*weak, result(2, "/docs/b.md", "markdown", 1, 0, 50)]
    assert [s.path for s in build_document_prompt("q", mixed, budget_tokens=2000).sources] == ["/docs/b.md"]


def test_budget_leaves_room_for_thinking() -> None:
    assert sources_budget(4096, 500) == 4096 - 500 - 2048  # half the context is kept for thinking and the answer
    assert sources_budget(32768, 1000) == 6000  # capped: more sources dilute
    assert sources_budget(2048, 1500) == 0  # nothing left: the caller should answer without sources
    assert sources_budget(8192, 0, thinking_reserve=7000) == 1192


def test_citations_map_back_to_sources() -> None:
    answer = "Beta follows alpha [2]. Gamma too [1, 3], see also [4][2] and [99]; not a citation: [a] or [1-2]."
    assert cited_numbers(answer) == [2, 1, 3, 4, 99]
    results = [result(i, f"/docs/{i}.pdf", "pdf", i, 0, 30) for i in range(1, 4)]
    context = build_document_prompt("q", results, budget_tokens=2000)
    assert [s.number for s in cited_sources(answer, context.sources)] == [2, 1, 3]

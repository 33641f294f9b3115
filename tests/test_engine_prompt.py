"""Reading the prompt: full llama.cpp batches, a stop that aborts the batch in flight, progress inside a batch, and a
grammar-constrained reply. Real Gemma 3 270M on the CPU backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from enclave.engine.llama_backend import LlamaCppBackend
from enclave.engine.types import (
    ChatMessage,
    EngineError,
    Finished,
    FinishReason,
    GenerationControl,
    GenerationRequest,
    LoadRequest,
    PromptProgress,
    SamplingParams,
    StreamEvent,
    TextDelta,
    ThinkingClosed,
)

GREEDY = SamplingParams(temperature=0.0, top_k=1, top_p=1.0, min_p=0.0, seed=7)
BATCH = 256
LONG_TEXT = "The quick brown fox jumps over the lazy dog near the river bank. " * 70  # ~1,000 tokens


@pytest.fixture(scope="module")
def engine(gemma_path: Path) -> Iterator[LlamaCppBackend]:
    backend = LlamaCppBackend()
    backend.load(LoadRequest(path=str(gemma_path), n_ctx=2048, n_threads=2, n_batch=BATCH))
    yield backend
    backend.unload()


def ask(text: str, max_tokens: int = 8, grammar: str | None = None) -> GenerationRequest:
    return GenerationRequest(
        messages=(ChatMessage("user", text),), sampling=GREEDY, max_tokens=max_tokens, grammar=grammar
    )


def collect(engine: LlamaCppBackend, request: GenerationRequest, control: GenerationControl) -> list[StreamEvent]:
    return list(engine.stream_chat(request, control))


def answer(events: list[StreamEvent]) -> str:
    return "".join(e.content for e in events if isinstance(e, TextDelta))


def test_prompt_goes_in_full_batches_with_progress_inside_each(engine: LlamaCppBackend) -> None:
    control = GenerationControl()
    inside: list[PromptProgress] = []
    control.progress = inside.append
    events = collect(engine, ask(LONG_TEXT + "\nWhat animal jumps?"), control)
    ends = [e for e in events if isinstance(e, PromptProgress)]
    total = ends[0].total
    assert total > 3 * BATCH
    # One event per full batch: nothing is sliced smaller on the CPU backend.
    assert [e.evaluated for e in ends] == [*range(BATCH, total, BATCH), total]
    # Within a batch the graph's own progress is reported, strictly between batch boundaries.
    assert inside, "no progress was reported while a batch ran"
    assert any(e.evaluated % BATCH for e in inside)
    assert all(0 < e.evaluated < e.total == total for e in inside)
    assert all(e.seconds_left is not None and e.seconds_left >= 0 for e in inside)
    assert isinstance(events[-1], Finished) and events[-1].reason is not FinishReason.CANCELLED


def test_stop_aborts_the_batch_in_flight_and_the_next_answer_reuses_what_was_kept(engine: LlamaCppBackend) -> None:
    question = LONG_TEXT + "\nWhich animal is lazy?"
    collect(engine, ask("Say hello."), GenerationControl())  # nothing of the question is cached
    control = GenerationControl()

    def stop_inside_second_batch(progress: PromptProgress) -> None:
        if BATCH < progress.evaluated < 2 * BATCH:  # reported from inside llama_decode of the second batch
            control.cancel.set()

    control.progress = stop_inside_second_batch
    events = collect(engine, ask(question), control)
    finished = events[-1]
    assert isinstance(finished, Finished) and finished.reason is FinishReason.CANCELLED
    assert finished.stats.completion_tokens == 0
    assert not any(isinstance(e, TextDelta) for e in events)
    # The aborted batch left nothing behind: what was cached before plus exactly the first batch.
    assert engine.n_cached_tokens == finished.stats.cached_tokens + BATCH
    assert [e.evaluated for e in events if isinstance(e, PromptProgress)] == [BATCH]

    resumed = collect(engine, ask(question), GenerationControl())
    resumed_finished = resumed[-1]
    assert isinstance(resumed_finished, Finished) and resumed_finished.reason is not FinishReason.CANCELLED
    # The kept batch was reused, not read again.
    assert resumed_finished.stats.cached_tokens == finished.stats.cached_tokens + BATCH

    # The same question read from scratch (another prompt evicts the cache first) gives the same greedy answer.
    collect(engine, ask("Say hello."), GenerationControl())
    fresh = collect(engine, ask(question), GenerationControl())
    fresh_finished = fresh[-1]
    assert isinstance(fresh_finished, Finished) and fresh_finished.stats.cached_tokens < BATCH
    assert answer(resumed) == answer(fresh) != ""


def test_stop_before_the_first_batch_reads_nothing(engine: LlamaCppBackend) -> None:
    control = GenerationControl()
    control.cancel.set()
    collect(engine, ask("Say hello."), GenerationControl())  # a known, short cache
    kept = engine.n_cached_tokens
    events = collect(engine, ask(LONG_TEXT), control)
    assert isinstance(events[-1], Finished) and events[-1].reason is FinishReason.CANCELLED
    assert engine.n_cached_tokens <= kept


THINK_GRAMMAR = r"""
root ::= "<think>" thought "</think>" " " answer
thought ::= "I think " word (" " word){3,12} "."
answer ::= "The answer is " word "."
word ::= [a-z]{2,8}
"""


def test_a_grammar_gives_a_real_think_stream_from_a_model_without_one(engine: LlamaCppBackend) -> None:
    events = collect(engine, ask("Why is the sky blue?", max_tokens=80, grammar=THINK_GRAMMAR), GenerationControl())
    reasoning = "".join(e.reasoning for e in events if isinstance(e, TextDelta))
    content = answer(events)
    assert reasoning.startswith("I think ") and reasoning.endswith(".")
    assert content.startswith("The answer is ") and content.endswith(".")
    assert ThinkingClosed(forced=False) in events
    finished = events[-1]
    assert isinstance(finished, Finished) and finished.reason is FinishReason.STOP
    assert finished.stats.reasoning_tokens > 3


def test_a_forced_close_is_fed_to_the_grammar(engine: LlamaCppBackend) -> None:
    grammar = r"""
root ::= "<think>" [a-z ]{1,300} "\n"? "</think>" "\n"{0,2} "Done."
"""
    request = GenerationRequest(
        messages=(ChatMessage("user", "Think about colours."),),
        sampling=GREEDY,
        max_tokens=60,
        think_budget=1,  # one letter or space token in, the close text ("\n</think>\n\n") fits the grammar
        grammar=grammar,
    )
    events = collect(engine, request, GenerationControl())
    assert ThinkingClosed(forced=True) in events
    assert answer(events).strip() == "Done."
    finished = events[-1]
    assert isinstance(finished, Finished) and finished.stats.reasoning_tokens == 1


def test_a_grammar_without_room_for_a_forced_close_is_left_to_finish(engine: LlamaCppBackend) -> None:
    # The engine's close text starts with a newline, which this grammar never allows: the budget can't force it.
    grammar = r"""
root ::= "<think>" [a-z ]{1,40} "</think>" "Done."
"""
    request = GenerationRequest(
        messages=(ChatMessage("user", "Think about colours."),),
        sampling=GREEDY,
        max_tokens=80,
        think_budget=2,
        grammar=grammar,
    )
    events = collect(engine, request, GenerationControl())
    assert ThinkingClosed(forced=True) not in events
    assert answer(events) == "Done."
    assert ThinkingClosed(forced=False) in events


def test_a_broken_grammar_is_a_clear_error(engine: LlamaCppBackend) -> None:
    with pytest.raises(EngineError, match="grammar"):
        collect(engine, ask("Hi", grammar="root ::= (("), GenerationControl())

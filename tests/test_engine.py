"""The engine against llama.cpp and the real Gemma 3 270M GGUF (which has no chat template, like many imports)."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from enclave.engine.llama_backend import LlamaCppBackend
from enclave.engine.types import (
    ChatMessage,
    ContextTrimmed,
    EngineError,
    Finished,
    FinishReason,
    GenerationControl,
    GenerationRequest,
    LoadRequest,
    ModelLoadError,
    PromptProgress,
    PromptTooLongError,
    SamplingParams,
    StreamEvent,
    TextDelta,
    ThinkingClosed,
)

GREEDY = SamplingParams(temperature=0.0, top_k=1, top_p=1.0, min_p=0.0, seed=7)


@pytest.fixture(scope="module")
def backend(gemma_path: Path) -> Iterator[LlamaCppBackend]:
    engine = LlamaCppBackend()
    engine.load(LoadRequest(path=str(gemma_path), n_ctx=2048, n_threads=2))
    yield engine
    engine.unload()


def run(
    backend: LlamaCppBackend, request: GenerationRequest, control: GenerationControl | None = None
) -> tuple[list[StreamEvent], str, str, Finished]:
    events = list(backend.stream_chat(request, control or GenerationControl()))
    reasoning = "".join(e.reasoning for e in events if isinstance(e, TextDelta))
    content = "".join(e.content for e in events if isinstance(e, TextDelta))
    finished = events[-1]
    assert isinstance(finished, Finished)
    return events, reasoning, content, finished


def ask(text: str, *history: ChatMessage, max_tokens: int = 24) -> GenerationRequest:
    return GenerationRequest(
        messages=(*history, ChatMessage("user", text)), sampling=GREEDY, max_tokens=max_tokens, think_budget=None
    )


def test_load_reports_model_and_fallback_format(backend: LlamaCppBackend) -> None:
    info = backend.model
    assert info is not None
    assert info.architecture == "gemma3"
    assert info.n_ctx == 2048
    assert info.n_ctx_train == 32768
    # The file has no chat template: the engine says which format it chose and why.
    assert "Gemma" in info.chat_format
    assert "gemma3" in info.chat_format_source
    assert not info.reasoning


def test_stream_produces_text_and_stats(backend: LlamaCppBackend) -> None:
    events, reasoning, content, finished = run(backend, ask("What is the capital of France?"))
    assert content.strip(), "the model answered nothing"
    assert reasoning == ""
    assert finished.reason in (FinishReason.STOP, FinishReason.LENGTH)
    assert 0 < finished.stats.completion_tokens <= 24
    assert finished.stats.prompt_tokens > 5
    assert finished.stats.context_used >= finished.stats.prompt_tokens
    assert any(isinstance(e, PromptProgress) for e in events)


def test_greedy_output_is_repeatable_and_stops_at_max_tokens(backend: LlamaCppBackend) -> None:
    first = run(backend, ask("Count from one to twenty in words.", max_tokens=12))
    second = run(backend, ask("Count from one to twenty in words.", max_tokens=12))
    assert first[2] == second[2]
    assert first[3].reason is FinishReason.LENGTH
    assert first[3].stats.completion_tokens == 12
    # The identical prompt was served from the KV cache the second time.
    assert second[3].stats.cached_tokens == second[3].stats.prompt_tokens - 1


def test_cancel_mid_stream(backend: LlamaCppBackend) -> None:
    control = GenerationControl()
    deltas = 0
    finished = None
    for event in backend.stream_chat(ask("Write a long story about a dragon.", max_tokens=200), control):
        if isinstance(event, TextDelta):
            deltas += 1
            if deltas == 3:
                control.cancel.set()
        elif isinstance(event, Finished):
            finished = event
    assert finished is not None
    assert finished.reason is FinishReason.CANCELLED
    assert finished.stats.completion_tokens < 10


def test_cancel_during_long_prompt(backend: LlamaCppBackend) -> None:
    long_text = "The quick brown fox jumps over the lazy dog. " * 150  # ~1,500 tokens
    control = GenerationControl()
    progress: list[PromptProgress] = []
    finished = None
    for event in backend.stream_chat(ask(long_text + "\nSummarise."), control):
        if isinstance(event, PromptProgress):
            progress.append(event)
            control.cancel.set()  # stop after the first prompt slice
        elif isinstance(event, Finished):
            finished = event
    assert finished is not None and finished.reason is FinishReason.CANCELLED
    assert len(progress) == 1
    assert progress[0].evaluated < progress[0].total  # it stopped inside the prompt, not after it
    assert finished.stats.completion_tokens == 0


def test_second_turn_reuses_cached_history(backend: LlamaCppBackend) -> None:
    history = "Here are some notes about gardening and tomatoes and watering. " * 20
    _, _, answer, first = run(backend, ask(history + "\nWhat are these notes about?"))
    turn2 = ask(
        "And how often should I water?",
        ChatMessage("user", history + "\nWhat are these notes about?"),
        ChatMessage("assistant", answer),
    )
    _, _, _, second = run(backend, turn2)
    # Everything up to the end of the first answer was already in the KV cache: only the new turn is evaluated.
    assert second.stats.cached_tokens >= first.stats.prompt_tokens
    assert second.stats.prompt_tokens - second.stats.cached_tokens < 40


def test_context_overflow_drops_oldest_turns_visibly(gemma_path: Path) -> None:
    engine = LlamaCppBackend()
    engine.load(LoadRequest(path=str(gemma_path), n_ctx=512, n_threads=2))
    try:
        filler = "This sentence is here only to take up room in the context window. " * 12
        history: list[ChatMessage] = []
        for i in range(6):
            history += [ChatMessage("user", f"{i}: {filler}"), ChatMessage("assistant", f"Noted {i}.")]
        events, _, _, finished = run(engine, ask("What was the last number?", *history, max_tokens=8))
        trimmed = [e for e in events if isinstance(e, ContextTrimmed)]
        assert len(trimmed) == 1 and trimmed[0].dropped_messages >= 2
        assert trimmed[0].dropped_messages % 2 == 0  # whole exchanges only
        assert finished.stats.prompt_tokens <= 512
        with pytest.raises(PromptTooLongError):
            run(engine, ask(filler * 10))
    finally:
        engine.unload()


def test_thinking_budget_closes_thinking_and_answers(backend: LlamaCppBackend) -> None:
    # Make the real model start inside <think>, as R1-Distill's template does; the budget must close it.
    fmt = backend.chat_format
    assert fmt is not None
    backend._format = replace(fmt, opens_thinking=True, reasoning=True)
    try:
        request = replace(ask("Why is the sky blue?", max_tokens=30), think_budget=5)
        events, reasoning, content, finished = run(backend, request)
    finally:
        backend._format = fmt
    closed = [e for e in events if isinstance(e, ThinkingClosed)]
    assert closed == [ThinkingClosed(forced=True)]
    assert finished.stats.reasoning_tokens == 5
    assert reasoning.strip()
    assert content.strip(), "no answer after the forced </think>"


def test_answer_now_closes_thinking(backend: LlamaCppBackend) -> None:
    fmt = backend.chat_format
    assert fmt is not None
    backend._format = replace(fmt, opens_thinking=True, reasoning=True)
    control = GenerationControl()
    seen_reasoning = 0
    events: list[StreamEvent] = []
    try:
        for event in backend.stream_chat(ask("Explain rainbows.", max_tokens=40), control):
            events.append(event)
            if isinstance(event, TextDelta) and event.reasoning:
                seen_reasoning += 1
                if seen_reasoning == 3:
                    control.answer_now.set()
    finally:
        backend._format = fmt
    assert ThinkingClosed(forced=True) in events
    finished = events[-1]
    assert isinstance(finished, Finished)
    assert finished.stats.reasoning_tokens == 3
    after = events[events.index(ThinkingClosed(forced=True)) :]
    assert any(isinstance(e, TextDelta) and e.content for e in after)
    assert not any(isinstance(e, TextDelta) and e.reasoning for e in after)


def test_unload_and_switch(gemma_path: Path, tmp_path: Path) -> None:
    engine = LlamaCppBackend()
    engine.load(LoadRequest(path=str(gemma_path), n_ctx=1024, n_threads=2))
    copy = tmp_path / "second-model.gguf"
    shutil.copyfile(gemma_path, copy)
    info = engine.load(LoadRequest(path=str(copy), n_ctx=512, n_threads=2))
    assert info.path == str(copy) and info.n_ctx == 512
    assert run(engine, ask("Hi", max_tokens=4))[3].stats.completion_tokens > 0
    engine.unload()
    assert engine.model is None
    with pytest.raises(EngineError, match="No model is loaded"):
        list(engine.stream_chat(ask("Hi"), GenerationControl()))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "not found"),
        (b"", "too small"),
        (b"<html><body>Rate limited</body></html>" * 4, "not a GGUF"),
        (b"GGUF" + (99).to_bytes(4, "little") + bytes(16), "version 99"),
        (b"GGUF" + (3).to_bytes(4, "little") + (2**40).to_bytes(8, "little") + bytes(8), "damaged header"),
    ],
)
def test_bad_files_give_clear_errors_and_keep_the_loaded_model(
    backend: LlamaCppBackend, tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "model.gguf"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=message):
        backend.load(LoadRequest(path=str(path)))
    assert backend.model is not None  # the working model was not thrown away for a bad file
    assert run(backend, ask("Hi", max_tokens=2))[3].stats.completion_tokens > 0


def test_truncated_gguf_is_reported(gemma_path: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.gguf"
    with gemma_path.open("rb") as src:
        truncated.write_bytes(src.read(4 * 1024 * 1024))
    engine = LlamaCppBackend()
    # Caught by the header check, before llama.cpp ever opens it.
    with pytest.raises(ModelLoadError, match=r"truncated\.gguf: the file is incomplete"):
        engine.load(LoadRequest(path=str(truncated)))
    assert engine.model is None


def test_tensor_data_cut_short_is_refused_by_the_header_check(gemma_path: Path, tmp_path: Path) -> None:
    # The header is intact, only the end of the tensor data is missing: our header check (gguf_check, through the
    # validating reader's tensor-extent check) refuses the file before llama.cpp is asked to open it.
    from enclave.engine.gguf_check import check_gguf_file

    data = gemma_path.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: len(data) - 1024])
    with pytest.raises(ModelLoadError) as by_the_check:
        check_gguf_file(cut)
    assert str(by_the_check.value).startswith(f"cut.gguf: the file is incomplete ({len(data) - 1024:,} of ")
    engine = LlamaCppBackend()
    with pytest.raises(ModelLoadError) as by_the_engine:
        engine.load(LoadRequest(path=str(cut)))
    assert str(by_the_engine.value) == str(by_the_check.value)  # the header check's words, not llama.cpp's
    assert engine.model is None


def _write_split_gguf(first_dir: Path, parts: int) -> list[Path]:
    """A real llama.cpp-style split GGUF written by gguf-py: one tensor per part, ``split.*`` keys in every part."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(first_dir / "R1-UD-IQ1_S.gguf"), arch="llama", split_max_tensors=1)
    writer.add_name("R1 split")
    for i in range(parts):
        writer.add_tensor(f"blk.{i}.ffn_up.weight", np.full(64, i, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return sorted(first_dir.glob("R1-UD-IQ1_S-*-of-*.gguf"))


def test_missing_shards_are_named(tmp_path: Path) -> None:
    from enclave.engine.gguf_check import check_gguf_file

    first, second, third = _write_split_gguf(tmp_path, 3)
    assert [p.name for p in (first, second, third)] == [
        "R1-UD-IQ1_S-00001-of-00003.gguf",
        "R1-UD-IQ1_S-00002-of-00003.gguf",
        "R1-UD-IQ1_S-00003-of-00003.gguf",
    ]
    check_gguf_file(first)  # every part present: the header check has nothing to say
    second.unlink()
    third.unlink()
    engine = LlamaCppBackend()
    with pytest.raises(ModelLoadError) as both_missing:
        engine.load(LoadRequest(path=str(first)))
    assert str(both_missing.value) == (
        "R1-UD-IQ1_S-00001-of-00003.gguf is part 1 of a 3-part model, but these parts are missing: "
        "R1-UD-IQ1_S-00002-of-00003.gguf, R1-UD-IQ1_S-00003-of-00003.gguf. Put all parts in the same folder."
    )
    assert engine.model is None
    _write_split_gguf(tmp_path, 3)[1].unlink()  # only the second part missing: only it is named
    with pytest.raises(ModelLoadError, match=r"these parts are missing: R1-UD-IQ1_S-00002-of-00003\.gguf\. Put"):
        engine.load(LoadRequest(path=str(first)))


def test_cancel_from_another_thread(backend: LlamaCppBackend) -> None:
    control = GenerationControl()
    started = threading.Event()

    def stop_soon() -> None:
        started.wait(5)
        control.cancel.set()

    stopper = threading.Thread(target=stop_soon)
    stopper.start()
    finished = None
    for event in backend.stream_chat(ask("Tell me everything about the ocean.", max_tokens=400), control):
        if isinstance(event, TextDelta):
            started.set()
        if isinstance(event, Finished):
            finished = event
    stopper.join()
    assert finished is not None and finished.reason is FinishReason.CANCELLED


def test_quantized_kv_cache(gemma_path: Path) -> None:
    engine = LlamaCppBackend()
    engine.load(LoadRequest(path=str(gemma_path), n_ctx=1024, n_threads=2, kv_cache_type="q8_0"))
    try:
        assert run(engine, ask("Hello", max_tokens=4))[3].stats.completion_tokens > 0
    finally:
        engine.unload()
    with pytest.raises(ModelLoadError, match="Unknown KV cache type"):
        engine.load(LoadRequest(path=str(gemma_path), kv_cache_type="q2_k"))

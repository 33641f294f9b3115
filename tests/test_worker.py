"""The engine thread: queued requests, batched text, direct cancel, and no work on the GUI thread."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from enclave.engine.llama_backend import LlamaCppBackend
from enclave.engine.types import (
    ChatMessage,
    Finished,
    FinishReason,
    GenerationRequest,
    LoadRequest,
    ModelInfo,
    SamplingParams,
)
from enclave.workers.engine_worker import EngineController
from fakes import Script, ScriptedBackend


class ThreadRecordingBackend(ScriptedBackend):
    def __init__(self, script: Script) -> None:
        super().__init__(script=script)
        self.threads: set[int] = set()

    def load(
        self,
        request: LoadRequest,
        cancel: threading.Event | None = None,
        progress: Callable[[float], None] | None = None,
    ) -> ModelInfo:
        self.threads.add(threading.get_ident())
        return super().load(request, cancel)

    def stream_chat(self, request: GenerationRequest, control: Any) -> Iterator[Any]:
        self.threads.add(threading.get_ident())
        return super().stream_chat(request, control)


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "scripted.gguf"
    path.write_bytes(b"scripted model")
    return path


def make_controller(backend: ScriptedBackend) -> EngineController:
    controller = EngineController(lambda: backend)
    controller.start()
    return controller


@pytest.fixture
def scripted() -> ThreadRecordingBackend:
    return ThreadRecordingBackend(Script(reasoning="r" * 400, answer="a" * 400, chunk_chars=1, delay_s=0.001))


@pytest.fixture
def controller(scripted: ThreadRecordingBackend, qtbot: Any) -> Iterator[EngineController]:
    engine = make_controller(scripted)
    yield engine
    engine.shutdown()


def request(text: str = "Hello") -> GenerationRequest:
    return GenerationRequest(messages=(ChatMessage("user", text),))


def collect(controller: EngineController) -> dict[str, list[Any]]:
    got: dict[str, list[Any]] = {"text": [], "closed": [], "finished": [], "failed": []}
    controller.textReady.connect(lambda rid, r, c: got["text"].append((rid, r, c)))
    controller.thinkingClosed.connect(lambda rid, forced: got["closed"].append(forced))
    controller.generationFinished.connect(lambda rid, f: got["finished"].append((rid, f)))
    controller.generationFailed.connect(lambda rid, m: got["failed"].append((rid, m)))
    return got


def test_load_and_stream_batches_text_on_the_engine_thread(
    controller: EngineController, scripted: ThreadRecordingBackend, model_file: Path, qtbot: Any
) -> None:
    with qtbot.waitSignal(controller.modelLoaded, timeout=5000) as loaded:
        controller.load_model(LoadRequest(path=str(model_file)))
    assert loaded.args[0].name == "scripted"
    assert controller.model is not None
    got = collect(controller)
    with qtbot.waitSignal(controller.generationFinished, timeout=10_000):
        rid = controller.generate(request())
        assert controller.busy
    assert not controller.busy
    reasoning = "".join(r for _, r, _ in got["text"])
    content = "".join(c for _, _, c in got["text"])
    assert reasoning == "r" * 400 and content == "a" * 400
    assert {r for r, _, _ in got["text"]} == {rid}
    # 800 one-character deltas over >= 0.8 s arrive in a few dozen batches, never one signal per token.
    assert len(got["text"]) < 100
    assert got["closed"] == [False]
    assert got["finished"][0][1].reason is FinishReason.STOP
    assert threading.main_thread().ident not in scripted.threads
    assert len(scripted.threads) == 1


def test_cancel_is_immediate_and_keeps_partial_text(
    controller: EngineController, scripted: ThreadRecordingBackend, model_file: Path, qtbot: Any
) -> None:
    scripted.script.delay_s = 0.005
    controller.load_model(LoadRequest(path=str(model_file)))
    got = collect(controller)
    with qtbot.waitSignal(controller.generationFinished, timeout=10_000):
        rid = controller.generate(request())
        qtbot.waitUntil(lambda: len(got["text"]) >= 2, timeout=5000)
        controller.cancel(rid)
    finished: Finished = got["finished"][0][1]
    assert finished.reason is FinishReason.CANCELLED
    streamed = "".join(r for _, r, _ in got["text"])
    assert 0 < len(streamed) < 400


def test_answer_now_forces_the_thinking_closed(
    controller: EngineController, scripted: ThreadRecordingBackend, model_file: Path, qtbot: Any
) -> None:
    scripted.script.delay_s = 0.005
    controller.load_model(LoadRequest(path=str(model_file)))
    got = collect(controller)
    with qtbot.waitSignal(controller.generationFinished, timeout=10_000):
        rid = controller.generate(request())
        qtbot.waitUntil(lambda: len(got["text"]) >= 1, timeout=5000)
        controller.answer_now(rid)
    assert got["closed"] == [True]
    assert "".join(c for _, _, c in got["text"]) == "a" * 400


def test_request_cancelled_while_queued_never_runs(
    controller: EngineController, scripted: ThreadRecordingBackend, model_file: Path, qtbot: Any
) -> None:
    controller.load_model(LoadRequest(path=str(model_file)))
    got = collect(controller)
    with qtbot.waitSignals([controller.generationFinished, controller.generationFinished], timeout=10_000):
        first = controller.generate(request("first"))
        second = controller.generate(request("second"))
        controller.cancel(second)
    by_id = dict(got["finished"])
    assert by_id[first].reason is FinishReason.STOP
    assert by_id[second].reason is FinishReason.CANCELLED
    assert [r.messages[0].content for r in scripted.requests] == ["first"]


def test_errors_arrive_as_signals(controller: EngineController, scripted: ThreadRecordingBackend, qtbot: Any) -> None:
    with qtbot.waitSignal(controller.modelLoadFailed, timeout=5000) as failed:
        controller.load_model(LoadRequest(path="/nonexistent/model.gguf"))
    assert "not found" in failed.args[0]
    assert controller.model is None and not controller.loading
    scripted.script.fail_with = "The model ran out of memory."
    with qtbot.waitSignal(controller.generationFailed, timeout=5000) as gen_failed:
        controller.generate(request())
    assert gen_failed.args[1] == "The model ran out of memory."
    assert not controller.busy


def test_shutdown_joins_the_thread(scripted: ThreadRecordingBackend, model_file: Path, qtbot: Any) -> None:
    engine = make_controller(scripted)
    engine.load_model(LoadRequest(path=str(model_file)))
    qtbot.waitUntil(lambda: engine.model is not None, timeout=5000)
    engine.generate(request())
    engine.shutdown()
    assert scripted.model is None  # unloaded on the engine thread before it stopped
    assert not engine.thread_running


def test_real_model_through_the_worker(gemma_path: Path, qtbot: Any) -> None:
    engine = EngineController(LlamaCppBackend)
    try:
        with qtbot.waitSignal(engine.modelLoaded, timeout=60_000):
            engine.load_model(LoadRequest(path=str(gemma_path), n_ctx=1024, n_threads=2))
        got = collect(engine)
        sampling = SamplingParams(temperature=0.0, top_k=1, seed=1)
        with qtbot.waitSignal(engine.generationFinished, timeout=60_000):
            engine.generate(
                GenerationRequest(
                    messages=(ChatMessage("user", "Name three colours."),), sampling=sampling, max_tokens=20
                )
            )
        content = "".join(c for _, _, c in got["text"])
        finished: Finished = got["finished"][0][1]
        assert content.strip()
        assert finished.stats.completion_tokens > 0
    finally:
        engine.shutdown()

"""Engine benchmarks against raw llama-cpp-python, in the same run, on the same model.

    python bench/bench_engine.py [--model PATH] [--tokens 256] [--threads N]

Prints:
- throughput: tokens/s through EngineController + Qt signals (what the GUI receives) ÷ raw ``Llama.generate`` tokens/s
- time to first token at turn 8 ÷ turn 1 of one conversation (KV prefix reuse keeps it flat)
- stop latency: cancel() to the GUI receiving "finished", during decoding and during a long prompt
Without --model it uses the Gemma 3 270M GGUF from the test extra.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QCoreApplication, QEventLoop, QTimer

from enclave.engine.llama_backend import LlamaCppBackend
from enclave.engine.types import (
    ChatMessage,
    Finished,
    GenerationControl,
    GenerationRequest,
    LoadRequest,
    SamplingParams,
    TextDelta,
)
from enclave.workers.engine_worker import EngineController

GREEDY = SamplingParams(temperature=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0)
PROMPT = "Write a detailed essay about the history of the printing press and its effect on Europe."


def wait_for(app: QCoreApplication, predicate: Any, timeout_s: float = 600) -> None:
    """Block in the event loop: on 2 cores a busy-polling GUI thread would steal a decode thread's core."""
    deadline = time.monotonic() + timeout_s
    tick = QTimer()
    tick.start(50)  # wakes the loop now and then to re-check the deadline
    try:
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError
            app.processEvents(QEventLoop.ProcessEventsFlag.WaitForMoreEvents)
    finally:
        tick.stop()


def raw_throughput(model: Path, n_tokens: int, threads: int, n_ctx: int) -> tuple[int, float]:
    """Plain llama-cpp-python in a fresh process: the app also has exactly one model (and one OpenMP pool) per process.

    Measuring both in one process would make their thread pools compete and slow both by a third on 2 cores.
    """
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--raw",
            "--model",
            str(model),
            "--tokens",
            str(n_tokens),
            "--threads",
            str(threads),
            f"--ctx={n_ctx}",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return int(result["tokens"]), float(result["seconds"])


def raw_run(model: Path, n_tokens: int, threads: int, n_ctx: int) -> dict[str, float]:
    """Tokenize the same prompt the app sends, Llama.generate greedily, detokenize every token."""
    import llama_cpp
    from llama_cpp import Llama

    renderer = LlamaCppBackend()
    renderer.load(LoadRequest(path=str(model), n_ctx=512, n_threads=threads))
    tokens = renderer.prompt_tokens((ChatMessage("user", PROMPT),))
    renderer.unload()
    llm = Llama(
        model_path=str(model),
        n_ctx=n_ctx,
        n_threads=threads,
        n_threads_batch=threads,
        swa_full=True,
        flash_attn=True,  # the same context settings as the engine
        verbose=False,
    )
    start = time.perf_counter()
    count = 0
    for token in llm.generate(tokens, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0):
        if llama_cpp.llama_vocab_is_eog(llm._model.vocab, token):
            break
        llm.detokenize([token])
        count += 1
        if count >= n_tokens:
            break
    elapsed = time.perf_counter() - start
    llm.close()
    return {"tokens": count, "seconds": elapsed}


def app_throughput(app: QCoreApplication, controller: EngineController, n_tokens: int) -> tuple[int, float, int]:
    """The product path: queued request, engine thread, batched textReady signals, received on this thread."""
    received: list[str] = []
    done: list[Any] = []
    # Push the prompt out of the KV cache first, so it is evaluated afresh as in the raw run (no reuse advantage).
    flush = GenerationRequest(messages=(ChatMessage("user", "Unrelated."),), sampling=GREEDY, max_tokens=1)
    flushed: list[Any] = []
    flush_slot = lambda rid, f: flushed.append(f) if rid == flush.request_id else None  # noqa: E731
    controller.generationFinished.connect(flush_slot)
    controller.generate(flush)
    wait_for(app, lambda: bool(flushed))
    controller.generationFinished.disconnect(flush_slot)
    request = GenerationRequest(messages=(ChatMessage("user", PROMPT),), sampling=GREEDY, max_tokens=n_tokens)
    text_slot = lambda rid, r, c: received.append(r + c) if rid == request.request_id else None  # noqa: E731
    finished_slot = lambda rid, f: done.append(f) if rid == request.request_id else None  # noqa: E731
    controller.textReady.connect(text_slot)
    controller.generationFinished.connect(finished_slot)
    start = time.perf_counter()
    controller.generate(request)
    wait_for(app, lambda: bool(done))
    elapsed = time.perf_counter() - start
    controller.textReady.disconnect(text_slot)
    controller.generationFinished.disconnect(finished_slot)
    return done[0].stats.completion_tokens, elapsed, len(received)


def ttft_by_turn(app: QCoreApplication, controller: EngineController, turns: int) -> list[float]:
    """Time from generate() to the first text signal on the GUI side, for each turn of one conversation."""
    history: list[ChatMessage] = []
    times: list[float] = []
    questions = [
        "Tell me about rivers.",
        "And mountains?",
        "What about deserts?",
        "Now oceans.",
        "And forests?",
        "What about lakes?",
        "Tell me about islands.",
        "Finally, volcanoes?",
    ]
    for i in range(turns):
        history.append(ChatMessage("user", questions[i % len(questions)]))
        request = GenerationRequest(messages=tuple(history), sampling=GREEDY, max_tokens=96)
        recorder = Recorder(controller, request)
        start = time.perf_counter()
        controller.generate(request)
        wait_for(app, lambda recorder=recorder: recorder.over)
        recorder.close()
        times.append((recorder.first_text or float("nan")) - start)
        history.append(ChatMessage("assistant", "".join(recorder.texts)))
    return times


class Recorder:
    """Collects one request's signals on the GUI thread, with arrival times."""

    def __init__(self, controller: EngineController, request: GenerationRequest) -> None:
        self.rid = request.request_id
        self.first_text: float | None = None
        self.texts: list[str] = []
        self.progress = 0
        self.finished: Any = None
        self.finished_at = 0.0
        self.failed: str | None = None
        self._controller = controller
        controller.textReady.connect(self._on_text)
        controller.promptProgress.connect(self._on_progress)
        controller.generationFinished.connect(self._on_done)
        controller.generationFailed.connect(self._on_failed)

    def _on_text(self, rid: str, reasoning: str, content: str) -> None:
        if rid == self.rid:
            self.first_text = self.first_text or time.perf_counter()
            self.texts.append(content)

    def _on_progress(self, rid: str, evaluated: int, total: int) -> None:
        if rid == self.rid:
            self.progress += 1

    def _on_done(self, rid: str, finished: Any) -> None:
        if rid == self.rid:
            self.finished, self.finished_at = finished, time.perf_counter()

    def _on_failed(self, rid: str, message: str) -> None:
        if rid == self.rid:
            self.failed = message

    @property
    def over(self) -> bool:
        return self.finished is not None or self.failed is not None

    def close(self) -> None:
        self._controller.textReady.disconnect(self._on_text)
        self._controller.promptProgress.disconnect(self._on_progress)
        self._controller.generationFinished.disconnect(self._on_done)
        self._controller.generationFailed.disconnect(self._on_failed)


def stop_latency(app: QCoreApplication, controller: EngineController, *, during_prompt: bool) -> float:
    """Seconds from cancel() on the GUI thread to the GUI receiving the CANCELLED "finished" signal."""
    text = ("All work and no play makes a dull story. " * 300) + "Summarise." if during_prompt else PROMPT
    request = GenerationRequest(messages=(ChatMessage("user", text),), sampling=GREEDY, max_tokens=512)
    recorder = Recorder(controller, request)
    controller.generate(request)
    if during_prompt:
        wait_for(app, lambda: recorder.progress >= 2 or recorder.over)
    else:
        wait_for(app, lambda: len(recorder.texts) >= 5 or recorder.over)
    # Press "stop" at a random moment, not right after a signal arrived (which would flatter the number).
    until = time.monotonic() + random.uniform(0.0, 0.06)
    wait_for(app, lambda: time.monotonic() >= until or recorder.over)
    if recorder.over:
        raise RuntimeError(f"finished before it could be stopped: {recorder.failed or recorder.finished}")
    pressed = time.perf_counter()
    controller.cancel(request.request_id)
    wait_for(app, lambda: recorder.over)
    recorder.close()
    assert recorder.finished.reason.value == "cancelled", recorder.finished
    return recorder.finished_at - pressed


def engine_stop_latency(model: Path, threads: int, n_ctx: int, trials: int = 10) -> list[float]:
    """cancel.set() from another thread at a random moment -> the engine's generator has returned Finished."""
    backend = LlamaCppBackend()
    backend.load(LoadRequest(path=str(model), n_ctx=n_ctx, n_threads=threads))
    latencies: list[float] = []
    for _ in range(trials):
        control = GenerationControl()
        started = threading.Event()
        finished_at: list[float] = []

        def generate(
            control: GenerationControl = control,
            started: threading.Event = started,
            finished_at: list[float] = finished_at,
        ) -> None:
            request = GenerationRequest(messages=(ChatMessage("user", PROMPT),), sampling=GREEDY, max_tokens=400)
            for event in backend.stream_chat(request, control):
                if isinstance(event, TextDelta):
                    started.set()
                elif isinstance(event, Finished):
                    finished_at.append(time.perf_counter())

        worker = threading.Thread(target=generate)
        worker.start()
        started.wait()
        time.sleep(0.1 + random.uniform(0.0, 0.06))
        pressed = time.perf_counter()
        control.cancel.set()
        worker.join()
        latencies.append(finished_at[0] - pressed)
    backend.unload()
    return latencies


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--ctx", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--raw", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.model is None:
        from model_cache import gemma_model_path

        args.model = gemma_model_path()
    if args.raw:
        print(json.dumps(raw_run(args.model, args.tokens, args.threads, args.ctx)))
        return 0
    app = QCoreApplication.instance() or QCoreApplication([])
    load = LoadRequest(path=str(args.model), n_ctx=args.ctx, n_threads=args.threads)
    controller = EngineController(LlamaCppBackend)
    loaded: list[Any] = []
    controller.modelLoaded.connect(loaded.append)
    controller.load_model(load)
    wait_for(app, lambda: bool(loaded))
    print(f"model: {args.model.name}  threads: {args.threads}  tokens: {args.tokens}")

    print("\n== throughput: app (worker + signals) vs raw llama-cpp-python, same prompt tokens, greedy")
    ratios = []
    for i in range(args.repeat):
        raw_n, raw_s = raw_throughput(args.model, args.tokens, args.threads, args.ctx)
        app_n, app_s, signals = app_throughput(app, controller, args.tokens)
        raw_rate, app_rate = raw_n / raw_s, app_n / app_s
        ratios.append(app_rate / raw_rate)
        print(
            f"   run {i + 1}: raw {raw_n} tok in {raw_s:.2f}s = {raw_rate:.1f} tok/s | app {app_n} tok in {app_s:.2f}s "
            f"= {app_rate:.1f} tok/s ({signals} text signals) | ratio {app_rate / raw_rate:.3f}"
        )
    print(f"   median ratio app/raw = {statistics.median(ratios):.3f}  (goal >= 0.97)")

    print("\n== time to first token by turn (GUI side, one conversation, KV prefix reuse)")
    ttft = ttft_by_turn(app, controller, 8)
    print("   " + "  ".join(f"t{i + 1}={t * 1000:.0f}ms" for i, t in enumerate(ttft)))
    print(f"   turn 8 / turn 1 = {ttft[7] / ttft[0]:.2f}  (goal <= 1.5)")

    print("\n== stop latency (cancel() -> finished signal received)")
    decode = [stop_latency(app, controller, during_prompt=False) for _ in range(10)]
    prompt = [stop_latency(app, controller, during_prompt=True) for _ in range(5)]
    for label, values in (("while decoding", decode), ("during a ~2.7k-token prompt", prompt)):
        print(
            f"   {label}: median {statistics.median(values) * 1000:.1f} ms, max {max(values) * 1000:.1f} ms "
            f"over {len(values)} stops  (goal <= 200 ms)"
        )
    controller.shutdown()
    engine = engine_stop_latency(args.model, args.threads, args.ctx)
    print(
        f"   engine side (cancel from another thread at a random moment): median "
        f"{statistics.median(engine) * 1000:.1f} ms, max {max(engine) * 1000:.1f} ms over {len(engine)} stops"
    )
    QTimer.singleShot(0, app.quit)
    return 0


if __name__ == "__main__":
    sys.exit(main())

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
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QCoreApplication, QEventLoop, QTimer

from enclave.engine.llama_backend import LlamaCppBackend
from enclave.engine.types import (
    ChatMessage,
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
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError
        app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 5)


def raw_throughput(model: Path, prompt_text: str, n_tokens: int, threads: int, n_ctx: int) -> tuple[int, float]:
    """Plain llama-cpp-python: tokenize the same prompt, Llama.generate greedily, detokenize every token."""
    import llama_cpp
    from llama_cpp import Llama

    llm = Llama(
        model_path=str(model), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, swa_full=True, verbose=False
    )
    tokens = llm.tokenize(prompt_text.encode(), add_bos=False, special=True)
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
    return count, elapsed


def app_throughput(app: QCoreApplication, controller: EngineController, n_tokens: int) -> tuple[int, float, int]:
    """The product path: queued request, engine thread, batched textReady signals, received on this thread."""
    received: list[str] = []
    done: list[Any] = []
    text_slot = lambda rid, r, c: received.append(r + c)  # noqa: E731
    finished_slot = lambda rid, f: done.append(f)  # noqa: E731
    controller.textReady.connect(text_slot)
    controller.generationFinished.connect(finished_slot)
    request = GenerationRequest(messages=(ChatMessage("user", PROMPT),), sampling=GREEDY, max_tokens=n_tokens)
    start = time.perf_counter()
    controller.generate(request)
    wait_for(app, lambda: bool(done))
    elapsed = time.perf_counter() - start
    controller.textReady.disconnect(text_slot)
    controller.generationFinished.disconnect(finished_slot)
    return done[0].stats.completion_tokens, elapsed, len(received)


def ttft_by_turn(backend: LlamaCppBackend, turns: int) -> list[float]:
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
        start = time.perf_counter()
        first: float | None = None
        answer: list[str] = []
        for event in backend.stream_chat(request, GenerationControl()):
            if isinstance(event, TextDelta):
                if first is None:
                    first = time.perf_counter() - start
                answer.append(event.content)
        times.append(first or float("nan"))
        history.append(ChatMessage("assistant", "".join(answer)))
    return times


def stop_latency(app: QCoreApplication, controller: EngineController, *, during_prompt: bool) -> float:
    done: list[float] = []
    texts: list[int] = []
    progress: list[int] = []
    text = (
        ("All work and no play makes a dull story. " * 400) + "Summarise."
        if during_prompt
        else PROMPT + " Make it very long."
    )
    on_text = lambda *a: texts.append(1)  # noqa: E731
    on_progress = lambda rid, e, t: progress.append(e)  # noqa: E731
    on_done = lambda *a: done.append(time.perf_counter())  # noqa: E731
    controller.textReady.connect(on_text)
    controller.promptProgress.connect(on_progress)
    controller.generationFinished.connect(on_done)
    rid = controller.generate(
        GenerationRequest(messages=(ChatMessage("user", text),), sampling=GREEDY, max_tokens=2000)
    )
    if during_prompt:
        wait_for(app, lambda: len(progress) >= 2)
    else:
        wait_for(app, lambda: len(texts) >= 5)
    pressed = time.perf_counter()
    controller.cancel(rid)
    wait_for(app, lambda: bool(done))
    controller.textReady.disconnect(on_text)
    controller.promptProgress.disconnect(on_progress)
    controller.generationFinished.disconnect(on_done)
    return done[0] - pressed


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--ctx", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if args.model is None:
        from model_cache import gemma_model_path

        args.model = gemma_model_path()
    app = QCoreApplication.instance() or QCoreApplication([])
    load = LoadRequest(path=str(args.model), n_ctx=args.ctx, n_threads=args.threads)

    prompt_backend = LlamaCppBackend()
    prompt_backend.load(load)
    prompt_text = prompt_backend.render_prompt(
        GenerationRequest(messages=(ChatMessage("user", PROMPT),), sampling=GREEDY)
    )
    print(f"model: {args.model.name}  threads: {args.threads}  tokens: {args.tokens}")
    print("\n== time to first token by turn (engine, KV prefix reuse)")
    ttft = ttft_by_turn(prompt_backend, 8)
    print("   " + "  ".join(f"t{i + 1}={t * 1000:.0f}ms" for i, t in enumerate(ttft)))
    print(f"   turn 8 / turn 1 = {ttft[7] / ttft[0]:.2f}  (goal <= 1.5)")
    prompt_backend.unload()

    controller = EngineController(LlamaCppBackend)
    loaded: list[Any] = []
    controller.modelLoaded.connect(loaded.append)
    controller.load_model(load)
    wait_for(app, lambda: bool(loaded))

    print("\n== throughput: app (worker + signals) vs raw llama-cpp-python, same prompt tokens, greedy")
    ratios = []
    for i in range(args.repeat):
        raw_n, raw_s = raw_throughput(args.model, prompt_text, args.tokens, args.threads, args.ctx)
        # A fresh cache for the app run too: unload/load would cost time, so vary nothing and reset via a new prompt.
        controller.generate(GenerationRequest(messages=(ChatMessage("user", "x"),), sampling=GREEDY, max_tokens=1))
        app_n, app_s, signals = app_throughput(app, controller, args.tokens)
        raw_rate, app_rate = raw_n / raw_s, app_n / app_s
        ratios.append(app_rate / raw_rate)
        print(
            f"   run {i + 1}: raw {raw_n} tok in {raw_s:.2f}s = {raw_rate:.1f} tok/s | app {app_n} tok in {app_s:.2f}s "
            f"= {app_rate:.1f} tok/s ({signals} text signals) | ratio {app_rate / raw_rate:.3f}"
        )
    print(f"   median ratio app/raw = {statistics.median(ratios):.3f}  (goal >= 0.97)")

    print("\n== stop latency (cancel() -> finished signal received)")
    decode = [stop_latency(app, controller, during_prompt=False) for _ in range(3)]
    prompt = [stop_latency(app, controller, during_prompt=True) for _ in range(3)]
    print(f"   while decoding: max {max(decode) * 1000:.0f} ms  (goal <= 200 ms)")
    print(f"   during a ~4k-token prompt: max {max(prompt) * 1000:.0f} ms  (goal <= 200 ms)")
    controller.shutdown()
    QTimer.singleShot(0, app.quit)
    return 0


if __name__ == "__main__":
    sys.exit(main())

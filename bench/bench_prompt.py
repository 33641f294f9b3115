"""Prompt reading speed and stop latency: Enclave's engine vs raw llama-cpp-python, in the same run.

    python bench/bench_prompt.py [--model PATH] [--threads N] [--runs 5] [--sizes 1500,6000] [--batches ...]
    GGML_VK_VISIBLE_DEVICES=0 python bench/bench_prompt.py --device Vulkan0 --sizes "" --doc-runs 0 --stops 0 \
        --sweep-size 1500      # the batch sweep on a Vulkan device (lavapipe here)

Each measurement runs in a fresh process (one model, one thread pool per process, as in the app), the two sides
alternate (app first on odd runs, raw first on even runs), and each side is warmed up inside its process with a short
prompt before the timed one. Prints:
- prompt tokens/s through ``LlamaCppBackend.stream_chat`` (prompt phase, full batches, abort callback installed)
  ÷ raw ``Llama.eval`` on the same tokens with the same n_batch = n_ubatch, min and median over the runs;
- the same raw speed for n_batch 128…2048 (what the planner's batch choice rests on);
- stop latency during a long prompt: ``cancel`` set from another thread at a random moment → the engine's generator
  has returned ``Finished`` (median and max of 10 stops).
Without --model it uses the Gemma 3 270M GGUF from the test extra.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

FILLER = (
    "In the spring the river rose over its banks and the farmers moved their animals to the hills, where the grass "
    "was still short and the nights were cold. "
)


def prompt_text(tokens: int) -> str:
    # ~33 tokens per filler sentence with Gemma's tokenizer; the exact count is measured and printed.
    return FILLER * max(1, tokens // 33) + "\nWhat did the farmers do?"


def document_question(count_tokens: object) -> str:
    """A documents question as the app sends it: 7 sources from real PDFs (tests/data) in the grounded prompt."""
    from enclave.docs.parsers import parse_file
    from enclave.docs.prompt import build_document_prompt, sources_budget
    from enclave.docs.search import SearchResult

    data = Path(__file__).resolve().parents[1] / "tests" / "data" / "pdf"
    pages = [
        (str(pdf), page.number, page.text)
        for pdf in sorted(data.rglob("*.pdf"))
        for page in parse_file(pdf).pages
        if len(page.text) > 400
    ]
    results = []
    for i, (path, number, text) in enumerate(pages[:7]):
        piece = text[:1600]
        results.append(
            SearchResult(
                i, i, "bench", path, "pdf", number, 0, len(piece), piece, 1.0 / (i + 1), i + 1, i + 1, 0.5, True
            )
        )
    context = build_document_prompt(
        "What do these documents say about their layout and content?",
        results,
        budget_tokens=sources_budget(8192, 0),
        count_tokens=count_tokens,  # type: ignore[arg-type]
    )
    assert len(context.sources) == 7, len(context.sources)
    return context.prompt


def child(args: argparse.Namespace) -> dict[str, float]:
    from enclave.engine.llama_backend import LlamaCppBackend
    from enclave.engine.types import (
        ChatMessage,
        Finished,
        GenerationControl,
        GenerationRequest,
        LoadRequest,
        SamplingParams,
    )

    greedy = SamplingParams(temperature=0.0, top_k=1, top_p=1.0, min_p=0.0)
    ctx = (args.size or 8192) + 512  # size 0: the documents question, planned for an 8k context
    backend = LlamaCppBackend()
    devices = (args.device,) if args.device else ()
    load = LoadRequest(path=str(args.model), n_ctx=ctx, n_threads=args.threads, n_batch=args.batch, devices=devices)
    backend.load(load)
    warm = GenerationRequest(messages=(ChatMessage("user", prompt_text(300)),), sampling=greedy, max_tokens=1)
    text = document_question(backend.count_tokens) if args.size == 0 else prompt_text(args.size)
    request = GenerationRequest(messages=(ChatMessage("user", text),), sampling=greedy, max_tokens=1)
    tokens = backend.prompt_tokens(request.messages)
    warm_tokens = backend.prompt_tokens(warm.messages)
    if args.side == "raw":
        llm = backend._llm  # the same Llama (same context settings); only the reading loop differs
        llm.reset()
        llm._ctx.kv_cache_clear()
        llm.eval(warm_tokens)
        llm.reset()
        llm._ctx.kv_cache_clear()
        start = time.perf_counter()
        llm.eval(tokens)
        seconds = time.perf_counter() - start
        llm.sample(temp=0.0, top_k=1)  # the first answer token
        first = time.perf_counter() - start
        backend.unload()
        return {"tokens": len(tokens), "seconds": seconds, "first_token": first}
    evict = GenerationRequest(messages=(ChatMessage("user", "x"),), max_tokens=1)  # nothing of the prompt cached
    list(backend.stream_chat(warm, GenerationControl()))
    list(backend.stream_chat(evict, GenerationControl()))
    if args.side == "app":
        start = time.perf_counter()
        events = []
        first = None
        for event in backend.stream_chat(
            GenerationRequest(messages=request.messages, sampling=greedy, max_tokens=2), GenerationControl()
        ):
            events.append(event)
            if first is None and type(event).__name__ == "TextDelta":
                first = time.perf_counter() - start
        finished = events[-1]
        assert isinstance(finished, Finished)
        backend.unload()
        stats = finished.stats
        return {
            "tokens": stats.prompt_tokens - stats.cached_tokens,
            "seconds": stats.prompt_seconds,
            "first_token": first if first is not None else float("nan"),
        }
    # side == "stop": cancel at a random moment during the prompt, 10 times
    latencies = []
    for _ in range(args.stops):
        list(backend.stream_chat(evict, GenerationControl()))
        control = GenerationControl()
        done: list[float] = []

        def run(control: GenerationControl = control, done: list[float] = done) -> None:
            for event in backend.stream_chat(request, control):
                if isinstance(event, Finished):
                    done.append(time.perf_counter())

        worker = threading.Thread(target=run)
        worker.start()
        time.sleep(random.uniform(0.3, 3.0))
        pressed = time.perf_counter()
        control.cancel.set()
        worker.join()
        latencies.append(done[0] - pressed)
    backend.unload()
    return {"median": statistics.median(latencies), "max": max(latencies), "n": len(latencies)}


def spawn(args: argparse.Namespace, side: str, size: int, batch: int) -> dict[str, float]:
    command = [
        sys.executable,
        __file__,
        "--child",
        side,
        f"--model={args.model}",
        f"--threads={args.threads}",
        f"--size={size}",
        f"--batch={batch}",
        f"--stops={args.stops}",
        f"--device={args.device}",
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sizes", default="1500,6000")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--batches", default="128,256,512,1024,2048")
    parser.add_argument("--stops", type=int, default=10)
    parser.add_argument("--device", default="", help="llama.cpp device (e.g. Vulkan0, CPU); default: Auto")
    parser.add_argument("--sweep-size", type=int, default=1500, help="prompt tokens for the n_batch sweep")
    parser.add_argument("--sweep-runs", type=int, default=3)
    parser.add_argument("--doc-runs", type=int, default=5, help="documents-question time to first token (0: skip)")
    parser.add_argument("--size", type=int, default=1500, help=argparse.SUPPRESS)
    parser.add_argument("--child", choices=("app", "raw", "stop"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.model is None:
        from model_cache import gemma_model_path

        args.model = gemma_model_path()
    if args.child:
        args.side = args.child
        print(json.dumps(child(args)))
        return 0
    print(f"model: {args.model.name}  threads: {args.threads}  n_batch = n_ubatch = {args.batch}  runs: {args.runs}")
    for size in (int(s) for s in args.sizes.split(",") if s):
        print(f"\n== prompt of ~{size} tokens: app (stream_chat) vs raw Llama.eval, same tokens, fresh process each")
        ratios, app_rates, raw_rates = [], [], []
        for run in range(args.runs):
            order = ("app", "raw") if run % 2 == 0 else ("raw", "app")
            result = {side: spawn(args, side, size, args.batch) for side in order}
            app_rate = result["app"]["tokens"] / result["app"]["seconds"]
            raw_rate = result["raw"]["tokens"] / result["raw"]["seconds"]
            ratios.append(app_rate / raw_rate)
            app_rates.append(app_rate)
            raw_rates.append(raw_rate)
            print(
                f"   run {run + 1} ({order[0]} first): app {result['app']['tokens']} tok {app_rate:.0f} tok/s | "
                f"raw {result['raw']['tokens']} tok {raw_rate:.0f} tok/s | ratio {app_rate / raw_rate:.3f}"
            )
        print(
            f"   app/raw: min {min(ratios):.3f} median {statistics.median(ratios):.3f}  (goal >= 0.95); "
            f"app median {statistics.median(app_rates):.0f} tok/s, raw median {statistics.median(raw_rates):.0f} tok/s"
        )
    if args.doc_runs:
        print(
            "\n== time to first token of a documents question with 7 sources (real PDFs in tests/data), fresh processes"
        )
        app_first, raw_first = [], []
        for run in range(args.doc_runs):
            order = ("app", "raw") if run % 2 == 0 else ("raw", "app")
            result = {side: spawn(args, side, 0, args.batch) for side in order}
            app_first.append(result["app"]["first_token"])
            raw_first.append(result["raw"]["first_token"])
            print(
                f"   run {run + 1}: {result['app']['tokens']} prompt tokens; app first text {app_first[-1]:.2f} s | "
                f"raw eval + first token {raw_first[-1]:.2f} s"
            )
        print(
            f"   app median {statistics.median(app_first):.2f} s (min {min(app_first):.2f}), raw median "
            f"{statistics.median(raw_first):.2f} s (min {min(raw_first):.2f})"
        )
    if args.batches:
        where = args.device or "Auto device"
        print(
            f"\n== raw Llama.eval tok/s by n_batch (= n_ubatch) on {where}, ~{args.sweep_size}-token prompt, "
            f"min/median of {args.sweep_runs}, batch sizes in rotating order"
        )
        batches = [int(b) for b in args.batches.split(",") if b]
        rates_by: dict[int, list[float]] = {b: [] for b in batches}
        for run in range(args.sweep_runs):
            for batch in batches[run % len(batches) :] + batches[: run % len(batches)]:
                r = spawn(args, "raw", args.sweep_size, batch)
                rates_by[batch].append(r["tokens"] / r["seconds"])
        for batch in batches:
            rates = rates_by[batch]
            print(f"   n_batch {batch:5d}: min {min(rates):.1f}  median {statistics.median(rates):.1f} tok/s")
    if args.stops:
        result = spawn(args, "stop", 6000, args.batch)
        print(
            f"\n== stop during a ~6000-token prompt (cancel at a random moment -> Finished): median "
            f"{result['median'] * 1000:.1f} ms, max {result['max'] * 1000:.1f} ms over {int(result['n'])} stops "
            "(goal <= 200 ms)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

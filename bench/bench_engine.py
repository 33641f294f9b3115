"""Engine benchmarks against raw llama-cpp-python, in the same run, on the same model.

    python bench/bench_engine.py [--model PATH] [--tokens 256] [--repeat 5] [--turns 8] [--threads N] [--ctx 4096]
                                 [--batch 512] [--kv f16] [--gpu-layers -1] [--auto] [--engine thread|isolated]
                                 [--throughput-only]

How the comparison is kept fair:
- every measurement runs in a fresh process holding exactly one model (one llama.cpp context, one thread pool), as
  the app does; the parent loads nothing. The prompt is rendered once (a short "render" child uses the engine's own
  ``LlamaCppBackend.prompt_tokens``) and both sides get the same token ids through a temporary JSON file;
- the raw side is plain ``llama_cpp.Llama(...)`` built with the settings the engine's load really used, read back
  from the engine's ``Llama`` in the render child (n_ctx, n_batch, n_ubatch, n_gpu_layers, threads, flash_attn,
  swa_full, type_k/type_v, offload_kqv). What plain ``Llama()`` cannot set (``open_llama``'s bridge can: extra CPU
  buffer types off under the AMX rule, devices, tensor overrides) is named in the header when the engine used it;
- both sides warm up the same way in their own process (the same short prompt evaluated and a few tokens generated)
  before the timed reply, and both evaluate every token they count (the raw loop stops once the last counted token
  has been evaluated, as the engine does);
- the order alternates (app first on odd runs, raw first on even runs); each side is reported as min / median / max
  over the runs, and so is the per-run ratio app ÷ raw.

Prints, after the command line and the settings:
- throughput: tokens/s of one greedy reply (prompt included) as the GUI thread receives it (EngineController +
  queued Qt signals) and from raw ``Llama.generate`` + detokenize, per run and min/median/max, with the ratio; plus
  time to the first text on each side, the number of text signals, and whether both sides produced the same text;
- time to first text at each turn of one conversation (GUI side, KV prefix reuse), one conversation per app process:
  per turn min/median, and last turn ÷ turn 1 min/median;
- stop latency: cancel() to the GUI receiving "finished" while decoding and during a ~3k-token prompt, and on the
  engine side (cancel from another thread at a random moment); min/median/max over all stops of all runs.
Without --model it uses the Gemma 3 270M GGUF from the test extra. ``--engine isolated`` puts the model in the
engine-host child process (the app's default, engine/isolated.py) instead of on the engine thread; ``--auto`` lets
the engine's planner choose the load settings (the raw side still copies them).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _common import dist_version, emit_result, load_average, ms, print_header, run_child, spread

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

PROMPT = "Write a detailed essay about the history of the printing press and its effect on Europe."
WARMUP_PROMPT = "Unrelated."  # also pushes the timed prompt out of the KV cache: it is evaluated afresh on both sides
WARMUP_TOKENS = 4
TTFT_REPLY_TOKENS = 96
QUESTIONS = [
    "Tell me about rivers.",
    "And mountains?",
    "What about deserts?",
    "Now oceans.",
    "And forests?",
    "What about lakes?",
    "Tell me about islands.",
    "Finally, volcanoes?",
]
LONG_PROMPT = ("All work and no play makes a dull story. " * 300) + "Summarise."
# Stops per app process; over the default 5 runs that is 10 / 5 / 10 stops.
DECODE_STOPS, PROMPT_STOPS, ENGINE_STOPS = 2, 1, 2
GREEDY_ARGS = {"temp": 0.0, "top_k": 1, "top_p": 1.0, "min_p": 0.0, "repeat_penalty": 1.0}


# --- children ---------------------------------------------------------------------------------------------------


def load_request(spec: dict[str, Any]) -> Any:
    """Every setting given explicitly (or, with --auto, none: the engine's planner picks them, as for a user)."""
    from enclave.engine.types import LoadRequest

    if spec["auto"]:
        return LoadRequest(path=spec["model"])
    return LoadRequest(
        path=spec["model"],
        n_ctx=spec["ctx"],
        n_gpu_layers=spec["gpu_layers"],
        n_threads=spec["threads"],
        n_batch=spec["batch"],
        kv_cache_type=spec["kv"],
    )


def render_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Prompt token ids exactly as the engine renders them, and the ``Llama`` settings the engine's load really used.

    The settings are read back from the engine's own ``Llama`` object (its context and model params), so the raw
    side copies whatever ``LlamaCppBackend.load`` decided for this ``LoadRequest``, not a list kept here by hand.
    """
    import llama_cpp

    from enclave.engine.llama_backend import LlamaCppBackend
    from enclave.engine.llama_runtime import amx_offered
    from enclave.engine.types import ChatMessage

    backend = LlamaCppBackend()
    info = backend.load(load_request(spec))
    llm = backend._llm
    ctx, model = llm.context_params, llm.model_params
    kwargs = {
        "n_ctx": llm.n_ctx(),
        "n_batch": ctx.n_batch,
        "n_ubatch": ctx.n_ubatch,
        "n_gpu_layers": model.n_gpu_layers,
        "n_threads": ctx.n_threads,
        "n_threads_batch": ctx.n_threads_batch,
        "swa_full": bool(ctx.swa_full),
        "flash_attn": ctx.flash_attn_type == llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED,
        "type_k": ctx.type_k,
        "type_v": ctx.type_v,
        "offload_kqv": bool(ctx.offload_kqv),
    }
    # Model params plain Llama() cannot set (open_llama's bridge can): the raw side differs if any of these is on.
    not_copied = []
    if not model.use_extra_bufts:
        not_copied.append("use_extra_bufts=False" + (" (AMX rule)" if amx_offered() else ""))
    if model.devices:
        not_copied.append("devices")
    if model.tensor_buft_overrides:
        not_copied.append("tensor_buft_overrides")
    result = {
        "prompt_tokens": backend.prompt_tokens((ChatMessage("user", PROMPT),)),
        "warmup_tokens": backend.prompt_tokens((ChatMessage("user", WARMUP_PROMPT),)),
        "chat_format": info.chat_format,
        "placement": getattr(info, "placement", ""),
        "llama_kwargs": kwargs,
        "not_copied": not_copied,
        "amx_offered": amx_offered(),
    }
    backend.unload()
    return result


def raw_generate(llm: Any, tokens: list[int], n_tokens: int) -> tuple[int, float | None, bytes]:
    """Greedy ``Llama.generate``, detokenizing every token; stop after ``n_tokens`` tokens have been *evaluated*.

    ``generate`` yields a token before evaluating it; the engine evaluates each token before it hands its text on. So
    the loop breaks when the generator yields the token after the last counted one, i.e. once the last counted token
    is in the KV cache (one extra argmax, no extra decode), and the first token counts as "out" when it has been
    evaluated too (at the next yield), as in the app. Returns (count, time the first token was out, text bytes).
    """
    import llama_cpp

    vocab = llm._model.vocab
    count = 0
    first: float | None = None
    pieces: list[bytes] = []
    for token in llm.generate(tokens, **GREEDY_ARGS):
        if count == 1 and first is None:
            first = time.perf_counter()
        if count >= n_tokens or llama_cpp.llama_vocab_is_eog(vocab, token):
            break
        pieces.append(llm.detokenize([token]))
        count += 1
    return count, first, b"".join(pieces)


def raw_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Plain ``llama_cpp.Llama`` with the settings the engine used (read back by the render child); no Enclave code."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=spec["model"], **spec["llama_kwargs"], verbose=False)
    raw_generate(llm, spec["warmup_tokens"], WARMUP_TOKENS)
    start = time.perf_counter()
    count, first, text = raw_generate(llm, spec["prompt_tokens"], spec["tokens"])
    elapsed = time.perf_counter() - start
    llm.close()
    return {
        "tokens": count,
        "seconds": elapsed,
        "first_s": (first - start) if first is not None else float("nan"),
        "text": text.decode("utf-8", errors="replace"),
    }


def wait_for(app: Any, predicate: Any, timeout_s: float = 600) -> None:
    """Block in the event loop: on 2 cores a busy-polling GUI thread would steal a decode thread's core."""
    from PySide6.QtCore import QEventLoop, QTimer

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


class Recorder:
    """Collects one request's signals on the GUI thread, with arrival times."""

    def __init__(self, controller: Any, request: Any) -> None:
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
        controller.generationInterrupted.connect(self._on_failed)

    def _on_text(self, rid: str, reasoning: str, content: str) -> None:
        if rid == self.rid:
            self.first_text = self.first_text or time.perf_counter()
            self.texts.append(content)

    def _on_progress(self, rid: str, evaluated: int, total: int, seconds_left: float) -> None:
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
        self._controller.generationInterrupted.disconnect(self._on_failed)


def run_request(app: Any, controller: Any, request: Any) -> tuple[Recorder, float]:
    """Send one request and wait in the event loop until the GUI thread has its end; return it and its start time."""
    recorder = Recorder(controller, request)
    start = time.perf_counter()
    controller.generate(request)
    wait_for(app, lambda: recorder.over)
    recorder.close()
    if recorder.failed is not None:
        raise RuntimeError(f"generation failed: {recorder.failed}")
    return recorder, start


def ttft_by_turn(app: Any, controller: Any, turns: int) -> list[float]:
    """Seconds from generate() to the first text signal on the GUI side, for each turn of one conversation."""
    from enclave.engine.types import ChatMessage, GenerationRequest

    greedy = greedy_sampling()
    history: list[ChatMessage] = []
    times: list[float] = []
    for i in range(turns):
        history.append(ChatMessage("user", QUESTIONS[i % len(QUESTIONS)]))
        request = GenerationRequest(messages=tuple(history), sampling=greedy, max_tokens=TTFT_REPLY_TOKENS)
        recorder, start = run_request(app, controller, request)
        times.append((recorder.first_text or float("nan")) - start)
        history.append(ChatMessage("assistant", "".join(recorder.texts)))
    return times


def stop_latency(app: Any, controller: Any, *, during_prompt: bool) -> tuple[float, int]:
    """Seconds from cancel() on the GUI thread to the GUI receiving the CANCELLED "finished" signal; prompt tokens."""
    from enclave.engine.types import ChatMessage, GenerationRequest

    text = LONG_PROMPT if during_prompt else PROMPT
    request = GenerationRequest(messages=(ChatMessage("user", text),), sampling=greedy_sampling(), max_tokens=512)
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
    if recorder.failed is not None:
        raise RuntimeError(f"generation failed: {recorder.failed}")
    assert recorder.finished.reason.value == "cancelled", recorder.finished
    return recorder.finished_at - pressed, recorder.finished.stats.prompt_tokens


def engine_stop_latency(spec: dict[str, Any], trials: int) -> list[float]:
    """cancel.set() from another thread at a random moment -> the engine's generator has returned Finished."""
    from enclave.engine.llama_backend import LlamaCppBackend
    from enclave.engine.types import ChatMessage, Finished, GenerationControl, GenerationRequest, TextDelta

    backend = LlamaCppBackend()
    backend.load(load_request(spec))
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
            request = GenerationRequest(
                messages=(ChatMessage("user", PROMPT),), sampling=greedy_sampling(), max_tokens=400
            )
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


def greedy_sampling() -> Any:
    from enclave.engine.types import SamplingParams

    return SamplingParams(temperature=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0)


def app_child(spec: dict[str, Any]) -> dict[str, Any]:
    """The product path in a fresh process: QCoreApplication + EngineController, results read on the GUI thread."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QCoreApplication

    from enclave.engine.types import ChatMessage, GenerationRequest
    from enclave.workers.engine_worker import EngineController

    if spec["engine"] == "isolated":
        from enclave.engine.isolated import IsolatedBackend as factory
    else:
        from enclave.engine.llama_backend import LlamaCppBackend as factory

    app = QCoreApplication.instance() or QCoreApplication([])
    controller = EngineController(factory)
    loaded: list[Any] = []
    failed: list[str] = []
    controller.modelLoaded.connect(loaded.append)
    controller.modelLoadFailed.connect(failed.append)
    controller.load_model(load_request(spec))
    wait_for(app, lambda: bool(loaded or failed))
    if failed:
        raise RuntimeError(f"model load failed: {failed[0]}")
    greedy = greedy_sampling()
    warm = GenerationRequest(messages=(ChatMessage("user", WARMUP_PROMPT),), sampling=greedy, max_tokens=WARMUP_TOKENS)
    run_request(app, controller, warm)
    request = GenerationRequest(messages=(ChatMessage("user", PROMPT),), sampling=greedy, max_tokens=spec["tokens"])
    recorder, start = run_request(app, controller, request)
    stats = recorder.finished.stats
    result: dict[str, Any] = {
        "tokens": stats.completion_tokens,
        "seconds": recorder.finished_at - start,
        "first_s": (recorder.first_text or float("nan")) - start,
        "signals": len(recorder.texts),
        "prompt_tokens": stats.prompt_tokens,
        "cached_tokens": stats.cached_tokens,
        "engine_decode_s": stats.generation_seconds,
        "text": "".join(recorder.texts),
    }
    if spec["extras"]:
        result["ttft"] = ttft_by_turn(app, controller, spec["turns"])
        stops = [stop_latency(app, controller, during_prompt=False) for _ in range(DECODE_STOPS)]
        result["stop_decode"] = [s for s, _ in stops]
        stops = [stop_latency(app, controller, during_prompt=True) for _ in range(PROMPT_STOPS)]
        result["stop_prompt"] = [s for s, _ in stops]
        result["long_prompt_tokens"] = stops[0][1] if stops else 0
    controller.shutdown()
    if spec["extras"]:
        result["stop_engine"] = engine_stop_latency(spec, ENGINE_STOPS)
    return result


# --- parent -----------------------------------------------------------------------------------------------------


def child(side: str, spec_path: Path) -> dict[str, Any]:
    result, wall = run_child([sys.executable, __file__, "--child", side, "--spec", str(spec_path)])
    result["wall_s"] = wall
    return result


def readable(name: str, value: Any) -> str:
    """llama.cpp's encodings of two settings, spelled out."""
    if name == "n_gpu_layers" and value == 0x7FFFFFFF:
        return "-1 (all)"
    if name in ("type_k", "type_v"):
        return {0: "f32", 1: "f16", 2: "q4_0", 8: "q8_0"}.get(value, str(value))
    return str(value)


def row(label: str, cells: list[str], widths: list[int]) -> str:
    return label.ljust(11) + "".join(c.rjust(w) for c, w in zip(cells, widths, strict=True))


def print_throughput(runs: list[dict[str, Any]]) -> None:
    heads = ["app tok/s", "raw tok/s", "app/raw", "app 1st text ms", "raw 1st token ms", "signals", "same text"]
    widths = [10, 11, 9, 17, 18, 9, 11]
    print(row("run order", heads, widths))
    for run in runs:
        app, raw = run["app"], run["raw"]
        cells = [
            f"{run['app_rate']:.2f}",
            f"{run['raw_rate']:.2f}",
            f"{run['ratio']:.3f}",
            ms(app["first_s"]),
            ms(raw["first_s"]),
            str(app["signals"]),
            "yes" if app["text"] == raw["text"] else "NO",
        ]
        print(row(f"{run['index']:>3} {run['order']}", cells, widths))
    for position, name in enumerate(("min", "median", "max")):
        app_rate = spread(r["app_rate"] for r in runs)[position]
        raw_rate = spread(r["raw_rate"] for r in runs)[position]
        ratio = spread(r["ratio"] for r in runs)[position]
        app_first = spread(r["app"]["first_s"] for r in runs)[position]
        raw_first = spread(r["raw"]["first_s"] for r in runs)[position]
        cells = [f"{app_rate:.2f}", f"{raw_rate:.2f}", f"{ratio:.3f}", ms(app_first), ms(raw_first), "", ""]
        print(row(name, cells, widths))


def print_ttft(runs: list[dict[str, Any]], turns: int) -> None:
    tables = [r["app"]["ttft"] for r in runs]
    widths = [7] * turns + [10]
    print(row("run", [f"t{i + 1} ms" for i in range(turns)] + [f"t{turns}/t1"], widths))
    ratios = [t[-1] / t[0] for t in tables]
    for run, times, ratio in zip(runs, tables, ratios, strict=True):
        print(row(f"{run['index']:>3}", [ms(t) for t in times] + [f"{ratio:.2f}"], widths))
    for position, name in ((0, "min"), (1, "median")):
        cells = [ms(spread(t[i] for t in tables)[position]) for i in range(turns)]
        print(row(name, [*cells, f"{spread(ratios)[position]:.2f}"], widths))


def print_stops(runs: list[dict[str, Any]]) -> None:
    prompt_tokens = runs[0]["app"]["long_prompt_tokens"]
    lines = [
        ("GUI side, while decoding: cancel() -> finished received", "stop_decode"),
        (f"GUI side, during a {prompt_tokens:,}-token prompt", "stop_prompt"),
        ("engine side, while decoding: cancel from another thread", "stop_engine"),
    ]
    print(f"{'':58}{'stops':>6}{'min ms':>9}{'median ms':>11}{'max ms':>9}")
    for label, key in lines:
        values = [v for r in runs for v in r["app"][key]]
        low, mid, high = spread(values)
        print(f"{label:58}{len(values):>6}{low * 1000:>9.1f}{mid * 1000:>11.1f}{high * 1000:>9.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="GGUF file (default: the Gemma 3 270M test model)")
    parser.add_argument("--tokens", type=int, default=256, help="tokens per timed reply (default 256)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--ctx", type=int, default=4096, help="context length (default 4096)")
    parser.add_argument("--batch", type=int, default=512, help="n_batch = n_ubatch (default 512)")
    parser.add_argument("--kv", choices=("f16", "q8_0", "q4_0"), default="f16", help="KV cache type (default f16)")
    parser.add_argument("--gpu-layers", type=int, default=-1, help="layers to offload (-1: all the build can)")
    parser.add_argument(
        "--auto",
        action="store_true",
        help="let the engine plan every load setting (the app's Auto) instead of --ctx/--batch/--kv/--gpu-layers/"
        "--threads; the raw side still gets whatever the engine chose",
    )
    parser.add_argument("--repeat", type=int, default=5, help="runs; each is one app and one raw process (default 5)")
    parser.add_argument("--turns", type=int, default=8, help="turns of the time-to-first-text conversation")
    parser.add_argument(
        "--engine",
        choices=("thread", "isolated"),
        default="thread",
        help="thread: LlamaCppBackend on the engine thread (default); isolated: the engine-host child process",
    )
    parser.add_argument("--throughput-only", action="store_true", help="skip time to first text and stop latency")
    parser.add_argument("--child", choices=("render", "app", "raw"), help=argparse.SUPPRESS)
    parser.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        spec = json.loads(args.spec.read_text())
        runner = {"render": render_child, "app": app_child, "raw": raw_child}[args.child]
        emit_result(runner(spec))
        return 0

    if args.model is None:
        from model_cache import gemma_model_path

        args.model = gemma_model_path()
    spec: dict[str, Any] = {
        "model": str(args.model.resolve()),
        "ctx": args.ctx,
        "threads": args.threads,
        "batch": args.batch,
        "gpu_layers": args.gpu_layers,
        "kv": args.kv,
        "tokens": args.tokens,
        "turns": args.turns,
        "engine": args.engine,
        "extras": not args.throughput_only,
        "auto": args.auto,
    }
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="enclave-bench-") as tmp:
        spec_path = Path(tmp) / "spec.json"
        spec_path.write_text(json.dumps(spec))
        rendered = child("render", spec_path)
        spec.update(
            prompt_tokens=rendered["prompt_tokens"],
            warmup_tokens=rendered["warmup_tokens"],
            llama_kwargs=rendered["llama_kwargs"],
        )
        spec_path.write_text(json.dumps(spec))

        engine = (
            "LlamaCppBackend on the engine QThread (in-process)"
            if args.engine == "thread"
            else "IsolatedBackend (llama.cpp in the engine-host child process)"
        )
        settings = " ".join(f"{k}={readable(k, v)}" for k, v in rendered["llama_kwargs"].items())
        differs = ", ".join(rendered["not_copied"]) or "none"
        print_header(
            [
                f"library: llama-cpp-python {dist_version('llama-cpp-python')}, "
                f"PySide6 {dist_version('PySide6', 'PySide6-Essentials')}",
                f"model:   {args.model.name} ({rendered['chat_format']} format)"
                + (f"; placement: {rendered['placement']}" if rendered["placement"] else ""),
                f"engine:  {engine}",
                f"Llama settings, read back from the engine's load and passed to the raw Llama(): {settings}",
                f"engine load settings plain Llama() cannot copy: {differs} "
                f"(AMX offered: {'yes' if rendered['amx_offered'] else 'no'})",
                f"runs:    {args.repeat}, each one fresh app process and one fresh raw process, order alternating; "
                f"each process loads the model, warms up ({len(spec['warmup_tokens'])}-token prompt + "
                f"{WARMUP_TOKENS} tokens), then times one greedy reply of {args.tokens} tokens to the same "
                f"{len(spec['prompt_tokens'])} prompt tokens",
            ]
        )
        runs: list[dict[str, Any]] = []
        for index in range(1, args.repeat + 1):
            order = ("app", "raw") if index % 2 else ("raw", "app")
            run: dict[str, Any] = {"index": index, "order": "app,raw" if order[0] == "app" else "raw,app"}
            for side in order:
                run[side] = child(side, spec_path)
            app, raw = run["app"], run["raw"]
            if app["prompt_tokens"] != len(spec["prompt_tokens"]):
                raise RuntimeError(
                    f"the app read {app['prompt_tokens']} prompt tokens, the raw side {len(spec['prompt_tokens'])}"
                )
            run["app_rate"] = app["tokens"] / app["seconds"]
            run["raw_rate"] = raw["tokens"] / raw["seconds"]
            run["ratio"] = run["app_rate"] / run["raw_rate"]
            runs.append(run)
            print(
                f"   run {index}/{args.repeat} ({run['order']}): app {run['app_rate']:.2f} tok/s, "
                f"raw {run['raw_rate']:.2f} tok/s, ratio {run['ratio']:.3f}  "
                f"(processes: app {app['wall_s']:.0f} s, raw {raw['wall_s']:.0f} s)",
                flush=True,
            )

    print(
        "\n== throughput: tokens/s of one reply, prompt evaluation included. app = as received on the GUI thread "
        "(EngineController + queued Qt signals); raw = Llama.generate + detokenize. 1st text / 1st token: from the "
        "request until the first token has been sampled and evaluated (app: until its text reached the GUI thread)"
    )
    print_throughput(runs)
    tokens = {r["app"]["tokens"] for r in runs} | {r["raw"]["tokens"] for r in runs}
    cached = sorted({r["app"]["cached_tokens"] for r in runs})
    print(
        f"   tokens per reply: {', '.join(map(str, sorted(tokens)))}; prompt tokens reused from the warm-up's KV "
        f"cache (app): {', '.join(map(str, cached))}  (goal: median app/raw >= 0.97)"
    )
    if spec["extras"]:
        print(
            f"\n== time to first text by turn: GUI side, one {args.turns}-turn conversation per app process "
            f"({TTFT_REPLY_TOKENS}-token replies, KV prefix reuse)"
        )
        print_ttft(runs, args.turns)
        print(f"   goal: median t{args.turns}/t1 <= 1.5")
        print("\n== stop latency (all stops of all app processes)")
        print_stops(runs)
        print("   goal: <= 200 ms")
    print(f"\ntotal time {time.monotonic() - started:.0f} s; load average at the end {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

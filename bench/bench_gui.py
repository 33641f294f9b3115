"""GUI benchmarks: event-loop stalls while a very long reply streams, and cold start to the first painted window.

    QT_QPA_PLATFORM=offscreen python bench/bench_gui.py [--tokens 20000] [--rate 1000]

- Stall: the real MainWindow, ChatSession and engine thread stream a scripted 20k-token Markdown reply (paragraphs,
  lists, code blocks) at --rate tokens/s; a 5 ms timer on the GUI thread records the longest gap between its ticks
  (the longest time the window could not respond), overall and for the last quarter of the reply (does it slow down
  as the text grows?).
- Cold start: `python -m enclave` in a fresh process until the window has painted (ENCLAVE_EXIT_AFTER_FIRST_PAINT),
  median of 5 runs, with an empty ENCLAVE_HOME.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QElapsedTimer, QTimer
from PySide6.QtWidgets import QApplication

from enclave.settings.settings import Settings, SettingsStore
from enclave.storage.chats import ChatStore
from enclave.ui.main_window import MainWindow
from enclave.workers.engine_worker import EngineController
from fakes import Script, ScriptedBackend

CHARS_PER_TOKEN = 4


def long_markdown(tokens: int) -> str:
    """Markdown shaped like a long R1 answer: sections, lists, code, paragraphs."""
    parts: list[str] = []
    i = 0
    while sum(len(p) for p in parts) < tokens * CHARS_PER_TOKEN:
        i += 1
        parts.append(f"## Step {i}\n\n")
        parts.append(
            "The function walks the list once and keeps a running total, so its cost grows linearly with the input. "
            "We check the boundary cases first, then the general case, and **only then** optimise.\n\n"
        )
        parts.append("- first, read the input\n- then, validate it\n- finally, `compute()` the result\n\n")
        parts.append(f"```python\ndef step_{i}(values: list[int]) -> int:\n    total = 0\n")
        parts.append("    for value in values:\n        total += value * 2\n    return total\n```\n\n")
    return "".join(parts)


def measure_stall(tokens: int, rate: float) -> dict[str, float]:
    app = QApplication.instance() or QApplication([])
    home = Path(tempfile.mkdtemp(prefix="enclave-bench-"))
    model = home / "scripted.gguf"
    model.write_bytes(b"x")
    text = long_markdown(tokens)
    backend = ScriptedBackend(
        Script(reasoning="Thinking it through. " * 50, answer=text, chunk_chars=CHARS_PER_TOKEN, delay_s=1.0 / rate)
    )
    store = ChatStore(home / "chats.sqlite3")
    controller = EngineController(lambda: backend)
    window = MainWindow(store, controller, SettingsStore(home / "settings.json"), Settings())
    window.show()
    window.load_model(str(model))
    deadline = time.monotonic() + 30
    while controller.model is None and time.monotonic() < deadline:
        app.processEvents()

    gaps: list[tuple[float, float]] = []  # (share of the reply received, gap ms)
    clock = QElapsedTimer()
    clock.start()
    last = [clock.elapsed()]
    card_text = [0]

    def tick() -> None:
        now = clock.elapsed()
        cards = window.transcript.cards()
        if cards:
            card_text[0] = len(cards[-1].answer.markdown())
        gaps.append((card_text[0] / len(text), now - last[0]))
        last[0] = now

    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(tick)
    window.composer.editor.setPlainText("Write a very long answer.")
    started = time.perf_counter()
    window.composer._submit()
    timer.start()
    while window.session.busy:
        app.processEvents()
        time.sleep(0.001)
    timer.stop()
    elapsed = time.perf_counter() - started
    window.close()
    store.close()
    overall = max(g for _, g in gaps) - 5
    late = max((g for share, g in gaps if share >= 0.75), default=0.0) - 5
    return {"tokens": tokens, "seconds": elapsed, "max_stall_ms": overall, "late_stall_ms": late, "ticks": len(gaps)}


def measure_cold_start(runs: int) -> list[float]:
    times: list[float] = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="enclave-start-") as home:
            env = {**os.environ, "ENCLAVE_HOME": home, "ENCLAVE_EXIT_AFTER_FIRST_PAINT": "1"}
            start = time.perf_counter()
            out = subprocess.run(
                [sys.executable, "-m", "enclave"], env=env, capture_output=True, text=True, timeout=60, check=True
            )
            wall = time.perf_counter() - start
            assert "first-paint-ms" in out.stdout, out.stdout + out.stderr
            times.append(wall)
    return times


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=1000.0, help="scripted tokens per second")
    parser.add_argument("--starts", type=int, default=5)
    args = parser.parse_args()
    print(f"== GUI stall while streaming {args.tokens:,} tokens at {args.rate:.0f} tok/s (5 ms probe timer)")
    result = measure_stall(args.tokens, args.rate)
    print(
        f"   streamed in {result['seconds']:.1f} s; longest stall {result['max_stall_ms']:.0f} ms; "
        f"longest in the last quarter {result['late_stall_ms']:.0f} ms  (goal <= 50 ms)"
    )
    print(f"== cold start to first painted window (python -m enclave, {args.starts} runs)")
    starts = measure_cold_start(args.starts)
    print(
        f"   median {statistics.median(starts) * 1000:.0f} ms, min {min(starts) * 1000:.0f} ms, "
        f"max {max(starts) * 1000:.0f} ms  (goal <= 1000 ms; includes interpreter start)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

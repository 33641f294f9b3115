"""How long the window is without a working engine when the engine host dies mid-answer.

    python bench/bench_host_crash.py [--model PATH] [--runs 5] [--threads 2]

One ``EngineController`` (the window's engine thread, queued Qt signals) drives an ``IsolatedBackend`` holding the
model. Each run starts an answer, waits for its first text, then kills the host with SIGKILL (as the OOM killer or an
abort would end it) and measures, on the GUI thread:
- kill → ``generationInterrupted`` received: when the window can say what happened and accept input again;
- kill → first text of the next question: restart of the host and reload of the model included (what the user
  waits for when they ask again at once).
Prints min / median / max over the runs. Linux/macOS (SIGKILL).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import time
from pathlib import Path

from PySide6.QtCore import QCoreApplication, QEventLoop, QTimer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from enclave.engine.isolated import IsolatedBackend
from enclave.engine.types import ChatMessage, GenerationRequest, LoadRequest, SamplingParams
from enclave.workers.engine_worker import EngineController


def wait_until(condition: object, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError("the engine did not answer in time")
        QCoreApplication.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 5)


def summary(values: list[float]) -> str:
    return f"{min(values):.0f} / {statistics.median(values):.0f} / {max(values):.0f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.model is None:
        from model_cache import gemma_model_path

        args.model = gemma_model_path()
    app = QCoreApplication(sys.argv[:1])
    backends: list[IsolatedBackend] = []

    def factory() -> IsolatedBackend:
        backends.append(IsolatedBackend())
        return backends[-1]

    controller = EngineController(factory)
    events: dict[str, float] = {}
    controller.modelLoaded.connect(lambda _info: events.__setitem__("loaded", time.monotonic()))
    controller.textReady.connect(lambda rid, _r, _c: events.setdefault(f"text:{rid}", time.monotonic()))
    controller.generationInterrupted.connect(lambda rid, _m: events.__setitem__(f"interrupted:{rid}", time.monotonic()))
    controller.generationFinished.connect(lambda rid, _f: events.__setitem__(f"finished:{rid}", time.monotonic()))
    controller.load_model(LoadRequest(path=str(args.model), n_ctx=2048, n_threads=args.threads))
    wait_until(lambda: "loaded" in events)
    sampling = SamplingParams(temperature=0.0, top_k=1, seed=1)

    def ask(text: str, max_tokens: int) -> str:
        request = GenerationRequest(messages=(ChatMessage("user", text),), sampling=sampling, max_tokens=max_tokens)
        return controller.generate(request)

    usable: list[float] = []
    answering: list[float] = []
    for run in range(args.runs):
        rid = ask("Write a long story about a lighthouse keeper.", 400)
        wait_until(lambda rid=rid: f"text:{rid}" in events)
        pid = backends[-1].host_pid
        assert pid is not None
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda rid=rid: f"interrupted:{rid}" in events)
        usable.append((events[f"interrupted:{rid}"] - killed) * 1000)
        again = ask("Hello", 4)
        wait_until(lambda again=again: f"text:{again}" in events)
        answering.append((events[f"text:{again}"] - killed) * 1000)
        wait_until(lambda again=again: f"finished:{again}" in events)
        print(f"run {run + 1}: usable after {usable[-1]:.0f} ms, next answer's first text after {answering[-1]:.0f} ms")
    print(f"model {args.model.name}, {args.threads} threads, load average {os.getloadavg()[0]:.1f}")
    print(f"kill -> window usable (generationInterrupted on the GUI thread), min/median/max: {summary(usable)}")
    print(f"kill -> first text of the next question (host restart + reload), min/median/max: {summary(answering)}")
    controller.shutdown()
    QTimer.singleShot(0, app.quit)
    return 0


if __name__ == "__main__":
    sys.exit(main())

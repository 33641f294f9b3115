"""GUI benchmarks: event-loop stalls while a very long reply streams, and cold start to the first painted window.

    QT_QPA_PLATFORM=offscreen python bench/bench_gui.py [--tokens 20000] [--rate 1000] [--stall-runs 3]
                                                        [--starts 5] [--no-cold] [--bytecode cached|env] [--xvfb]

- Stall: the real MainWindow, ChatSession and engine thread stream a scripted 20k-token Markdown reply (paragraphs,
  lists, code blocks) at --rate tokens/s; a 5 ms timer on the GUI thread records the longest gap between its ticks
  (the longest time the window could not respond), overall and for the last quarter of the reply (does it slow down
  as the text grows?). Each run is a fresh process; min / median / max over the runs.
- Cold start: a fresh process each time that starts the app exactly as ``python -m enclave`` does (``enclave.cli.main``
  with no arguments, an empty ENCLAVE_HOME), with an event filter on the main window. Times are wall-clock from just
  before the parent's ``Popen`` (interpreter start included) to: the interpreter running the first line, the window
  built (``show()``), its QWindow exposed, the first ``QEvent.Paint`` delivered to the main window, and the first frame
  finished (the event loop idle again after that paint), plus the child's own view of the first paint from its kernel
  start time (/proc/self/stat, 10 ms resolution) and the process exit. One untimed priming run fills the bytecode
  cache; then, where this user may write /proc/sys/vm/drop_caches (root), one run after dropping the page cache,
  labelled "cold"; then --starts runs with a warm page cache, summarised as min / median / max.

Both run offscreen (QT_QPA_PLATFORM=offscreen unless set otherwise); ``--xvfb`` starts an Xvfb server and measures
with the xcb platform against a real X server (``apt-get install xvfb``). ``--bytecode cached`` (default) gives the
children a bytecode cache of their own (PYTHONPYCACHEPREFIX in a temporary folder), as an installed app has;
``--bytecode env`` leaves the environment as it is (with PYTHONDONTWRITEBYTECODE=1, every start compiles Enclave).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import (
    RESULT_MARK,
    STARTED_ENV,
    dist_version,
    emit_result,
    load_average,
    ms,
    print_header,
    run_child,
    spread,
)

TESTS = Path(__file__).resolve().parents[1] / "tests"
CHARS_PER_TOKEN = 4
DROP_CACHES = Path("/proc/sys/vm/drop_caches")

# The cold-start child, run with ``python -c``: nothing is imported before the app's own imports but sys, time, json
# and os. It hooks MainWindow.show (importing main_window first, which the entry point imports anyway) to install the
# event filter, then runs the real entry point.
PAINT_CHILD = r"""
import sys, time
T_MAIN = time.time()
import json, os


def since_process_start():
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return time.clock_gettime(time.CLOCK_BOOTTIME) - int(fields[19]) / os.sysconf("SC_CLK_TCK")


from enclave.ui import main_window as _main_window
from PySide6.QtCore import QEvent, QObject, QTimer
from PySide6.QtWidgets import QWidget

marks = {"main": T_MAIN}


class _Watch(QObject):
    def __init__(self, window):
        super().__init__()
        self.window = window

    def eventFilter(self, obj, event):
        kind = event.type()
        if kind == QEvent.Type.Expose and "expose" not in marks and obj.isExposed():
            marks["expose"] = time.time()
        elif kind == QEvent.Type.Paint and "paint" not in marks and isinstance(obj, QWidget):
            marks["paint"] = time.time()
            marks["paint_since_exec"] = since_process_start()
            QTimer.singleShot(0, self.frame_done)
        return False

    def frame_done(self):
        marks["frame"] = time.time()
        print(MARK + json.dumps(marks), flush=True)
        self.window.close()


_show = _main_window.MainWindow.show


def show(self):
    marks["show"] = time.time()
    self._bench_watch = _Watch(self)
    self.installEventFilter(self._bench_watch)
    _show(self)
    if self.windowHandle() is not None:
        self.windowHandle().installEventFilter(self._bench_watch)
    QTimer.singleShot(60_000, lambda: os._exit(3))  # never painted: give up


_main_window.MainWindow.show = show
sys.argv = ["enclave"]
from enclave.cli import main

sys.exit(main([]))
""".replace("MARK", repr(RESULT_MARK))


# --- stall --------------------------------------------------------------------------------------------------------


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


def stall_child(tokens: int, rate: float) -> dict[str, float]:
    """One stall measurement, in this (fresh) process."""
    sys.path.insert(0, str(TESTS))
    from PySide6.QtCore import QElapsedTimer, QTimer
    from PySide6.QtWidgets import QApplication

    from enclave.settings.settings import Settings, SettingsStore
    from enclave.storage.chats import ChatStore
    from enclave.ui.main_window import MainWindow
    from enclave.workers.engine_worker import EngineController
    from fakes import Script, ScriptedBackend

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
    shutil.rmtree(home, ignore_errors=True)
    overall = max(g for _, g in gaps) - 5
    late = max((g for share, g in gaps if share >= 0.75), default=0.0) - 5
    return {"tokens": tokens, "seconds": elapsed, "max_stall_ms": overall, "late_stall_ms": late, "ticks": len(gaps)}


def measure_stalls(args: argparse.Namespace, env: dict[str, str]) -> None:
    print(
        f"\n== GUI stall while streaming {args.tokens:,} tokens at {args.rate:.0f} tok/s (scripted backend, 5 ms probe "
        f"timer; a fresh process per run)"
    )
    print(f"{'run':<8}{'streamed s':>11}{'tok/s':>8}{'longest stall ms':>18}{'last quarter ms':>17}")
    results = []
    for index in range(1, args.stall_runs + 1):
        command = [sys.executable, __file__, "--stall-child", "--tokens", str(args.tokens), "--rate", str(args.rate)]
        result, _ = run_child(command, env=env)
        results.append(result)
        print(
            f"{index:<8}{result['seconds']:>11.1f}{result['tokens'] / result['seconds']:>8.0f}"
            f"{result['max_stall_ms']:>18.0f}{result['late_stall_ms']:>17.0f}",
            flush=True,
        )
    for position, name in enumerate(("min", "median", "max")):
        seconds = spread(r["seconds"] for r in results)[position]
        rate = spread(r["tokens"] / r["seconds"] for r in results)[position]
        stall = spread(r["max_stall_ms"] for r in results)[position]
        late = spread(r["late_stall_ms"] for r in results)[position]
        print(f"{name:<8}{seconds:>11.1f}{rate:>8.0f}{stall:>18.0f}{late:>17.0f}")
    print("   goal: longest stall <= 50 ms")


# --- cold start ---------------------------------------------------------------------------------------------------


def drop_page_cache() -> str | None:
    """Drop the page cache (root only); None when done, else why not."""
    try:
        os.sync()
        DROP_CACHES.write_text("3\n")
    except OSError as exc:
        return f"cannot write {DROP_CACHES}: {exc.strerror or exc}"
    return None


def start_once(env: dict[str, str]) -> dict[str, float]:
    """One cold start of the app in a new process; times in seconds from just before Popen."""
    with tempfile.TemporaryDirectory(prefix="enclave-start-") as home:
        child_env = {**env, "ENCLAVE_HOME": home}
        t0 = time.time()
        command = [sys.executable, "-c", PAINT_CHILD]
        proc = subprocess.Popen(command, env=child_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        exited = time.time()
    marks = None
    for line in out.splitlines():
        if line.startswith(RESULT_MARK):
            marks = json.loads(line[len(RESULT_MARK) :])
    if marks is None:
        raise RuntimeError(f"the app never painted (exit {proc.returncode})\n{out[-3000:]}\n{err[-3000:]}")
    result = {key: marks[key] - t0 for key in ("main", "show", "expose", "paint", "frame") if key in marks}
    result["paint_since_exec"] = marks["paint_since_exec"]
    result["exit"] = exited - t0
    result["exit_code"] = proc.returncode
    return result


START_COLUMNS = [
    ("main", "python up"),
    ("show", "window built"),
    ("expose", "exposed"),
    ("paint", "first paint"),
    ("frame", "frame done"),
    ("paint_since_exec", "paint (child /proc)"),
    ("exit", "exited"),
]


def start_row(label: str, values: dict[str, float]) -> str:
    return f"{label:<30}" + "".join(ms(values.get(key, float("nan")), len(head) + 2) for key, head in START_COLUMNS)


def measure_starts(args: argparse.Namespace, env: dict[str, str]) -> None:
    print(
        "\n== cold start to the first painted window: python -c <entry point + event filter>, empty ENCLAVE_HOME, "
        "ms from just before Popen"
    )
    print(f"{'run':<30}" + "".join(f"  {head}" for _, head in START_COLUMNS))
    print(start_row("prime (not counted)", start_once(env)), flush=True)
    cold_note = "skipped (--no-cold)"
    if not args.no_cold:
        problem = drop_page_cache()
        if problem is None:
            print(start_row("cold (page cache dropped)", start_once(env)), flush=True)
            cold_note = (
                "page cache dropped just before it (sync; echo 3 > /proc/sys/vm/drop_caches); bytecode already on "
                "disk from the priming run; pages other running processes keep mapped stay cached"
            )
        else:
            cold_note = f"skipped: {problem}"
    warm: list[dict[str, float]] = []
    for index in range(1, args.starts + 1):
        warm.append(start_once(env))
        print(start_row(f"warm {index}", warm[-1]), flush=True)
    for position, name in enumerate(("min", "median", "max")):
        summary = {key: spread(run.get(key, float("nan")) for run in warm)[position] for key, _ in START_COLUMNS}
        print(start_row(f"warm {name}", summary))
    codes = sorted({run["exit_code"] for run in warm})
    print(f"   cold run: {cold_note}")
    print(f"   warm runs: page cache warm from the runs before them; exit codes {codes}")
    print("   goal: first paint <= 1000 ms (interpreter start included)")


# --- main ---------------------------------------------------------------------------------------------------------


class Xvfb:
    """An Xvfb server on a free display, for as long as the ``with`` block runs."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.display = ""

    def __enter__(self) -> Xvfb:
        binary = shutil.which("Xvfb")
        if binary is None:
            raise SystemExit("--xvfb needs Xvfb: apt-get install -y xvfb")
        read, write = os.pipe()
        self.proc = subprocess.Popen(
            [binary, "-displayfd", str(write), "-screen", "0", "1920x1080x24", "-nolisten", "tcp"],
            pass_fds=(write,),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(write)
        with os.fdopen(read) as pipe:
            number = pipe.readline().strip()
        if not number:
            raise SystemExit("Xvfb did not start")
        self.display = f":{number}"
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=20_000, help="tokens in the streamed reply (default 20,000)")
    parser.add_argument("--rate", type=float, default=1000.0, help="scripted tokens per second (default 1000)")
    parser.add_argument("--stall-runs", type=int, default=3, help="stall runs, each a fresh process (default 3)")
    parser.add_argument("--starts", type=int, default=5, help="warm cold-start runs (default 5)")
    parser.add_argument("--no-cold", action="store_true", help="do not drop the page cache for a cold run")
    parser.add_argument(
        "--bytecode",
        choices=("cached", "env"),
        default="cached",
        help="cached: children keep a bytecode cache of their own, as an installed app (default); env: as inherited",
    )
    parser.add_argument("--xvfb", action="store_true", help="measure under an Xvfb X server (xcb) instead of offscreen")
    parser.add_argument("--stall-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stall_child:
        emit_result(stall_child(args.tokens, args.rate))
        return 0

    started = time.monotonic()
    env = dict(os.environ)
    env.setdefault("QT_QPA_PLATFORM", "offscreen")
    cache_root = Path.home() / ".cache"  # on disk (not a tmpfs /tmp), so dropping the page cache reaches it
    cache_root.mkdir(parents=True, exist_ok=True)
    server = Xvfb() if args.xvfb else contextlib.nullcontext()
    # ignore_cleanup_errors: a child that is still exiting may write one last bytecode file while it is removed
    pycache_dir = tempfile.TemporaryDirectory(prefix="enclave-bench-pyc-", dir=cache_root, ignore_cleanup_errors=True)
    with pycache_dir as pycache, server as x:
        if x is not None:
            env.update(DISPLAY=x.display, QT_QPA_PLATFORM="xcb")
        if args.bytecode == "cached":
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = pycache
            bytecode = f"children write and reuse their own cache (PYTHONPYCACHEPREFIX={pycache})"
        else:
            bytecode = (
                "as inherited: PYTHONDONTWRITEBYTECODE=1, so Enclave's modules are compiled at every start"
                if STARTED_ENV.get("PYTHONDONTWRITEBYTECODE")
                else "as inherited (pyc files in __pycache__ next to the sources)"
            )
        print_header(
            [
                f"library: PySide6 {dist_version('PySide6', 'PySide6-Essentials')}",
                f"display: QT_QPA_PLATFORM={env['QT_QPA_PLATFORM']}"
                + (f" (Xvfb {x.display}, 1920x1080x24)" if x is not None else ""),
                f"bytecode: {bytecode}",
            ]
        )
        if args.stall_runs > 0:
            measure_stalls(args, env)
        if args.starts > 0:
            measure_starts(args, env)
    print(f"\ntotal time {time.monotonic() - started:.0f} s; load average at the end {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

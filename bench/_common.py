"""Helpers shared by the benchmark scripts: the command line that produced a report, min/median summaries, children.

Import this before changing ``os.environ``: the environment is captured at import, so the printed command shows the
variables the user really set (not the defaults a script fills in afterwards).
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

STARTED_ENV = dict(os.environ)
RESULT_MARK = "BENCH-RESULT "
# Variables that change what a benchmark measures; printed in front of the command when the user set them.
RELEVANT_ENV = (
    "QT_QPA_PLATFORM",
    "ENCLAVE_ENGINE_IN_PROCESS",
    "ENCLAVE_LLAMA_AMX",
    "ENCLAVE_TEST_MODEL_CACHE",
    "OMP_NUM_THREADS",
    "GGML_NUM_THREADS",
    "PYTHONDONTWRITEBYTECODE",
    "PYTHONPYCACHEPREFIX",
)


def command_line(argv: Sequence[str] | None = None) -> str:
    """The exact command (with the relevant environment) that started this script, runnable from the printed cwd."""
    argv = list(sys.argv if argv is None else argv)
    exe = sys.executable
    cwd = Path.cwd()
    if Path(exe).is_relative_to(cwd):
        exe = os.path.relpath(exe, cwd)
    env = [f"{name}={shlex.quote(STARTED_ENV[name])}" for name in RELEVANT_ENV if name in STARTED_ENV]
    return " ".join([*env, shlex.join([exe, *argv])])


def print_header(extra: Iterable[str] = ()) -> None:
    """The first lines of every report: the command, where it ran, and how busy the machine was when it started."""
    print(f"command: {command_line()}")
    print(f"cwd:     {Path.cwd()}")
    print(
        f"machine: {os.cpu_count()} CPUs, load average {load_average()} at start; Python {platform.python_version()}; "
        f"{platform.system()} {platform.release()}; {datetime.now().astimezone().isoformat(timespec='seconds')}"
    )
    for line in extra:
        print(line)
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    if load >= 0.5:
        print(
            f"WARNING: the machine is not idle (1-minute load average {load:.2f}): the benchmark shares the CPUs with "
            "other work, so these numbers are not meaningful."
        )


def load_average() -> str:
    try:
        return " ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "n/a"


def dist_version(*names: str) -> str:
    """The installed version of the first of these distributions found (PySide6 may be PySide6-Essentials)."""
    from importlib.metadata import PackageNotFoundError, version

    for name in names:
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return "not installed"


def spread(values: Iterable[float]) -> tuple[float, float, float]:
    """(min, median, max), NaNs left out; all NaN when nothing is left."""
    kept = [v for v in values if v == v]
    if not kept:
        nan = float("nan")
        return nan, nan, nan
    return min(kept), statistics.median(kept), max(kept)


def emit_result(result: Mapping[str, Any]) -> None:
    """A child's answer to its parent: one marked JSON line on stdout (anything else there is ignored)."""
    print(RESULT_MARK + json.dumps(result), flush=True)


def run_child(
    command: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 600
) -> tuple[dict[str, Any], float]:
    """Run a child to completion; return its marked JSON result and its wall time. Fails loudly, with its output."""
    started = time.perf_counter()
    out = subprocess.run(
        list(command),
        env=dict(env) if env is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    wall = time.perf_counter() - started
    for line in reversed(out.stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK) :]), wall
    raise RuntimeError(
        f"benchmark child failed (exit {out.returncode}): {shlex.join(command)}\n"
        f"--- stdout ---\n{out.stdout[-4000:]}\n--- stderr ---\n{out.stderr[-4000:]}"
    )


def ms(seconds: float, width: int = 0) -> str:
    """Milliseconds, no decimals; '-' for NaN."""
    text = "-" if seconds != seconds else f"{seconds * 1000:.0f}"
    return text.rjust(width)

"""Many consecutive starts of the real app with a chat and an embedding model configured: crashes and times.

    python bench/bench_startups.py [--runs 50]

Each start is tests/gui_startup_child.py on one profile (as tests/test_ui_startups.py, which runs five): the app loads
Gemma in the engine host, opens MiniLM in the embedding host, indexes a real PDF (the first time; later starts find it
unchanged), asks a question about it in a new chat with the documents on, checks the answer cites the PDF, and
closes. Prints each start's outcome and wall time (and, for a start that failed, what the child saw: status bar,
load marker, the engine host's state and log), then the count of crashes (non-zero exit, no report, or a report that
is not "done"), of starts whose window process imported llama_cpp, and min / median / max seconds per start.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path[:0] = [str(TESTS), str(TESTS / "fixtures")]

import minilm_gguf  # noqa: E402

from model_cache import gemma_model_path  # noqa: E402
from test_ui_startups import PDF, hosts_of, start_app  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="enclave-startups-") as folder:
        home = Path(folder) / "profile"
        os.environ["ENCLAVE_HOME"] = str(home)
        os.environ["ENCLAVE_STARTUP_NEW_CHAT"] = "1"  # each start asks in a new chat, as after a fresh start
        from enclave.paths import app_paths
        from enclave.settings.settings import Settings, SettingsStore

        paths = app_paths().ensure()
        settings = replace(Settings(), model_path=str(gemma_model_path()), context_length=2048, max_tokens=24)
        SettingsStore(paths.settings_file).save(replace(settings, threads=2))
        minilm = minilm_gguf.cached_model_path()
        crashes, leaks, left_hosts = 0, 0, 0
        seconds: list[float] = []
        for run in range(args.runs):
            began = time.monotonic()
            report: dict[str, object] | None = None
            try:
                report = start_app(home, minilm)
                ok = report["step"] == "done" and any(s.startswith(PDF.name) for s in report["sources"])
                outcome = "ok" if ok else f"FAILED at {report['step']}: sources {report.get('sources')}"
                leaks += bool(report["refused"] or report["llama_cpp_loaded"])
            except AssertionError as exc:
                ok, outcome = False, f"CRASHED: {str(exc)[:300]}"
            seconds.append(time.monotonic() - began)
            crashes += not ok
            deadline = time.monotonic() + 10
            while hosts_of(home) and time.monotonic() < deadline:
                time.sleep(0.1)
            left_hosts += bool(hosts_of(home))
            print(f"start {run + 1:3d}: {outcome} ({seconds[-1]:.1f} s)", flush=True)
            if not ok and report is not None:
                print(f"           diagnostics: {report.get('diagnostics')}", flush=True)
                stderr = str(report.get("stderr", "")).splitlines()[-8:]
                print("           window stderr tail: " + " | ".join(stderr), flush=True)
    print(
        f"{args.runs} starts: {crashes} crashed or failed, {leaks} imported llama_cpp in the window's process, "
        f"{left_hosts} left a host running; seconds per start min/median/max "
        f"{min(seconds):.1f} / {statistics.median(seconds):.1f} / {max(seconds):.1f}"
    )
    return 1 if crashes or leaks or left_hosts else 0


if __name__ == "__main__":
    sys.exit(main())

"""Start the real app again and again, as a user does, with a chat model and an embedding model configured.

Each start is a fresh process (tests/gui_startup_child.py) on the same profile: it loads Gemma in the engine host,
opens MiniLM in the embedding host, (the first time) indexes a real PDF, asks a question about it with the documents
on, and closes. Every start must answer with a citation, and the window's process must never import llama_cpp (the
child refuses the import and reports any attempt). No host process may outlive the app.

Five starts run here; ``bench/bench_startups.py --runs 50`` runs the same start fifty times (docs/benchmarks.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from enclave.paths import app_paths
from enclave.settings.settings import Settings, SettingsStore

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import minilm_gguf

CHILD = Path(__file__).with_name("gui_startup_child.py")
PDF = Path(__file__).parent / "data" / "pdf" / "011-google-doc-document" / "google-doc-document.pdf"
QUESTION = "Should errors pass silently?"
STARTS = 5


def hosts_of(home: Path) -> list[int]:
    """Engine host processes started for the profile ``home`` (found by their environment), on Linux."""
    found = []
    proc = Path("/proc")
    for entry in proc.iterdir() if proc.is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if b"engine-host" in cmdline and f"ENCLAVE_HOME={home}".encode() in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def start_app(home: Path, minilm: Path) -> dict[str, Any]:
    env = {
        **os.environ,
        "ENCLAVE_HOME": str(home),
        "ENCLAVE_EMBEDDING_MODEL": str(minilm),
        "QT_QPA_PLATFORM": "offscreen",
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "app"), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("ENCLAVE_ENGINE_IN_PROCESS", None)
    done = subprocess.run(
        [sys.executable, str(CHILD), str(PDF), QUESTION], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"the app crashed (exit {done.returncode}):\n{done.stderr[-3000:]}"
    lines = done.stdout.strip().splitlines()
    assert lines, f"no report:\n{done.stderr[-3000:]}"
    report: dict[str, Any] = json.loads(lines[-1])
    report["stderr"] = done.stderr
    return report


@pytest.mark.timeout(1200)  # five whole starts of the app; on a busy machine one may take a minute
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find leftover host processes")
def test_repeated_starts_answer_from_documents_without_llama_cpp_in_the_window(
    gemma_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "profile"
    monkeypatch.setenv("ENCLAVE_HOME", str(home))
    paths = app_paths().ensure()
    settings = replace(Settings(), model_path=str(gemma_path), context_length=2048, max_tokens=24, threads=2)
    SettingsStore(paths.settings_file).save(settings)
    minilm = minilm_gguf.cached_model_path()
    for start in range(STARTS):
        began = time.monotonic()
        report = start_app(home, minilm)
        where = f"start {start + 1} ({time.monotonic() - began:.1f} s)"
        assert report["step"] == "done", f"{where}: {report['step']}\n{report['stderr'][-3000:]}"
        assert report["exit_code"] == 0, where
        assert report["refused"] == [] and report["llama_cpp_loaded"] is False, f"{where}: {report['refused']}"
        assert report["role"] == "assistant" and report["status"].endswith("complete"), (where, report["status"])
        assert report["answer"].strip(), where
        assert any(label.startswith(PDF.name) for label in report["sources"]), (where, report["sources"])
        deadline = time.monotonic() + 10
        while hosts_of(home) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert hosts_of(home) == [], f"{where}: an engine host outlived the app"

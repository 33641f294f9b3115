"""Shared fixtures. The engine is tested against the real Gemma 3 270M GGUF; GUI tests use tests/fakes.py."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from model_cache import gemma_model_path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(scope="session")
def gemma_path() -> Path:
    return gemma_model_path()


@pytest.fixture(autouse=True)
def enclave_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own data, config and cache folders: nothing touches the real profile."""
    home = tmp_path / "enclave-home"
    monkeypatch.setenv("ENCLAVE_HOME", str(home))
    return home


@pytest.fixture(autouse=True)
def no_threads_left_behind() -> Iterator[None]:
    """No test may leave a Python thread or an engine QThread running."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5
    while True:
        # A _DummyThread is how Python names a thread it did not start (an engine QThread that logged a warning):
        # it stays "alive" in threading's table forever, whether or not the thread still runs. QThreads are
        # checked below instead.
        extra = [
            t
            for t in threading.enumerate()
            if t not in before and t.is_alive() and not isinstance(t, threading._DummyThread)
        ]
        if not extra or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert not extra, f"threads left running: {extra}"
    if "enclave.workers.engine_worker" in sys.modules:
        from enclave.workers.engine_worker import running_controllers

        assert not running_controllers(), "an EngineController was not shut down"


@pytest.fixture
def llama_log() -> Iterator[list[str]]:
    """llama.cpp's own log lines (buffer sizes per device) while the test runs."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger("enclave.llama_cpp")
    handler, level = Keep(), logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(level)

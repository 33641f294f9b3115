"""The window with llama.cpp in the engine host: a crash costs one answer, never the window or the chat."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt

from enclave.engine.backend import Backend
from enclave.engine.isolated import IsolatedBackend
from enclave.paths import app_paths
from enclave.settings.settings import Settings, SettingsStore
from enclave.storage.chats import ChatStore, MessageStatus
from enclave.ui.main_window import MainWindow
from enclave.usecases.loading import LoadGuard
from enclave.workers.engine_worker import EngineController
from engine_host_helpers import child_pids, patch_header_u32, write_gguf_that_aborts_llama_cpp
from fakes import ScriptedBackend

KILLED = "The model stopped unexpectedly (llama.cpp: SIGKILL). Reload it, or choose another model."


class Window:
    """A MainWindow over a fresh store; ``backends`` are the engines its controller made."""

    def __init__(self, qtbot: Any, factory: Callable[[], Backend], settings: Settings) -> None:
        self.qtbot = qtbot
        self.paths = app_paths().ensure()
        self.store = ChatStore(self.paths.chats_db)
        self.controller = EngineController(factory)
        self.window = MainWindow(self.store, self.controller, SettingsStore(self.paths.settings_file), settings)
        qtbot.addWidget(self.window)
        self.window.show()

    def send(self, text: str) -> None:
        self.window.composer.editor.setPlainText(text)
        self.qtbot.keyClick(self.window.composer.editor, Qt.Key.Key_Return)

    def wait_idle(self, timeout: int = 60_000) -> None:
        self.qtbot.waitUntil(lambda: not self.window.session.busy, timeout=timeout)

    def stored_model_path(self) -> str | None:
        return SettingsStore(self.paths.settings_file).load().settings.model_path

    def close(self) -> None:
        self.window.close()
        self.store.close()


@pytest.fixture
def isolated_window(qtbot: Any) -> Iterator[tuple[Window, list[IsolatedBackend]]]:
    before = child_pids()
    backends: list[IsolatedBackend] = []

    def factory() -> Backend:
        backends.append(IsolatedBackend())
        return backends[-1]

    app = Window(qtbot, factory, replace(Settings(), context_length=1024, max_tokens=400, threads=2))
    yield app, backends
    app.close()  # shuts the engine thread down, which ends the host
    assert not child_pids() - before, "an engine host process was left behind"


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_a_crash_mid_answer_keeps_the_partial_answer_and_the_next_question_reloads(
    isolated_window: tuple[Window, list[IsolatedBackend]], gemma_path: Path
) -> None:
    app, backends = isolated_window
    window = app.window
    with app.qtbot.waitSignal(app.controller.modelLoaded, timeout=60_000):
        window.load_model(str(gemma_path), remember=True)
    app.send("Write a long story about a lighthouse keeper and his cat.")
    app.qtbot.waitUntil(
        lambda: window.session.live is not None and len("".join(window.session.live.content)) > 40, timeout=60_000
    )
    pid = backends[0].host_pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    app.wait_idle()
    shown_at = time.monotonic()
    conversation_id = window.session.conversation_id
    assert conversation_id is not None
    _question, partial = app.store.messages(conversation_id)
    assert partial.status is MessageStatus.INTERRUPTED
    assert len(partial.content) > 40 and partial.error == KILLED
    card = window.transcript.cards()[-1]
    assert card.status.isVisible() and card.status.text() == f"Interrupted — {KILLED}"
    assert window.statusBar().currentMessage() == KILLED
    assert app.controller.model is not None

    window.settings = replace(window.settings, max_tokens=12)
    app.send("What colour is the sky?")
    app.wait_idle()
    answered_at = time.monotonic()
    messages = app.store.messages(conversation_id)
    assert [m.status for m in messages] == [
        MessageStatus.COMPLETE,
        MessageStatus.INTERRUPTED,
        MessageStatus.COMPLETE,
        MessageStatus.COMPLETE,
    ]
    assert messages[-1].content.strip() and messages[-1].model == "Gemma 3 270m"
    assert window.transcript.cards()[-1].answer.markdown() == messages[-1].content
    assert backends[0].starts == 2 and len(backends) == 1
    print(
        f"\nkill -> interrupted answer shown: {shown_at - killed_at:.2f} s; "
        f"kill -> next answer (host restart, model reload, 12 tokens): {answered_at - killed_at:.2f} s"
    )


def test_a_model_that_aborts_llama_cpp_is_reported_and_not_remembered(
    isolated_window: tuple[Window, list[IsolatedBackend]], gemma_path: Path, tmp_path: Path
) -> None:
    app, _ = isolated_window
    window = app.window
    broken = tmp_path / "duplicate-token.gguf"
    write_gguf_that_aborts_llama_cpp(gemma_path, broken)
    with app.qtbot.waitSignal(app.controller.modelLoaded, timeout=60_000):
        window._use_model(str(gemma_path))
    assert app.stored_model_path() == str(gemma_path)
    with app.qtbot.waitSignal(app.controller.modelLoadFailed, timeout=60_000) as failed:
        window._use_model(str(broken))
    message = failed.args[0]
    assert message.startswith("The model stopped unexpectedly (llama.cpp: llama-vocab.cpp:")
    assert "GGML_ASSERT" in message
    assert window.statusBar().currentMessage() == message
    assert failed.args[1] is True  # the engine crashed: the guard keeps this model from being opened by itself
    reason = LoadGuard().blocked(broken)
    assert reason is not None and "stopped the engine while loading" in reason and "GGML_ASSERT" in reason
    # The next start opens the model that worked, not the one that aborts.
    assert window.settings.model_path == app.stored_model_path() == str(gemma_path)
    with app.qtbot.waitSignal(app.controller.modelLoaded, timeout=60_000):
        window.load_model(str(gemma_path))
    assert LoadGuard().blocked(broken) is None and LoadGuard().blocked(gemma_path) is None  # a success clears it
    window.settings = replace(window.settings, max_tokens=8)
    app.send("Hi")
    app.wait_idle()
    conversation_id = window.session.conversation_id
    assert conversation_id is not None
    assert app.store.messages(conversation_id)[-1].status is MessageStatus.COMPLETE


def test_a_model_is_remembered_only_once_it_has_loaded(qtbot: Any, tmp_path: Path) -> None:
    backend = ScriptedBackend()
    app = Window(qtbot, lambda: backend, Settings())
    try:
        missing = tmp_path / "missing.gguf"
        with qtbot.waitSignal(app.controller.modelLoadFailed, timeout=5000):
            app.window._use_model(str(missing))
        assert app.window.settings.model_path is None and app.stored_model_path() is None
        good = tmp_path / "good.gguf"
        good.write_bytes(b"scripted")
        with qtbot.waitSignal(app.controller.modelLoaded, timeout=5000):
            app.window._use_model(str(good))
        assert app.window.settings.model_path == app.stored_model_path() == str(good)
        with qtbot.waitSignal(app.controller.modelLoadFailed, timeout=5000):
            app.window._use_model(str(missing))
        assert app.window.settings.model_path == app.stored_model_path() == str(good)
    finally:
        app.close()


GUI_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from dataclasses import replace
    from PySide6.QtWidgets import QApplication
    from enclave.paths import app_paths
    from enclave.settings.settings import Settings, SettingsStore
    from enclave.storage.chats import ChatStore
    from enclave.ui.app import real_backend
    from enclave.ui.main_window import MainWindow
    from enclave.workers.engine_worker import EngineController

    app = QApplication([])
    paths = app_paths().ensure()
    store = ChatStore(paths.chats_db)
    controller = EngineController(real_backend)
    settings = replace(Settings(), context_length=1024, max_tokens=8, threads=2)
    window = MainWindow(store, controller, SettingsStore(paths.settings_file), settings)
    window.show()

    def wait(condition, seconds=120):
        deadline = time.monotonic() + seconds
        while not condition():
            if time.monotonic() > deadline:
                raise SystemExit("timed out")
            app.processEvents()
            time.sleep(0.01)

    window.load_model(sys.argv[1])
    wait(lambda: controller.model is not None)
    assert window.session.send("Hello!")
    wait(lambda: not window.session.busy)
    answer = store.messages(window.session.conversation_id)[-1]
    result = {
        "status": answer.status.value,
        "answer": answer.content,
        "llama_modules": sorted(m for m in sys.modules if m.split(".")[0] == "llama_cpp" or "llama_backend" in m),
    }
    window.close()
    store.close()
    print(json.dumps(result))
    """
)


def test_the_window_never_imports_llama_cpp(gemma_path: Path) -> None:
    """Chat path only: the documents embedder (docs/embedder.py) and the hardware probe still use llama.cpp in the
    app's process when documents are indexed or a model is recommended; this window has neither."""
    before = child_pids()
    result = subprocess.run(
        [sys.executable, "-c", GUI_SCRIPT, str(gemma_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "QT_QPA_PLATFORM": "offscreen"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["status"] == "complete" and report["answer"].strip()
    assert report["llama_modules"] == []
    assert not child_pids() - before


def test_damaged_models_opened_from_the_window_each_get_a_message(
    isolated_window: tuple[Window, list[IsolatedBackend]], gemma_path: Path, tmp_path: Path
) -> None:
    """Header mutants (refused by the check in the host) and one that passes the check but aborts llama.cpp: the
    window shows why for each, nothing is remembered, and a good model still loads and answers afterwards."""
    app, _ = isolated_window
    window = app.window
    mutants = {
        "no-layers": (patch_header_u32(gemma_path, tmp_path / "no-layers.gguf", "gemma3.block_count", 0), "0 layers"),
        "no-heads": (
            patch_header_u32(gemma_path, tmp_path / "no-heads.gguf", "gemma3.attention.head_count", 0),
            "no attention heads",
        ),
    }
    aborts = tmp_path / "duplicate-token.gguf"
    write_gguf_that_aborts_llama_cpp(gemma_path, aborts)
    mutants["duplicate-token"] = (aborts, "The model stopped unexpectedly (llama.cpp: llama-vocab.cpp:")
    for path, expected in mutants.values():
        with app.qtbot.waitSignal(app.controller.modelLoadFailed, timeout=60_000) as failed:
            window._use_model(str(path))
        assert expected in failed.args[0]
        assert window.statusBar().currentMessage() == failed.args[0]
        assert window.isVisible() and app.stored_model_path() is None
    with app.qtbot.waitSignal(app.controller.modelLoaded, timeout=60_000):
        window._use_model(str(gemma_path))
    assert app.stored_model_path() == str(gemma_path)
    window.settings = replace(window.settings, max_tokens=4)
    app.send("Hi")
    app.wait_idle()
    conversation_id = window.session.conversation_id
    assert conversation_id is not None
    assert app.store.messages(conversation_id)[-1].status is MessageStatus.COMPLETE

"""The API server inside the app: requests go through the GUI's engine thread (one model, one queue), with the real
Gemma 3 270M and the official ``openai`` client."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from enclave.engine.llama_backend import LlamaCppBackend
from enclave.engine.types import ChatMessage, GenerationRequest, LoadRequest, SamplingParams
from enclave.settings.settings import Settings
from enclave.workers.api_server_worker import ApiServerController
from enclave.workers.engine_worker import EngineController


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def engine(qtbot: Any, gemma_path: Path) -> Any:
    backends: list[LlamaCppBackend] = []

    def make() -> LlamaCppBackend:
        backends.append(LlamaCppBackend())
        return backends[-1]

    controller = EngineController(make)
    with qtbot.waitSignal(controller.modelLoaded, timeout=120_000):
        controller.load_model(LoadRequest(path=str(gemma_path), n_ctx=2048, n_threads=2))
    yield controller, backends
    controller.shutdown()


def test_api_requests_take_turns_with_the_app_on_its_one_engine(engine: Any, qtbot: Any) -> None:
    controller, backends = engine
    api = ApiServerController(controller)
    activity: list[tuple[int, int]] = []
    api.activityChanged.connect(lambda running, waiting: activity.append((running, waiting)))
    port = free_port()
    api.apply(Settings(api_server_enabled=True, api_server_port=port))
    try:
        assert api.url == f"http://127.0.0.1:{port}/v1"
        finished_at: dict[str, float] = {}
        controller.generationFinished.connect(lambda rid, _f: finished_at.setdefault(rid, time.monotonic()))
        # The app's own answer first: the API request sent meanwhile waits for it on the same engine thread.
        app_request = GenerationRequest(
            messages=(ChatMessage("user", "Tell me about rivers."),),
            sampling=SamplingParams(temperature=0.0, seed=7),
            max_tokens=24,
        )
        app_id = controller.generate(app_request)
        replies: list[Any] = []
        errors: list[BaseException] = []

        def ask() -> None:
            try:
                with openai.OpenAI(base_url=api.url, api_key="unused", max_retries=0, timeout=300) as client:
                    replies.append(
                        client.chat.completions.create(
                            model="x",
                            messages=[{"role": "user", "content": "Say hello."}],
                            max_tokens=6,
                            temperature=0,
                            seed=7,
                        )
                    )
            except BaseException as exc:
                errors.append(exc)

        client_thread = threading.Thread(target=ask)
        client_thread.start()
        try:
            qtbot.waitUntil(lambda: bool(replies or errors), timeout=240_000)
        finally:
            client_thread.join(60)
        assert not errors, errors
        reply = replies[0]
        assert reply.choices[0].finish_reason == "length" and reply.usage.completion_tokens == 6
        assert reply.choices[0].message.content
        assert reply.model == "gemma-3-270m-q4_k_m"
        assert len(backends) == 1  # the API used the app's engine: no second model was loaded
        api_ids = [rid for rid in finished_at if rid != app_id]
        assert len(api_ids) == 1 and finished_at[app_id] < finished_at[api_ids[0]]  # it waited its turn
        qtbot.waitUntil(lambda: bool(activity) and activity[-1] == (0, 0), timeout=10_000)
        assert (1, 0) in activity  # the status bar was told while it ran
    finally:
        api.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5)


def test_the_server_is_off_unless_switched_on(engine: Any) -> None:
    controller, _ = engine
    api = ApiServerController(controller)
    failures: list[str] = []
    api.failed.connect(failures.append)
    api.apply(Settings())
    assert api.url is None
    api.apply(Settings(api_server_enabled=True, api_server_host="0.0.0.0", api_server_port=free_port()))
    assert api.url is None and "API key" in failures[0]
    api.stop()


def test_settings_dialog_switches_the_server_and_copies_its_address(qtbot: Any) -> None:
    from PySide6.QtGui import QGuiApplication
    from PySide6.QtWidgets import QPushButton

    from enclave.ui.settings_dialog import SettingsDialog

    dialog = SettingsDialog(Settings())
    qtbot.addWidget(dialog)
    assert not dialog.api_enabled.isChecked()  # off by default
    dialog.api_enabled.setChecked(True)
    dialog.api_port.setValue(8123)
    assert dialog.api_address.text() == "http://127.0.0.1:8123/v1"
    copy = [b for b in dialog.findChildren(QPushButton) if b.accessibleName() == "Copy the API address"]
    copy[0].click()
    assert QGuiApplication.clipboard().text() == "http://127.0.0.1:8123/v1"
    chosen = dialog.collected()
    assert (chosen.api_server_enabled, chosen.api_server_host, chosen.api_server_port) == (True, "127.0.0.1", 8123)

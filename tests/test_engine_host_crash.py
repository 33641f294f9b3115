"""The engine host dies (killed, or llama.cpp aborts): the app gets a sentence, not a disappearance.

Real Gemma 3 270M. Each test starts its own ``IsolatedBackend`` and checks that no host process outlives it.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from enclave.engine import host_protocol as wire
from enclave.engine.backend import EngineCrashedError
from enclave.engine.isolated import IsolatedBackend, crash_detail, exit_description
from enclave.engine.types import (
    ChatMessage,
    EngineError,
    Finished,
    FinishReason,
    GenerationControl,
    GenerationRequest,
    LoadRequest,
    ModelInfo,
    ModelLoadCancelled,
    ModelLoadError,
    SamplingParams,
    TextDelta,
)
from engine_host_helpers import child_pids, write_gguf_that_aborts_llama_cpp

GREEDY = SamplingParams(temperature=0.0, top_k=1, top_p=1.0, min_p=0.0, seed=7)
KILLED = "The model stopped unexpectedly (llama.cpp: SIGKILL). Reload it, or choose another model."


@pytest.fixture
def make() -> Iterator[Callable[..., IsolatedBackend]]:
    before = child_pids()
    made: list[IsolatedBackend] = []

    def factory(*args: object, **kwargs: object) -> IsolatedBackend:
        made.append(IsolatedBackend(*args, **kwargs))  # type: ignore[arg-type]
        return made[-1]

    yield factory
    for backend in made:
        backend.close()
    assert not child_pids() - before, "an engine host process was left behind"


def load(backend: IsolatedBackend, path: Path) -> None:
    backend.load(LoadRequest(path=str(path), n_ctx=1024, n_threads=2))


def ask(text: str, max_tokens: int = 200) -> GenerationRequest:
    return GenerationRequest(messages=(ChatMessage("user", text),), sampling=GREEDY, max_tokens=max_tokens)


def answer(backend: IsolatedBackend, text: str = "Say hello.", max_tokens: int = 6) -> str:
    events = list(backend.stream_chat(ask(text, max_tokens), GenerationControl()))
    finished = events[-1]
    assert isinstance(finished, Finished) and finished.reason is not FinishReason.CANCELLED
    return "".join(e.content for e in events if isinstance(e, TextDelta))


def kill_mid_answer(backend: IsolatedBackend) -> str:
    """Stream a long answer, SIGKILL the host after a few pieces; return what had arrived. Raises the crash error."""
    received: list[str] = []
    for event in backend.stream_chat(ask("Write a long story about a lighthouse keeper."), GenerationControl()):
        if isinstance(event, TextDelta):
            received.append(event.content)
            if len(received) == 3:
                pid = backend.host_pid
                assert pid is not None
                os.kill(pid, signal.SIGKILL)
    raise AssertionError(f"the answer finished although its host was killed: {''.join(received)!r}")


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_a_killed_host_is_an_error_and_the_next_request_restarts_it(
    make: Callable[..., IsolatedBackend], gemma_path: Path
) -> None:
    backend = make()
    load(backend, gemma_path)
    first_pid = backend.host_pid
    with pytest.raises(EngineCrashedError) as crashed:
        kill_mid_answer(backend)
    assert str(crashed.value) == KILLED
    assert isinstance(crashed.value, EngineError)  # callers that know only EngineError still catch it
    assert backend.host_pid is None and first_pid not in child_pids()  # reaped, not a zombie
    assert backend.model is not None  # still the chosen model: the next request loads it again
    started = time.monotonic()
    assert answer(backend).strip()
    print(f"\nkill -> next answer complete: {time.monotonic() - started:.2f} s")
    assert backend.starts == 2 and backend.host_pid not in (None, first_pid)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_three_crashes_in_a_row_stop_automatic_reloads(make: Callable[..., IsolatedBackend], gemma_path: Path) -> None:
    backend = make()
    load(backend, gemma_path)
    for _ in range(3):  # the second and third each start a host, load the model again, and are killed
        with pytest.raises(EngineCrashedError, match="stopped unexpectedly"):
            kill_mid_answer(backend)
    with pytest.raises(EngineError, match="stopped unexpectedly 3 times in a row") as refused:
        answer(backend)
    assert not isinstance(refused.value, EngineCrashedError)
    assert backend.starts == 3 and backend.host_pid is None
    load(backend, gemma_path)  # the user opens it again: allowed, and the count starts over
    assert answer(backend).strip()
    with pytest.raises(EngineCrashedError):
        kill_mid_answer(backend)
    assert answer(backend).strip()  # one crash after an explicit load: reloaded automatically again


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_a_completed_answer_resets_the_crash_count(make: Callable[..., IsolatedBackend], gemma_path: Path) -> None:
    backend = make()
    load(backend, gemma_path)
    for _ in range(2):
        with pytest.raises(EngineCrashedError):
            kill_mid_answer(backend)
    assert answer(backend).strip()
    for _ in range(2):
        with pytest.raises(EngineCrashedError):
            kill_mid_answer(backend)
    assert answer(backend).strip()


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_a_host_killed_while_idle_is_restarted_quietly(make: Callable[..., IsolatedBackend], gemma_path: Path) -> None:
    backend = make()
    load(backend, gemma_path)
    pid = backend.host_pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    assert backend.count_tokens("Hello there") > 0
    assert answer(backend).strip()


def test_a_model_that_aborts_llama_cpp_is_a_load_error(
    make: Callable[..., IsolatedBackend], gemma_path: Path, tmp_path: Path
) -> None:
    from enclave.engine.gguf_check import check_gguf_file
    from enclave.models.gguf import read_gguf_header

    broken = tmp_path / "duplicate-token.gguf"
    write_gguf_that_aborts_llama_cpp(gemma_path, broken)
    check_gguf_file(broken)  # nothing for our header check to object to
    header = read_gguf_header(broken, keep_large_arrays=True)
    tokens = header.metadata["tokenizer.ggml.tokens"]
    assert isinstance(tokens, list) and len(set(tokens)) == len(tokens) - 1
    backend = make()
    load(backend, gemma_path)
    with pytest.raises(ModelLoadError) as aborted:
        load(backend, broken)
    message = str(aborted.value)
    assert message.startswith("The model stopped unexpectedly (llama.cpp: llama-vocab.cpp:")
    assert "GGML_ASSERT(id_to_token.size() == token_to_id.size())" in message
    assert message.endswith(") failed). Reload it, or choose another model.")
    # This process is alive and well; the old model went with the host (a load frees it first, as in-process).
    assert backend.model is None and backend.host_pid is None
    with pytest.raises(EngineError, match="No model is loaded"):
        answer(backend)
    load(backend, gemma_path)
    assert answer(backend).strip()


def test_crash_details() -> None:
    assert_line = "/build/vendor/llama.cpp/src/llama-model.cpp:1328: GGML_ASSERT(hparams.n_layer_all > 0) failed"
    log = ["enclave.llama_cpp: llama_model_loader: loaded meta data", assert_line]
    assert crash_detail(log, -6) == "llama-model.cpp:1328: GGML_ASSERT(hparams.n_layer_all > 0) failed"
    cuda = [
        "CUDA error: out of memory",
        "  current device: 0, in function alloc at /src/ggml-cuda.cu:400",
        "/src/ggml/src/ggml-cuda/ggml-cuda.cu:88: CUDA error",
    ]
    assert crash_detail(cuda, -6) == "ggml-cuda.cu:88: CUDA error"
    assert crash_detail(["enclave.llama_cpp: llama_decode: failed to allocate"], -9) == "SIGKILL"
    thrown = ["terminate called after throwing an instance of 'std::runtime_error'", "  what():  Unexpected empty"]
    assert crash_detail(thrown, -6) == "Unexpected empty"
    assert crash_detail([], -11) == "SIGSEGV"
    assert crash_detail([], 3) == "exit code 3"
    assert exit_description(None) == "the process stopped answering"


def test_the_host_command_is_hidden_from_help() -> None:
    from enclave.cli import build_parser

    parser = build_parser()
    assert "engine-host" not in parser.format_help()
    assert parser.parse_args(["engine-host"]).handler is not None


FAKE_HOST = """
import json, os, sys
from multiprocessing.connection import Listener
key = bytes.fromhex(sys.stdin.readline().strip())
with Listener(authkey=key) as listener:
    print(listener.address, flush=True)
    conn = listener.accept()
conn.recv_bytes()
conn.send_bytes(json.dumps({"type": "hello", "protocol": PROTOCOL, "pid": os.getpid(), "version": "x"}).encode())
conn.recv_bytes()  # waits until the app hangs up
"""


def test_a_host_speaking_another_protocol_is_refused(make: Callable[..., IsolatedBackend], gemma_path: Path) -> None:
    script = FAKE_HOST.replace("PROTOCOL", str(wire.PROTOCOL_VERSION + 1))
    backend = make([sys.executable, "-c", script])
    with pytest.raises(ModelLoadError, match=f"speaks protocol version {wire.PROTOCOL_VERSION + 1}"):
        load(backend, gemma_path)
    assert backend.host_pid is None


def test_a_host_that_cannot_start_is_a_load_error(make: Callable[..., IsolatedBackend], gemma_path: Path) -> None:
    backend = make([sys.executable, "-c", "import sys; print('no luck', file=sys.stderr); sys.exit(3)"])
    with pytest.raises(ModelLoadError, match=r"could not be started: the engine process exited with code 3: no luck"):
        load(backend, gemma_path)


def test_protocol_round_trips() -> None:
    from enclave.engine.types import ContextTrimmed, GenerationStats, PromptProgress, ThinkingClosed

    request = GenerationRequest(
        messages=(ChatMessage("system", "Be brief."), ChatMessage("user", "Hi 😀")),
        sampling=SamplingParams(temperature=0.6, seed=None),
        max_tokens=None,
        think_budget=12,
        grammar='root ::= "a"',
    )
    sent = wire.decode(wire.encode({"type": "generate", "request": wire.generation_request_to_json(request)}))
    assert wire.generation_request_from_json(sent["request"]) == request
    for load_request in (
        LoadRequest(path="/m/x.gguf"),
        LoadRequest(path="/m/x.gguf", n_ctx=8192, n_gpu_layers=-1, kv_cache_type="q8_0", devices=("Vulkan0", "RPC0")),
    ):
        sent = wire.decode(wire.encode({"type": "load", "request": wire.load_request_to_json(load_request)}))
        assert wire.load_request_from_json(sent["request"]) == load_request
    info = ModelInfo(
        path="/m/x.gguf",
        name="X",
        architecture="qwen3",
        file_size=5,
        n_ctx=4096,
        n_ctx_train=32768,
        chat_format="R1",
        chat_format_source="built-in",
        reasoning=True,
        default_sampling=SamplingParams(seed=3),
        load_seconds=1.5,
    )
    sent = wire.decode(wire.encode({"type": "loaded", "info": wire.model_info_to_json(info)}))
    assert wire.model_info_from_json(sent["info"]) == info
    with pytest.raises(wire.ProtocolError):
        wire.model_info_from_json({**wire.model_info_to_json(info), "n_ctx": "4096"})
    with pytest.raises(wire.ProtocolError):
        wire.load_request_from_json({"n_ctx": 4})  # no path
    for event in (
        TextDelta(reasoning="r", content="c"),
        PromptProgress(10, 20, None),
        PromptProgress(10, 20, 1.5),
        ThinkingClosed(forced=True),
        ContextTrimmed(2),
        Finished(FinishReason.LENGTH, GenerationStats(prompt_tokens=3, generation_seconds=0.5)),
    ):
        assert wire.event_from_json(wire.decode(wire.encode(wire.event_to_json("7", event)))) == event
    with pytest.raises(wire.ProtocolError):
        robot = {"role": "robot", "content": "x"}
        wire.generation_request_from_json({**wire.generation_request_to_json(request), "messages": [robot]})
    with pytest.raises(wire.ProtocolError):
        wire.event_from_json({"type": "delta", "id": "1", "reasoning": 3, "content": ""})
    with pytest.raises(wire.ProtocolError):
        wire.event_from_json({"type": "thinking_closed", "id": "1", "forced": 1})
    with pytest.raises(wire.ProtocolError):
        wire.decode(b"[1, 2]")


ORPHANING_APP = """
import sys, time
from enclave.engine.isolated import IsolatedBackend
from enclave.engine.types import LoadRequest
backend = IsolatedBackend()
backend.load(LoadRequest(path=sys.argv[1], n_ctx=512, n_threads=1))
print(backend.host_pid, flush=True)
time.sleep(600)
"""


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"  # a zombie has exited; only its parent's reaping is missing


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_host_whose_app_died_exits_by_itself(gemma_path: Path) -> None:
    import subprocess

    app = subprocess.Popen([sys.executable, "-c", ORPHANING_APP, str(gemma_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert app.stdout is not None
        host_pid = int(app.stdout.readline())
        assert _running(host_pid)
    finally:
        app.kill()  # the app dies without a word to its host
        app.wait()
        if app.stdout is not None:
            app.stdout.close()
    deadline = time.monotonic() + 15
    while _running(host_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _running(host_pid), "the engine host outlived the app"


@pytest.mark.parametrize("grace", [60.0, 0.0])
def test_a_cancelled_load(
    make: Callable[..., IsolatedBackend], gemma_path: Path, monkeypatch: pytest.MonkeyPatch, grace: float
) -> None:
    """The cancel is sent to the host (llama.cpp's load progress callback stops the load); a load that has not
    stopped after the grace period ends with its host. Either way: ModelLoadCancelled, and nothing is loaded."""
    import threading

    from enclave.engine import isolated

    monkeypatch.setattr(isolated, "LOAD_CANCEL_GRACE_S", grace)
    backend = make()
    load(backend, gemma_path)
    pid = backend.host_pid
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(ModelLoadCancelled, match="cancelled"):
        backend.load(LoadRequest(path=str(gemma_path), n_ctx=1024, n_threads=2), cancel)
    assert backend.model is None
    if grace:
        assert backend.host_pid == pid  # stopped by the message, not by ending the host
    else:
        assert backend.host_pid is None
    load(backend, gemma_path)
    assert answer(backend).strip()
    assert backend.starts == (1 if grace else 2)

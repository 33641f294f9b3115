"""The local API server with real clients: the official ``openai`` package, ``httpx`` and ``curl``, against the real
Gemma 3 270M (chat) and all-MiniLM-L6-v2 (embeddings) on the CPU.

Gemma has no thinking of its own; a grammar-constrained ``<think>…</think>`` reply (llama.cpp's ``grammar`` request
field) gives a real reasoning stream, so ``reasoning_content`` is tested on tokens the model actually produced.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from enclave.docs.embedder import Embedder
from enclave.engine.llama_backend import LlamaCppBackend
from enclave.engine.types import ChatMessage, GenerationControl, GenerationRequest, LoadRequest, SamplingParams
from enclave.engine.types import TextDelta as Delta
from enclave.server.app import ServerOptions
from enclave.server.service import ApiServer, EmbeddingService, ServerConfigError

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import minilm_gguf

N_CTX = 2048
GREEDY = {"temperature": 0.0, "seed": 7}
THINK_GRAMMAR = r"""
root ::= "<think>" thought "</think>" " " answer
thought ::= "I think " word (" " word){3,8} "."
answer ::= "The answer is " word "."
word ::= [a-z]{2,8}
"""


@pytest.fixture(scope="module")
def backend(gemma_path: Path) -> Iterator[LlamaCppBackend]:
    engine = LlamaCppBackend()
    engine.load(LoadRequest(path=str(gemma_path), n_ctx=N_CTX, n_threads=2))
    yield engine
    engine.unload()


@pytest.fixture(scope="module")
def minilm_path() -> Path:
    return minilm_gguf.cached_model_path()


@pytest.fixture(scope="module")
def server(backend: LlamaCppBackend, minilm_path: Path) -> Iterator[ApiServer]:
    api = ApiServer(
        backend,
        host="127.0.0.1",
        port=0,
        options=ServerOptions(max_tokens=512, max_body_bytes=64 * 1024),
        embeddings=EmbeddingService(minilm_path, n_threads=1),
    )
    api.start()
    yield api
    api.close()


@pytest.fixture
def client(server: ApiServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=300) as api:
        yield api


def raw_answer(backend: LlamaCppBackend, text: str, max_tokens: int, grammar: str | None = None) -> tuple[str, str]:
    """What the engine itself says for the same greedy request (the server must pass it through unchanged)."""
    request = GenerationRequest(
        messages=(ChatMessage("user", text),),
        sampling=SamplingParams(temperature=0.0, seed=7),
        max_tokens=max_tokens,
        grammar=grammar,
    )
    events = list(backend.stream_chat(request, GenerationControl()))
    deltas = [e for e in events if isinstance(e, Delta)]
    return "".join(d.reasoning for d in deltas), "".join(d.content for d in deltas)


def wait_idle(server: ApiServer, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while server.scheduler.activity.running or server.scheduler.activity.waiting:
        assert time.monotonic() < deadline, f"the queue is still busy: {server.scheduler.activity}"
        time.sleep(0.02)


# --- the official openai client ---------------------------------------------------------------------------------


def test_models_list(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids[0] == "gemma-3-270m-q4_k_m"
    assert any(i.startswith("all-minilm-l6-v2") for i in ids[1:])


def test_chat_completion_matches_the_engine(client: openai.OpenAI, backend: LlamaCppBackend) -> None:
    prompt = "Name three colours."
    reply = client.chat.completions.create(
        model="deepseek-chat", messages=[{"role": "user", "content": prompt}], max_tokens=12, **GREEDY
    )
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and choice.finish_reason == "length"
    assert reply.model == "gemma-3-270m-q4_k_m" and reply.id.startswith("chatcmpl-")
    assert reply.usage is not None and reply.usage.completion_tokens == 12
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 12
    assert getattr(choice.message, "reasoning_content", None) is None  # no thinking: no reasoning_content
    _, expected = raw_answer(backend, prompt, 12)
    assert choice.message.content == expected != ""


def test_streamed_chat_is_the_same_answer_in_chunks(client: openai.OpenAI, backend: LlamaCppBackend) -> None:
    prompt = "Name three colours."
    stream = client.chat.completions.create(
        model="deepseek-chat",
        messages=[{"role": "user", "content": prompt}],
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
        **GREEDY,
    )
    chunks = list(stream)
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) >= 3  # streamed token by token, not in one piece
    assert {c.id for c in chunks} == {chunks[0].id}
    assert chunks[0].choices[0].delta.role == "assistant"
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 12
    _, expected = raw_answer(backend, prompt, 12)
    assert "".join(pieces) == expected


def test_stop_strings_cut_the_answer(client: openai.OpenAI, backend: LlamaCppBackend) -> None:
    prompt = "Name three colours."
    _, full = raw_answer(backend, prompt, 12)
    words = full.split()
    assert len(words) >= 3
    stop = words[2]
    reply = client.chat.completions.create(
        model="x", messages=[{"role": "user", "content": prompt}], max_tokens=12, stop=[stop], **GREEDY
    )
    content = reply.choices[0].message.content or ""
    assert content == full[: full.index(stop)] and stop not in content
    assert reply.choices[0].finish_reason == "stop"


def test_reasoning_content_from_a_grammar_constrained_think_stream(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="deepseek-reasoner",
        messages=[{"role": "user", "content": "Why is the sky blue?"}],
        max_tokens=60,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"grammar": THINK_GRAMMAR},
        **GREEDY,
    )
    reasoning: list[str] = []
    content: list[str] = []
    usage: Any = None
    for chunk in stream:
        usage = chunk.usage or usage
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        thought = (delta.model_extra or {}).get("reasoning_content")
        if thought:
            assert not delta.content  # a chunk carries one or the other, as DeepSeek's API does
            reasoning.append(thought)
        if delta.content:
            content.append(delta.content)
    assert len(reasoning) >= 3
    thinking, answer = "".join(reasoning), "".join(content)
    assert thinking.startswith("I think ") and thinking.endswith(".")
    assert answer.startswith("The answer is ") and answer.endswith(".")
    assert "<think>" not in answer and "</think>" not in answer + thinking
    assert usage is not None and usage.completion_tokens_details.reasoning_tokens > 3

    whole = client.chat.completions.create(
        model="deepseek-reasoner",
        messages=[{"role": "user", "content": "Why is the sky blue?"}],
        max_tokens=60,
        extra_body={"grammar": THINK_GRAMMAR},
        **GREEDY,
    )
    message = whole.choices[0].message
    assert (message.model_extra or {}).get("reasoning_content") == thinking and message.content == answer


def test_embeddings_through_minilm(client: openai.OpenAI, minilm_path: Path) -> None:
    texts = ["A cat sleeps on the sofa.", "A kitten naps on the couch.", "Interest rates rose again this quarter."]
    reply = client.embeddings.create(model="text-embedding-3-small", input=texts, encoding_format="float")
    vectors = [d.embedding for d in reply.data]
    assert [d.index for d in reply.data] == [0, 1, 2] and all(len(v) == 384 for v in vectors)
    assert reply.usage.prompt_tokens > 10
    with Embedder(minilm_path, n_threads=1) as embedder:
        expected = embedder.embed_texts(texts)
    for got, want in zip(vectors, expected.tolist(), strict=True):
        assert max(abs(a - b) for a, b in zip(got, want, strict=True)) < 1e-4
    assert all(abs(math.sqrt(sum(x * x for x in v)) - 1.0) < 1e-3 for v in vectors)

    def cosine(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.2


# --- many clients, one queue ------------------------------------------------------------------------------------


def test_eight_concurrent_clients_are_all_answered_in_order(server: ApiServer) -> None:
    wait_idle(server)
    results: dict[int, tuple[str, float]] = {}
    errors: list[BaseException] = []

    def ask(n: int) -> None:
        try:
            with openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=300) as api:
                reply = api.chat.completions.create(
                    model="x",
                    messages=[{"role": "user", "content": f"Say something, client {n}."}],
                    max_tokens=8,
                    extra_body={"grammar": f'root ::= "client {n} says " [a-z]{{2,6}}'},
                    **GREEDY,
                )
            results[n] = (reply.choices[0].message.content or "", time.monotonic())
        except BaseException as exc:
            errors.append(exc)

    threads = []
    base = server.scheduler.submitted
    for n in range(8):
        thread = threading.Thread(target=ask, args=(n,))
        thread.start()
        threads.append(thread)
        # The next client connects only once this one is in the queue, so arrival order is known.
        deadline = time.monotonic() + 60
        while server.scheduler.submitted < base + n + 1 and not errors:
            assert time.monotonic() < deadline, "a request never reached the queue"
            time.sleep(0.005)
    for thread in threads:
        thread.join(300)
    assert not errors, errors
    assert sorted(results) == list(range(8))  # none lost
    for n, (text, _) in results.items():
        assert text.startswith(f"client {n} says "), (n, text)  # each got its own answer
    finished_order = sorted(results, key=lambda n: results[n][1])
    assert finished_order == list(range(8))  # served one at a time, first come first served


def test_a_client_that_disconnects_mid_stream_stops_the_generation(server: ApiServer) -> None:
    wait_idle(server)
    body = {"messages": [{"role": "user", "content": "Write a long story about a dragon."}], "max_tokens": 500}
    with (
        httpx.Client(timeout=120) as http,
        http.stream("POST", f"{server.url}/chat/completions", json={**body, "stream": True}) as response,
    ):
        assert response.status_code == 200
        seen = 0
        for line in response.iter_lines():
            if '"content":"' in line and '"content":""' not in line:
                seen += 1
            if seen == 3:
                break
        assert server.scheduler.activity.running == 1
    # 500 tokens would take minutes on this CPU; the cancel lands within a token, so the queue is free at once.
    wait_idle(server, timeout=30)
    reply = httpx.post(
        f"{server.url}/chat/completions", json={**body, "max_tokens": 2}, timeout=120
    ).json()  # and the next request is served
    assert reply["usage"]["completion_tokens"] == 2


# --- bad input --------------------------------------------------------------------------------------------------

MESSAGES = [{"role": "user", "content": "Hi"}]
BAD_REQUESTS: list[tuple[str, Any, str]] = [
    ("malformed JSON", b'{"messages": [', "not valid JSON"),
    ("not an object", b"[1, 2]", "must be a JSON object"),
    ("empty body", b"", "empty"),
    ("no messages", {"model": "x"}, "'messages'"),
    ("empty messages", {"messages": []}, "'messages'"),
    ("temperature is text", {"messages": MESSAGES, "temperature": "hot"}, "'temperature'"),
    ("temperature too high", {"messages": MESSAGES, "temperature": 9}, "'temperature'"),
    ("max_tokens is text", {"messages": MESSAGES, "max_tokens": "10"}, "'max_tokens'"),
    ("max_tokens over the limit", {"messages": MESSAGES, "max_tokens": 100_000}, "at most 512"),
    ("stream is not a bool", {"messages": MESSAGES, "stream": "yes"}, "'stream'"),
    ("tools", {"messages": MESSAGES, "tools": [{"type": "function", "function": {"name": "f"}}]}, "Tool calls"),
    ("n > 1", {"messages": MESSAGES, "n": 2}, "one choice"),
    (
        "an image",
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]},
        "Images are not supported",
    ),
    ("a tool message", {"messages": [{"role": "tool", "content": "x"}]}, "Unsupported role"),
    ("five stop strings", {"messages": MESSAGES, "stop": ["a", "b", "c", "d", "e"]}, "stop strings"),
    ("json mode", {"messages": MESSAGES, "response_format": {"type": "json_object"}}, "grammar"),
    ("message content is a number", {"messages": [{"role": "user", "content": 5}]}, "content"),
]


@pytest.mark.parametrize(("case", "body", "says"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_requests_get_a_400_with_a_json_error(server: ApiServer, case: str, body: Any, says: str) -> None:
    kwargs: dict[str, Any] = {"content": body} if isinstance(body, bytes) else {"json": body}
    response = httpx.post(f"{server.url}/chat/completions", timeout=30, **kwargs)
    assert response.status_code == 400, (case, response.text)
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and says in error["message"], error


def test_bad_embedding_requests(server: ApiServer) -> None:
    for body, says in (({"input": [1, 2, 3]}, "'input"), ({"input": []}, "must not be empty")):
        response = httpx.post(f"{server.url}/embeddings", json=body, timeout=30)
        assert response.status_code == 400 and says in response.json()["error"]["message"], response.text


def test_a_body_over_the_limit_gets_413(server: ApiServer) -> None:
    big = {"messages": [{"role": "user", "content": "x" * 70_000}]}
    response = httpx.post(f"{server.url}/chat/completions", json=big, timeout=30)
    assert response.status_code == 413 and "65,536 bytes" in response.json()["error"]["message"]


def test_the_openai_client_sees_the_errors_as_its_own_exceptions(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="one choice"):
        client.chat.completions.create(model="x", messages=[{"role": "user", "content": "Hi"}], n=2)


def test_an_api_key_is_required_when_set(backend: LlamaCppBackend) -> None:
    api = ApiServer(backend, port=0, options=ServerOptions(api_key="s3cret-key"))
    api.start()
    try:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-key"}):
            response = httpx.get(f"{api.url}/models", headers=headers, timeout=30)
            assert response.status_code == 401, headers
            assert response.json()["error"]["type"] == "authentication_error"
        response = httpx.post(f"{api.url}/chat/completions", json={"messages": MESSAGES}, timeout=30)
        assert response.status_code == 401  # checked before anything reaches the model
        with openai.OpenAI(base_url=api.url, api_key="s3cret-key", max_retries=0) as good:
            assert [m.id for m in good.models.list()] == ["gemma-3-270m-q4_k_m"]
    finally:
        api.close()


def test_binding_beyond_this_computer_needs_a_key(backend: LlamaCppBackend) -> None:
    with pytest.raises(ServerConfigError, match="API key"):
        ApiServer(backend, host="0.0.0.0", port=0)


def test_a_full_queue_gets_503_with_retry_after(backend: LlamaCppBackend) -> None:
    api = ApiServer(backend, port=0, max_waiting=0, options=ServerOptions(retry_after_s=7))
    api.start()
    try:
        response = httpx.post(f"{api.url}/chat/completions", json={"messages": MESSAGES}, timeout=30)
        assert response.status_code == 503 and response.headers["retry-after"] == "7"
        assert "waiting" in response.json()["error"]["message"]
    finally:
        api.close()


def test_a_request_that_waits_too_long_gets_503_with_retry_after(backend: LlamaCppBackend) -> None:
    api = ApiServer(backend, port=0, max_wait_s=0.5)
    api.start()
    long_body = {"messages": [{"role": "user", "content": "Write a long story."}], "max_tokens": 500, "stream": True}
    try:
        with (
            httpx.Client(timeout=120) as http,
            http.stream("POST", f"{api.url}/chat/completions", json=long_body) as first,
        ):
            assert first.status_code == 200
            lines = first.iter_lines()  # kept: dropping the iterator would close the response
            next(lines)  # the first request now holds the model
            started = time.monotonic()
            second = httpx.post(f"{api.url}/chat/completions", json={"messages": MESSAGES}, timeout=30)
            assert second.status_code == 503 and second.headers["retry-after"] == "10"
            assert "waited more than 0.5 s" in second.json()["error"]["message"]
            assert time.monotonic() - started < 20
        wait_idle(api, timeout=30)  # the first one disconnected: its generation stopped too
    finally:
        api.close()


def test_no_model_loaded_is_503() -> None:
    api = ApiServer(LlamaCppBackend(), port=0)
    api.start()
    try:
        response = httpx.post(f"{api.url}/chat/completions", json={"messages": MESSAGES}, timeout=30)
        assert response.status_code == 503 and "No model is loaded" in response.json()["error"]["message"]
        assert httpx.get(f"{api.url}/models", timeout=30).json() == {"object": "list", "data": []}
    finally:
        api.close()


# --- enclave serve, as a user runs it ---------------------------------------------------------------------------


def test_enclave_serve_streams_sse_to_curl_and_stops_cleanly(gemma_path: Path, tmp_path: Path) -> None:
    """The command line's server: llama.cpp in an engine host process, ``curl -N`` reading the SSE stream, Ctrl+C."""
    import json
    import os
    import re
    import signal
    import subprocess

    from engine_host_helpers import child_pids

    before = child_pids()
    log = tmp_path / "serve.log"
    with log.open("wb") as err:
        serve = subprocess.Popen(
            [sys.executable, "-m", "enclave", "serve", "--model", str(gemma_path), "--port", "0", "--ctx", "1024"],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        deadline = time.monotonic() + 120
        while not (match := re.search(r"at (http://127\.0\.0\.1:\d+/v1)", log.read_text())):
            assert serve.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        url = match.group(1)
        body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 6, "stream": True, **GREEDY}
        curl = subprocess.run(
            ["curl", "-sSN", f"{url}/chat/completions", "-H", "Content-Type: application/json", "-d", json.dumps(body)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert curl.returncode == 0, curl.stderr
        events = [block for block in curl.stdout.split("\n\n") if block.strip()]
        assert all(e.startswith("data: ") for e in events), curl.stdout
        assert events[-1] == "data: [DONE]"
        chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
        assert chunks[-1]["choices"][0]["finish_reason"] == "length"
        assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks).strip()
        hosts = children_of(serve.pid)
        assert hosts  # the model runs in an engine host process, not in the server's
    finally:
        serve.send_signal(signal.SIGINT)
        try:
            code = serve.wait(timeout=60)
        finally:
            serve.kill()
    assert code == 0, log.read_text()
    deadline = time.monotonic() + 10
    while child_pids() - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not child_pids() - before, "a process was left behind"
    assert not [pid for pid in hosts if Path(f"/proc/{pid}").exists()], "the engine host was left behind"


def children_of(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rfind(")") + 2 :].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def test_enclave_serve_refuses_an_open_address_without_a_key(gemma_path: Path) -> None:
    import subprocess

    result = subprocess.run(
        [sys.executable, "-m", "enclave", "serve", "--model", str(gemma_path), "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "API key" in result.stderr

"""The local API server against raw llama-cpp-python and llama-cpp-python's own server, in the same run.

    python bench/bench_api.py [--model PATH] [--tokens 128] [--repeat 5] [--threads 2] [--ctx 2048]
                              [--engine isolated|thread]

The peer needs llama-cpp-python's server extras, which Enclave itself does not use:
``pip install fastapi sse-starlette starlette-context pydantic-settings`` (what ``llama-cpp-python[server]`` adds).

Three sides, each holding exactly one model in a process of its own (as ``enclave serve`` does), all started once and
warmed the same way (one short request) before the timed runs; the order rotates every run:
- **api**: ``enclave serve`` (``--engine isolated``, the default: llama.cpp in the engine host process, as headless
  ``serve`` runs; ``thread``: ``ENCLAVE_ENGINE_IN_PROCESS=1``), read by this process as an SSE stream over HTTP;
- **peer**: ``python -m llama_cpp.server`` with the same model, context, threads and batch, read the same way;
- **raw**: plain ``llama_cpp.Llama`` + ``generate`` + detokenize on the prompt Enclave renders, in a child process.

One greedy reply of ``--tokens`` tokens to the same question per run and side. Reported per side as min / median /
max over the runs: decode tokens/s (first to last token, as the client receives them), time to first token or byte
of content (request sent → first content chunk; raw: generate() called → first token), and the per-run ratio
api ÷ raw and peer ÷ raw of decode tokens/s. Per-request overhead: the median time of ``GET /v1/models`` (HTTP only)
and of a one-token reply to a prompt already in the KV cache, on both servers.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import dist_version, load_average, ms, print_header, spread

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

QUESTION = "Write a detailed essay about the history of the printing press and its effect on Europe."
WARMUP = "Unrelated."

RAW_CHILD = r"""
import json, sys, time
import llama_cpp
from enclave.engine.chat_format import select_chat_format
from enclave.engine.llama_backend import _token_text
from enclave.engine.types import ChatMessage

model, n_ctx, threads, n_tokens = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
llm = llama_cpp.Llama(model_path=model, n_ctx=n_ctx, n_batch=512, n_ubatch=512, n_threads=threads,
                      n_threads_batch=threads, flash_attn=True, swa_full=True, verbose=False)
meta = dict(llm.metadata)
fmt = select_chat_format(architecture=meta.get("general.architecture", ""), model_name=meta.get("general.name", ""),
                         template=meta.get("tokenizer.chat_template"),
                         bos_token=_token_text(llm._model, llm._model.token_bos()),
                         eos_token=_token_text(llm._model, llm._model.token_eos()))

def prompt(text):
    tokens = llm.tokenize(fmt.render([ChatMessage("user", text)]).encode(), add_bos=False, special=True)
    bos = llm._model.token_bos()
    return ([bos] if llm._model.add_bos_token() and tokens[:1] != [bos] else []) + list(tokens)

def reply(text, count):
    llm.reset()
    started = time.perf_counter()
    first = None
    out = []
    for token in llm.generate(prompt(text), top_k=1, top_p=1.0, min_p=0.0, temp=0.0, reset=True):
        out.append(llm.detokenize([token]))
        now = time.perf_counter()
        if first is None:
            first = now
        if len(out) >= count:
            break
    return {"tokens": len(out), "ttft": first - started, "decode": (now - first), "total": now - started}

reply(WARMUP, 4)
print("ready", flush=True)
for line in sys.stdin:
    print(json.dumps(reply(QUESTION, n_tokens)), flush=True)
""".replace("WARMUP", repr(WARMUP)).replace("QUESTION", repr(QUESTION))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, process: subprocess.Popen[Any], timeout: float = 180) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


def stream_reply(url: str, text: str, tokens: int, *, warmup: bool = False) -> dict[str, float]:
    """One streamed greedy reply; times as this client sees them."""
    import httpx

    body = {
        "model": "m",
        "messages": [{"role": "user", "content": text}],
        "max_tokens": tokens,
        "temperature": 0.0,
        "top_p": 1.0,
        "stream": True,
    }
    started = time.perf_counter()
    first = last = None
    pieces = 0
    with httpx.stream("POST", f"{url}/chat/completions", json=body, timeout=600) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            delta = chunk["choices"][0]["delta"] if chunk.get("choices") else {}
            if delta.get("content") or delta.get("reasoning_content"):
                last = time.perf_counter()
                first = first or last
                pieces += 1
    if warmup:
        return {}
    if first is None or last is None:
        raise RuntimeError(f"no text streamed from {url}")
    return {"pieces": pieces, "ttft": first - started, "decode_span": last - first, "total": last - started}


def overhead(url: str, runs: int = 20) -> tuple[float, float]:
    import httpx

    models, one = [], []
    with httpx.Client(timeout=600) as http:
        for _ in range(runs):
            t = time.perf_counter()
            http.get(f"{url}/models").raise_for_status()
            models.append(time.perf_counter() - t)
        body = {"messages": [{"role": "user", "content": WARMUP}], "max_tokens": 1, "temperature": 0.0}
        http.post(f"{url}/chat/completions", json=body).raise_for_status()  # now cached
        for _ in range(runs // 2):
            t = time.perf_counter()
            http.post(f"{url}/chat/completions", json=body).raise_for_status()
            one.append(time.perf_counter() - t)
    return spread(models)[1], spread(one)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ctx", type=int, default=2048)
    parser.add_argument("--engine", choices=("isolated", "thread"), default="isolated")
    args = parser.parse_args()
    try:
        import llama_cpp.server.app  # noqa: F401  (the peer's dependencies, checked before anything starts)
    except ImportError as exc:
        sys.exit(
            f"the peer (python -m llama_cpp.server) cannot start: {exc}.\n"
            "Install its extras: pip install fastapi sse-starlette starlette-context pydantic-settings"
        )
    if args.model is None:
        from model_cache import gemma_model_path

        args.model = gemma_model_path()
    print_header(
        [
            f"model:   {args.model.name}; {args.tokens} tokens, greedy; ctx {args.ctx}; {args.threads} threads; "
            f"engine {args.engine}",
            f"libs:    llama-cpp-python {dist_version('llama_cpp_python')}, uvicorn {dist_version('uvicorn')}, "
            f"starlette {dist_version('starlette')}",
        ]
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "app"), "PYTHONUNBUFFERED": "1"}
    home = tempfile.mkdtemp(prefix="enclave-bench-")
    api_env = {**env, "ENCLAVE_HOME": home}
    if args.engine == "thread":
        api_env["ENCLAVE_ENGINE_IN_PROCESS"] = "1"
    api_log = Path(home) / "serve.log"
    api_cmd = [sys.executable, "-m", "enclave", "serve", "--model", str(args.model), "--port", "0"]
    api_cmd += ["--ctx", str(args.ctx), "--threads", str(args.threads)]
    peer_port = free_port()
    peer_cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(args.model), "--n_ctx", str(args.ctx)]
    peer_cmd += ["--n_threads", str(args.threads), "--n_threads_batch", str(args.threads), "--n_batch", "512"]
    peer_cmd += ["--n_ubatch", "512", "--flash_attn", "true", "--port", str(peer_port), "--verbose", "false"]
    peer_cmd += ["--chat_format", "gemma"] if "gemma" in args.model.name.lower() else []  # its default is llama-2
    raw_cmd = [sys.executable, "-c", RAW_CHILD, str(args.model), str(args.ctx), str(args.threads), str(args.tokens)]
    print(f"api:     {shlex.join(api_cmd)}")
    print(f"peer:    {shlex.join(peer_cmd)}")
    processes: list[subprocess.Popen[Any]] = []
    try:
        with api_log.open("wb") as log:
            api = subprocess.Popen(api_cmd, env=api_env, stdout=subprocess.DEVNULL, stderr=log)
        processes.append(api)
        peer = subprocess.Popen(peer_cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        processes.append(peer)
        raw = subprocess.Popen(raw_cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        processes.append(raw)
        deadline = time.monotonic() + 180
        while not (found := re.search(r"at (http://\S+/v1)", api_log.read_text())):
            if api.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"enclave serve did not start:\n{api_log.read_text()}")
            time.sleep(0.1)
        api_url, peer_url = found.group(1), f"http://127.0.0.1:{peer_port}/v1"
        wait_http(peer_url, peer)
        assert raw.stdout is not None and raw.stdin is not None
        assert raw.stdout.readline().strip() == "ready"
        for url in (api_url, peer_url):
            stream_reply(url, WARMUP, 4, warmup=True)

        results: dict[str, list[dict[str, float]]] = {"api": [], "peer": [], "raw": []}
        sides = ["api", "peer", "raw"]
        for run in range(args.repeat):
            order = sides[run % 3 :] + sides[: run % 3]
            for side in order:
                if side == "raw":
                    raw.stdin.write("run\n")
                    raw.stdin.flush()
                    r = json.loads(raw.stdout.readline())
                    results["raw"].append({"rate": (r["tokens"] - 1) / r["decode"], "ttft": r["ttft"]})
                else:
                    r = stream_reply(api_url if side == "api" else peer_url, QUESTION, args.tokens)
                    # Pieces after the first, over the time between first and last: tokens/s as the client sees them.
                    results[side].append({"rate": (r["pieces"] - 1) / r["decode_span"], "ttft": r["ttft"]})
                    if r["pieces"] != args.tokens:
                        print(f"note: {side} streamed {r['pieces']} pieces for {args.tokens} tokens")
            line = ", ".join(f"{s} {results[s][-1]['rate']:.1f} tok/s" for s in sides)
            print(f"run {run + 1} ({' → '.join(order)}): {line}")

        def fmt(values: list[float], digits: int = 3) -> str:
            lo, mid, hi = spread(values)
            return f"{lo:.{digits}f} / **{mid:.{digits}f}** / {hi:.{digits}f}"

        print(f"\nload average at the end: {load_average()}")
        print("| What | min / median / max |\n| --- | --- |")
        for side in sides:
            print(f"| decode tok/s, {side} | {fmt([r['rate'] for r in results[side]], 1)} |")
        for side in ("api", "peer"):
            ratios = [a["rate"] / b["rate"] for a, b in zip(results[side], results["raw"], strict=True)]
            print(f"| {side} ÷ raw, decode tok/s | {fmt(ratios)} |")
        for side in sides:
            ttft = [r["ttft"] for r in results[side]]
            lo, mid, hi = spread(ttft)
            print(f"| time to first token, {side} (ms) | {ms(lo)} / **{ms(mid)}** / {ms(hi)} |")
        for side, url in (("api", api_url), ("peer", peer_url)):
            models, one = overhead(url)
            print(f"| {side}: GET /v1/models / one-token reply, cached prompt (median ms) | {ms(models)} / {ms(one)} |")
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


if __name__ == "__main__":
    main()

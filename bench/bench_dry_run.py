"""The plan (enclave.models.fit) vs llama.cpp's dry run vs the real allocation, per device, on a real offload device.

    .venv/bin/python bench/bench_dry_run.py

The offload device is llama.cpp's RPC backend on 127.0.0.1 (tests/fixtures/rpc_device.py: a CPU-backed server in
one process, the engine loading onto it in another), so layers, KV cache and compute buffers land on "RPC0" exactly
as on a GPU. Two loads, each under a pretend GPU memory limit that forces the interesting placement:

* Gemma 3 270M partially offloaded (the output layer and about four blocks on the device);
* the tiny deepseek2 test model (tests/fixtures/deepseek2_gguf.py) with its routed experts in RAM.

For each: the planner's bytes on the device (weights, KV cache, compute buffers), llama.cpp's dry run of that plan
(``enclave.engine.dry_run``, asked by the engine before the load), and what the real load logged; and the dry run's
time. Prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
sys.path.insert(0, str(ROOT / "app"))

import deepseek2_gguf  # noqa: E402

from enclave.models.fit import (  # noqa: E402
    GPU_RESERVE,
    FitOptions,
    compute_buffer_bytes,
    facts_from_headers,
    kv_cache_bytes,
)
from enclave.models.gguf import read_gguf_header  # noqa: E402
from enclave.models.placement import DEFAULT_BATCH  # noqa: E402
from model_cache import gemma_model_path  # noqa: E402

RPC = ROOT / "tests" / "fixtures" / "rpc_device.py"
MIB = 1 << 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def limits() -> list[tuple[str, Path, int, int]]:
    gemma = gemma_model_path()
    facts = facts_from_headers([read_gguf_header(gemma)])
    ctx = 2048
    compute = compute_buffer_bytes(facts, ctx, FitOptions(context=ctx, n_ubatch=DEFAULT_BATCH["gpu"]))
    per_block = facts.layer_bytes[-1] + kv_cache_bytes(facts, ctx) // facts.block_count
    gemma_limit = GPU_RESERVE + compute + facts.output_bytes + 4 * per_block + per_block // 2
    tiny = deepseek2_gguf.cached_model_path()
    facts = facts_from_headers([read_gguf_header(tiny)])
    small_ctx = 256
    options = FitOptions(context=small_ctx, n_ubatch=DEFAULT_BATCH["gpu"])
    dense = sum(lb - eb for lb, eb in zip(facts.layer_bytes, facts.expert_bytes, strict=True))
    base = dense + facts.output_bytes + facts.other_bytes + kv_cache_bytes(facts, small_ctx, options)
    tiny_limit = GPU_RESERVE + compute_buffer_bytes(facts, small_ctx, options) + base
    tiny_limit += min(e for e in facts.expert_bytes if e) // 2
    return [
        ("Gemma 3 270M, 4 of 18 blocks + output on the device", gemma, ctx, gemma_limit),
        ("tiny deepseek2, routed experts in RAM", tiny, small_ctx, tiny_limit),
    ]


def main() -> int:
    endpoint = f"127.0.0.1:{free_port()}"
    server = subprocess.Popen([sys.executable, str(RPC), "serve", endpoint], stderr=subprocess.DEVNULL)
    try:
        host, port = endpoint.split(":")
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection((host, int(port)), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        print(
            "| model and placement | part | plan (MiB) | llama.cpp dry run (MiB) | real load (MiB) | plan ÷ real "
            "| dry ÷ real |"
        )
        print("|---|---|---|---|---|---|---|")
        timings = []
        for label, path, ctx, limit in limits():
            request = {"path": str(path), "n_ctx": ctx, "gpu_memory_limit": limit}
            out = subprocess.run(
                [sys.executable, str(RPC), "load", endpoint, json.dumps(request)],
                capture_output=True,
                text=True,
                timeout=600,
                check=True,
            )
            result = json.loads(out.stdout.strip().splitlines()[-1])
            dry = result["dry_run"]["RPC0"]
            rows = [
                ("weights", result["device_weight_bytes"], dry[0], result["device_model_mib"] * MIB),
                ("KV cache", result["device_kv_bytes"], dry[1], result["device_kv_mib"] * MIB),
                ("compute", result["planned_compute_bytes"], dry[2], result["device_compute_mib"] * MIB),
            ]
            for part, plan, dry_bytes, real in rows:
                print(
                    f"| {label} ({result['placement']}) | {part} | {plan / MIB:,.1f} | {dry_bytes / MIB:,.1f} | "
                    f"{real / MIB:,.1f} | {plan / real:.3f} | {dry_bytes / real:.3f} |"
                )
            timings.append(f"{label}: {result['dry_run_seconds']:.2f} s")
        print()
        print("dry run time (in the loading process, llama.cpp already initialised): " + "; ".join(timings))
    finally:
        server.kill()
        server.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The load plan is what llama.cpp does: checked on a real offload device (llama.cpp's RPC backend on 127.0.0.1,
CPU-backed, in its own process), with the real Gemma model and a tiny random-weight DeepSeek (deepseek2) model."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from enclave.engine.llama_backend import LlamaCppBackend
from enclave.engine.types import LoadRequest, ModelLoadError
from enclave.models.fit import GPU_RESERVE, FitOptions, compute_buffer_bytes, facts_from_headers, kv_cache_bytes
from enclave.models.gguf import read_gguf_header
from enclave.models.hardware import GPUInfo, Hardware
from enclave.models.placement import (
    DEFAULT_BATCH,
    DEFAULT_CONTEXT_CAP,
    PlanChoices,
    PlanError,
    plan_load,
)

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import deepseek2_gguf

RPC_SCRIPT = Path(__file__).parent / "fixtures" / "rpc_device.py"
GIB = 1 << 30
MIB = 1 << 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def rpc_endpoint() -> Iterator[str]:
    endpoint = f"127.0.0.1:{_free_port()}"
    server = subprocess.Popen([sys.executable, str(RPC_SCRIPT), "serve", endpoint], stderr=subprocess.PIPE)
    host, port = endpoint.split(":")
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                socket.create_connection((host, int(port)), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the RPC server did not start: {server.stderr.read()!r}") from None
                time.sleep(0.1)
        yield endpoint
    finally:
        server.kill()
        server.wait()
        assert server.stderr is not None
        server.stderr.close()


def load_on_rpc(endpoint: str, **request: object) -> dict[str, object]:
    """Register the RPC device and load through the engine in a child process; llama.cpp's own figures back."""
    out = subprocess.run(
        [sys.executable, str(RPC_SCRIPT), "load", endpoint, json.dumps(request)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def cpu_hardware(ram_gib: float = 16) -> Hardware:
    ram = int(ram_gib * GIB)
    return Hardware(ram_total=ram, ram_available=ram, cpu_cores=2, cpu_threads=2)


def test_gemma_partially_offloaded_lands_where_the_plan_said(gemma_path: Path, rpc_endpoint: str) -> None:
    facts = facts_from_headers([read_gguf_header(gemma_path)])
    ctx = 2048
    # A pretend GPU budget: the device's reserve and compute buffer, the output layer and about four blocks.
    compute = compute_buffer_bytes(facts, ctx, FitOptions(context=ctx, n_ubatch=DEFAULT_BATCH["gpu"]))
    per_block = facts.layer_bytes[-1] + kv_cache_bytes(facts, ctx) // facts.block_count
    limit = GPU_RESERVE + compute + facts.output_bytes + 4 * per_block + per_block // 2
    result = load_on_rpc(rpc_endpoint, path=str(gemma_path), n_ctx=ctx, gpu_memory_limit=limit)
    assert result["devices"] == ["RPC0"]
    assert result["n_gpu_layers"] == 5  # the output layer and the last 4 blocks
    assert result["offloaded"] == [5, facts.block_count + 1]  # llama.cpp: "offloaded 5/19 layers to GPU"
    assert str(result["placement"]).startswith("GPU: 4 of 18 layers · 2,048-token context · f16 KV")
    planned_weights = int(result["device_weight_bytes"])  # type: ignore[call-overload]
    planned_kv = int(result["device_kv_bytes"])  # type: ignore[call-overload]
    device_weights = float(result["device_model_mib"]) * MIB  # type: ignore[arg-type]
    device_kv = float(result["device_kv_mib"]) * MIB  # type: ignore[arg-type]
    assert abs(device_weights - planned_weights) <= 0.10 * planned_weights, (device_weights, planned_weights)
    assert abs(device_kv - planned_kv) <= 0.10 * planned_kv, (device_kv, planned_kv)
    assert result["answer"], "nothing was generated on the offload device"
    # llama.cpp's dry run, asked before the load, said what the load then allocated on the device
    dry = result["dry_run"]
    assert isinstance(dry, dict) and set(dry) >= {"RPC0", "CPU"}, dry
    dry_weights, dry_kv, dry_compute = dry["RPC0"]
    assert abs(dry_weights - device_weights) <= 0.01 * device_weights, (dry_weights, device_weights)
    assert abs(dry_kv - device_kv) <= 0.01 * device_kv, (dry_kv, device_kv)
    assert dry_compute > 0


def test_when_llama_cpp_needs_more_than_the_device_has_fewer_layers_are_offloaded(
    gemma_path: Path, rpc_endpoint: str
) -> None:
    """The plan is checked by llama.cpp's own dry run before the load; llama.cpp wins when they disagree."""
    facts = facts_from_headers([read_gguf_header(gemma_path)])
    ctx = 2048
    compute = compute_buffer_bytes(facts, ctx, FitOptions(context=ctx, n_ubatch=DEFAULT_BATCH["gpu"]))
    per_block = facts.layer_bytes[-1] + kv_cache_bytes(facts, ctx) // facts.block_count
    limit = GPU_RESERVE + compute + facts.output_bytes + 2 * per_block  # about two blocks; the plan asks for all
    request = json.dumps({"path": str(gemma_path), "n_ctx": ctx, "gpu_memory_limit": limit})
    out = subprocess.run(
        [sys.executable, str(RPC_SCRIPT), "replan", rpc_endpoint, request],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["planned_layers"] == facts.block_count + 1  # planned for the whole (RAM-backed) device
    assert 0 < result["checked_layers"] < result["planned_layers"], result
    weights, kv, compute_bytes = result["dry_run"]["RPC0"]
    assert weights + kv + compute_bytes <= limit - GPU_RESERVE, result  # what llama.cpp says now fits
    assert any("dry run" in note for note in result["notes"]), result["notes"]


def test_moe_experts_stay_in_ram_and_the_rest_goes_to_the_device(tmp_path: Path, rpc_endpoint: str) -> None:
    model = deepseek2_gguf.cached_model_path()
    facts = facts_from_headers([read_gguf_header(model)])
    assert facts.is_moe and facts.mla
    ctx = 256
    options = FitOptions(context=ctx, n_ubatch=DEFAULT_BATCH["gpu"])
    dense = sum(lb - eb for lb, eb in zip(facts.layer_bytes, facts.expert_bytes, strict=True))
    base = dense + facts.output_bytes + facts.other_bytes + kv_cache_bytes(facts, ctx, options)
    # Room for everything except the routed experts.
    limit = (
        GPU_RESERVE + compute_buffer_bytes(facts, ctx, options) + base + min(e for e in facts.expert_bytes if e) // 2
    )
    result = load_on_rpc(rpc_endpoint, path=str(model), n_ctx=ctx, gpu_memory_limit=limit)
    assert "experts in RAM" in str(result["placement"])
    assert result["offloaded"] == [facts.block_count + 1, facts.block_count + 1]  # every layer on the device...
    moe_blocks = [i for i, e in enumerate(facts.expert_bytes) if e]
    expected = {f"blk.{i}.ffn_{kind}_exps.weight" for i in moe_blocks for kind in ("gate", "up", "down")}
    assert set(result["overridden"]) == expected  # ...but the routed experts, which llama.cpp kept in RAM
    planned = int(result["device_weight_bytes"])  # type: ignore[call-overload]
    on_device = float(result["device_model_mib"]) * MIB  # type: ignore[arg-type]
    assert abs(on_device - planned) <= 0.10 * planned, (on_device, planned)


def test_auto_context_for_a_reasoning_model_is_the_largest_that_fits(tmp_path: Path) -> None:
    model = deepseek2_gguf.cached_model_path()  # named "… DeepSeek-R1 …": a reasoning model
    plan = plan_load(model, cpu_hardware())
    header = read_gguf_header(model)
    assert plan.reasoning
    assert plan.n_ctx == header.context_length  # trained context, below the cap: all of it
    assert plan.user_fields == frozenset()
    assert plan.n_gpu_layers == 0 and plan.summary().startswith("CPU · ")


def test_a_non_reasoning_model_gets_a_capped_auto_context(gemma_path: Path) -> None:
    plan = plan_load(gemma_path, cpu_hardware())
    assert not plan.reasoning
    assert plan.n_ctx == DEFAULT_CONTEXT_CAP  # trained for 32,768; Auto stops at the cap for chat models
    assert plan.summary() == f"CPU · {DEFAULT_CONTEXT_CAP:,}-token context · f16 KV"


def test_all_layers_asked_for_on_a_computer_without_a_gpu_is_still_said_to_run_on_the_cpu(gemma_path: Path) -> None:
    plan = plan_load(gemma_path, cpu_hardware(), PlanChoices(gpu_layers=-1, context_length=2048))
    assert plan.n_gpu_layers == -1  # what the user asked llama.cpp for
    assert plan.summary() == "CPU · 2,048-token context · f16 KV (yours: GPU layers, context)"


def test_the_users_values_win_and_are_shown_as_theirs(gemma_path: Path) -> None:
    plan = plan_load(gemma_path, cpu_hardware(), PlanChoices(context_length=3000, kv_cache_type="q8_0", batch=256))
    assert (plan.n_ctx, plan.kv_cache_type, plan.n_batch) == (3000, "q8_0", 256)
    assert plan.summary() == "CPU · 3,000-token context · q8_0 KV (yours: KV type, batch, context)"


def test_tight_memory_takes_a_quantized_kv_cache_before_a_short_context(gemma_path: Path, tmp_path: Path) -> None:
    # Gemma under a DeepSeek-R1 name is planned as a reasoning model; with little RAM, f16 KV would cap the context.
    r1 = tmp_path / "DeepSeek-R1-Distill-Test-Q4_K_M.gguf"
    r1.symlink_to(gemma_path)
    facts = facts_from_headers([read_gguf_header(gemma_path)])
    f16_32k = kv_cache_bytes(facts, 32768, FitOptions(context=32768))
    q8_32k = kv_cache_bytes(facts, 32768, FitOptions(context=32768, type_k="q8_0", type_v="q8_0"))
    needed = sum(facts.layer_bytes) + facts.token_embd_bytes + compute_buffer_bytes(facts, 32768) + GIB
    ram = needed + (q8_32k + f16_32k) // 2 + 200 * MIB  # room for q8_0 at 32k, not for f16
    plan = plan_load(r1, cpu_hardware(ram / GIB))
    assert plan.reasoning
    assert plan.n_ctx == 32768 and plan.kv_cache_type == "q8_0", plan.summary()
    assert any("q8_0 KV cache makes room" in note for note in plan.notes)


def test_a_plan_that_cannot_fit_says_why_before_loading(gemma_path: Path) -> None:
    with pytest.raises(PlanError, match="needs about"):
        plan_load(gemma_path, cpu_hardware(0.5))
    backend = LlamaCppBackend()
    with pytest.raises(ModelLoadError, match="can't be loaded on this computer"):
        backend.load(LoadRequest(path=str(gemma_path), n_ctx=10_000_000))
    assert backend.model is None


def test_pretend_gpu_plan_puts_experts_in_ram_by_pattern(tmp_path: Path) -> None:
    model = deepseek2_gguf.cached_model_path()
    facts = facts_from_headers([read_gguf_header(model)])
    ctx = 256
    options = FitOptions(context=ctx, n_ubatch=DEFAULT_BATCH["gpu"])
    dense = sum(lb - eb for lb, eb in zip(facts.layer_bytes, facts.expert_bytes, strict=True))
    base = dense + facts.output_bytes + facts.other_bytes + kv_cache_bytes(facts, ctx, options)
    vram = GPU_RESERVE + compute_buffer_bytes(facts, ctx, options) + base + 1000
    gpu = GPUInfo(name="Pretend GPU", backend="vulkan", total_bytes=vram, free_bytes=vram, bandwidth_gbs=300)
    plan = plan_load(model, replace(cpu_hardware(), gpus=(gpu,)), PlanChoices(context_length=ctx))
    assert plan.experts_in_ram
    assert plan.tensor_overrides == (r".ffn_.*_exps.=CPU",)
    assert plan.summary() == "GPU: 3 of 3 layers · experts in RAM · 256-token context · f16 KV (yours: context)"


def test_an_output_layer_too_large_for_the_device_is_planned_in_system_memory(gemma_path: Path) -> None:
    # Vulkan devices refuse a matrix product over their largest storage buffer (lavapipe: 128 MiB), and llama.cpp then
    # keeps the weight in host memory; Gemma's tied output is ~170 MiB and its [vocabulary, 512] product 512 MiB.
    facts = facts_from_headers([read_gguf_header(gemma_path)])
    gpu = GPUInfo(
        "small-buffer GPU", "vulkan", 2 * GIB, 2 * GIB, bandwidth_gbs=100, device="Vulkan0", max_tensor_bytes=128 * MIB
    )
    hardware = replace(cpu_hardware(), gpus=(gpu,), gpu_offload_supported=True)
    plan = plan_load(gemma_path, hardware, PlanChoices(context_length=2048))
    assert plan.summary().startswith(f"GPU: {facts.block_count} of {facts.block_count} layers")
    assert plan.device_weight_bytes == sum(facts.layer_bytes)  # every block, not the output weight
    assert any("output layer" in note and "stays in system memory" in note for note in plan.notes)
    roomy = replace(gpu, max_tensor_bytes=None)
    full = plan_load(gemma_path, replace(hardware, gpus=(roomy,)), PlanChoices(context_length=2048))
    assert full.device_weight_bytes == sum(facts.layer_bytes) + facts.output_bytes
    assert not any("output layer" in note for note in full.notes)

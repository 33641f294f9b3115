"""The GPU path on a real Vulkan device: llama.cpp's Vulkan backend, in CI on Mesa's lavapipe (``Vulkan0``, 2 GiB).

Run by ``.ci/gpu-stage`` with a Vulkan build of llama-cpp-python and ``GGML_VK_VISIBLE_DEVICES=0`` (ggml hides
CPU-type Vulkan devices unless asked). Elsewhere every test here is skipped with the reason. Real Gemma 3 270M and
real all-MiniLM-L6-v2; the CPU reference is computed in the same build with the "CPU only" device choice. lavapipe
decodes at well under 1 token/s: generations here are a few tokens.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from enclave.docs.embedder import Embedder
from enclave.engine.isolated import IsolatedBackend
from enclave.engine.llama_backend import LlamaCppBackend
from enclave.engine.llama_runtime import Device, devices, ggml_library
from enclave.engine.types import (
    ChatMessage,
    Finished,
    GenerationControl,
    GenerationRequest,
    LoadRequest,
    ModelLoadError,
    SamplingParams,
)
from enclave.models.fit import (
    GPU_RESERVE,
    FitOptions,
    compute_buffer_bytes,
    facts_from_headers,
    kv_cache_bytes,
    output_compute_bytes,
    output_on_gpu,
)
from enclave.models.gguf import read_gguf_header
from enclave.models.hardware import Hardware, probe_hardware
from enclave.models.placement import DEFAULT_BATCH, planning_hardware

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import minilm_gguf

from engine_host_helpers import child_pids

pytestmark = pytest.mark.gpu

MIB = 1 << 20
GREEDY = SamplingParams(temperature=0.0, top_k=1, top_p=1.0, min_p=0.0)
# A prompt the small model continues with confidence. Where its top two tokens are close (a vague question without a
# chat template), the CPU's quantized dot products and the Vulkan shaders' f16/f32 ones round differently and greedy
# decoding may part after a token or two: measured here, "What is the capital of France?" parted at token 8.
QUESTION = (ChatMessage("user", "The days of the week are Monday, Tuesday,"),)
# Gemma 3 270M's f16 KV cache takes 18 KiB per token: 131,072 tokens need 2.25 GiB, more than lavapipe's 2 GiB.
TOO_BIG_CONTEXT = 131_072


def vulkan_unavailable() -> str | None:
    """Why no Vulkan device can be tested here, or None when ``Vulkan0`` exists."""
    lib = ggml_library()
    lib.ggml_backend_reg_by_name.restype = ctypes.c_void_p
    lib.ggml_backend_reg_by_name.argtypes = [ctypes.c_char_p]
    if not lib.ggml_backend_reg_by_name(b"Vulkan"):
        return "this llama.cpp build has no Vulkan backend (build it with -DGGML_VULKAN=on, as .ci/gpu-stage does)"
    if not any(d.name == "Vulkan0" for d in devices()):
        hint = "" if os.environ.get("GGML_VK_VISIBLE_DEVICES") else "; for lavapipe set GGML_VK_VISIBLE_DEVICES=0"
        return f"llama.cpp's Vulkan backend found no device (install a Vulkan driver, e.g. mesa-vulkan-drivers{hint})"
    return None


@pytest.fixture(scope="module")
def vulkan0() -> Device:
    reason = vulkan_unavailable()
    if reason:
        pytest.skip(f"no Vulkan device: {reason}")
    return next(d for d in devices() if d.name == "Vulkan0")


def buffer_mib(lines: list[str], device: str, kind: str) -> float:
    found = re.findall(rf"{device}(?:\[[^\]]*\])? {kind} buffer size =\s+([\d.]+) MiB", "\n".join(lines))
    assert found, f"llama.cpp logged no {device} {kind} buffer"
    return sum(float(f) for f in found)


def offloaded(lines: list[str]) -> tuple[int, int]:
    # The last load's: llama.cpp's dry runs before it (no_alloc) say it too.
    found = re.findall(r"offloaded (\d+)/(\d+) layers to GPU", "\n".join(lines))
    assert found, "llama.cpp did not say how many layers it offloaded"
    return int(found[-1][0]), int(found[-1][1])


def answer(backend: LlamaCppBackend, tokens: int) -> tuple[str, Finished]:
    events = list(backend.stream_chat(GenerationRequest(QUESTION, GREEDY, max_tokens=tokens), GenerationControl()))
    finished = events[-1]
    assert isinstance(finished, Finished)
    return "".join(getattr(e, "content", "") for e in events), finished


def test_the_probe_reports_the_vulkan_device_and_its_memory_and_auto_leaves_lavapipe_alone(
    vulkan0: Device, gemma_path: Path
) -> None:
    gpu = next(g for g in probe_hardware().gpus if g.device == "Vulkan0")
    assert (gpu.backend, gpu.source, gpu.name) == ("vulkan", "llama.cpp", vulkan0.description)
    assert gpu.total_bytes == vulkan0.total_bytes > 0
    if "llvmpipe" in vulkan0.description:
        assert gpu.total_bytes == 2048 * MIB  # lavapipe's device memory, as llama.cpp reports it
        assert gpu.software
        assert all(g.device != "Vulkan0" for g in planning_hardware().gpus)  # Auto never picks it...
        plan = LlamaCppBackend().plan(LoadRequest(path=str(gemma_path), n_ctx=2048))
        assert plan.summary().startswith("CPU · ")  # ...so Auto runs on the CPU
        chosen = LlamaCppBackend().plan(LoadRequest(path=str(gemma_path), n_ctx=2048, devices=("Vulkan0",)))
        assert chosen.summary().startswith("GPU: 18 of 18 layers")  # unless the user asks for it


@pytest.mark.timeout(900)  # 16 greedy tokens and two loads; lavapipe decodes at well under 1 token/s
def test_on_vulkan_the_plan_is_what_llama_cpp_allocates_and_greedy_tokens_equal_the_cpus(
    vulkan0: Device, gemma_path: Path, llama_log: list[str]
) -> None:
    backend = LlamaCppBackend()
    try:
        backend.load(LoadRequest(path=str(gemma_path), n_ctx=2048, devices=("CPU",)))
        cpu_text, _ = answer(backend, 8)
        llama_log.clear()
        info = backend.load(LoadRequest(path=str(gemma_path), n_ctx=2048, devices=("Vulkan0",)))
        plan = backend._plan
        assert plan is not None and info.placement.startswith("GPU: 18 of 18 layers · 2,048-token context")
        assert offloaded(llama_log) == (plan.block_count + 1, plan.block_count + 1)
        weights, kv = buffer_mib(llama_log, "Vulkan0", "model") * MIB, buffer_mib(llama_log, "Vulkan0", "KV") * MIB
        assert abs(weights - plan.device_weight_bytes) <= 0.10 * plan.device_weight_bytes, (weights, plan)
        assert abs(kv - plan.device_kv_bytes) <= 0.10 * plan.device_kv_bytes, (kv, plan)
        print(f"\nVulkan0 full: weights {weights / MIB:.1f} MiB (plan {plan.device_weight_bytes / MIB:.1f}), KV "
              f"{kv / MIB:.1f} MiB (plan {plan.device_kv_bytes / MIB:.1f})")  # fmt: skip
        assert plan.estimate is not None and not plan.estimate.speed_measured
        vulkan_text, finished = answer(backend, 8)
    finally:
        backend.unload()
    assert finished.stats.completion_tokens == 8
    assert vulkan_text == cpu_text and vulkan_text.strip(), (vulkan_text, cpu_text)
    # That generation calibrated the device: the next plan's speed is measured and within 2× of what it ran at.
    measured = finished.stats.completion_tokens / finished.stats.generation_seconds
    replanned = LlamaCppBackend().plan(LoadRequest(path=str(gemma_path), n_ctx=2048, devices=("Vulkan0",)))
    assert replanned.estimate is not None and replanned.estimate.speed_measured
    print(f"Vulkan0 decode: predicted {plan.estimate.tokens_per_second:.2f} tok/s before calibration, "
          f"{replanned.estimate.tokens_per_second:.2f} after; measured {measured:.2f}")  # fmt: skip
    assert measured / 2 <= replanned.estimate.tokens_per_second <= measured * 2, (replanned.estimate, measured)


def test_a_model_too_big_for_the_device_is_split_as_planned(
    vulkan0: Device, gemma_path: Path, llama_log: list[str]
) -> None:
    facts = facts_from_headers([read_gguf_header(gemma_path)])
    ctx = 2048
    # A pretend-small device: its reserve and compute buffer, the output layer and about four blocks.
    compute = compute_buffer_bytes(facts, ctx, FitOptions(context=ctx, n_ubatch=DEFAULT_BATCH["gpu"]))
    per_block = facts.layer_bytes[-1] + kv_cache_bytes(facts, ctx) // facts.block_count
    # lavapipe cannot multiply Gemma's 170 MiB output weight (over its 128 MiB storage buffers): it stays on the CPU,
    # and so do its logits in the compute buffer.
    if output_on_gpu(facts, Hardware(gpus=(vulkan0.gpu_info(),))):
        output = facts.output_bytes
    else:
        output = 0
        compute -= output_compute_bytes(facts, ctx, FitOptions(context=ctx, n_ubatch=DEFAULT_BATCH["gpu"]))
    limit = GPU_RESERVE + compute + output + 4 * per_block + per_block // 2
    backend = LlamaCppBackend()
    try:
        request = LoadRequest(path=str(gemma_path), n_ctx=ctx, devices=("Vulkan0",), gpu_memory_limit=limit)
        info = backend.load(request)
        plan = backend._plan
        assert plan is not None
        # The planner aims at 4 blocks; llama.cpp's dry run (checked before every offloading load) may take one or
        # two back: with the output layer on the CPU, the device's compute buffer is ~20 MiB where the estimate says
        # ~13 (a known under-estimate of activations, logged). What loads is the plan after that check.
        blocks = plan.n_gpu_layers - 1
        assert 1 <= blocks <= 4, plan
        assert info.placement.startswith(f"GPU: {blocks} of 18 layers · 2,048-token context")
        assert offloaded(llama_log) == (blocks + 1, facts.block_count + 1)  # the output layer and the last blocks
        weights, kv = buffer_mib(llama_log, "Vulkan0", "model") * MIB, buffer_mib(llama_log, "Vulkan0", "KV") * MIB
        assert abs(weights - plan.device_weight_bytes) <= 0.10 * plan.device_weight_bytes, (weights, plan)
        assert abs(kv - plan.device_kv_bytes) <= 0.10 * plan.device_kv_bytes, (kv, plan)
        print(f"\nVulkan0 split: weights {weights / MIB:.1f} MiB (plan {plan.device_weight_bytes / MIB:.1f}), KV "
              f"{kv / MIB:.1f} MiB (plan {plan.device_kv_bytes / MIB:.1f})")  # fmt: skip
        text, finished = answer(backend, 2)
    finally:
        backend.unload()
    assert finished.stats.completion_tokens == 2 and text.strip()


def test_embeddings_on_vulkan_match_the_cpus(vulkan0: Device, llama_log: list[str]) -> None:
    texts = ["The cat sat on the mat.", "Vulkan runs on NVIDIA, AMD and Intel GPUs.", "Paris is the capital of France."]
    path = minilm_gguf.cached_model_path()
    # The CPU reference from the same build in a process where the Vulkan backend has no device at all (ggml lists
    # lavapipe only when GGML_VK_VISIBLE_DEVICES asks for it), so no operation can run on the device.
    env = {k: v for k, v in os.environ.items() if k != "GGML_VK_VISIBLE_DEVICES"}
    script = (
        "import json, sys; from enclave.docs.embedder import Embedder;"
        "from enclave.engine.llama_runtime import devices;"
        "assert not any(d.is_gpu for d in devices()), 'a GPU device is visible';"
        "e = Embedder(sys.argv[1]); print(json.dumps(e.embed_documents(json.loads(sys.argv[2])).tolist()))"
    )
    child = subprocess.run(
        [sys.executable, "-c", script, str(path), json.dumps(texts)], capture_output=True, text=True, env=env
    )
    assert child.returncode == 0, child.stderr[-2000:]
    expected = np.asarray(json.loads(child.stdout.strip().splitlines()[-1]), dtype=np.float32)
    llama_log.clear()
    with Embedder(path, n_gpu_layers=-1) as gpu:
        got = gpu.embed_documents(texts)
    assert buffer_mib(llama_log, "Vulkan0", "model") > 0  # the weights really were on the device
    for a, b in zip(expected, got, strict=True):
        cosine = float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
        assert cosine >= 0.999 and math.isfinite(cosine), cosine


@pytest.mark.xfail(
    strict=True,
    reason="lavapipe allocated a 2.25 GiB KV cache on its 2 GiB device without failing: another way to make the "
    "device allocation fail is needed",
)
def test_the_engine_host_survives_a_failed_device_allocation(vulkan0: Device, gemma_path: Path) -> None:
    before = child_pids()
    backend = IsolatedBackend()
    try:
        # Every layer forced onto the device with a KV cache far larger than its memory: llama.cpp's allocation on
        # Vulkan0 fails (the plan alone would have kept most layers on the CPU; the user's choice wins).
        too_big = LoadRequest(path=str(gemma_path), n_ctx=TOO_BIG_CONTEXT, n_gpu_layers=-1, devices=("Vulkan0",))
        with pytest.raises(ModelLoadError, match=r"could not load .* onto Vulkan0: .*choose CPU only"):
            backend.load(too_big)
        pid = backend.host_pid
        assert pid is not None and backend.starts == 1  # the host is still the same, alive process
        info = backend.load(LoadRequest(path=str(gemma_path), n_ctx=512, devices=("CPU",)))
        assert info.placement.startswith("CPU · ") and backend.host_pid == pid
        request = GenerationRequest(QUESTION, GREEDY, max_tokens=2)
        events = list(backend.stream_chat(request, GenerationControl()))
        assert isinstance(events[-1], Finished) and events[-1].stats.completion_tokens == 2
    finally:
        backend.close()
    assert not child_pids() - before, "an engine host process was left behind"

"""Speed predictions after a measured calibration: a real generation on this computer's CPU corrects the table-based
guess, the factor is remembered per device, and the estimate says it was measured."""

from __future__ import annotations

import json
from pathlib import Path

from enclave.engine.llama_backend import LlamaCppBackend
from enclave.engine.types import (
    ChatMessage,
    Finished,
    GenerationControl,
    GenerationRequest,
    LoadRequest,
    SamplingParams,
)
from enclave.models.fit import estimate_fit, facts_from_headers
from enclave.models.gguf import read_gguf_header
from enclave.models.hardware import GIB, GPUInfo, Hardware
from enclave.models.placement import planning_hardware
from enclave.models.speed import calibrated, calibration_path, cpu_key, gpu_key, load_factors, record_generation

GREEDY = SamplingParams(temperature=0.0, top_k=1, top_p=1.0, min_p=0.0)


def generate(backend: LlamaCppBackend, tokens: int) -> Finished:
    request = GenerationRequest((ChatMessage("user", "Tell me about the sea."),), GREEDY, max_tokens=tokens)
    finished = [e for e in backend.stream_chat(request, GenerationControl()) if isinstance(e, Finished)]
    return finished[0]


def test_a_cpu_generation_calibrates_the_prediction_to_within_two_times(gemma_path: Path) -> None:
    before = planning_hardware(devices=("CPU",))
    assert before.cpu_speed_factor is None
    backend = LlamaCppBackend()
    try:
        backend.load(LoadRequest(path=str(gemma_path), n_ctx=1024, devices=("CPU",)))
        assert backend._plan is not None and backend._plan.estimate is not None
        assert not backend._plan.estimate.speed_measured
        stats = generate(backend, 32).stats
    finally:
        backend.unload()
    measured = stats.completion_tokens / stats.generation_seconds
    factors = json.loads(calibration_path().read_text())
    assert set(factors) == {cpu_key(before)}
    after = planning_hardware(devices=("CPU",))
    assert after.cpu_speed_factor == factors[cpu_key(before)]
    facts = facts_from_headers([read_gguf_header(gemma_path)])
    estimate = estimate_fit(facts, after)
    assert estimate.speed_measured
    guess = estimate_fit(facts, before).tokens_per_second
    print(f"\nCPU decode: predicted {guess:.1f} tok/s before calibration, {estimate.tokens_per_second:.1f} after; "
          f"measured {measured:.1f}")  # fmt: skip
    assert measured / 2 <= estimate.tokens_per_second <= measured * 2, (estimate.tokens_per_second, measured)


def test_short_or_cancelled_runs_teach_nothing_and_a_damaged_file_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "calibration.json"
    assert record_generation("cpu:x", None, 50.0, 40.0, tokens=3, path=path) is None
    assert not path.exists()
    assert record_generation("cpu:x", 0.5, 50.0, 25.0, tokens=32, path=path) == 0.25
    assert load_factors(path) == {"cpu:x": 0.25}
    path.write_text("{not json")
    assert load_factors(path) == {}
    path.write_text(json.dumps({"cpu:x": "fast", "cpu:y": -1, "cpu:z": 0.5}))
    assert load_factors(path) == {"cpu:z": 0.5}


def test_factors_apply_per_device(tmp_path: Path) -> None:
    gpu = GPUInfo("llvmpipe (LLVM 15.0.6, 256 bits)", "vulkan", 2 * GIB, 2 * GIB, bandwidth_gbs=272.0, device="Vulkan0")
    other = GPUInfo("NVIDIA GeForce RTX 4090", "cuda", 24 * GIB, 24 * GIB, bandwidth_gbs=1008.0, device="CUDA0")
    hardware = Hardware(gpus=(gpu, other), ram_total=16 * GIB, ram_available=12 * GIB, cpu_name="Test CPU")
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps({gpu_key(gpu): 0.004, cpu_key(hardware): 1.7}))
    result = calibrated(hardware, path)
    assert [g.speed_factor for g in result.gpus] == [0.004, None]
    assert result.cpu_speed_factor == 1.7


def test_only_the_devices_own_share_of_the_time_is_rescaled(tmp_path: Path) -> None:
    # Predicted 10 tok/s: half the time on the GPU, half on the CPU (an output layer the GPU could not take).
    # Measured 5 tok/s: the CPU half (0.05 s) is taken as predicted, so the GPU took 0.15 s where 0.05 was predicted.
    path = tmp_path / "speed.json"
    factor = record_generation("gpu:test", None, 10.0, 5.0, 64, path, share=0.5)
    assert factor is not None and abs(factor - 1 / 3) < 1e-6
    gpu_seconds, cpu_seconds = 0.05 / factor, 0.05  # the next prediction, with that factor applied
    assert abs(1 / (gpu_seconds + cpu_seconds) - 5.0) < 1e-6
    # Measured faster than the CPU part alone allows: nothing to attribute to the GPU, so the whole is rescaled.
    assert record_generation("gpu:test", None, 10.0, 30.0, 64, path, share=0.5) == 3.0

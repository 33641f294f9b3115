"""llama.cpp's dry run (``enclave.engine.dry_run``) tells what a real load then allocates.

The dry run reads a C++ ``std::map`` through ctypes; these tests compare its figures with llama.cpp's own log lines of
a real load of the same model with the same settings, so a change in that layout (or in llama.cpp's accounting) fails
here, not on a user's GPU. The offload-device side (RPC) is in test_placement.py.
"""

from __future__ import annotations

import re
from pathlib import Path

from enclave.engine.dry_run import DeviceBytes, dry_run, memory_breakdown
from enclave.engine.llama_runtime import ModelParamsExtra, open_llama

MIB = 1024 * 1024


def logged_mib(lines: list[str], kind: str) -> float:
    """Sum of llama.cpp's "<buffer> <kind> buffer size = N MiB" lines for host buffers."""
    found = re.findall(rf"CPU\w* {kind} buffer size =\s+([\d.]+) MiB", "\n".join(lines))
    assert found, f"llama.cpp logged no CPU {kind} buffer"
    return sum(float(f) for f in found)


def settings(path: Path) -> dict[str, object]:
    return dict(
        model_path=str(path),
        n_ctx=2048,
        n_batch=256,
        n_ubatch=256,
        n_gpu_layers=0,
        n_threads=2,
        swa_full=True,
        flash_attn=True,
        verbose=False,
    )


def test_the_dry_run_allocates_nothing_and_says_what_the_load_allocates(gemma_path: Path, llama_log: list[str]) -> None:
    # Without the repacked CPU buffers: with them, a memory-mapped load maps the repacked tensors' file pages too
    # (counted in its model buffer, never touched again), which the dry run (not mapped) does not count.
    dry = dry_run(ModelParamsExtra(devices=[], use_extra_bufts=False), **settings(gemma_path))
    assert set(dry.devices) == {"CPU"}, dry.devices
    planned = dry.on("CPU")
    assert planned.model > 100 * MIB and planned.context > 0 and planned.compute > 0, planned
    assert dry.seconds < 30
    assert "CPU:" in dry.describe()

    llama_log.clear()
    llm = open_llama(ModelParamsExtra(devices=[], use_extra_bufts=False), **settings(gemma_path))
    try:
        real_devices, real_types = memory_breakdown(int(llm._ctx.ctx))
    finally:
        llm.close()
    # against llama.cpp's log of the real allocation (independent of how the breakdown is read)
    assert abs(planned.model / MIB - logged_mib(llama_log, "model")) <= 0.01 * planned.model / MIB + 0.02
    assert abs(planned.context / MIB - logged_mib(llama_log, "KV")) <= 0.01 * planned.context / MIB + 0.02
    assert abs(planned.compute / MIB - logged_mib(llama_log, "compute")) <= 0.01 * planned.compute / MIB + 0.02
    # and against the real context's own breakdown: the same bytes, though the weights are memory-mapped there
    real = real_devices["CPU"]
    assert (real.model, real.context, real.compute) == (planned.model, planned.context, planned.compute)
    assert sum(real_types.values(), DeviceBytes(0, 0, 0)) == real
    assert any(name.startswith("CPU") for name in real_types)

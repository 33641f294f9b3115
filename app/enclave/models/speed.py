"""Speed predictions that hold on devices no table knows: a measured correction, remembered per device.

``fit`` predicts decoding speed from memory bandwidth (spec sheets for known GPUs, a guess from the memory size for
the rest). That guess can be off by orders of magnitude: Mesa's lavapipe (Vulkan on the CPU) reports 2 GB of "GPU"
memory and would be predicted at ~50 tokens/s, while it decodes Gemma 270M at ~0.3. So every generation that runs
wholly on one device (all layers on a GPU, or all on the CPU) with the plan's Auto layers is also a measurement: the
engine calls :func:`record_generation`, which keeps ``measured ÷ predicted`` (times the factor already applied) as
the device's speed factor in ``speed_calibration.json``. :func:`calibrated` applies the factors to probed hardware,
and an estimate says whether its speed is calibrated or only estimated (``FitEstimate.speed_measured``).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import replace
from pathlib import Path

from enclave.fsutil import atomic_write_bytes
from enclave.models.hardware import GPUInfo, Hardware

log = logging.getLogger(__name__)

CALIBRATION_FILE = "speed_calibration.json"
MIN_TOKENS = 8  # shorter generations are dominated by start-up costs
FACTOR_RANGE = (1e-4, 1e3)


def calibration_path() -> Path:
    from enclave.paths import app_paths

    return app_paths().data / CALIBRATION_FILE


def gpu_key(gpu: GPUInfo) -> str:
    return f"{gpu.backend}:{gpu.name}"


def cpu_key(hardware: Hardware) -> str:
    return f"cpu:{hardware.cpu_name or 'unknown'}:{hardware.cpu_threads}"


def load_factors(path: Path | None = None) -> dict[str, float]:
    """The remembered factors; a missing or damaged file means none (predictions stay estimates)."""
    path = path or calibration_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    low, high = FACTOR_RANGE
    return {
        str(k): float(v)
        for k, v in data.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and low <= v <= high
    }


def calibrated(hardware: Hardware, path: Path | None = None) -> Hardware:
    """``hardware`` with each device's measured speed factor applied (devices never measured keep None)."""
    factors = load_factors(path)
    if not factors:
        return hardware
    gpus = tuple(replace(g, speed_factor=factors[gpu_key(g)]) if gpu_key(g) in factors else g for g in hardware.gpus)
    cpu = factors.get(cpu_key(hardware))
    return replace(hardware, gpus=gpus, cpu_speed_factor=cpu if cpu is not None else hardware.cpu_speed_factor)


def record_generation(
    key: str,
    applied_factor: float | None,
    predicted: float,
    measured: float,
    tokens: int,
    path: Path | None = None,
    *,
    share: float = 1.0,
) -> float | None:
    """Remember ``key``'s factor from one generation (``predicted`` was made with ``applied_factor``); the new factor,
    or None when the generation says nothing (too short, no prediction).

    ``share``: of the predicted time per token, the part spent on ``key``'s device; the rest (e.g. an output layer
    the GPU could not take, run on the CPU) is taken as predicted, so only the device's own part is rescaled. When
    the measured time is not clearly above that rest, the whole prediction is rescaled instead."""
    if tokens < MIN_TOKENS or predicted <= 0 or measured <= 0 or not math.isfinite(measured):
        return None
    low, high = FACTOR_RANGE
    applied = applied_factor or 1.0
    device_seconds, other_seconds = share / predicted, (1.0 - share) / predicted
    own = 1.0 / measured - other_seconds  # what the device itself took per token
    if 0 < share < 1 and own > 0.1 / measured:
        factor = applied * device_seconds / own
    else:
        factor = applied * measured / predicted
    factor = min(high, max(low, factor))
    path = path or calibration_path()
    factors = load_factors(path)
    factors[key] = round(factor, 6)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, (json.dumps(factors, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    except OSError as exc:  # a calibration is a nicety: never fail a generation over it
        log.warning("could not save the speed calibration: %s", exc)
    return factor

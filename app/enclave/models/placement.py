"""One planner, one load: what the user chose (or Auto) + the model file's header + this computer → a ``LoadPlan``.

The plan is exactly what llama.cpp is asked to do: context length, KV cache type, layers on the GPU, which tensors stay
in system RAM (MoE experts, by llama.cpp ``-ot`` pattern), the devices, threads and batch size. Every field is Auto
unless the user set it; a value the user set wins and is reported as theirs. The engine backend plans where llama.cpp
runs (in the engine's process), so the GUI, ``enclave chat`` and any later server all load through this function.

Reasoning models get room to think: R1 often reasons for tens of thousands of tokens, so their Auto context is the
largest the plan affords up to ``REASONING_CONTEXT_CAP`` (DeepSeek's model cards use 32k+ generation lengths), and
when memory is tight the plan takes a q8_0 (then q4_0) KV cache before it settles for less than
``REASONING_CONTEXT_MIN`` tokens — and says so. Other models get up to ``DEFAULT_CONTEXT_CAP``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from enclave.models.fit import (
    FitError,
    FitEstimate,
    FitOptions,
    ModelFacts,
    Verdict,
    estimate_fit,
    facts_from_headers,
    kv_cache_bytes,
    output_on_gpu,
)
from enclave.models.gguf import GGUFHeader, read_gguf_header, shard_paths
from enclave.models.hardware import GPUInfo, Hardware

REASONING_CONTEXT_CAP = 65_536
REASONING_CONTEXT_MIN = 32_768
DEFAULT_CONTEXT_CAP = 16_384
KV_TYPES = ("f16", "q8_0", "q4_0")
# llama.cpp batch (n_batch = n_ubatch) by where the model runs; measured with bench/bench_prompt.py
# (docs/benchmarks.md, "Prompt reading").
DEFAULT_BATCH = {"cpu": 512, "gpu": 512}

CPU_ONLY = "CPU"  # the device choice that keeps every layer on the CPU

_REASONING_NAME = re.compile(r"deepseek[-_ ]?r1|\br1[-_ ]distill|qwq|reasoning", re.IGNORECASE)


class PlanError(ValueError):
    """The model can't be loaded as asked on this computer; the message says why and what to change."""


@dataclass(frozen=True)
class PlanChoices:
    """What the user set. None everywhere means Auto."""

    context_length: int | None = None
    gpu_layers: int | None = None  # -1: every layer
    kv_cache_type: str | None = None
    threads: int | None = None
    batch: int | None = None
    gpu_memory_limit: int | None = None  # bytes of GPU memory the plan may use (None: what the devices report free)


@dataclass(frozen=True)
class LoadPlan:
    path: str
    n_ctx: int
    n_gpu_layers: int
    block_count: int
    kv_cache_type: str
    n_batch: int
    n_threads: int | None  # None: the engine's default (all cores)
    tensor_overrides: tuple[str, ...] = ()  # "pattern=CPU", as llama.cpp's -ot
    verdict: str = Verdict.CPU_ONLY.value
    reasoning: bool = False
    user_fields: frozenset[str] = frozenset()  # which fields the user set (the rest are Auto)
    estimate: FitEstimate | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    device_weight_bytes: int = 0  # weights the plan puts on the GPU device(s) (what llama.cpp's model buffer holds)
    device_kv_bytes: int = 0  # KV cache on the GPU device(s)
    has_gpu: bool = True  # False: no GPU device, so every layer runs on the CPU whatever n_gpu_layers says

    @property
    def experts_in_ram(self) -> bool:
        return any("_exps" in o for o in self.tensor_overrides)

    def summary(self) -> str:
        """Where the model runs, e.g. "GPU: 28 of 36 layers · experts in RAM · 65,536-token context · q8_0 KV"."""
        # llama.cpp counts the output layer as one more layer; it is offloaded first.
        offloaded = self.n_gpu_layers if self.n_gpu_layers >= 0 else self.block_count + 1
        blocks = max(0, min(offloaded - 1, self.block_count))
        parts = [f"GPU: {blocks} of {self.block_count} layers" if offloaded > 0 and self.has_gpu else "CPU"]
        if self.experts_in_ram:
            parts.append("experts in RAM")
        parts.append(f"{self.n_ctx:,}-token context")
        parts.append(f"{self.kv_cache_type} KV")
        text = " · ".join(parts)
        mine = sorted(self.user_fields)
        return f"{text} (yours: {', '.join(mine)})" if mine else text


def is_reasoning_model(header: GGUFHeader, file_name: str = "") -> bool:
    template = header.metadata.get("tokenizer.chat_template")
    if isinstance(template, str) and "<think>" in template:
        return True
    return bool(_REASONING_NAME.search(f"{header.name or ''} {file_name}"))


def read_headers(path: Path) -> list[GGUFHeader]:
    """The header of ``path`` and, for a split model, of every shard."""
    first = read_gguf_header(path)
    if first.split_count <= 1:
        return [first]
    return [first, *(read_gguf_header(p) for p in shard_paths(path, first.split_count)[1:])]


def is_cpu_only(devices: Sequence[str]) -> bool:
    """Whether a device choice (``LoadRequest.devices``, ``Settings.device``) means "CPU only"."""
    return len(devices) == 1 and devices[0].upper() == CPU_ONLY


def choose_gpus(gpus: Sequence[GPUInfo], devices: Sequence[str] = ()) -> tuple[GPUInfo, ...]:
    """The GPUs a load uses: the named ones, none for "CPU only", or Auto's pick.

    Auto takes the discrete GPUs when there are any, else the integrated ones (Apple's, an Intel/AMD iGPU), and never
    a GPU API that runs on the CPU (Mesa's lavapipe, which a Vulkan build reports as a GPU): it is far slower than
    llama.cpp's own CPU code, so it is used only when the user names it (Settings → Run on, ``--device``).
    """
    if is_cpu_only(devices):
        return ()
    if devices:
        wanted = {name.upper() for name in devices}
        return tuple(g for g in gpus if g.device.upper() in wanted)
    real = [g for g in gpus if not g.software]
    discrete = [g for g in real if not g.unified]
    return tuple(discrete or real)


def hardware_for(hardware: Hardware, devices: Sequence[str] = ()) -> Hardware:
    """``hardware`` with only the GPUs the device choice uses (Auto by default): what plans and recommendations see."""
    return replace(hardware, gpus=choose_gpus(hardware.gpus, devices))


def for_planning(hardware: Hardware, devices: Sequence[str] = ()) -> Hardware:
    """Probed hardware as plans and recommendations see it: the device choice's GPUs, with measured speed factors."""
    from enclave.models.speed import calibrated

    return hardware_for(calibrated(hardware), devices)


def planning_hardware(models_dir: Path | None = None, devices: Sequence[str] = ()) -> Hardware:
    """This computer (probed in this process, llama.cpp included) as plans and recommendations see it."""
    from enclave.models.hardware import probe_hardware

    return for_planning(probe_hardware(models_dir), devices)


def restrict_gpu_memory(hardware: Hardware, limit: int | None) -> Hardware:
    """The same hardware with at most ``limit`` bytes of GPU memory, shared over its GPUs in proportion."""
    if limit is None or not hardware.gpus:
        return hardware
    total = sum(g.usable_bytes for g in hardware.gpus) or 1
    gpus = tuple(
        replace(g, free_bytes=min(g.usable_bytes, limit * g.usable_bytes // total), total_bytes=g.total_bytes)
        for g in hardware.gpus
    )
    return replace(hardware, gpus=gpus)


def plan_load(path: Path, hardware: Hardware, choices: PlanChoices = PlanChoices()) -> LoadPlan:
    """The plan llama.cpp will load. Raises PlanError when it can't fit, saying why, before anything is allocated."""
    path = Path(path)
    headers = read_headers(path)
    try:
        facts = facts_from_headers(headers)
    except FitError as exc:
        raise PlanError(f"{path.name}: {exc}") from exc
    return plan_from_facts(facts, headers[0], path, hardware, choices)


def plan_from_facts(
    facts: ModelFacts, header: GGUFHeader, path: Path, hardware: Hardware, choices: PlanChoices
) -> LoadPlan:
    hardware = restrict_gpu_memory(hardware, choices.gpu_memory_limit)
    reasoning = is_reasoning_model(header, path.name)
    user = {
        name
        for name, value in (
            ("context", choices.context_length),
            ("GPU layers", choices.gpu_layers),
            ("KV type", choices.kv_cache_type),
            ("threads", choices.threads),
            ("batch", choices.batch),
        )
        if value is not None
    }
    if choices.kv_cache_type is not None and choices.kv_cache_type not in KV_TYPES:
        raise PlanError(f"Unknown KV cache type {choices.kv_cache_type!r}; use one of {', '.join(KV_TYPES)}.")
    notes: list[str] = []
    cap = min(facts.context_length or DEFAULT_CONTEXT_CAP, REASONING_CONTEXT_CAP if reasoning else DEFAULT_CONTEXT_CAP)
    kv_candidates = [choices.kv_cache_type] if choices.kv_cache_type else list(KV_TYPES if reasoning else KV_TYPES[:1])

    # The micro-batch sizes the compute buffer (logits for n_ubatch tokens): estimate with the batch that will load.
    planned_batch = choices.batch or DEFAULT_BATCH["gpu" if hardware.gpus and choices.gpu_layers != 0 else "cpu"]

    def estimate(kv: str) -> FitEstimate:
        options = FitOptions(context=choices.context_length, type_k=kv, type_v=kv, n_ubatch=planned_batch)
        capped = facts if choices.context_length else replace(facts, context_length=cap)
        return estimate_fit(capped, hardware, options)

    kv = kv_candidates[0]
    est = estimate(kv)
    if choices.context_length is None and reasoning and est.context_length < min(cap, REASONING_CONTEXT_MIN):
        for other in kv_candidates[1:]:
            candidate = estimate(other)
            if candidate.fits and candidate.context_length > est.context_length:
                notes.append(
                    f"A {other} KV cache makes room for a {candidate.context_length:,}-token context "
                    f"(f16 would allow {est.context_length:,}): reasoning needs room to think."
                )
                kv, est = other, candidate
            if est.context_length >= min(cap, REASONING_CONTEXT_MIN):
                break
    if not est.fits:
        raise PlanError(f"{path.name} can't be loaded on this computer as planned. {est.reason}")
    n_gpu_layers = choices.gpu_layers if choices.gpu_layers is not None else est.n_gpu_layers
    if not hardware.gpus and choices.gpu_layers is None:
        n_gpu_layers = 0
    overrides = est.tensor_overrides if choices.gpu_layers is None else ()
    on_gpu = n_gpu_layers != 0 and bool(hardware.gpus)
    batch = choices.batch or DEFAULT_BATCH["gpu" if on_gpu else "cpu"]
    if est.context_length < facts.context_length and choices.context_length is None:
        notes.append(
            f"Context {est.context_length:,} of the {facts.context_length:,} the model was trained for"
            + (" (the most that fits at full speed)." if est.context_length < cap else ".")
        )
    on_device = min(n_gpu_layers if n_gpu_layers >= 0 else facts.block_count + 1, facts.block_count + 1)
    on_device = on_device if on_gpu else 0
    output_device = output_on_gpu(facts, hardware)
    if on_device and not output_device:
        notes.append(
            f"The output layer ({facts.output_bytes / 2**20:,.0f} MiB) stays in system memory: the GPU cannot "
            "multiply a tensor that large."
        )
    weights, kv_bytes = _device_bytes(facts, on_device, overrides, est.context_length, kv, output=output_device)
    return LoadPlan(
        path=str(path),
        n_ctx=est.context_length,
        n_gpu_layers=n_gpu_layers,
        block_count=facts.block_count,
        kv_cache_type=kv,
        n_batch=batch,
        n_threads=choices.threads,
        tensor_overrides=overrides,
        verdict=est.verdict.value,
        reasoning=reasoning,
        user_fields=frozenset(user),
        estimate=est,
        notes=tuple(notes) + est.notes,
        device_weight_bytes=weights,
        device_kv_bytes=kv_bytes,
        has_gpu=bool(hardware.gpus),
    )


def _device_bytes(
    facts: ModelFacts, layers: int, overrides: Sequence[str], ctx: int, kv: str, *, output: bool = True
) -> tuple[int, int]:
    """Weights and KV cache bytes on the GPU for ``layers`` offloaded layers, as llama.cpp places them: the last
    ``layers`` of (blocks + the output layer), so the output layer first (its weight only if ``output``: the device
    can multiply it); less the routed experts that ``overrides`` keep in system RAM."""
    if layers <= 0 or not facts.block_count:
        return 0, 0
    blocks = min(layers - 1, facts.block_count)
    first = facts.block_count - blocks
    in_ram: set[int] = set()
    for override in overrides:
        if "_exps" not in override:
            continue
        listed = re.search(r"blk\\\.\(([\d|]+)\)", override)
        in_ram |= {int(i) for i in listed.group(1).split("|")} if listed else set(range(facts.block_count))
    weights = (facts.output_bytes if output else 0) + sum(
        facts.layer_bytes[i] - (facts.expert_bytes[i] if i in in_ram else 0) for i in range(first, facts.block_count)
    )
    kv_total = kv_cache_bytes(facts, ctx, FitOptions(context=ctx, type_k=kv, type_v=kv))
    return int(weights), int(kv_total * blocks / facts.block_count)

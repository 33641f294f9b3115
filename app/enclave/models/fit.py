"""Will this model run on this computer, how, with how much context, and how fast?

Memory is what decides whether a model loads at all, so the estimate adds up what llama.cpp allocates:

* weights, per layer (exact tensor sizes from a GGUF header, or the file size spread over the layers for a catalog
  entry); the input embedding always stays in system RAM, the output projection follows the last layer;
* the KV cache: ``layers × head_count_kv × (key_length + value_length) × bytes per element × context`` — for DeepSeek's
  MLA files the "head" is the compressed latent (kv_lora_rank 512 + rope 64 = 576 for K, 512 for V);
* the compute buffer: the larger of the logits for a whole micro-batch (``vocab × n_ubatch × 4``, ~0.3 GiB for a
  152k vocabulary) and, without flash attention, the attention scores (``heads × context × n_ubatch × 4``), plus
  activations;
* a reserve: 0.5 GiB per CUDA/ROCm/Vulkan/Metal device (Ollama keeps 457 MiB; Metal 512 MiB) and 1 GiB of system RAM.

Speed is memory-bandwidth bound: every generated token reads the active weights once, so tokens/s ≈ efficiency ×
bandwidth ÷ bytes read per token (models.md §7), summed over where the bytes live (GPU and RAM are read one after the
other). For a mixture-of-experts model only ``expert_used_count / expert_count`` of the routed experts are read.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from enclave.models.catalog import CatalogEntry
from enclave.models.gguf import GGUFHeader
from enclave.models.hardware import GIB, Hardware

MIN_CONTEXT = 2048
KV_PAD = 256  # llama.cpp pads the KV cache size to 256 cells
KV_BYTES_PER_ELEMENT: dict[str, float] = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}
GPU_RESERVE = GIB // 2  # per device: driver/context overhead llama.cpp cannot use
CPU_RESERVE = GIB  # system RAM left for the OS and the app (llama.cpp's --fit keeps 1 GiB free)
USABLE_TOKENS_PER_SECOND = 8.0
TYPICAL_REASONING_TOKENS = 4096
# Fraction of the bandwidth bound llama.cpp reaches (models.md §7): 55-70 % on consumer GPUs, Apple and desktop CPUs,
# only ~25-35 % on H100/H200-class cards where per-token overheads dominate.
GPU_EFFICIENCY = 0.55
FAST_GPU_EFFICIENCY = 0.3
FAST_GPU_BANDWIDTH = 2000.0
UNIFIED_EFFICIENCY = 0.6
CPU_EFFICIENCY = 0.55
CPU_GBS_PER_CORE = 12.0  # a core dequantizes and multiplies roughly this much weight data per second
# Decoding on a CPU is also compute bound: 2 FLOPs per active weight per token. A desktop core sustains ~20 GFLOPS on
# quantized dot products (8 cores: an 8B model at ~10 tokens/s, as published); the 2-vCPU bench VM manages ~11.
CPU_GFLOPS_PER_CORE = 20.0
# System RAM llama.cpp holds besides weights and KV: tokenizer tables (~190 bytes per vocabulary entry) and the parts
# of the compute buffer a decode step touches. Measured on Gemma 3 270M: 49 MiB after load + ~20 MiB after generating.
RUNTIME_BYTES_PER_VOCAB = 192
RUNTIME_BASE = 32 << 20
MAX_TOKENS_PER_SECOND = 400.0
CAP_8B_ONE_GPU = 200.0  # an 8B model tops out near 200 t/s on one GPU (per-token overheads)
SPEED_KEPT_FOR_CONTEXT = 0.85  # a longer context may cost at most 15 % of the speed (by pushing layers off the GPU)
# Unsloth's dynamic ("UD-") quants keep attention, dense layers and the shared expert at ~4-6 bits; 4.5 bits matches
# the published "1.58-bit R1 reads about 13 GB per token".
UD_DENSE_BITS = 4.5

MLA_MISSING = (
    "this file predates llama.cpp's MLA support; its KV cache would be ~70× larger; download a re-converted file "
    "(for example a current unsloth DeepSeek-R1-0528 GGUF)."
)


class FitError(ValueError):
    """The model cannot be estimated or must not be used (e.g. a pre-MLA DeepSeek file); the message says why."""


class Verdict(enum.StrEnum):
    FULL_GPU = "full_gpu"
    PARTIAL_OFFLOAD = "partial_offload"
    MOE_EXPERTS_IN_RAM = "moe_experts_in_ram"
    CPU_ONLY = "cpu_only"
    WONT_FIT = "wont_fit"


@dataclass(frozen=True)
class ModelFacts:
    """Sizes the estimate needs, from a GGUF header (exact) or a catalog entry (approximate)."""

    name: str
    architecture: str
    block_count: int
    context_length: int
    vocab_size: int
    embedding_length: int
    feed_forward_length: int
    head_count: int
    head_count_kv: int
    key_length: int
    value_length: int
    layer_bytes: tuple[int, ...]  # all weights of each block, routed experts included
    expert_bytes: tuple[int, ...]  # routed-expert weights of each block (0 for dense blocks)
    token_embd_bytes: int  # input embedding: llama.cpp keeps it in system RAM
    output_bytes: int  # output projection (with tied embeddings, llama.cpp uses a copy of token_embd)
    other_bytes: int = 0  # output norm and other small tensors outside the blocks
    expert_count: int = 0
    expert_used_count: int = 0
    parameters: int = 0  # active per token for MoE
    file_size: int = 0
    exact: bool = False  # from tensor sizes rather than an approximation
    mla: bool = False  # DeepSeek's multi-head latent attention: llama.cpp caches the latent K only (no V cache)
    output_tied: bool = False  # output reuses token_embd: no extra RAM on the CPU, a copy on a GPU

    @property
    def is_moe(self) -> bool:
        return self.expert_count > 1 and any(self.expert_bytes)

    @property
    def weights_bytes(self) -> int:
        output = 0 if self.output_tied else self.output_bytes
        return sum(self.layer_bytes) + self.token_embd_bytes + output + self.other_bytes

    @property
    def expert_read_share(self) -> float:
        return self.expert_used_count / self.expert_count if self.is_moe else 1.0

    def kv_bytes_per_token(self, type_k: str = "f16", type_v: str = "f16") -> float:
        """KV cache bytes per context token over all layers.

        With MLA, llama.cpp stores one latent "head" of key_length (kv_lora_rank + rope dims) per layer and no V cache
        at all (``has_v = !is_mla`` in llama-kv-cache.cpp): V is recomputed from the latent.
        """
        bpe_k, bpe_v = KV_BYTES_PER_ELEMENT[type_k], KV_BYTES_PER_ELEMENT[type_v]
        if self.mla:
            return self.block_count * self.head_count_kv * self.key_length * bpe_k
        return self.block_count * self.head_count_kv * (self.key_length * bpe_k + self.value_length * bpe_v)


@dataclass(frozen=True)
class FitOptions:
    context: int | None = None  # None: the largest power of two that fits (2048 … trained context)
    type_k: str = "f16"
    type_v: str = "f16"
    n_ubatch: int = 512
    # llama.cpp itself enables flash attention by default; llama-cpp-python's Llama(flash_attn=False) does not.
    flash_attention: bool = True


@dataclass(frozen=True)
class MemoryBreakdown:
    weights: int
    kv_cache: int
    compute: int  # reserved by llama.cpp's scheduler; on a CPU only the pages a step uses become resident
    reserve: int
    runtime: int = 0  # tokenizer tables and decode scratch in system RAM
    host_compute: int = 0  # of ``compute``, what stays in host memory when the output layer runs on the CPU

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.compute + self.reserve + self.runtime

    @property
    def resident_cpu(self) -> int:
        """What a CPU-only process really holds: weights, KV cache and runtime (reserve and untouched compute not)."""
        return self.weights + self.kv_cache + self.runtime


@dataclass(frozen=True)
class FitEstimate:
    verdict: Verdict
    context_length: int
    n_gpu_layers: int  # layers llama.cpp should offload; block_count + 1 also offloads the output layer
    expert_layers_in_ram: int  # MoE: blocks whose routed experts stay in system RAM
    gpu_bytes: int  # total over all GPUs
    ram_bytes: int
    breakdown: MemoryBreakdown
    tokens_per_second: float
    reason: str
    tensor_overrides: tuple[str, ...] = ()  # llama.cpp -ot patterns, e.g. "blk\.(3|4)\.ffn_.*_exps\.=CPU"
    notes: tuple[str, ...] = field(default_factory=tuple)
    speed_measured: bool = False  # the speed comes from a measured calibration of these devices, not a table's guess
    gpu_time_share: float = 0.0  # of the predicted time per token, the share spent on the GPUs (the rest: the CPU)

    @property
    def fits(self) -> bool:
        return self.verdict is not Verdict.WONT_FIT

    @property
    def usable(self) -> bool:
        return self.fits and self.tokens_per_second >= USABLE_TOKENS_PER_SECOND

    @property
    def seconds_for_reasoning(self) -> float:
        """Predicted time for a 4,096-token reasoning trace (R1 thinks for thousands of tokens before answering)."""
        return TYPICAL_REASONING_TOKENS / self.tokens_per_second if self.tokens_per_second > 0 else float("inf")


# --- facts ------------------------------------------------------------------------------------------------------

_BLOCK_RE = re.compile(r"^blk\.(\d+)\.")


def facts_from_headers(headers: Sequence[GGUFHeader]) -> ModelFacts:
    """Exact facts from the header of a single file, or of every shard of a split model (any order)."""
    if not headers:
        raise FitError("no model file given")
    first = min(headers, key=lambda h: h.split_no)
    if first.split_count != len(headers) or sorted(h.split_no for h in headers) != list(range(first.split_count)):
        raise FitError(f"this model is split into {first.split_count} files; all of them are needed for an estimate")
    arch = first.architecture
    if not arch:
        raise FitError("the first file of the model carries no architecture; it is not a complete GGUF model")
    if arch == "deepseek2" and first.arch_int("attention.key_length_mla") is None:
        raise FitError(MLA_MISSING)
    blocks = first.block_count
    embd = first.embedding_length
    heads = first.head_count
    if not blocks or not embd or not heads:
        raise FitError(f"the file lacks the {arch} layer, width or head count; it cannot be estimated")
    layer = [0] * blocks
    experts = [0] * blocks
    token_embd = output = other = 0
    elements = 0
    expert_elements = 0
    for tensor in (t for h in headers for t in h.tensors):
        elements += tensor.n_elements
        match = _BLOCK_RE.match(tensor.name)
        if match and int(match.group(1)) < blocks:
            index = int(match.group(1))
            layer[index] += tensor.n_bytes
            if "_exps." in tensor.name:
                experts[index] += tensor.n_bytes
                expert_elements += tensor.n_elements
        elif tensor.name == "token_embd.weight":
            token_embd = tensor.n_bytes
        elif tensor.name == "output.weight":
            output = tensor.n_bytes
        else:
            other += tensor.n_bytes  # norms, and MTP/nextn blocks beyond block_count that llama.cpp skips
    tied = output == 0
    n_expert = first.expert_count or 0
    n_used = first.expert_used_count or 0
    active = elements - (expert_elements * (1 - n_used / n_expert) if n_expert > 1 else 0)
    return ModelFacts(
        name=first.name or arch,
        architecture=arch,
        block_count=blocks,
        context_length=first.context_length or MIN_CONTEXT,
        vocab_size=first.vocab_size or 32000,
        embedding_length=embd,
        feed_forward_length=first.arch_int("feed_forward_length") or 4 * embd,
        head_count=heads,
        head_count_kv=first.head_count_kv or heads,
        key_length=first.key_length or embd // heads,
        value_length=first.value_length or embd // heads,
        layer_bytes=tuple(layer),
        expert_bytes=tuple(experts),
        token_embd_bytes=token_embd,
        output_bytes=token_embd if tied else output,
        other_bytes=other,
        expert_count=n_expert,
        expert_used_count=n_used,
        mla=first.arch_int("attention.key_length_mla") is not None,
        parameters=int(active),
        file_size=sum(h.file_size for h in headers),
        exact=True,
        output_tied=tied,
    )


def facts_from_entry(entry: CatalogEntry) -> ModelFacts:
    """Approximate facts for a catalog entry that is not downloaded yet: the file size spread over the tensors."""
    arch = entry.arch
    if arch.architecture == "deepseek2" and arch.key_length_mla is None:
        raise FitError(MLA_MISSING)
    total = entry.total_size
    params = entry.parameters
    embd_params = arch.vocab_size * arch.embedding_length
    routed_params = 0
    moe_blocks = 0
    if arch.is_moe:
        moe_blocks = arch.block_count - (arch.leading_dense_block_count or 0)
        per_layer = (arch.expert_count or 0) * 3 * arch.embedding_length * (arch.expert_feed_forward_length or 0)
        routed_params = moe_blocks * per_layer
    dense_params = params - routed_params
    uniform = total / params
    dense_bpp = max(UD_DENSE_BITS / 8, uniform) if entry.quant.upper().startswith("UD-") and arch.is_moe else uniform
    dense_bytes = min(dense_params * dense_bpp, total * 0.9) if routed_params else total
    routed_bytes = total - dense_bytes
    embd_bytes = int(embd_params * dense_bpp)
    block_dense = max(0, int(dense_bytes) - 2 * embd_bytes)
    blocks = arch.block_count
    layer = [block_dense // blocks] * blocks
    experts = [0] * blocks
    if moe_blocks:
        for i in range(blocks - moe_blocks, blocks):
            experts[i] = int(routed_bytes // moe_blocks)
            layer[i] += experts[i]
    active = (
        dense_params + routed_params * (arch.expert_used_count or 0) / (arch.expert_count or 1)
        if arch.is_moe
        else params
    )
    return ModelFacts(
        name=entry.display_name,
        architecture=arch.architecture,
        block_count=blocks,
        context_length=arch.context_length,
        vocab_size=arch.vocab_size,
        embedding_length=arch.embedding_length,
        feed_forward_length=arch.feed_forward_length or 4 * arch.embedding_length,
        head_count=arch.head_count,
        head_count_kv=arch.head_count_kv,
        key_length=arch.key_length,
        value_length=arch.value_length,
        layer_bytes=tuple(layer),
        expert_bytes=tuple(experts),
        token_embd_bytes=embd_bytes,
        output_bytes=embd_bytes,
        expert_count=arch.expert_count or 0,
        expert_used_count=arch.expert_used_count or 0,
        parameters=int(active),
        file_size=total,
        exact=False,
        mla=arch.key_length_mla is not None,
    )


# --- pieces of the estimate -------------------------------------------------------------------------------------


def kv_cache_bytes(facts: ModelFacts, context: int, options: FitOptions = FitOptions()) -> int:
    cells = -(-context // KV_PAD) * KV_PAD
    return int(facts.kv_bytes_per_token(options.type_k, options.type_v) * cells)


def compute_buffer_bytes(facts: ModelFacts, context: int, options: FitOptions = FitOptions()) -> int:
    """llama.cpp's scheduler reserves the worst case of one micro-batch: logits for every token of it, or (without
    flash attention) the attention scores if larger; activations come on top. Also the 1-row output buffer."""
    ub = options.n_ubatch
    logits = facts.vocab_size * ub * 4
    cells = -(-context // KV_PAD) * KV_PAD
    scores = 0 if options.flash_attention else facts.head_count * cells * ub * 4
    ff = facts.feed_forward_length
    if facts.is_moe:
        ff = max(ff, facts.expert_used_count * facts.feed_forward_length)
    activations = ub * 4 * (3 * facts.embedding_length + 2 * ff)
    return max(logits, scores) + activations + facts.vocab_size * 4


def output_compute_bytes(facts: ModelFacts, context: int, options: FitOptions = FitOptions()) -> int:
    """The part of ``compute_buffer_bytes`` that belongs to the output layer (the logits beyond the attention
    scores): where the output weight stays in host memory, llama.cpp reserves it there, not on the GPU."""
    ub = options.n_ubatch
    logits = facts.vocab_size * ub * 4
    cells = -(-context // KV_PAD) * KV_PAD
    scores = 0 if options.flash_attention else facts.head_count * cells * ub * 4
    return max(logits, scores) - scores


def runtime_bytes(facts: ModelFacts) -> int:
    return facts.vocab_size * RUNTIME_BYTES_PER_VOCAB + RUNTIME_BASE


def gpu_reserve(hardware: Hardware) -> int:
    return GPU_RESERVE * len(hardware.gpus)


def context_ladder(trained: int) -> list[int]:
    """Powers of two from 2048 up to the trained context (which is included even when it is not a power of two)."""
    if trained <= MIN_CONTEXT:
        return [trained]
    ladder = []
    ctx = MIN_CONTEXT
    while ctx < trained:
        ladder.append(ctx)
        ctx *= 2
    ladder.append(trained)
    return ladder


# --- placement --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    verdict: Verdict
    n_gpu_layers: int
    expert_layers_in_ram: int
    gpu_bytes: int
    ram_bytes: int
    gpu_read: float  # bytes read per token from GPU memory
    cpu_read: float
    breakdown: MemoryBreakdown
    overrides: tuple[str, ...] = ()
    short_by: int = 0  # WONT_FIT: bytes missing


OUTPUT_PROBE_COLUMNS = 512  # llama.cpp asks a device about the output weight times a 512-token batch


def output_on_gpu(facts: ModelFacts, hw: Hardware) -> bool:
    """Whether llama.cpp will put the output weight on the GPU when the output layer is offloaded.

    Its loader keeps a weight in host memory when the device cannot multiply it (``weight_buft_supported``); Vulkan
    devices refuse tensors over their largest storage buffer (128 MiB on Mesa's lavapipe), which the hardware probe
    asked each device (``GPUInfo.max_tensor_bytes``). Both the weight and the product ([vocabulary, 512] F32) count.
    """
    largest = max(facts.output_bytes, facts.vocab_size * OUTPUT_PROBE_COLUMNS * 4)
    return all(g.max_tensor_bytes is None or largest <= g.max_tensor_bytes for g in hw.gpus)


def _place(facts: ModelFacts, hw: Hardware, context: int, options: FitOptions) -> _Plan:
    blocks = facts.block_count
    kv_total = kv_cache_bytes(facts, context, options)
    kv_layer = kv_total / blocks
    compute = compute_buffer_bytes(facts, context, options)
    host_compute = 0 if output_on_gpu(facts, hw) else output_compute_bytes(facts, context, options)
    share = facts.expert_read_share
    kv_read_layer = facts.kv_bytes_per_token(options.type_k, options.type_v) / blocks * (TYPICAL_REASONING_TOKENS / 2)
    dense = [lb - eb for lb, eb in zip(facts.layer_bytes, facts.expert_bytes, strict=True)]
    active = [d + e * share for d, e in zip(dense, facts.expert_bytes, strict=True)]
    out_cpu = (0 if facts.output_tied else facts.output_bytes) + facts.other_bytes
    if not host_compute:
        out = facts.output_bytes + facts.other_bytes  # on a GPU (a tied output is copied there)
        out_ram = out_read = 0.0
    else:  # the device can't multiply a tensor that large: llama.cpp keeps the output weight and its logits on the host
        out = facts.other_bytes
        out_ram = float(out_cpu - facts.other_bytes + host_compute)
        out_read = float(facts.output_bytes)  # read per token by the CPU (a tied one from token_embd's pages)
    gpu_compute = compute - host_compute
    n_gpus = len(hw.gpus)
    gpu_cap = sum(g.usable_bytes for g in hw.gpus) - gpu_reserve(hw) - gpu_compute * n_gpus if n_gpus else 0
    runtime = runtime_bytes(facts)
    ram_free = hw.ram_available - CPU_RESERVE - facts.token_embd_bytes - runtime
    unified = hw.unified_memory

    def ram_cap(gpu_used: int) -> int:
        return ram_free - gpu_used if unified else ram_free  # unified memory: the GPU's share comes out of RAM

    def breakdown(reserve: int) -> MemoryBreakdown:
        return MemoryBreakdown(facts.weights_bytes, kv_total, compute, reserve, runtime, host_compute)

    full_gpu = int(sum(facts.layer_bytes) + out + kv_total)
    if n_gpus and full_gpu <= gpu_cap:
        gpu_bytes = full_gpu + gpu_compute * n_gpus + gpu_reserve(hw)
        ram = int(facts.token_embd_bytes + runtime + CPU_RESERVE + out_ram)
        if ram <= hw.ram_available - (gpu_bytes if unified else 0):
            return _Plan(
                Verdict.FULL_GPU, blocks + 1, 0, gpu_bytes, ram,
                sum(active) + out + kv_read_layer * blocks, out_read,
                breakdown(gpu_reserve(hw) + CPU_RESERVE),
            )  # fmt: skip

    if n_gpus and facts.is_moe:
        base = int(sum(dense) + out + kv_total)
        if base <= gpu_cap:
            room = gpu_cap - base
            on_gpu: list[int] = []
            for i in reversed(range(blocks)):  # keep the last layers' experts on the GPU (any order would do)
                if facts.expert_bytes[i] and facts.expert_bytes[i] <= room:
                    room -= facts.expert_bytes[i]
                    on_gpu.append(i)
            in_ram = [i for i in range(blocks) if facts.expert_bytes[i] and i not in on_gpu]
            ram_experts = sum(facts.expert_bytes[i] for i in in_ram)
            gpu_bytes = int(gpu_cap - room) + gpu_compute * n_gpus + gpu_reserve(hw)
            ram = int(ram_experts + compute + out_ram)
            if ram <= ram_cap(gpu_bytes):
                gpu_read = (
                    sum(dense) + out + kv_read_layer * blocks + sum(facts.expert_bytes[i] * share for i in on_gpu)
                )
                return _Plan(
                    Verdict.MOE_EXPERTS_IN_RAM, blocks + 1, len(in_ram), gpu_bytes,
                    ram + facts.token_embd_bytes + runtime + CPU_RESERVE, gpu_read, ram_experts * share + out_read,
                    breakdown(gpu_reserve(hw) + CPU_RESERVE),
                    _expert_overrides(in_ram, [i for i in range(blocks) if facts.expert_bytes[i]]),
                )  # fmt: skip

    if n_gpus:
        # llama.cpp offloads the *last* n_gpu_layers of (blocks + the output layer): the output layer goes first (with
        # tied embeddings it is a copy of token_embd, often the largest single tensor), then blocks from the end.
        used = float(out)
        n = 0
        if used <= gpu_cap:
            n = 1
            i = blocks - 1
            while i >= 0 and used + facts.layer_bytes[i] + kv_layer <= gpu_cap:
                used += facts.layer_bytes[i] + kv_layer
                n += 1
                i -= 1
        gpu_blocks = n - 1  # blocks on the GPU: the last ones
        cpu_blocks = blocks - gpu_blocks
        if n > 0:
            gpu_bytes = int(used) + gpu_compute * n_gpus + gpu_reserve(hw)
            ram = int(
                sum(facts.layer_bytes[:cpu_blocks]) + kv_layer * cpu_blocks + facts.other_bytes + compute + out_ram
            )
            if ram <= ram_cap(gpu_bytes):
                gpu_read = sum(active[cpu_blocks:]) + kv_read_layer * gpu_blocks + out
                cpu_read = sum(active[:cpu_blocks]) + kv_read_layer * cpu_blocks + out_read
                return _Plan(
                    Verdict.PARTIAL_OFFLOAD, n, 0, gpu_bytes, ram + facts.token_embd_bytes + runtime + CPU_RESERVE,
                    gpu_read, cpu_read, breakdown(gpu_reserve(hw) + CPU_RESERVE),
                )  # fmt: skip

    ram = int(sum(facts.layer_bytes) + out_cpu + kv_total + compute)
    if ram <= ram_cap(0):
        return _Plan(
            Verdict.CPU_ONLY, 0, 0, 0, ram + facts.token_embd_bytes + runtime + CPU_RESERVE,
            0.0, sum(active) + out + kv_read_layer * blocks, breakdown(CPU_RESERVE),
        )  # fmt: skip
    available = ram_cap(0) + (max(0, gpu_cap) if n_gpus and not unified else 0)
    return _Plan(
        Verdict.WONT_FIT, 0, 0, 0, 0, 0.0, 0.0, breakdown(CPU_RESERVE + gpu_reserve(hw)), short_by=ram - available
    )


def _expert_overrides(in_ram: list[int], expert_layers: list[int]) -> tuple[str, ...]:
    """llama.cpp ``-ot`` patterns that keep the routed experts of these blocks in system RAM."""
    if not in_ram:
        return ()
    if in_ram == expert_layers:
        return (r".ffn_.*_exps.=CPU",)
    layers = "|".join(str(i) for i in in_ram)
    return (rf"blk\.({layers})\.ffn_.*_exps\.=CPU",)


def _seconds(plan: _Plan, facts: ModelFacts, hw: Hardware) -> tuple[float, float]:
    """Seconds per decoded token on the GPUs and on the CPU (measured speed factors applied)."""
    gpu_seconds = cpu_seconds = 0.0
    if plan.gpu_read:
        bandwidth = max(g.bandwidth_gbs for g in hw.gpus) * 1e9
        if hw.unified_memory:
            efficiency = UNIFIED_EFFICIENCY
        elif bandwidth >= FAST_GPU_BANDWIDTH * 1e9:
            efficiency = FAST_GPU_EFFICIENCY
        else:
            efficiency = GPU_EFFICIENCY
        factor = min(g.speed_factor or 1.0 for g in hw.gpus)
        gpu_seconds = plan.gpu_read / (bandwidth * efficiency * factor)
    if plan.cpu_read:
        ram_bw = min(hw.ram_bandwidth_gbs * CPU_EFFICIENCY, hw.cpu_cores * CPU_GBS_PER_CORE) * 1e9
        total_read = plan.cpu_read + plan.gpu_read
        cpu_flops = 2 * facts.parameters * (plan.cpu_read / total_read)
        cpu_seconds = max(plan.cpu_read / ram_bw, cpu_flops / (hw.cpu_cores * CPU_GFLOPS_PER_CORE * 1e9))
        cpu_seconds /= hw.cpu_speed_factor or 1.0
    return gpu_seconds, cpu_seconds


def _speed(plan: _Plan, facts: ModelFacts, hw: Hardware) -> float:
    seconds = sum(_seconds(plan, facts, hw))
    if seconds <= 0:
        return 0.0
    speed = 1 / seconds
    if not plan.cpu_read and facts.parameters and all(g.speed_factor is None for g in hw.gpus):
        speed = min(speed, CAP_8B_ONE_GPU * 8.2e9 / facts.parameters)
    return min(speed, MAX_TOKENS_PER_SECOND)


def _speed_measured(plan: _Plan, hw: Hardware) -> bool:
    """Every device the plan reads weights from has a measured speed factor."""
    gpu_ok = not plan.gpu_read or all(g.speed_factor is not None for g in hw.gpus)
    cpu_ok = not plan.cpu_read or hw.cpu_speed_factor is not None
    return bool(plan.gpu_read or plan.cpu_read) and gpu_ok and cpu_ok


# --- the estimate ----------------------------------------------------------------------------------------------


def estimate_fit(facts: ModelFacts, hardware: Hardware, options: FitOptions = FitOptions()) -> FitEstimate:
    """How ``facts`` would run on ``hardware``: verdict, context, layers to offload, memory, speed and a reason."""
    if options.type_k not in KV_BYTES_PER_ELEMENT or options.type_v not in KV_BYTES_PER_ELEMENT:
        raise FitError(f"unknown KV cache type; use one of {', '.join(KV_BYTES_PER_ELEMENT)}")
    if options.context is not None:
        if options.context <= 0:
            raise FitError("the context length must be positive")
        plan = _place(facts, hardware, options.context, options)
        return _estimate(plan, facts, hardware, options.context, explicit=True)
    ladder = context_ladder(facts.context_length)
    plans = [(ctx, _place(facts, hardware, ctx, options)) for ctx in ladder]
    smallest_ctx, smallest = plans[0]
    if smallest.verdict is Verdict.WONT_FIT:
        return _estimate(smallest, facts, hardware, smallest_ctx, explicit=False)
    best_speed = _speed(smallest, facts, hardware)
    chosen_ctx, chosen = smallest_ctx, smallest
    for ctx, plan in plans[1:]:
        if (
            plan.verdict is not Verdict.WONT_FIT
            and _speed(plan, facts, hardware) >= SPEED_KEPT_FOR_CONTEXT * best_speed
        ):
            chosen_ctx, chosen = ctx, plan
    return _estimate(chosen, facts, hardware, chosen_ctx, explicit=False)


def estimate_entry(entry: CatalogEntry, hardware: Hardware, options: FitOptions = FitOptions()) -> FitEstimate:
    return estimate_fit(facts_from_entry(entry), hardware, options)


def _gb(n: float) -> str:
    return f"{n / GIB:.1f} GB"


def _estimate(plan: _Plan, facts: ModelFacts, hw: Hardware, ctx: int, *, explicit: bool) -> FitEstimate:
    speed = _speed(plan, facts, hw) if plan.verdict is not Verdict.WONT_FIT else 0.0
    gpu_seconds, cpu_seconds = _seconds(plan, facts, hw)
    share = gpu_seconds / (gpu_seconds + cpu_seconds) if gpu_seconds + cpu_seconds > 0 else 0.0
    where = "the GPU" if len(hw.gpus) == 1 else f"the {len(hw.gpus)} GPUs"
    rate = f"about {speed:.0f} tokens/s" if speed >= 1.5 else f"about {speed:.1f} tokens/s"
    ctx_text = f"a {ctx:,}-token context"
    notes: list[str] = []
    if not facts.exact:
        notes.append("sizes are estimated from the catalog; the downloaded file's header gives exact numbers")
    if plan.verdict is Verdict.FULL_GPU:
        reason = f"Runs entirely on {where} ({_gb(plan.gpu_bytes)}) with {ctx_text}, {rate}."
    elif plan.verdict is Verdict.MOE_EXPERTS_IN_RAM:
        reason = (
            f"Attention and shared layers run on {where}; the routed experts of {plan.expert_layers_in_ram} of "
            f"{facts.block_count} layers stay in system RAM ({_gb(plan.ram_bytes)}), with {ctx_text}, {rate}."
        )
    elif plan.verdict is Verdict.PARTIAL_OFFLOAD:
        reason = (
            f"Too large for {where} alone: the output layer and {plan.n_gpu_layers - 1} of {facts.block_count} layers "
            f"run on the GPU and the rest on the CPU, with {ctx_text}, {rate}."
        )
    elif plan.verdict is Verdict.CPU_ONLY:
        why = "no usable GPU was found" if not hw.gpus else "not even one layer fits on the GPU"
        reason = f"Runs on the CPU because {why}; it needs {_gb(plan.ram_bytes)} of RAM with {ctx_text}, {rate}."
    else:
        memory = "GPU memory and RAM" if hw.gpus and not hw.unified_memory else "memory"
        target = f"with a {ctx:,}-token context " if explicit or ctx > MIN_CONTEXT else ""
        reason = (
            f"Does not fit {target}: it needs about {_gb(plan.short_by)} more {memory} than this computer has free."
        )
    return FitEstimate(
        verdict=plan.verdict,
        context_length=ctx,
        n_gpu_layers=plan.n_gpu_layers,
        expert_layers_in_ram=plan.expert_layers_in_ram,
        gpu_bytes=plan.gpu_bytes,
        ram_bytes=plan.ram_bytes,
        breakdown=plan.breakdown,
        tokens_per_second=round(speed, 2),
        reason=reason,
        speed_measured=_speed_measured(plan, hw),
        gpu_time_share=round(share, 6),
        tensor_overrides=plan.overrides,
        notes=tuple(notes),
    )

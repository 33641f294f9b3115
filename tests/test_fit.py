"""The fit estimator: KV/compute arithmetic against llama.cpp's own numbers, placement verdicts, and refusals."""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
from pathlib import Path

import pytest

from enclave.cli import models as cli_models
from enclave.cli.exit_codes import ExitCode
from enclave.models.catalog import load_catalog
from enclave.models.fit import (
    MLA_MISSING,
    FitError,
    FitOptions,
    Verdict,
    compute_buffer_bytes,
    context_ladder,
    estimate_entry,
    estimate_fit,
    facts_from_entry,
    facts_from_headers,
    kv_cache_bytes,
)
from enclave.models.gguf import GGUFHeader, GGUFTensorInfo, read_gguf_header
from enclave.models.hardware import GIB, Hardware

MIB = 1 << 20


def test_kv_cache_matches_the_reference_measurements() -> None:
    catalog = load_catalog()
    qwen3 = facts_from_entry(catalog.get("r1-0528-qwen3-8b-q4_k_m"))
    assert qwen3.kv_bytes_per_token() == 147_456  # 36 · 8 · 256 · 2
    assert kv_cache_bytes(qwen3, 131072) == 18_432 * MIB  # llama.cpp: K 9216 + V 9216 MiB
    r1 = facts_from_entry(catalog.get("r1-0528-ud-iq1_s"))
    assert r1.kv_bytes_per_token() == 70_272  # 61 · 1 · 576 · 2: MLA caches the latent K only, no V
    assert round(kv_cache_bytes(r1, 16384) / MIB) == 1_098  # llama.cpp: K 1098 MiB, V 0 (has_v = !is_mla)
    assert kv_cache_bytes(qwen3, 1000) == kv_cache_bytes(qwen3, 1024)  # padded to 256 cells


def test_quantized_kv_cache() -> None:
    qwen3 = facts_from_entry(load_catalog().get("r1-0528-qwen3-8b-q4_k_m"))
    assert qwen3.kv_bytes_per_token("q8_0", "q8_0") == pytest.approx(147_456 * 17 / 32)
    assert qwen3.kv_bytes_per_token("q4_0", "f16") == pytest.approx(36 * 8 * 128 * (18 / 32 + 2))
    with pytest.raises(FitError, match="KV cache type"):
        estimate_fit(qwen3, Hardware.from_numbers(vram_gib=8), FitOptions(type_k="q3"))


def test_compute_buffer_is_about_a_third_of_a_gib_for_the_8b() -> None:
    qwen3 = facts_from_entry(load_catalog().get("r1-0528-qwen3-8b-q4_k_m"))
    assert 0.28 * GIB < compute_buffer_bytes(qwen3, 4096) < 0.4 * GIB
    no_fa = FitOptions(flash_attention=False)
    assert compute_buffer_bytes(qwen3, 32768, no_fa) > 2 * GIB  # attention scores grow with context
    assert compute_buffer_bytes(qwen3, 2048, no_fa) == compute_buffer_bytes(qwen3, 2048)  # logits still dominate


def test_gemma_estimate_matches_what_llama_cpp_allocated(gemma_path: Path) -> None:
    """llama.cpp's log for this model at n_ctx 2048 (bench/bench_fit.py): KV 36.00 MiB, compute 514.50 MiB, model
    buffers 235.16 MiB mapped (+12.66 MiB CPU repack copy)."""
    facts = facts_from_headers([read_gguf_header(gemma_path)])
    assert facts.exact and facts.output_tied and facts.block_count == 18
    assert facts.weights_bytes == read_gguf_header(gemma_path).total_tensor_bytes
    assert kv_cache_bytes(facts, 2048) == 36 * MIB
    assert kv_cache_bytes(facts, 32768) == 576 * MIB
    assert compute_buffer_bytes(facts, 2048) == pytest.approx(514.5 * MIB, rel=0.05)
    assert facts.weights_bytes == pytest.approx(235.16 * MIB, rel=0.01)


def test_gemma_on_this_computer(gemma_path: Path) -> None:
    facts = facts_from_headers([read_gguf_header(gemma_path)])
    cpu = Hardware.from_numbers(gpus=0, ram_gib=8)
    estimate = estimate_fit(facts, cpu)
    assert estimate.verdict is Verdict.CPU_ONLY and estimate.n_gpu_layers == 0
    assert estimate.context_length == 32768  # the trained context fits easily
    assert estimate.tokens_per_second > 0 and "\n" not in estimate.reason and estimate.reason.endswith(".")


def test_context_ladder() -> None:
    assert context_ladder(131072) == [2048, 4096, 8192, 16384, 32768, 65536, 131072]
    assert context_ladder(163840) == [2048, 4096, 8192, 16384, 32768, 65536, 131072, 163840]
    assert context_ladder(512) == [512]


def test_explicit_context_is_honoured_or_refused() -> None:
    entry = load_catalog().get("r1-0528-qwen3-8b-q4_k_m")
    gpu8 = Hardware.from_numbers(vram_gib=8, ram_gib=16)
    assert estimate_entry(entry, gpu8, FitOptions(context=4096)).context_length == 4096
    huge = estimate_entry(entry, Hardware.from_numbers(vram_gib=8, ram_gib=8), FitOptions(context=131072))
    assert huge.verdict is Verdict.WONT_FIT and "131,072-token context" in huge.reason and "more" in huge.reason
    with pytest.raises(FitError):
        estimate_entry(entry, gpu8, FitOptions(context=0))


def test_verdicts_for_a_dense_model() -> None:
    entry = load_catalog().get("r1-distill-qwen-32b-q4_k_m")
    full = estimate_entry(entry, Hardware.from_numbers(vram_gib=48, ram_gib=64))
    assert full.verdict is Verdict.FULL_GPU and full.n_gpu_layers == 65
    partial = estimate_entry(entry, Hardware.from_numbers(vram_gib=12, ram_gib=64))
    assert partial.verdict is Verdict.PARTIAL_OFFLOAD and 0 < partial.n_gpu_layers < 64
    assert partial.tokens_per_second < full.tokens_per_second
    assert "layers run on the GPU" in partial.reason
    cpu = estimate_entry(entry, Hardware.from_numbers(gpus=0, ram_gib=64))
    assert cpu.verdict is Verdict.CPU_ONLY and "no usable GPU" in cpu.reason
    none = estimate_entry(entry, Hardware.from_numbers(gpus=0, ram_gib=8))
    assert none.verdict is Verdict.WONT_FIT and not none.fits and none.tokens_per_second == 0


def test_moe_keeps_experts_in_ram() -> None:
    entry = load_catalog().get("r1-0528-ud-iq1_s")
    hw = Hardware.from_numbers(vram_gib=24, ram_gib=256, bandwidth_gbs=1008)
    estimate = estimate_entry(entry, hw)
    assert estimate.verdict is Verdict.MOE_EXPERTS_IN_RAM
    assert estimate.n_gpu_layers == 62 and estimate.expert_layers_in_ram > 50
    assert estimate.tensor_overrides and "_exps" in estimate.tensor_overrides[0]
    assert estimate.ram_bytes > 150 * GIB and estimate.gpu_bytes <= 24 * GIB
    assert 1 <= estimate.tokens_per_second < 20


def test_moe_reads_only_the_active_experts() -> None:
    r1 = facts_from_entry(load_catalog().get("r1-0528-ud-iq1_s"))
    assert r1.is_moe and r1.expert_read_share == 8 / 256
    assert 30e9 < r1.parameters < 45e9  # ≈ 37B active
    unified = Hardware.from_numbers(ram_gib=512, unified=True, bandwidth_gbs=819)
    q4 = estimate_entry(load_catalog().get("r1-0528-q4_k_m"), unified)
    assert 12 <= q4.tokens_per_second <= 30  # published: ≈ 20 t/s on a 512 GB M3 Ultra


def test_speed_rules_of_thumb() -> None:
    q4 = load_catalog().get("r1-0528-qwen3-8b-q4_k_m")
    rtx4090 = estimate_entry(q4, Hardware.from_numbers(vram_gib=24, ram_gib=64, bandwidth_gbs=1008))
    assert 90 <= rtx4090.tokens_per_second <= 200  # published ≈ 130 t/s
    h200 = estimate_entry(q4, Hardware.from_numbers(vram_gib=141, ram_gib=256, bandwidth_gbs=4800))
    assert 150 <= h200.tokens_per_second <= 205  # an 8B on one GPU is capped near 200 t/s
    assert rtx4090.seconds_for_reasoning == pytest.approx(4096 / rtx4090.tokens_per_second)
    ddr5 = estimate_entry(q4, Hardware.from_numbers(gpus=0, ram_gib=32, ram_bandwidth_gbs=89.6))
    assert 5 <= ddr5.tokens_per_second <= 20  # published 10-20 t/s


def _deepseek_header(*, mla: bool) -> GGUFHeader:
    metadata: dict[str, object] = {
        "general.architecture": "deepseek2",
        "deepseek2.block_count": 2,
        "deepseek2.embedding_length": 64,
        "deepseek2.attention.head_count": 4,
        "deepseek2.attention.head_count_kv": 1 if mla else 4,
        "deepseek2.attention.key_length": 576 if mla else 192,
        "deepseek2.attention.value_length": 512 if mla else 128,
        "deepseek2.context_length": 4096,
    }
    if mla:
        metadata["deepseek2.attention.key_length_mla"] = 192
    tensors = (GGUFTensorInfo("blk.0.attn_q.weight", (64, 64), 0, 0, 64 * 64 * 4),)
    return GGUFHeader(3, metadata, tensors, 4096, 4096 + 64 * 64 * 4)


def test_pre_mla_deepseek_files_are_refused() -> None:
    with pytest.raises(FitError) as info:
        facts_from_headers([_deepseek_header(mla=False)])
    assert str(info.value) == MLA_MISSING and "~70×" in str(info.value)
    assert facts_from_headers([_deepseek_header(mla=True)]).head_count_kv == 1


def _shard(no: int, count: int, tensor: str) -> GGUFHeader:
    metadata: dict[str, object] = {"split.no": no, "split.count": count, "split.tensors.count": count}
    if no == 0:
        metadata.update(
            {
                "general.architecture": "llama",
                "llama.block_count": 2,
                "llama.embedding_length": 64,
                "llama.attention.head_count": 4,
                "llama.context_length": 4096,
            }
        )
    info = GGUFTensorInfo(tensor, (64, 64), 0, 0, 64 * 64 * 4)
    return GGUFHeader(3, metadata, (info,), 1024, 1024 + info.n_bytes)


def test_split_models_need_every_shard() -> None:
    shards = [_shard(0, 3, "token_embd.weight"), _shard(1, 3, "blk.0.ffn_up.weight"), _shard(2, 3, "output.weight")]
    facts = facts_from_headers(list(reversed(shards)))
    assert facts.layer_bytes == (64 * 64 * 4, 0) and not facts.output_tied
    assert facts.file_size == sum(h.file_size for h in shards)
    with pytest.raises(FitError, match="split into 3 files"):
        facts_from_headers(shards[:2])
    with pytest.raises(FitError, match="no architecture"):
        facts_from_headers([dataclasses.replace(shards[1], metadata={"split.count": 1})])


def _fit_cli(*argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="enclave")
    cli_models.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["models", "fit", *argv])
    out, err = io.StringIO(), io.StringIO()
    return cli_models.run_fit(args, out, err), out.getvalue(), err.getvalue()


def test_fit_command(gemma_path: Path, tmp_path: Path) -> None:
    code, out, _ = _fit_cli(str(gemma_path), "--ctx", "4096", "--json")
    data = json.loads(out)
    assert code == 0 and data["model"] == "Gemma 3 270m" and data["estimate"]["context_length"] == 4096
    code, out, _ = _fit_cli(str(gemma_path))
    assert code == 0 and out.startswith("Gemma 3 270m: ") and "KV cache" in out
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"nope" * 100)
    code, _, err = _fit_cli(str(bad))
    assert code == ExitCode.MODEL == 4 and "not a GGUF model file" in err
    code, _, _ = _fit_cli(str(tmp_path / "nowhere.gguf"))
    assert code == ExitCode.NOT_FOUND == 3
    code, out, _ = _fit_cli(str(gemma_path), "--gpus", "0", "--ram", "0.01")  # far less memory than the model needs
    assert code == ExitCode.NOTHING_FITS == 5 and out.startswith("Gemma 3 270m: ")

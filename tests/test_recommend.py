"""Recommendations for real-world machines, and the ``models recommend`` command."""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
from pathlib import Path

import pytest

from enclave.cli import models as cli_models
from enclave.models.catalog import CatalogEntry
from enclave.models.fit import Verdict
from enclave.models.hardware import GPUInfo, Hardware
from enclave.models.recommend import Candidate, Recommendation, evaluate, recommend

LOW_BIT_FULL_R1 = {"UD-TQ1_0", "UD-IQ1_S", "UD-IQ1_M", "UD-IQ2_XXS"}


def pick(hw: Hardware) -> Recommendation:
    rec = recommend(hw)
    assert rec is not None
    return rec


def is_8b(entry: CatalogEntry) -> bool:
    return entry.family == "deepseek-r1-0528-qwen3-8b"


def alternative(rec: Recommendation, entry_id: str) -> Candidate:
    return next(c for c in rec.alternatives if c.entry.id == entry_id)


def test_8gb_gpu_gets_the_8b_at_q4() -> None:
    rec = pick(Hardware.from_numbers(vram_gib=8, ram_gib=16))
    assert is_8b(rec.entry) and rec.entry.quant == "Q4_K_M"
    assert rec.estimate.verdict is Verdict.FULL_GPU and rec.estimate.context_length >= 16384 and rec.usable


def test_24gb_gpu_gets_the_8b_at_q8_with_long_context() -> None:
    rec = pick(Hardware.from_numbers(vram_gib=24, ram_gib=64))
    assert is_8b(rec.entry) and rec.entry.quant == "Q8_0"
    assert rec.estimate.verdict is Verdict.FULL_GPU and rec.estimate.context_length >= 65536


def test_80gb_gpu_gets_the_8b_at_q8_over_the_70b_that_also_fits() -> None:
    rec = pick(Hardware.from_numbers(vram_gib=80, ram_gib=128))
    assert rec.entry.id == "r1-0528-qwen3-8b-q8_0" and rec.estimate.verdict is Verdict.FULL_GPU
    # The 70B distill fits on the card too, but the newer 8B answers better and runs about five times faster.
    seventy = alternative(rec, "r1-distill-llama-70b-q4_k_m")
    assert seventy.estimate.verdict is Verdict.FULL_GPU and seventy.score < Candidate(rec.entry, rec.estimate).score


def test_two_80gb_gpus_and_256gb_ram_get_low_bit_full_r1_with_experts_in_ram() -> None:
    rec = pick(Hardware.from_numbers(vram_gib=80, gpus=2, ram_gib=256))
    assert rec.entry.family == "deepseek-r1-0528" and rec.entry.quant in LOW_BIT_FULL_R1
    assert rec.estimate.verdict is Verdict.MOE_EXPERTS_IN_RAM and rec.estimate.expert_layers_in_ram > 0
    assert rec.estimate.context_length >= 16384 and rec.usable


def test_cpu_only_16gb_gets_a_small_distill() -> None:
    rec = pick(Hardware.from_numbers(gpus=0, ram_gib=16))
    assert rec.entry.parameters <= 8.2e9 and rec.entry.total_size < 6e9
    assert rec.estimate.verdict is Verdict.CPU_ONLY


def test_apple_64gb_gets_the_8b_at_q5_over_the_32b_that_also_fits() -> None:
    rec = pick(Hardware.from_numbers(ram_gib=64, unified=True))
    assert rec.entry.id == "r1-0528-qwen3-8b-q5_k_m" and rec.estimate.verdict is Verdict.FULL_GPU
    thirty_two = alternative(rec, "r1-distill-qwen-32b-q4_k_m")
    assert (
        thirty_two.estimate.verdict is Verdict.FULL_GPU and thirty_two.score < Candidate(rec.entry, rec.estimate).score
    )


def test_apple_512gb_gets_the_full_r1() -> None:
    rec = pick(Hardware.from_numbers(ram_gib=512, unified=True))
    assert rec.entry.family == "deepseek-r1-0528" and rec.usable
    assert rec.estimate.tokens_per_second >= 8


def test_slow_machine_gets_the_fastest_with_a_warning() -> None:
    rec = pick(Hardware.from_numbers(gpus=0, ram_gib=4, ram_bandwidth_gbs=5))
    assert not rec.usable and rec.entry.id == "r1-distill-qwen-1.5b-q4_k_m"
    assert "Nothing in the catalog reaches 8 tokens/s" in rec.reason


def test_nothing_fits_a_tiny_machine() -> None:
    assert recommend(Hardware.from_numbers(gpus=0, ram_gib=1)) is None


def test_evaluate_ranks_every_chat_variant() -> None:
    candidates = evaluate(Hardware.from_numbers(vram_gib=24, ram_gib=64))
    assert len(candidates) == 18
    fitting = [c.estimate.fits for c in candidates]
    assert fitting == sorted(fitting, reverse=True)  # everything that fits comes first


def _cli(*argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="enclave")
    sub = parser.add_subparsers(dest="command")
    cli_models.register(sub)
    args = parser.parse_args(["models", "recommend", *argv])
    out, err = io.StringIO(), io.StringIO()
    return cli_models.run_recommend(args, out, err), out.getvalue(), err.getvalue()


def test_recommend_command_for_hypothetical_hardware() -> None:
    code, out, _ = _cli("--vram", "24", "--ram", "64", "--json")
    data = json.loads(out)
    assert code == 0 and data["recommendation"]["id"] == "r1-0528-qwen3-8b-q8_0"
    assert data["recommendation"]["estimate"]["verdict"] == "full_gpu" and data["hardware"]["hypothetical"]
    code, out, _ = _cli("--ram", "512", "--unified", "--all")
    assert code == 0 and "For the hardware described" in out and "DeepSeek R1 0528 (671B)" in out
    assert "All variants:" in out
    code, out, _ = _cli("--gpus", "0", "--ram", "1")
    assert code == 5 and "No DeepSeek R1 variant" in out


def test_recommend_command_for_a_pretend_cpu_only_16gb_machine() -> None:
    code, out, _ = _cli("--gpus", "0", "--ram", "16", "--json")
    data = json.loads(out)
    assert code == 0 and data["recommendation"]["id"] == "r1-0528-qwen3-8b-q4_k_m"
    assert data["recommendation"]["estimate"]["verdict"] == "cpu_only" and data["hardware"]["gpus"] == []


def test_recommend_command_judges_the_probed_computer() -> None:
    code, out, _ = _cli("--json")
    data = json.loads(out)
    reported = data["hardware"]
    assert not reported["hypothetical"]
    if sys.platform.startswith("linux"):  # it is this computer: the RAM the kernel reports
        mem_total = re.search(r"^MemTotal:\s+(\d+) kB$", Path("/proc/meminfo").read_text(), re.MULTILINE)
        assert mem_total is not None and reported["ram_total"] == int(mem_total.group(1)) * 1024
    # The verdict (exit code and model) is exactly the recommendation for the hardware it reports.
    hw = Hardware(
        **{
            **reported,
            "gpus": tuple(GPUInfo(**gpu) for gpu in reported["gpus"]),
            "cpu_features": tuple(reported["cpu_features"]),
            "notes": tuple(reported["notes"]),
        }
    )
    expected = recommend(hw)
    if expected is None:
        assert code == 5 and data["recommendation"] is None
    else:
        assert code == 0 and data["recommendation"]["id"] == expected.entry.id
        assert data["recommendation"]["usable"] == expected.usable


@pytest.mark.parametrize(
    ("argv", "message"),
    [(("--gpus", "2"), "--gpus needs --vram"), (("--vram", "-1"), "--vram must be"), (("--gpus", "-1"), "0 or more")],
)
def test_recommend_command_rejects_bad_numbers(argv: tuple[str, ...], message: str) -> None:
    code, _, err = _cli(*argv)
    assert code == 2 and message in err


def test_models_group_is_shared_and_idempotent() -> None:
    parser = argparse.ArgumentParser(prog="enclave")
    sub = parser.add_subparsers(dest="command")
    group = cli_models.get_models_group(sub)
    group.add_parser("other").set_defaults(handler=lambda args: 7)  # another area's subcommand
    cli_models.register(sub)
    assert cli_models.get_models_group(sub) is group
    args = parser.parse_args(["models", "other"])
    assert args.handler(args) == 7
    assert {"recommend", "fit", "list", "download", "import", "remove", "use"} <= set(group.choices)
    args = parser.parse_args(["models"])
    assert args.handler(args) == 2  # the bare group prints help

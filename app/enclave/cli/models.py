"""``enclave hardware``, ``enclave models recommend`` and ``enclave models fit``: the model manager's judgement on the
command line, for support questions ("what does Enclave see on my machine?") and for "what if I bought a 24 GB card?".

This module owns the ``models`` command group; other areas add their subcommands to it through
:func:`get_models_group`, which is idempotent, so registration order does not matter.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

from enclave.cli.exit_codes import ExitCode
from enclave.models.hardware import GIB, Hardware, probe_hardware
from enclave.models.placement import planning_hardware

_GROUP_ATTR = "_enclave_models_subparsers"


def get_models_group(subparsers: Any) -> Any:
    """The ``models`` group's sub-subparsers action, created on first use (safe to call any number of times)."""
    models = subparsers.choices.get("models")
    if models is None:
        models = subparsers.add_parser("models", help="choose, fit and manage models")
        models.set_defaults(handler=lambda args: _group_help(models))
    group = getattr(models, _GROUP_ATTR, None)
    if group is None:
        group = models.add_subparsers(dest="models_command", metavar="SUBCOMMAND")
        setattr(models, _GROUP_ATTR, group)
    return group


def _group_help(parser: argparse.ArgumentParser) -> ExitCode:
    parser.print_help(sys.stderr)
    return ExitCode.USAGE


def _add_pretend_hardware(parser: argparse.ArgumentParser) -> None:
    """Options that describe a hypothetical computer instead of this one (recommend, fit)."""
    parser.add_argument("--vram", type=float, metavar="GIB", help="pretend: memory per GPU in GB")
    parser.add_argument("--gpus", type=int, metavar="N", help="pretend: number of GPUs (0: CPU only)")
    parser.add_argument("--ram", type=float, metavar="GIB", help="pretend: system RAM in GB")
    parser.add_argument("--unified", action="store_true", help="pretend: Apple-style unified memory (give --ram)")
    parser.add_argument(
        "--bandwidth",
        type=float,
        metavar="GBS",
        help="pretend: GPU (or unified) memory bandwidth, GB/s",
    )
    parser.add_argument("--ram-bandwidth", type=float, metavar="GBS", help="pretend: system RAM bandwidth, GB/s")


def register(subparsers: Any) -> None:
    """Add ``hardware`` and the ``models recommend|fit`` subcommands (cli._command_groups calls this)."""
    hardware = subparsers.add_parser("hardware", help="show the GPUs, memory, CPU and disk Enclave sees")
    hardware.add_argument("--json", action="store_true", help="print one JSON object")
    hardware.add_argument("--models-dir", type=Path, default=None, help="folder whose free disk space to report")
    hardware.set_defaults(handler=lambda args: run_hardware(args, sys.stdout))

    models = get_models_group(subparsers)
    rec = models.add_parser("recommend", help="the DeepSeek R1 variant that suits this (or a hypothetical) computer")
    rec.add_argument("--json", action="store_true", help="print one JSON object")
    _add_pretend_hardware(rec)
    rec.add_argument("--all", action="store_true", help="also list every variant with its estimate")
    rec.set_defaults(handler=lambda args: run_recommend(args, sys.stdout, sys.stderr))

    fit = models.add_parser("fit", help="how a GGUF file (all shards of a split model) would run here")
    fit.add_argument("paths", nargs="+", type=Path, metavar="FILE", help="the .gguf file, or every shard")
    fit.add_argument("--ctx", type=int, default=None, metavar="N", help="context length to check (default: Auto)")
    fit.add_argument("--kv-type", choices=("f16", "q8_0", "q4_0"), default=None, help="KV cache type (default: Auto)")
    fit.add_argument("--json", action="store_true", help="print one JSON object")
    _add_pretend_hardware(fit)
    fit.set_defaults(handler=lambda args: run_fit(args, sys.stdout, sys.stderr))

    from enclave.cli.manage import register_models_commands

    register_models_commands(models)


# --- handlers ---------------------------------------------------------------------------------------------------


def _gb(n: int | float | None) -> str:
    return "unknown" if n is None else f"{n / GIB:.1f} GB"


def _default_models_dir() -> Path:
    from enclave.paths import app_paths

    return app_paths().models_dir


def run_hardware(args: argparse.Namespace, out: TextIO) -> ExitCode:
    hw = probe_hardware(args.models_dir or _default_models_dir())
    if args.json:
        json.dump(hw.to_dict(), out, indent=2)
        out.write("\n")
        return ExitCode.OK
    out.write(describe_hardware(hw))
    return ExitCode.OK


def describe_hardware(hw: Hardware) -> str:
    lines = []
    for gpu in hw.gpus:
        free = f", {_gb(gpu.free_bytes)} free" if gpu.free_bytes is not None else ""
        kind = "unified memory" if gpu.unified else gpu.backend
        device = f" [{gpu.device}]" if gpu.device else ""
        lines.append(f"GPU:   {gpu.name}{device} ({kind}, {_gb(gpu.total_bytes)}{free}, ~{gpu.bandwidth_gbs:.0f} GB/s)")
        if gpu.software:
            lines.append(f"       runs on the CPU: used only when chosen (--device {gpu.device}, Settings → Run on)")
    if not hw.gpus:
        lines.append("GPU:   none found")
    lines.append(f"RAM:   {_gb(hw.ram_total)} ({_gb(hw.ram_available)} available, ~{hw.ram_bandwidth_gbs:.0f} GB/s)")
    features = " ".join(f.upper() for f in hw.cpu_features) or "unknown"
    lines.append(f"CPU:   {hw.cpu_cores} cores, {hw.cpu_threads} threads; {features}")
    if hw.models_dir is not None:
        lines.append(f"Disk:  {_gb(hw.disk_free)} free for {hw.models_dir}")
    lines.append(f"llama.cpp GPU offload: {'yes' if hw.gpu_offload_supported else 'no (CPU-only build)'}")
    lines += [f"note:  {note}" for note in hw.notes]
    return "\n".join(lines) + "\n"


def hardware_from_args(args: argparse.Namespace) -> Hardware | None:
    """Hypothetical hardware when any --vram/--gpus/--ram/--unified/--bandwidth flag is given, else None."""
    flags = (args.vram, args.gpus, args.ram, args.bandwidth, args.ram_bandwidth)
    if not args.unified and all(v is None for v in flags):
        return None
    return Hardware.from_numbers(
        vram_gib=args.vram,
        gpus=1 if args.gpus is None else args.gpus,
        ram_gib=args.ram,
        unified=args.unified,
        bandwidth_gbs=args.bandwidth,
        ram_bandwidth_gbs=args.ram_bandwidth,
    )


def _check_numbers(args: argparse.Namespace, err: TextIO) -> bool:
    for name in ("vram", "ram", "bandwidth", "ram_bandwidth"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            print(f"enclave: --{name.replace('_', '-')} must be a positive number", file=err)
            return False
    if args.gpus is not None and args.gpus < 0:
        print("enclave: --gpus must be 0 or more", file=err)
        return False
    if args.gpus and args.vram is None and not args.unified:
        print("enclave: --gpus needs --vram (memory per GPU in GB)", file=err)
        return False
    return True


def run_recommend(args: argparse.Namespace, out: TextIO, err: TextIO) -> ExitCode:
    from enclave.models.recommend import evaluate, recommend

    if not _check_numbers(args, err):
        return ExitCode.USAGE
    hw = hardware_from_args(args) or planning_hardware(_default_models_dir())
    rec = recommend(hw)
    if args.json:
        payload: dict[str, Any] = {"hardware": hw.to_dict(), "recommendation": None}
        if rec is not None:
            payload["recommendation"] = {
                "id": rec.entry.id,
                "display_name": rec.entry.display_name,
                "usable": rec.usable,
                "reason": rec.reason,
                "estimate": _estimate_dict(rec.estimate),
            }
        if args.all:
            payload["variants"] = [
                {"id": c.entry.id, "score": round(c.score, 2) if c.estimate.fits else None,
                 "estimate": _estimate_dict(c.estimate)}
                for c in evaluate(hw)
            ]  # fmt: skip
        json.dump(payload, out, indent=2)
        out.write("\n")
        return ExitCode.OK if rec is not None else ExitCode.NOTHING_FITS
    if hw.hypothetical:
        out.write("For the hardware described:\n")
    if rec is None:
        out.write("No DeepSeek R1 variant in the catalog fits this computer's memory.\n")
        return ExitCode.NOTHING_FITS
    size = rec.entry.total_size / 1e9
    out.write(f"Recommended: {rec.entry.display_name} ({size:.1f} GB download)\n{rec.reason}\n{rec.estimate.reason}\n")
    if args.all:
        out.write("\nAll variants:\n")
        for c in evaluate(hw):
            e = c.estimate
            speed = f"{e.tokens_per_second:6.1f} tok/s" if e.fits else "           "
            out.write(f"  {c.entry.id:32} {e.verdict.value:19} ctx {e.context_length:>7,}  {speed}\n")
    return ExitCode.OK


def run_fit(args: argparse.Namespace, out: TextIO, err: TextIO) -> ExitCode:
    """The load plan the engine would use for this file (``enclave.models.placement``), here or on pretend hardware."""
    from enclave.models.fit import FitError, facts_from_headers
    from enclave.models.gguf import GGUFError, read_gguf_header
    from enclave.models.placement import PlanChoices, PlanError, plan_from_facts

    if args.ctx is not None and args.ctx <= 0:
        print("enclave: --ctx must be a positive number", file=err)
        return ExitCode.USAGE
    if not _check_numbers(args, err):
        return ExitCode.USAGE
    try:
        headers = [read_gguf_header(p) for p in args.paths]
        facts = facts_from_headers(headers)
    except (GGUFError, FitError) as exc:
        print(f"enclave: {exc}", file=err)
        return ExitCode.MODEL if all(Path(p).exists() for p in args.paths) else ExitCode.NOT_FOUND
    hw = hardware_from_args(args) or planning_hardware(_default_models_dir())
    first = min(headers, key=lambda h: h.split_no)
    try:
        plan = plan_from_facts(
            facts, first, Path(args.paths[0]), hw, PlanChoices(context_length=args.ctx, kv_cache_type=args.kv_type)
        )
    except PlanError as exc:
        if args.json:
            json.dump({"model": facts.name, "fits": False, "reason": str(exc)}, out, indent=2)
            out.write("\n")
        else:
            out.write(f"{facts.name}: {exc}\n")
        return ExitCode.NOTHING_FITS
    estimate = plan.estimate
    assert estimate is not None
    if args.json:
        plan_dict = {
            "summary": plan.summary(),
            "n_ctx": plan.n_ctx,
            "n_gpu_layers": plan.n_gpu_layers,
            "kv_cache_type": plan.kv_cache_type,
            "n_batch": plan.n_batch,
            "tensor_overrides": list(plan.tensor_overrides),
            "device_weight_bytes": plan.device_weight_bytes,
            "device_kv_bytes": plan.device_kv_bytes,
            "notes": list(plan.notes),
        }
        json.dump({"model": facts.name, "plan": plan_dict, "estimate": _estimate_dict(estimate)}, out, indent=2)
        out.write("\n")
    else:
        b = estimate.breakdown
        out.write(
            f"{facts.name}: {estimate.reason}\n"
            f"  plan: {plan.summary()}\n"
            f"  weights {_gb(b.weights)}, KV cache {_gb(b.kv_cache)}, compute {_gb(b.compute)}, "
            f"reserve {_gb(b.reserve)}\n"
        )
        for override in plan.tensor_overrides:
            out.write(f"  tensor override (llama.cpp -ot): {override}\n")
        for note in plan.notes:
            out.write(f"  note: {note}\n")
    return ExitCode.OK


def _estimate_dict(estimate: Any) -> dict[str, Any]:
    data = asdict(estimate)
    data["verdict"] = estimate.verdict.value
    data["usable"] = estimate.usable
    data["seconds_for_reasoning"] = round(estimate.seconds_for_reasoning, 1) if estimate.fits else None
    return data

"""The hardware probe: never raises, parses what the OS reports, and builds hypothetical machines."""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import pytest

from enclave.models import cli_commands, hardware
from enclave.models.hardware import GIB, Hardware, bandwidth_for, probe_hardware


def test_probe_on_this_machine(tmp_path: Path) -> None:
    hw = probe_hardware(tmp_path / "not" / "yet" / "models")
    assert hw.ram_total > 0 and 0 < hw.ram_available <= hw.ram_total
    assert hw.cpu_cores >= 1 and hw.cpu_threads >= hw.cpu_cores
    assert hw.disk_free is not None and hw.disk_free > 0  # measured on the disk the folder will live on
    if not hw.gpus:
        assert any("no GPU found" in note for note in hw.notes)
    json.dumps(hw.to_dict())


def test_llama_cpp_probe_reports_this_build() -> None:
    offload, gpus = hardware._probe_llama_cpp()
    import llama_cpp

    assert offload == bool(llama_cpp.llama_supports_gpu_offload())
    if not offload:
        assert gpus == []  # the portable CPU build has only the CPU device
    assert all(g.total_bytes > 0 for g in gpus)


def test_every_probe_failing_degrades_to_no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom() -> None:
        raise RuntimeError("driver exploded")

    for name in (
        "_probe_llama_cpp",
        "_probe_nvml",
        "_probe_amd_sysfs",
        "_probe_ram",
        "_probe_cores",
        "_probe_cpu_features",
        "_nvidia_driver_names",
    ):
        monkeypatch.setattr(hardware, name, boom)
    hw = probe_hardware()
    assert hw.gpus == () and hw.ram_total == 0 and hw.cpu_cores == 1
    assert any("llama.cpp device query failed: RuntimeError: driver exploded" in n for n in hw.notes)
    assert hw.notes[-1].startswith("no GPU found") or any("no GPU found" in n for n in hw.notes)


def test_nvidia_present_but_unmeasurable_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hardware, "_probe_llama_cpp", lambda: (False, []))
    monkeypatch.setattr(hardware, "_probe_nvml", lambda: [])
    monkeypatch.setattr(hardware, "_probe_amd_sysfs", lambda: [])
    monkeypatch.setattr(hardware, "_nvidia_driver_names", lambda: ["NVIDIA GeForce RTX 4090"])
    hw = probe_hardware()
    assert any("RTX 4090" in n and "nvidia-ml-py" in n for n in hw.notes)


def test_parse_meminfo() -> None:
    text = "MemTotal:       16314516 kB\nMemFree:         1000000 kB\nMemAvailable:   12000000 kB\n"
    assert hardware.parse_meminfo(text) == (16314516 * 1024, 12000000 * 1024)
    old_kernel = "MemTotal: 1000 kB\nMemFree: 100 kB\nCached: 50 kB\n"
    assert hardware.parse_meminfo(old_kernel) == (1000 * 1024, 150 * 1024)


def test_parse_cpuinfo() -> None:
    text = "".join(
        f"processor\t: {i}\nphysical id\t: 0\ncore id\t\t: {i // 2}\nflags\t\t: fpu sse4_2 avx avx2 fma avx512f\n\n"
        for i in range(8)
    )
    assert hardware.parse_cpuinfo_cores(text) == 4  # 8 threads on 4 cores
    assert hardware.parse_cpuinfo_flags(text) == ("sse4_2", "avx", "avx2", "fma", "avx512f")
    arm = "processor\t: 0\nFeatures\t: fp asimd asimddp sve i8mm\n"
    assert hardware.parse_cpuinfo_cores(arm) is None
    assert hardware.parse_cpuinfo_flags(arm) == ("asimd", "asimddp", "sve", "i8mm")


def test_amd_sysfs(tmp_path: Path) -> None:
    device = tmp_path / "card1" / "device"
    device.mkdir(parents=True)
    (device / "mem_info_vram_total").write_text(str(24 * GIB))
    (device / "mem_info_vram_used").write_text(str(2 * GIB))
    (device / "product_name").write_text("Radeon RX 7900 XTX\n")
    (tmp_path / "card1-DP-1").mkdir()  # connector entries are skipped
    (tmp_path / "card0" / "device").mkdir(parents=True)  # an Intel iGPU without VRAM files
    [gpu] = hardware._probe_amd_sysfs(tmp_path)
    assert gpu.name == "AMD Radeon RX 7900 XTX (card1)" and gpu.backend == "rocm"
    assert (gpu.total_bytes, gpu.free_bytes, gpu.bandwidth_gbs) == (24 * GIB, 22 * GIB, 960.0)


def test_nvidia_driver_names(tmp_path: Path) -> None:
    info = tmp_path / "0000:01:00.0" / "information"
    info.parent.mkdir()
    info.write_text("Model: \t\t NVIDIA H100 PCIe\nIRQ:   42\n")
    assert hardware._nvidia_driver_names(tmp_path) == ["NVIDIA H100 PCIe"]


@pytest.mark.parametrize(
    ("name", "gib", "expected"),
    [
        ("NVIDIA H100 PCIe", 80, 2000.0),
        ("NVIDIA H100 80GB HBM3", 80, 3350.0),
        ("NVIDIA H200", 141, 4800.0),
        ("NVIDIA GeForce RTX 4090", 24, 1008.0),
        ("Apple M3 Ultra", 512, 819.0),
        ("Mystery card", 24, 1000.0),
        ("Mystery card", 8, 272.0),
    ],
)
def test_bandwidth_table(name: str, gib: int, expected: float) -> None:
    assert bandwidth_for(name, gib * GIB) == expected


def test_hypothetical_machines() -> None:
    mac = Hardware.from_numbers(ram_gib=64, unified=True)
    assert mac.unified_memory and mac.gpus[0].total_bytes == 48 * GIB and mac.ram_total == 64 * GIB
    servers = Hardware.from_numbers(vram_gib=80, gpus=2, ram_gib=256, bandwidth_gbs=3350)
    assert len(servers.gpus) == 2 and servers.total_vram == 160 * GIB and servers.gpus[0].bandwidth_gbs == 3350
    assert servers.gpus[0].usable_bytes < servers.gpus[0].total_bytes  # the desktop holds a little
    cpu = Hardware.from_numbers(gpus=0, ram_gib=16, bandwidth_gbs=50)
    assert not cpu.has_gpu and cpu.ram_bandwidth_gbs == 50 and cpu.hypothetical


def _run(*argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="enclave")
    cli_commands.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    out = io.StringIO()
    if args.command == "hardware":
        return cli_commands.run_hardware(args, out), out.getvalue()
    return args.handler(args), ""


def test_hardware_command(tmp_path: Path) -> None:
    code, text = _run("hardware", "--models-dir", str(tmp_path))
    assert code == 0 and "RAM:" in text and "CPU:" in text and str(tmp_path) in text
    code, text = _run("hardware", "--json", "--models-dir", str(tmp_path))
    data = json.loads(text)
    assert code == 0 and data["ram_total"] > 0 and data["models_dir"] == str(tmp_path)


def test_hardware_command_in_a_process(tmp_path: Path) -> None:
    import subprocess

    code = (
        "import argparse, sys\n"
        "from enclave.models import cli_commands\n"
        "p = argparse.ArgumentParser(); cli_commands.register(p.add_subparsers())\n"
        "a = p.parse_args(sys.argv[1:]); sys.exit(a.handler(a))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "hardware", "--json", "--models-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["cpu_threads"] >= 1

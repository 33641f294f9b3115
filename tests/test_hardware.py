"""The hardware probe: never raises, parses what the OS reports, and builds hypothetical machines."""

from __future__ import annotations

import argparse
import ctypes
import io
import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from enclave.cli import models as cli_models
from enclave.models import hardware
from enclave.models.hardware import GIB, Hardware, bandwidth_for, probe_hardware


def _meminfo_kib(key: str) -> int:
    match = re.search(rf"^{key}:\s+(\d+) kB$", Path("/proc/meminfo").read_text(), re.MULTILINE)
    assert match is not None
    return int(match.group(1))


def _ggml_devices() -> list[tuple[str, int, str]]:
    """(name, type, description) of every device in llama.cpp's own ggml backend registry, asked directly."""
    import llama_cpp

    lib_dir = Path(llama_cpp.__file__).parent / "lib"
    [path] = [lib_dir / n for n in ("libggml.so", "libggml.dylib", "ggml.dll") if (lib_dir / n).exists()]
    lib = ctypes.CDLL(str(path))
    lib.ggml_backend_dev_count.restype = ctypes.c_size_t
    lib.ggml_backend_dev_get.restype, lib.ggml_backend_dev_get.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    lib.ggml_backend_dev_type.restype, lib.ggml_backend_dev_type.argtypes = ctypes.c_int, [ctypes.c_void_p]
    for fn in (lib.ggml_backend_dev_name, lib.ggml_backend_dev_description):
        fn.restype, fn.argtypes = ctypes.c_char_p, [ctypes.c_void_p]
    devices = []
    for i in range(lib.ggml_backend_dev_count()):
        dev = lib.ggml_backend_dev_get(i)
        name, description = lib.ggml_backend_dev_name(dev), lib.ggml_backend_dev_description(dev)
        devices.append((name.decode(), lib.ggml_backend_dev_type(dev), description.decode()))
    return devices


DEV_CPU, DEV_GPU, DEV_IGPU = 0, 1, 2  # enum ggml_backend_dev_type


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="compares with /proc on Linux")
def test_probe_measures_this_machine(tmp_path: Path) -> None:
    hw = probe_hardware(tmp_path / "not" / "yet" / "models")
    assert hw.ram_total == _meminfo_kib("MemTotal") * 1024
    assert 0 < hw.ram_available <= hw.ram_total
    assert hw.cpu_threads == os.cpu_count()
    processors = [
        {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in block.splitlines())}
        for block in Path("/proc/cpuinfo").read_text().split("\n\n")
        if block.strip()
    ]
    cores = {(p.get("physical id", "0"), p["core id"]) for p in processors if "core id" in p}
    assert hw.cpu_cores == (len(cores) or os.cpu_count())  # physical cores where the kernel lists them
    flags = set((processors[0].get("flags") or processors[0].get("Features", "")).split())
    assert set(hw.cpu_features) == flags & set(hardware.INTERESTING_FLAGS)
    # The models folder does not exist yet: the free space is that of the disk it will live on.
    assert hw.disk_free is not None and abs(hw.disk_free - shutil.disk_usage(tmp_path).free) < GIB
    assert hw.models_dir == str(tmp_path / "not" / "yet" / "models") and not hw.hypothetical
    assert json.loads(json.dumps(hw.to_dict()))["ram_total"] == hw.ram_total


def test_llama_cpp_probe_reports_exactly_the_gpu_devices_of_this_build() -> None:
    import llama_cpp

    devices = _ggml_devices()
    assert any(kind == DEV_CPU and name == "CPU" for name, kind, _ in devices), devices  # every build has the CPU
    offload, gpus = hardware._probe_llama_cpp()
    # Offload means a GPU device this build can use: llama_supports_gpu_offload() alone is also true for a CPU build
    # with the RPC backend (remote devices), which is not a GPU in this computer.
    assert offload == (bool(llama_cpp.llama_supports_gpu_offload()) and bool(gpus))
    # The CPU device is not a GPU: only GPU and integrated-GPU devices are reported, in the registry's order.
    assert [g.name for g in gpus] == [desc or name for name, kind, desc in devices if kind in (DEV_GPU, DEV_IGPU)]
    assert all(g.source == "llama.cpp" and g.total_bytes > 0 for g in gpus)


def test_cpu_only_build_on_a_machine_without_a_gpu_reports_none_and_says_why(tmp_path: Path) -> None:
    devices = _ggml_devices()
    if any(kind in (DEV_GPU, DEV_IGPU) for _, kind, _ in devices):
        pytest.skip(f"this llama.cpp build has a GPU device: {devices}")
    if hardware._probe_nvml() or hardware._nvidia_driver_names() or hardware._probe_amd_sysfs():
        pytest.skip("this machine has a GPU that another source reports")
    assert any(kind == DEV_CPU for _, kind, _ in devices)
    assert hardware._probe_llama_cpp()[1] == []
    hw = probe_hardware(tmp_path)
    assert hw.gpus == () and not hw.has_gpu and hw.total_vram == 0
    assert not hw.gpu_offload_supported  # even with the RPC backend built in: no GPU here to offload to
    assert hw.notes == ("no GPU found: no source reported one",)
    assert "GPU:   none found\n" in cli_models.describe_hardware(hw)


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
    cli_models.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    out = io.StringIO()
    if args.command == "hardware":
        return cli_models.run_hardware(args, out), out.getvalue()
    return args.handler(args), ""


def test_hardware_command(tmp_path: Path) -> None:
    code, first_text = _run("hardware", "--models-dir", str(tmp_path))
    assert code == 0 and "RAM:" in first_text and "CPU:" in first_text and str(tmp_path) in first_text
    code, text = _run("hardware", "--json", "--models-dir", str(tmp_path))
    data = json.loads(text)
    assert code == 0 and data["ram_total"] > 0 and data["models_dir"] == str(tmp_path)
    assert f"{data['cpu_cores']} cores, {data['cpu_threads']} threads" in first_text


def test_hardware_command_in_a_process(tmp_path: Path) -> None:
    import subprocess

    code = (
        "import argparse, sys\n"
        "from enclave.cli import models as cli_models\n"
        "p = argparse.ArgumentParser(); cli_models.register(p.add_subparsers())\n"
        "a = p.parse_args(sys.argv[1:]); sys.exit(a.handler(a))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "hardware", "--json", "--models-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["cpu_threads"] == os.cpu_count() and data["models_dir"] == str(tmp_path)
    if sys.platform.startswith("linux"):
        assert data["ram_total"] == _meminfo_kib("MemTotal") * 1024

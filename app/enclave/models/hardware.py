"""What this computer can run: GPUs, memory, disk, CPU — probed without ever raising.

The recommendation is only as good as this probe, and a probe that crashes the app on an odd driver is worse than none,
so every source is tried in order of trust and every failure degrades to "no GPU found" with the reason kept in
``Hardware.notes``:

1. the llama.cpp build itself (ggml backend device API): it reports exactly the devices it will use, with free memory;
2. NVML (``pynvml`` from nvidia-ml-py, only if importable) for NVIDIA cards the build cannot use yet;
3. sysfs ``mem_info_vram_total`` for AMD cards on Linux;
4. Apple Silicon: unified memory from ``sysctl hw.memsize``; the GPU may use about 75 % of it by default.

Windows DXGI would need hand-written COM vtables through ctypes; it is not done (WMI's AdapterRAM is a 32-bit field
that caps at 4 GB, so it is never used). On Windows a CUDA/Vulkan build or NVML supplies the GPU instead.

``Hardware`` can also be built from numbers (``Hardware.hypothetical``) for "what would I get with a 24 GB card?".
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

GIB = 1 << 30
Backend = Literal["cuda", "rocm", "metal", "vulkan", "sycl", "opencl", "other"]

# Memory bandwidth in GB/s, from vendor spec sheets (models.md §7 for the H100/H200/4090/Apple/DDR5 rows). Matched by
# substring on the device name, most specific first.
BANDWIDTH_TABLE: tuple[tuple[str, float], ...] = (
    ("H200", 4800.0),
    ("H100 PCIE", 2000.0),
    ("H100 NVL", 3900.0),
    ("H100", 3350.0),
    ("A100-SXM4-80GB", 2039.0),
    ("A100 80GB", 1935.0),
    ("A100", 1555.0),
    ("L40S", 864.0),
    ("A6000", 768.0),
    ("RTX 5090", 1792.0),
    ("RTX 5080", 960.0),
    ("RTX 4090", 1008.0),
    ("RTX 4080", 717.0),
    ("RTX 4070 TI", 504.0),
    ("RTX 4070", 504.0),
    ("RTX 4060 TI", 288.0),
    ("RTX 4060", 272.0),
    ("RTX 3090", 936.0),
    ("RTX 3080", 760.0),
    ("RTX 3070", 448.0),
    ("RTX 3060", 360.0),
    ("RX 7900 XTX", 960.0),
    ("RX 7900 XT", 800.0),
    ("MI300X", 5300.0),
    ("M4 MAX", 546.0),
    ("M4 PRO", 273.0),
    ("M3 ULTRA", 819.0),
    ("M2 ULTRA", 800.0),
    ("M1 ULTRA", 800.0),
    ("M3 MAX", 400.0),
    ("M2 MAX", 400.0),
    ("M1 MAX", 400.0),
    ("M3 PRO", 150.0),
    ("M2 PRO", 200.0),
    ("M1 PRO", 200.0),
)
# Dual-channel DDR4-3200 moves 51 GB/s, DDR5-5600 90 GB/s (models.md); RAM speed cannot be read without root.
DEFAULT_RAM_BANDWIDTH_GBS = 80.0
APPLE_GPU_SHARE = 0.75  # macOS lets the GPU wire about 75 % of unified memory by default (65-78 % reported)
HYPOTHETICAL_RAM_FREE_SHARE = 0.85  # the OS and open apps hold the rest
HYPOTHETICAL_VRAM_FREE_SHARE = 0.95  # the desktop and other apps usually hold a few hundred MB of a card


def bandwidth_for(name: str, total_bytes: int, *, unified: bool = False) -> float:
    """Spec-sheet bandwidth for a named device, else a guess from its memory size (bigger cards are faster)."""
    upper = name.upper()
    for key, value in BANDWIDTH_TABLE:
        if key in upper:
            return value
    gib = total_bytes / GIB
    if unified:  # Apple: base ~100, Pro ~200, Max ~400, Ultra ~800
        return 100.0 if gib < 16 else 200.0 if gib < 36 else 400.0 if gib < 160 else 800.0
    for limit, value in ((8.5, 272.0), (12.5, 360.0), (16.5, 500.0), (24.5, 1000.0), (48.5, 864.0), (96.0, 2000.0)):
        if gib <= limit:
            return value
    return 4800.0


@dataclass(frozen=True)
class GPUInfo:
    name: str
    backend: Backend
    total_bytes: int
    free_bytes: int | None  # None when the source cannot tell; the fit then assumes the total minus a reserve
    unified: bool = False  # shares system RAM (Apple Silicon, integrated GPUs)
    bandwidth_gbs: float = 0.0
    source: str = ""  # "llama.cpp", "nvml", "sysfs", "sysctl", "hypothetical"
    device: str = ""  # llama.cpp's device name ("Vulkan0", "CUDA0"), when llama.cpp reported it
    software: bool = False  # a GPU API running on the CPU (Mesa's lavapipe): never chosen automatically
    speed_factor: float | None = None  # measured ÷ predicted decoding speed here (models/speed.py); None: not measured
    # The largest weight (or product) the device multiplies, as llama.cpp asks it when loading; a weight over it stays
    # in host memory (Vulkan: maxStorageBufferRange). None: no limit known.
    max_tensor_bytes: int | None = None

    @property
    def usable_bytes(self) -> int:
        return self.free_bytes if self.free_bytes is not None else self.total_bytes


@dataclass(frozen=True)
class Hardware:
    gpus: tuple[GPUInfo, ...] = ()
    ram_total: int = 0
    ram_available: int = 0
    cpu_cores: int = 1  # physical where knowable
    cpu_threads: int = 1
    cpu_features: tuple[str, ...] = ()
    ram_bandwidth_gbs: float = DEFAULT_RAM_BANDWIDTH_GBS
    disk_free: int | None = None
    models_dir: str | None = None
    gpu_offload_supported: bool = False  # the installed llama.cpp build can use a GPU
    platform: str = field(default_factory=lambda: sys.platform)
    notes: tuple[str, ...] = ()
    hypothetical: bool = False
    cpu_name: str = ""  # the CPU's brand string, where the system tells it
    cpu_speed_factor: float | None = None  # measured ÷ predicted decoding speed on the CPU (models/speed.py)

    @property
    def has_gpu(self) -> bool:
        return bool(self.gpus)

    @property
    def unified_memory(self) -> bool:
        return any(g.unified for g in self.gpus)

    @property
    def total_vram(self) -> int:
        return sum(g.total_bytes for g in self.gpus)

    @classmethod
    def from_numbers(
        cls,
        *,
        vram_gib: float | None = None,
        gpus: int = 1,
        ram_gib: float | None = None,
        unified: bool = False,
        bandwidth_gbs: float | None = None,
        ram_bandwidth_gbs: float | None = None,
        cpu_cores: int = 8,
    ) -> Hardware:
        """Hypothetical hardware, e.g. from CLI flags. ``unified``: ``ram_gib`` (or ``vram_gib``) is Apple-style
        unified memory and the GPU gets ~75 % of it. Without ``vram_gib`` (or with ``gpus=0``) it is CPU-only."""
        notes: list[str] = ["hypothetical hardware from the numbers given"]
        if unified:
            total = (ram_gib if ram_gib is not None else vram_gib or 16.0) * GIB
            gpu_bytes = int(total * APPLE_GPU_SHARE)
            bw = bandwidth_gbs or bandwidth_for("", int(total), unified=True)
            gpu = GPUInfo("Apple GPU (unified memory)", "metal", gpu_bytes, gpu_bytes, True, bw, "hypothetical")
            return cls(
                gpus=(gpu,),
                ram_total=int(total),
                ram_available=int(total * HYPOTHETICAL_RAM_FREE_SHARE),
                cpu_cores=cpu_cores,
                cpu_threads=cpu_cores,
                ram_bandwidth_gbs=ram_bandwidth_gbs or bw,
                gpu_offload_supported=True,
                platform="darwin",
                notes=(*notes, f"the GPU may use about {APPLE_GPU_SHARE:.0%} of unified memory"),
                hypothetical=True,
            )
        ram = (ram_gib if ram_gib is not None else 32.0) * GIB
        gpu_list: tuple[GPUInfo, ...] = ()
        if vram_gib and gpus > 0:
            vram = int(vram_gib * GIB)
            free = int(vram * HYPOTHETICAL_VRAM_FREE_SHARE)
            bw = bandwidth_gbs or bandwidth_for("", vram)
            gpu_list = tuple(GPUInfo(f"GPU {i}", "cuda", vram, free, False, bw, "hypothetical") for i in range(gpus))
        elif bandwidth_gbs and not ram_bandwidth_gbs:
            ram_bandwidth_gbs = bandwidth_gbs  # CPU-only: --bandwidth means the RAM's
        return cls(
            gpus=gpu_list,
            ram_total=int(ram),
            ram_available=int(ram * HYPOTHETICAL_RAM_FREE_SHARE),
            cpu_cores=cpu_cores,
            cpu_threads=cpu_cores * 2,
            ram_bandwidth_gbs=ram_bandwidth_gbs or DEFAULT_RAM_BANDWIDTH_GBS,
            gpu_offload_supported=bool(gpu_list),
            platform="linux",
            notes=tuple(notes),
            hypothetical=True,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly view for ``enclave hardware --json`` and diagnostics."""
        return {
            "gpus": [
                {
                    "name": g.name,
                    "backend": g.backend,
                    "total_bytes": g.total_bytes,
                    "free_bytes": g.free_bytes,
                    "unified": g.unified,
                    "bandwidth_gbs": g.bandwidth_gbs,
                    "source": g.source,
                    "device": g.device,
                    "software": g.software,
                    "speed_factor": g.speed_factor,
                }
                for g in self.gpus
            ],
            "ram_total": self.ram_total,
            "ram_available": self.ram_available,
            "ram_bandwidth_gbs": self.ram_bandwidth_gbs,
            "cpu_cores": self.cpu_cores,
            "cpu_threads": self.cpu_threads,
            "cpu_name": self.cpu_name,
            "cpu_speed_factor": self.cpu_speed_factor,
            "cpu_features": list(self.cpu_features),
            "disk_free": self.disk_free,
            "models_dir": self.models_dir,
            "gpu_offload_supported": self.gpu_offload_supported,
            "platform": self.platform,
            "notes": list(self.notes),
            "hypothetical": self.hypothetical,
        }


# --- the probe -------------------------------------------------------------------------------------------------


def probe_hardware(models_dir: Path | None = None, *, use_llama_cpp: bool = True) -> Hardware:
    """Probe this computer. Never raises: what cannot be known is left at a safe default and explained in notes.

    ``use_llama_cpp=False`` never loads llama.cpp (the app's window process; see hardware_child.py)."""
    notes: list[str] = []
    offload, gpus = (
        _guarded(notes, "llama.cpp device query", _probe_llama_cpp, (False, [])) if use_llama_cpp else (False, [])
    )
    if not gpus:
        gpus = _guarded(notes, "NVML", _probe_nvml, [])
    if not gpus and sys.platform.startswith("linux"):
        gpus = _guarded(notes, "sysfs (AMD)", _probe_amd_sysfs, [])
    ram_total, ram_available = _guarded(notes, "system memory", _probe_ram, (0, 0))
    if not gpus and sys.platform == "darwin" and platform.machine() == "arm64":
        gpus = _guarded(notes, "Apple unified memory", lambda: _probe_apple(ram_total), [])
    if not gpus:
        nvidia = _guarded(notes, "NVIDIA driver", _nvidia_driver_names, [])
        if nvidia:
            notes.append(
                f"NVIDIA GPU present ({', '.join(nvidia)}) but its memory could not be read: install a CUDA build "
                "of llama.cpp or the nvidia-ml-py package"
            )
        notes.append("no GPU found" + ("" if notes else ": no source reported one"))
    elif not offload:
        notes.append(
            "a GPU is present but the installed llama.cpp build cannot use it (CPU-only build); estimates assume a "
            "GPU build"
        )
    cores, threads = _guarded(notes, "CPU cores", _probe_cores, (1, os.cpu_count() or 1))
    features = _guarded(notes, "CPU features", lambda: _probe_cpu_features(use_llama_cpp), ())
    cpu_name = _guarded(notes, "CPU name", _probe_cpu_name, "")
    disk_free = None
    if models_dir is not None:
        disk_free = _guarded(notes, "free disk space", lambda: _disk_free(models_dir), None)
    ram_bw = DEFAULT_RAM_BANDWIDTH_GBS
    if any(g.unified for g in gpus):
        ram_bw = max(g.bandwidth_gbs for g in gpus)
    return Hardware(
        gpus=tuple(gpus),
        ram_total=ram_total,
        ram_available=ram_available,
        cpu_cores=cores,
        cpu_threads=threads,
        cpu_features=tuple(features),
        ram_bandwidth_gbs=ram_bw,
        disk_free=disk_free,
        models_dir=str(models_dir) if models_dir is not None else None,
        gpu_offload_supported=offload,
        notes=tuple(notes),
        cpu_name=cpu_name,
    )


def _guarded(notes: list[str], what: str, probe: Callable[[], Any], default: Any) -> Any:
    try:
        return probe()
    except Exception as exc:  # a probe must never take the app down; the reason is kept for diagnostics
        notes.append(f"{what} failed: {type(exc).__name__}: {exc}")
        return default


# --- llama.cpp ------------------------------------------------------------------------------------------------

_BACKENDS: dict[str, Backend] = {
    "CUDA": "cuda",
    "ROCM": "rocm",
    "HIP": "rocm",
    "METAL": "metal",
    "MTL": "metal",
    "VULKAN": "vulkan",
    "SYCL": "sycl",
    "OPENCL": "opencl",
}


def backend_of(device_name: str) -> Backend:
    """llama.cpp's device name (``CUDA0``, ``Vulkan1``, ``MTL0``, ``RPC0``…) → the backend it belongs to."""
    return next((b for k, b in _BACKENDS.items() if device_name.upper().startswith(k)), "other")


def _probe_llama_cpp() -> tuple[bool, list[GPUInfo]]:
    import llama_cpp

    from enclave.engine.llama_runtime import devices

    # llama_supports_gpu_offload() is also true for a CPU-only build that includes the RPC backend (remote devices);
    # what this computer can offload to is a GPU device in llama.cpp's registry.
    offload = bool(llama_cpp.llama_supports_gpu_offload())
    gpus = [d.gpu_info() for d in devices() if d.is_gpu]
    return offload and bool(gpus), gpus


def _probe_nvml() -> list[GPUInfo]:
    try:
        import pynvml  # type: ignore[import-not-found]
    except ImportError:
        return []
    pynvml.nvmlInit()
    try:
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            name = name.decode() if isinstance(name, bytes) else str(name)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            total, free = int(memory.total), int(memory.free)
            gpus.append(GPUInfo(name, "cuda", total, free, False, bandwidth_for(name, total), "nvml"))
        return gpus
    finally:
        pynvml.nvmlShutdown()


def _nvidia_driver_names(root: Path = Path("/proc/driver/nvidia/gpus")) -> list[str]:
    """Names of NVIDIA GPUs the Linux driver knows, for a useful note when nothing could measure them."""
    names = []
    for info in sorted(root.glob("*/information")):
        match = re.search(r"^Model:\s*(.+)$", info.read_text(errors="replace"), re.MULTILINE)
        names.append(match.group(1).strip() if match else info.parent.name)
    return names


def _probe_amd_sysfs(root: Path = Path("/sys/class/drm")) -> list[GPUInfo]:
    gpus = []
    for card in sorted(root.glob("card[0-9]*")):
        device = card / "device"
        total_file = device / "mem_info_vram_total"
        if "-" in card.name or not total_file.exists():
            continue
        total = int(total_file.read_text().strip())
        used_file = device / "mem_info_vram_used"
        free = total - int(used_file.read_text().strip()) if used_file.exists() else None
        name = "AMD GPU"
        for label in ("product_name", "product_number"):
            path = device / label
            if path.exists() and path.read_text().strip():
                name = f"AMD {path.read_text().strip()}"
                break
        gpus.append(GPUInfo(f"{name} ({card.name})", "rocm", total, free, False, bandwidth_for(name, total), "sysfs"))
    return gpus


def _sysctl(key: str) -> str:
    return subprocess.run(["sysctl", "-n", key], capture_output=True, text=True, timeout=5, check=True).stdout.strip()


def _probe_apple(ram_total: int) -> list[GPUInfo]:
    total = ram_total or int(_sysctl("hw.memsize"))
    brand = ""
    with contextlib.suppress(Exception):
        brand = _sysctl("machdep.cpu.brand_string")
    usable = int(total * APPLE_GPU_SHARE)
    bw = bandwidth_for(brand, total, unified=True)
    return [GPUInfo(f"{brand or 'Apple Silicon'} GPU", "metal", usable, usable, True, bw, "sysctl")]


# --- RAM, CPU, disk -------------------------------------------------------------------------------------------


def _probe_ram() -> tuple[int, int]:
    if sys.platform.startswith("linux"):
        return parse_meminfo(Path("/proc/meminfo").read_text())
    if sys.platform == "darwin":
        total = int(_sysctl("hw.memsize"))
        return total, _darwin_available(total)
    if sys.platform == "win32":
        return _windows_memory()
    raise OSError(f"no memory probe for {sys.platform}")


def parse_meminfo(text: str) -> tuple[int, int]:
    """(total, available) bytes from /proc/meminfo; MemAvailable is the kernel's own estimate of usable memory."""
    values = {}
    for line in text.splitlines():
        match = re.match(r"(\w+):\s+(\d+)\s*kB", line)
        if match:
            values[match.group(1)] = int(match.group(2)) * 1024
    total = values["MemTotal"]
    available = values.get("MemAvailable", values.get("MemFree", 0) + values.get("Cached", 0))
    return total, available


def _darwin_available(total: int) -> int:
    out = subprocess.run(["vm_stat"], capture_output=True, text=True, timeout=5, check=True).stdout
    page = int(m.group(1)) if (m := re.search(r"page size of (\d+)", out)) else 16384
    pages = 0
    for label in ("Pages free", "Pages inactive", "Pages speculative", "Pages purgeable"):
        if m := re.search(rf"{label}:\s+(\d+)", out):
            pages += int(m.group(1))
    return min(total, pages * page)


def _windows_memory() -> tuple[int, int]:
    class MemoryStatusEx(ctypes.Structure):
        _fields_ = [
            ("dwLength", ctypes.c_ulong),
            ("dwMemoryLoad", ctypes.c_ulong),
            ("ullTotalPhys", ctypes.c_ulonglong),
            ("ullAvailPhys", ctypes.c_ulonglong),
            ("ullTotalPageFile", ctypes.c_ulonglong),
            ("ullAvailPageFile", ctypes.c_ulonglong),
            ("ullTotalVirtual", ctypes.c_ulonglong),
            ("ullAvailVirtual", ctypes.c_ulonglong),
            ("ullAvailExtendedVirtual", ctypes.c_ulonglong),
        ]

    status = MemoryStatusEx()
    status.dwLength = ctypes.sizeof(MemoryStatusEx)
    if not ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):  # type: ignore[attr-defined]
        raise OSError("GlobalMemoryStatusEx failed")
    return int(status.ullTotalPhys), int(status.ullAvailPhys)


def _probe_cores() -> tuple[int, int]:
    threads = os.cpu_count() or 1
    if sys.platform.startswith("linux"):
        return parse_cpuinfo_cores(Path("/proc/cpuinfo").read_text()) or threads, threads
    if sys.platform == "darwin":
        return int(_sysctl("hw.physicalcpu")), threads
    return threads, threads  # Windows: logical processors only without WMI


def parse_cpuinfo_cores(text: str) -> int | None:
    """Physical cores: distinct (physical id, core id) pairs; None when the kernel does not list them (VMs, ARM)."""
    cores: set[tuple[str, str]] = set()
    physical = core = None
    for line in [*text.splitlines(), ""]:
        if not line.strip():
            if core is not None:
                cores.add((physical or "0", core))
            physical = core = None
            continue
        key, _, value = line.partition(":")
        if key.strip() == "physical id":
            physical = value.strip()
        elif key.strip() == "core id":
            core = value.strip()
    return len(cores) or None


INTERESTING_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx_vnni",
    "amx_tile", "amx_int8", "amx_bf16", "neon", "asimd", "asimddp", "sve", "sve2", "i8mm", "bf16", "dotprod",
)  # fmt: skip


def _probe_cpu_name() -> str:
    if sys.platform.startswith("linux"):
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware"):
                return value.strip()
    if sys.platform == "darwin":
        return _sysctl("machdep.cpu.brand_string")
    return platform.processor()


def _probe_cpu_features(use_llama_cpp: bool = True) -> tuple[str, ...]:
    if sys.platform.startswith("linux"):
        found = parse_cpuinfo_flags(Path("/proc/cpuinfo").read_text())
        if found:
            return found
    return _llama_cpp_features() if use_llama_cpp else ()


def parse_cpuinfo_flags(text: str) -> tuple[str, ...]:
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            present = set(value.split())
            return tuple(f for f in INTERESTING_FLAGS if f in present)
    return ()


def _llama_cpp_features() -> tuple[str, ...]:
    """Fallback: ``llama_print_system_info()`` lists what the build detected, e.g. ``AVX2 = 1 | FMA = 1``."""
    import llama_cpp

    info = llama_cpp.llama_print_system_info().decode(errors="replace")
    return tuple(m.group(1).lower() for m in re.finditer(r"(\w+) = 1", info))


def _disk_free(models_dir: Path) -> int:
    path = Path(models_dir)
    while not path.exists() and path != path.parent:
        path = path.parent  # the models folder may not exist yet: measure the disk it will live on
    return shutil.disk_usage(path).free

"""Settings → Run on / ``--device``: Auto prefers a discrete GPU and never a GPU API that runs on the CPU (lavapipe);
"CPU only" keeps llama.cpp off every GPU; a named device is used as asked. Devices here are llama.cpp's own reports
(as a Vulkan build on lavapipe, a CUDA card and an integrated GPU describe themselves)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from enclave.engine.llama_backend import LlamaCppBackend
from enclave.engine.llama_runtime import devices
from enclave.engine.types import LoadRequest, ModelLoadError
from enclave.models.hardware import GIB, GPUInfo, Hardware
from enclave.models.placement import choose_gpus, hardware_for, is_cpu_only
from enclave.settings.settings import Settings, SettingsError, validate
from enclave.usecases.loading import load_request

LAVAPIPE = GPUInfo("llvmpipe (LLVM 15.0.6, 256 bits)", "vulkan", 2 * GIB, 2 * GIB, False, 272.0, "llama.cpp",
                   device="Vulkan0", software=True)  # fmt: skip
IGPU = GPUInfo("Intel(R) UHD Graphics 770", "vulkan", 8 * GIB, 8 * GIB, True, 100.0, "llama.cpp", device="Vulkan1")
RTX = GPUInfo("NVIDIA GeForce RTX 4090", "cuda", 24 * GIB, 23 * GIB, False, 1008.0, "llama.cpp", device="CUDA0")


def test_auto_prefers_a_discrete_gpu_and_never_a_software_one() -> None:
    assert choose_gpus([LAVAPIPE, IGPU, RTX]) == (RTX,)
    assert choose_gpus([LAVAPIPE, IGPU]) == (IGPU,)  # no discrete GPU: the integrated one
    assert choose_gpus([LAVAPIPE]) == ()  # only lavapipe: the CPU, not a slower CPU pretending to be a GPU


def test_a_named_device_is_used_as_asked_and_cpu_means_none() -> None:
    assert choose_gpus([LAVAPIPE, RTX], ("Vulkan0",)) == (LAVAPIPE,)
    assert choose_gpus([LAVAPIPE, RTX], ("cpu",)) == ()
    assert is_cpu_only(("CPU",)) and not is_cpu_only(()) and not is_cpu_only(("CUDA0",))
    hardware = Hardware(gpus=(LAVAPIPE, RTX), ram_total=16 * GIB, ram_available=12 * GIB)
    assert hardware_for(hardware).gpus == (RTX,)
    assert hardware_for(hardware, ("CPU",)).gpus == ()


def test_the_setting_reaches_the_load_request_and_flags_win() -> None:
    assert load_request("m.gguf", Settings()).devices == ()
    assert load_request("m.gguf", Settings(device="Vulkan0")).devices == ("Vulkan0",)
    assert load_request("m.gguf", Settings(device="Vulkan0"), devices=("CPU",)).devices == ("CPU",)
    assert load_request("m.gguf", Settings(device="CPU"), devices=()).devices == ()  # --device auto


def test_the_device_setting_is_validated() -> None:
    assert validate(Settings(device="")).device is None
    with pytest.raises(SettingsError, match="device must be a device name"):
        validate(Settings(device="x" * 200))
    with pytest.raises(SettingsError, match="device must be"):
        validate(Settings(device=3))  # type: ignore[arg-type]


def test_cpu_only_loads_on_no_device_and_an_unknown_device_is_a_clear_error(gemma_path: Path) -> None:
    backend = LlamaCppBackend()
    try:
        info = backend.load(LoadRequest(path=str(gemma_path), n_ctx=512, devices=("CPU",)))
        assert info.placement.startswith("CPU · ")
        assert backend._plan is not None and not backend._plan.has_gpu
    finally:
        backend.unload()
    known = ", ".join(d.name for d in devices())
    with pytest.raises(ModelLoadError, match=rf"no device named NoSuchGPU7 \(it has: {known}\)"):
        backend.load(LoadRequest(path=str(gemma_path), n_ctx=512, devices=("NoSuchGPU7",)))


def test_cli_device_flag(gemma_path: Path) -> None:
    def chat(*flags: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "enclave", "chat", "--model", str(gemma_path), "--max-tokens", "2"]
        return subprocess.run([*command, "--ctx", "512", "--json", *flags, "hi"], capture_output=True, text=True)

    cpu = chat("--device", "cpu", "--show-plan")
    assert cpu.returncode == 0, cpu.stderr
    assert ": CPU · 512-token context" in cpu.stderr
    assert json.loads(cpu.stdout)["stats"]["completion_tokens"] == 2
    missing = chat("--device", "NoSuchGPU7")
    assert missing.returncode == 4 and "no device named NoSuchGPU7" in missing.stderr  # ExitCode.MODEL


def test_settings_run_on_lists_auto_each_gpu_and_cpu_only(qtbot: object) -> None:
    from enclave.ui.settings_dialog import SettingsDialog

    dialog = SettingsDialog(Settings(device="Vulkan3"), devices=[("Vulkan0", "llvmpipe (Vulkan0)")])
    qtbot.addWidget(dialog)  # type: ignore[attr-defined]
    labels = [dialog.device.itemText(i) for i in range(dialog.device.count())]
    assert labels == ["Auto", "llvmpipe (Vulkan0)", "CPU only", "Vulkan3"]
    assert dialog.collected().device == "Vulkan3"  # a device missing today is kept, not silently dropped
    dialog.device.setCurrentIndex(dialog.device.findData("CPU"))
    dialog._accept()
    assert dialog.result_settings is not None and dialog.result_settings.device == "CPU"
    assert dialog.model_changed()


def test_enclave_hardware_names_the_device_and_says_lavapipe_is_used_only_when_chosen() -> None:
    from enclave.cli.models import describe_hardware

    text = describe_hardware(Hardware(gpus=(LAVAPIPE, RTX), ram_total=16 * GIB, ram_available=12 * GIB))
    assert "GPU:   llvmpipe (LLVM 15.0.6, 256 bits) [Vulkan0] (vulkan, 2.0 GB" in text
    assert "runs on the CPU: used only when chosen (--device Vulkan0, Settings → Run on)" in text
    assert text.count("runs on the CPU") == 1  # not said of the real GPU

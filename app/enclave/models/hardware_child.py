"""The hardware probe, run in a child process (``enclave hardware --json``) for the app's window.

Asking llama.cpp which GPUs it can use means loading llama.cpp, and the window's process never does (a broken GPU
driver can abort the process that loads it). The app therefore runs the probe as its own command, reads the JSON it
prints, and falls back to a probe without llama.cpp (NVML, sysfs, the OS) if the child fails, saying so in the notes.
Call it from a worker thread: starting the child takes about a second.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
from pathlib import Path
from typing import Any

from enclave.models.hardware import GPUInfo, Hardware

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 60.0
_last: Hardware | None = None  # the newest probe's result, for a dialog that must not wait for a new one


def last_probe() -> Hardware | None:
    """What the newest ``probe_hardware_in_child`` found in this process, or None before the first one ends."""
    return _last


def _build(cls: type[Any], data: dict[str, Any]) -> Any:
    names = {f.name: f for f in dataclasses.fields(cls)}
    values = {key: value for key, value in data.items() if key in names}
    for key, value in values.items():
        if isinstance(value, list):
            values[key] = tuple(value)
    return cls(**values)


def hardware_from_dict(data: dict[str, Any]) -> Hardware:
    """Rebuild what ``Hardware.to_dict`` printed (keys it does not know are ignored, missing ones keep defaults)."""
    gpus = tuple(_build(GPUInfo, gpu) for gpu in data.get("gpus", ()))
    hardware: Hardware = _build(Hardware, {**data, "gpus": []})
    return dataclasses.replace(hardware, gpus=gpus)


def probe_hardware_in_child(models_dir: Path | None = None, *, timeout: float = PROBE_TIMEOUT_S) -> Hardware:
    """``probe_hardware`` as seen by a child process; never raises."""
    from enclave.child_process import child_command

    command = child_command("hardware", "--json")
    if models_dir is not None:
        command += ["--models-dir", str(models_dir)]
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
            creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0),
        )
        if done.returncode != 0:
            tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [f"exit code {done.returncode}"]
            raise RuntimeError(tail[0])
        found = hardware_from_dict(json.loads(done.stdout.decode("utf-8")))
    except (OSError, ValueError, TypeError, RuntimeError, subprocess.TimeoutExpired) as exc:
        log.warning("hardware probe in a child process failed: %s", exc)
        from enclave.models.hardware import probe_hardware

        hardware = probe_hardware(models_dir, use_llama_cpp=False)
        note = f"llama.cpp's device list was not available ({exc}); GPUs were looked up without it."
        found = dataclasses.replace(hardware, notes=(*hardware.notes, note))
    global _last
    _last = found
    return found


__all__ = ["hardware_from_dict", "last_probe", "probe_hardware_in_child"]

"""Child processes start the app's own entry point, which works in a source install and in a bundle."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from enclave import child_process
from enclave.child_process import child_command


def test_source_install_uses_python_dash_m() -> None:
    assert child_command("hardware") == [sys.executable, "-m", "enclave", "hardware"]


def test_bundle_uses_its_own_executable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(child_process.sys, "executable", "/Applications/Enclave.app/Contents/MacOS/Enclave")
    assert child_command("hardware", "--json") == [
        "/Applications/Enclave.app/Contents/MacOS/Enclave",
        "hardware",
        "--json",
    ]
    monkeypatch.setattr(child_process.sys, "executable", r"C:\Program Files\Enclave\python.exe")
    assert child_command("x")[:3] == [r"C:\Program Files\Enclave\python.exe", "-m", "enclave"]


def test_the_child_really_runs(tmp_path: Path) -> None:
    result = subprocess.run(child_command("hardware", "--json"), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert isinstance(json.loads(result.stdout), dict)

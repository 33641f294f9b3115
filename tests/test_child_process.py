"""Child processes start the app's own entry point, which works in a source install and in a bundle."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from enclave import child_process
from enclave.child_process import child_command, running_from_bundle


@pytest.fixture(autouse=True)
def no_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(child_process.OVERRIDE_ENV, raising=False)


def test_source_install_uses_python_dash_m() -> None:
    assert child_command("hardware") == [sys.executable, "-m", "enclave", "hardware"]


@pytest.mark.parametrize(
    "executable",
    [
        "/usr/bin/python3",
        "/work/.venv/bin/python",
        "/usr/local/bin/python3.12",
        "/opt/py/bin/python3.13t",
        r"C:\Program Files\Python312\python.exe",
        r"C:\Program Files\Python312\pythonw.exe",
        "/usr/bin/pypy3",
    ],
)
def test_python_interpreters_are_not_bundles(executable: str) -> None:
    assert not running_from_bundle(executable)


@pytest.mark.parametrize(
    "executable",
    [
        "/Applications/Enclave.app/Contents/MacOS/Enclave",  # Briefcase's macOS stub
        r"C:\Users\me\AppData\Local\Programs\Enclave\Enclave.exe",  # Briefcase's Windows stub
        "/usr/bin/enclave",  # Briefcase's Linux system package
        "/tmp/.mount_EnclaXYZ/usr/bin/org.enclave-app.enclave",  # AppImage
    ],
)
def test_app_launchers_are_bundles(executable: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert running_from_bundle(executable)
    monkeypatch.setattr(child_process.sys, "executable", executable)
    assert child_command("hardware", "--json") == [executable, "hardware", "--json"]


def test_frozen_apps_are_bundles(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(child_process.sys, "frozen", True, raising=False)
    assert running_from_bundle("/usr/bin/python3")
    assert child_command("x") == [sys.executable, "x"]


def test_the_environment_can_name_the_executable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(child_process.OVERRIDE_ENV, "/opt/enclave/enclave")
    assert child_command("docs", "parse-server") == ["/opt/enclave/enclave", "docs", "parse-server"]


def test_the_child_really_runs() -> None:
    result = subprocess.run(child_command("hardware", "--json"), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert isinstance(json.loads(result.stdout), dict)

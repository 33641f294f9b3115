"""The installer configuration, exercised offline: the staged Briefcase project, icons, Linux metadata, workflow."""

from __future__ import annotations

import struct
import sys
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "packaging"))

import briefcase_project  # noqa: E402
import build_llama_wheels  # noqa: E402

from enclave import __version__  # noqa: E402


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return briefcase_project.stage(tmp_path_factory.mktemp("briefcase"))


def test_staged_project_joins_pyproject_and_briefcase_toml(staged: Path) -> None:
    data = tomllib.loads(staged.read_text(encoding="utf-8"))
    with (ROOT / "pyproject.toml").open("rb") as handle:
        root_project = tomllib.load(handle)["project"]
    with (ROOT / "briefcase.toml").open("rb") as handle:
        briefcase = tomllib.load(handle)
    project = data["project"]
    assert project["name"] == "enclave" and project["version"] == __version__
    assert "dynamic" not in project and "optional-dependencies" not in project
    assert project["dependencies"] == root_project["dependencies"]  # requirements come from one place
    app = data["tool"]["briefcase"]["app"]["enclave"]
    # briefcase.toml reaches Briefcase unchanged, but for the wheelhouse path, made absolute.
    assert app["requirement_installer_args"] == ["--find-links", str(ROOT / "wheelhouse"), "--prefer-binary"]
    app["requirement_installer_args"] = briefcase["app"]["enclave"]["requirement_installer_args"]
    assert data["tool"]["briefcase"] == briefcase
    base = staged.parent
    for source in app["sources"] + app["test_sources"]:
        assert (base / source).is_dir(), source
    assert (base / "src" / "enclave" / "models" / "catalog.json").is_file()
    assert (base / "tests" / "enclave.py").is_file()  # Briefcase runs `python -m tests.enclave` in test mode
    for license_file in project["license-files"]:
        assert (base / license_file).read_text().startswith("MIT License")


def test_icons_exist_in_every_size_briefcase_asks_for(staged: Path) -> None:
    icon = staged.parent / tomllib.loads(staged.read_text())["tool"]["briefcase"]["app"]["enclave"]["icon"]
    for size in (16, 32, 64, 128, 256, 512, 1024):
        png = icon.with_name(f"{icon.name}-{size}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack(">II", png[16:24])
        assert (width, height) == (size, size)
    ico = icon.with_suffix(".ico").read_bytes()
    reserved, kind, count = struct.unpack("<HHH", ico[:6])
    assert (reserved, kind) == (0, 1) and count >= 5
    icns = icon.with_suffix(".icns").read_bytes()
    assert icns[:4] == b"icns" and struct.unpack(">I", icns[4:8])[0] == len(icns)


def test_linux_desktop_entry_and_appstream_metadata() -> None:
    linux = ROOT / "packaging" / "linux"
    bundle = tomllib.loads((ROOT / "briefcase.toml").read_text())["bundle"]
    app_id = f"{bundle}.enclave"
    desktop = (linux / f"{app_id}.desktop").read_text().splitlines()
    assert desktop[0] == "[Desktop Entry]"
    entries = dict(line.split("=", 1) for line in desktop[1:] if "=" in line)
    assert entries["Type"] == "Application" and entries["Name"] == "Enclave"
    assert entries["Icon"] == app_id and entries["Exec"].startswith("enclave")
    component = ET.parse(linux / f"{app_id}.metainfo.xml").getroot()
    assert component.findtext("id") == app_id
    assert component.find("releases/release").get("version") == __version__  # type: ignore[union-attr]


def test_release_workflow_is_valid_and_covers_every_installer() -> None:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "release.yml").read_text())
    matrix = workflow["jobs"]["installer"]["strategy"]["matrix"]["include"]
    targets = {row["target"] for row in matrix}
    assert targets == {"windows app", "macOS app", "linux system", "linux appimage"}
    commands = " ".join(step.get("run", "") for step in workflow["jobs"]["installer"]["steps"])
    assert "briefcase_project.py dev --test" in commands and "--test" in commands and "package" in commands


@pytest.mark.parametrize("backend", sorted(build_llama_wheels.BACKENDS))
def test_llama_wheel_build_commands(backend: str, tmp_path: Path) -> None:
    command, env = build_llama_wheels.build_command(backend, tmp_path)
    assert command[-1].startswith("llama-cpp-python")
    assert "--no-deps" in command and str(tmp_path) in command
    assert env["CMAKE_ARGS"] == build_llama_wheels.BACKENDS[backend]
    if backend == "cpu":
        assert "-DGGML_NATIVE=OFF" in env["CMAKE_ARGS"]  # no AMX kernels: they crash on some virtual machines

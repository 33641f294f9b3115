"""The installer configuration, exercised offline: the staged Briefcase project, icons, Linux metadata, workflow.

Briefcase itself is not run here (it needs its templates from the network); `packaging/briefcase_project.py dev
--test` does that, and the release workflow builds and tests every installer.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "packaging"))

import briefcase_project  # noqa: E402
import build_llama_wheels  # noqa: E402

from enclave import __version__  # noqa: E402

APP_ID = "org.enclave-app.enclave"
PY_TAG = f"cp{sys.version_info.major}{sys.version_info.minor}"
FAKE_WHEEL = Path("/wheels/llama_cpp_python-0.3.16-py3-none-linux_x86_64.whl")


def load(path: Path) -> dict[str, Any]:
    with path.open("rb") as handle:
        return tomllib.load(handle)


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return briefcase_project.stage(tmp_path_factory.mktemp("briefcase"), wheels=[FAKE_WHEEL])


@pytest.fixture(scope="module")
def staged_app(staged: Path) -> dict[str, Any]:
    app: dict[str, Any] = load(staged)["tool"]["briefcase"]["app"]["enclave"]
    return app


def test_project_metadata_comes_from_pyproject(staged: Path) -> None:
    project = load(staged)["project"]
    root_project = load(ROOT / "pyproject.toml")["project"]
    assert project["name"] == "enclave"
    assert project["version"] == __version__  # resolved from the dynamic version
    assert "dynamic" not in project
    for key in ("description", "license", "authors", "requires-python", "dependencies"):
        assert project[key] == root_project[key], key
    # Of the test extra, only what the bundle's smoke tests need (not the 253 MB model or the linters).
    assert [briefcase_project.requirement_name(r) for r in project["optional-dependencies"]["test"]] == ["pytest"]
    assert project["optional-dependencies"]["test"][0] in root_project["optional-dependencies"]["test"]
    assert (staged.parent / project["license-files"][0]).read_text(encoding="utf-8").startswith("MIT License")


def test_briefcase_toml_reaches_briefcase_unchanged_but_for_the_llama_wheel(staged: Path) -> None:
    briefcase = load(staged)["tool"]["briefcase"]
    app = briefcase["app"]["enclave"]
    assert app.pop("requires") == [str(FAKE_WHEEL)]
    assert briefcase == load(ROOT / "briefcase.toml")


def test_nothing_is_configured_twice() -> None:
    """Briefcase fills these from [project]; a copy in briefcase.toml would win and could drift."""
    config = load(ROOT / "briefcase.toml")
    from_pyproject = {"description", "version", "license", "license-files", "author", "requires", "test_requires"}
    assert not from_pyproject & config.keys()
    for section in (config["app"]["enclave"], config["app"]["enclave"]["macOS"], config["app"]["enclave"]["windows"]):
        assert not from_pyproject - {"requires"} & section.keys()
        assert not any("llama" in r for r in section.get("requires", []))


def test_sources_and_tests_are_staged(staged: Path, staged_app: dict[str, Any]) -> None:
    base = staged.parent
    assert staged_app["sources"] == ["src/enclave"] and staged_app["test_sources"] == ["tests"]
    assert (base / "src" / "enclave" / "__init__.py").read_text() == (ROOT / "app/enclave/__init__.py").read_text()
    assert (base / "src" / "enclave" / "models" / "catalog.json").is_file()  # package data comes along
    assert not list(base.glob("src/**/__pycache__"))
    assert (base / "tests" / "enclave.py").is_file()  # Briefcase's test mode runs `tests.<app name>`
    assert list((base / "tests").glob("test_*.py"))
    assert load(staged)["tool"]["pytest"]["ini_options"]["testpaths"] == ["tests"]


def test_the_staged_file_is_what_was_merged(staged: Path) -> None:
    """The small TOML writer round-trips the merged configuration exactly."""
    merged = briefcase_project.staged_config(wheels=[FAKE_WHEEL])
    assert load(staged) == merged
    tricky = {"a": {"b c": 'quote " and \\ and\nnewline', "n": [1, 2.5, True], "t": {"x.y": {"z": "w"}}}}
    assert tomllib.loads(briefcase_project.dump_toml(tricky)) == tricky


def test_local_template_and_changelog_are_staged(tmp_path: Path) -> None:
    """Machines that can't reach GitHub point Briefcase at a local copy of its template; a .deb needs a changelog."""
    template = tmp_path / "linux-system"
    pyproject = briefcase_project.stage(tmp_path / "stage", template=template)
    assert load(pyproject)["tool"]["briefcase"]["app"]["enclave"]["template"] == str(template.resolve())
    changelog = (pyproject.parent / "CHANGELOG.md").read_text(encoding="utf-8")
    assert f"\n## {__version__}\n" in changelog  # every released version has its entry
    with pytest.raises(SystemExit, match="not a Briefcase template"):
        briefcase_project.main(["--template", str(template), "stage"])


def test_llama_wheel_selection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ours = tmp_path / "llama_cpp_python-0.3.16-py3-none-win_amd64.whl"  # ctypes only: tagged py3, not cpXY
    other_python = tmp_path / "llama_cpp_python-0.3.16-cp39-cp39-win_amd64.whl"
    for wheel in (ours, other_python, tmp_path / "numpy-2.0-cp311-cp311-win_amd64.whl"):
        wheel.touch()
    assert briefcase_project.llama_wheels(tmp_path) == [ours]
    ours.unlink()
    (tmp_path / f"llama_cpp_python-0.3.16-{PY_TAG}-{PY_TAG}-win_amd64.whl").touch()
    assert len(briefcase_project.llama_wheels(tmp_path)) == 1
    # A bundle must never compile llama.cpp for the build machine: no wheel, no build.
    monkeypatch.setattr(briefcase_project, "WHEELHOUSE", tmp_path / "empty")
    with pytest.raises(SystemExit, match="build_llama_wheels"):
        briefcase_project.main(["package", "linux", "system"])


def test_apt_packages_cover_the_deb_dependencies() -> None:
    packages = briefcase_project.apt_packages()
    debian = load(ROOT / "briefcase.toml")["app"]["enclave"]["linux"]["system"]["debian"]
    assert set(debian["system_runtime_requires"]) <= set(packages)
    assert {"python3-dev", "python3-venv", "build-essential", "libxcb-cursor0"} <= set(packages)


def test_cleanup_paths_drop_unused_qt_but_keep_what_enclave_loads() -> None:
    """Applied to the PySide6 wheel installed here, as Briefcase applies them to the bundle."""
    pyside = pytest.importorskip("PySide6")
    site = Path(pyside.__file__).parent.parent
    removed: set[Path] = set()
    for pattern in load(ROOT / "briefcase.toml")["app"]["enclave"]["cleanup_paths"]:
        if pattern.startswith("**/PySide6/"):  # from PySide6's folder: a walk of all site-packages takes minutes
            removed.update((site / "PySide6").glob(pattern.removeprefix("**/PySide6/")))
    names = {p.relative_to(site).as_posix() for p in removed}
    assert any(n.endswith("plugins/sqldrivers") for n in names)
    assert any(n.endswith("/qml") for n in names)

    def gone(path: Path) -> bool:
        return any(path == r or r in path.parents for r in removed)

    for kept in ("QtCore", "QtGui", "QtWidgets"):
        modules = [p for p in (site / "PySide6").glob(f"{kept}.*") if p.suffix != ".pyi"]  # stubs may go
        assert modules and not any(gone(p) for p in modules), kept
    platforms = next((site / "PySide6").glob("**/plugins/platforms"))
    assert not gone(platforms) and any(not gone(p) for p in platforms.glob("*xcb*"))


@pytest.mark.parametrize("size", [16, 32, 64, 128, 256, 512, 1024])
def test_png_icons_exist_in_every_size(staged_app: dict[str, Any], staged: Path, size: int) -> None:
    icon = staged.parent / staged_app["icon"]
    png = icon.with_name(f"{icon.name}-{size}.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", png[16:24]) == (size, size)
    assert (ROOT / "resources" / "icons" / f"enclave-{size}.png").read_bytes() == png


def test_ico_and_icns_hold_every_size(staged_app: dict[str, Any], staged: Path) -> None:
    icon = staged.parent / staged_app["icon"]
    ico = icon.with_suffix(".ico").read_bytes()
    reserved, kind, count = struct.unpack("<HHH", ico[:6])
    assert (reserved, kind) == (0, 1)
    sizes = set()
    for i in range(count):
        width, _, _, _, _, _, length, offset = struct.unpack("<BBBBHHII", ico[6 + 16 * i : 22 + 16 * i])
        png = ico[offset : offset + length]
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        sizes.add(width or 256)
    assert sizes == {16, 32, 48, 64, 128, 256}

    icns = icon.with_suffix(".icns").read_bytes()
    assert icns[:4] == b"icns" and struct.unpack(">I", icns[4:8])[0] == len(icns)
    elements, pos = {}, 8
    while pos < len(icns):
        kind_bytes, length = icns[pos : pos + 4], struct.unpack(">I", icns[pos + 4 : pos + 8])[0]
        elements[kind_bytes] = icns[pos + 8 : pos + length]
        pos += length
    assert pos == len(icns)
    for kind_bytes, size in {b"icp4": 16, b"ic07": 128, b"ic10": 1024, b"ic14": 512}.items():
        assert struct.unpack(">II", elements[kind_bytes][16:24]) == (size, size)


def test_linux_desktop_entry_matches_the_app_id() -> None:
    config = load(ROOT / "briefcase.toml")
    assert f"{config['bundle']}.enclave" == APP_ID  # what Briefcase names its desktop file and icon
    lines = (ROOT / "packaging" / "linux" / f"{APP_ID}.desktop").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "[Desktop Entry]"
    entry = dict(line.split("=", 1) for line in lines[1:] if "=" in line)
    assert entry["Type"] == "Application" and entry["Icon"] == APP_ID
    assert entry["Name"] == config["app"]["enclave"]["formal_name"] == entry["StartupWMClass"]
    assert entry["Exec"] == "enclave"  # the CLI takes no file argument


def test_appstream_metadata_gets_its_version_from_the_package(staged: Path) -> None:
    source = ROOT / "packaging" / "linux" / f"{APP_ID}.metainfo.xml"
    assert "<release " not in source.read_text(encoding="utf-8")  # the version lives in enclave.__version__ only
    component = ET.parse(staged.parent / "linux" / source.name).getroot()
    assert component.findtext("id") == APP_ID
    assert component.findtext("launchable") == f"{APP_ID}.desktop"
    release = component.find("releases/release")
    assert release is not None and release.get("version") == __version__


@pytest.mark.skipif(not shutil.which("desktop-file-validate"), reason="desktop-file-utils is not installed")
def test_desktop_file_validates() -> None:
    path = ROOT / "packaging" / "linux" / f"{APP_ID}.desktop"
    result = subprocess.run(["desktop-file-validate", str(path)], capture_output=True, text=True)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout


@pytest.mark.skipif(not shutil.which("appstreamcli"), reason="appstream is not installed")
def test_metainfo_validates(staged: Path) -> None:
    path = staged.parent / "linux" / f"{APP_ID}.metainfo.xml"
    result = subprocess.run(["appstreamcli", "validate", "--no-net", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_release_workflow_builds_tests_and_uploads_every_installer() -> None:
    yaml = pytest.importorskip("yaml")
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "release.yml").read_text(encoding="utf-8"))
    job = workflow["jobs"]["installer"]
    rows = {row["target"]: row for row in job["strategy"]["matrix"]["include"]}
    assert set(rows) == {"windows app", "macOS app", "linux system", "linux appimage"}
    assert rows["macOS app"]["backend"] == "metal" and rows["windows app"]["backend"] == "cpu"
    assert all(row["backend"] in build_llama_wheels.BACKENDS for row in rows.values())
    runs = [step.get("run", "") for step in job["steps"]]
    order = [
        next(i for i, run in enumerate(runs) if needle in run)
        for needle in ("build_llama_wheels.py", "dev --test", "run ${{ matrix.target }} --test", "package ${{")
    ]
    assert order == sorted(order)
    assert any(step.get("uses", "").startswith("actions/upload-artifact") for step in job["steps"])


def test_llama_wheel_build_is_portable(tmp_path: Path) -> None:
    command = build_llama_wheels.build_command(tmp_path, "llama-cpp-python==0.3.36")
    assert command[-1] == "llama-cpp-python==0.3.36" and "--no-deps" in command and str(tmp_path) in command
    assert "--no-cache-dir" in command  # pip's wheel cache keys on the version only
    x86 = build_llama_wheels.cmake_args("cpu", machine="x86_64").split()
    assert "-DGGML_NATIVE=OFF" in x86 and "-DGGML_AVX2=ON" in x86  # no -march=native, no AMX kernels
    assert "-DGGML_RPC=ON" in x86
    assert "-DGGML_CUDA=ON" in build_llama_wheels.cmake_args("cuda", machine="AMD64")
    assert "-DGGML_VULKAN=ON" in build_llama_wheels.cmake_args("vulkan", machine="x86_64")
    assert "AVX" not in build_llama_wheels.cmake_args("metal", machine="arm64")
    assert "AVX" not in build_llama_wheels.cmake_args("cpu", machine="aarch64")
    macos = build_llama_wheels.build_environment("metal", "-DGGML_METAL=ON", system="Darwin")
    assert (
        macos["MACOSX_DEPLOYMENT_TARGET"] == load(ROOT / "briefcase.toml")["app"]["enclave"]["macOS"]["min_os_version"]
    )
    docker = build_llama_wheels.manylinux_command("-DGGML_NATIVE=OFF", tmp_path, "llama-cpp-python==0.3.36")
    assert docker[:2] == ["docker", "run"] and any(a.startswith("quay.io/pypa/manylinux_2_28_") for a in docker)
    assert f"/opt/python/{PY_TAG}-{PY_TAG}/bin/python" in docker
    assert build_llama_wheels.pinned_version(build_llama_wheels.llama_requirement()) == "0.3.36"
    with pytest.raises(SystemExit, match="--version"):
        build_llama_wheels.pinned_version("llama-cpp-python>=0.3")


def vulkan_headers(folder: Path, version: int) -> Path:
    """A Vulkan-Headers layout (include/vulkan/vulkan_core.h) of the given header version."""
    (folder / "include" / "vulkan").mkdir(parents=True)
    (folder / "include" / "vulkan" / "vulkan_core.h").write_text(f"#define VK_HEADER_VERSION {version}\n")
    return folder


def test_wheel_cache_key_follows_version_backend_and_flags(tmp_path: Path) -> None:
    key = build_llama_wheels.cache_key
    cpu = build_llama_wheels.cmake_args("cpu", machine="x86_64")
    assert key("0.3.36", "cpu", cpu) == key("0.3.36", "cpu", cpu)
    assert key("0.3.36", "cpu", cpu).startswith("0.3.36-cpu-")
    assert key("0.3.36", "cpu", cpu) != key("0.3.37", "cpu", cpu)
    assert key("0.3.36", "cpu", cpu) != key("0.3.36", "cpu", cpu + " -DGGML_NATIVE=ON")  # pip would mix these up
    assert key("0.3.36", "cpu", cpu) != key("0.3.36", "cpu", cpu, manylinux=True)
    # The Vulkan headers enter the key by their content: the same headers elsewhere reuse the wheel, newer ones don't.
    here, there, newer = (vulkan_headers(tmp_path / n, v) for n, v in (("a", 309), ("b", 309), ("c", 310)))
    flags = {
        name: build_llama_wheels.cmake_args("vulkan", machine="x86_64", vulkan_headers=folder)
        for name, folder in (("here", here), ("there", there), ("newer", newer))
    }
    assert f"-DVulkan_INCLUDE_DIR={here / 'include'}" in flags["here"].split()
    assert key("0.3.36", "vulkan", flags["here"]) == key("0.3.36", "vulkan", flags["there"])
    assert key("0.3.36", "vulkan", flags["here"]) != key("0.3.36", "vulkan", flags["newer"])
    # The include/ folder itself is accepted too; a folder without headers is a plain error.
    assert build_llama_wheels.vulkan_include_dir(here / "include") == (here / "include").resolve()
    with pytest.raises(SystemExit, match="no Vulkan headers"):
        build_llama_wheels.vulkan_include_dir(tmp_path)


def test_cached_wheel_is_reused_and_its_path_is_the_last_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wheel in the cache entry for these flags is used without building; --out gets the one copy."""
    monkeypatch.delenv("VULKAN_HEADERS", raising=False)
    cache, out = tmp_path / "cache", tmp_path / "wheelhouse"
    build_llama_wheels.main(["--backend", "cpu", "--cache", str(cache), "--dry-run"])
    folder = Path(capsys.readouterr().err.split("cache: ", 1)[1].splitlines()[0])
    assert folder.parent == cache and folder.name.startswith("0.3.36-cpu-")
    folder.mkdir(parents=True)
    wheel = folder / "llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl"
    wheel.write_bytes(b"cached")
    out.mkdir()
    (out / "llama_cpp_python-0.3.36-py3-none-win_amd64.whl").write_bytes(b"another backend's")
    assert build_llama_wheels.main(["--backend", "cpu", "--cache", str(cache), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "cached wheel" in captured.err
    assert captured.out.splitlines()[-1] == str((out / wheel.name).resolve())
    assert [p.name for p in out.iterdir()] == [wheel.name] and (out / wheel.name).read_bytes() == b"cached"
    assert build_llama_wheels.main(["--backend", "cpu", "--cache", str(cache)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == str(wheel.resolve())

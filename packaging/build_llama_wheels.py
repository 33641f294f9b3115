"""Build the llama-cpp-python wheel for one backend into wheelhouse/, for the installers to bundle.

    python packaging/build_llama_wheels.py --backend cpu|cuda|metal|vulkan [--out wheelhouse] [--manylinux]

llama-cpp-python ships only as source on PyPI and a macOS bundle cannot compile at install time, so every installer
carries a wheel built here; packaging/briefcase_project.py adds it to the staged project's requires. Build with the
Python that runs Briefcase: the wheel is for that Python version. The wheel's file name does not say the backend, so
the output folder keeps one llama-cpp-python wheel at a time (older ones are removed).

--manylinux builds inside the manylinux image that briefcase.toml names for the AppImage, so the wheel runs on the
same old glibc as the rest of the AppImage (needs Docker).
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# Portable x86-64 CPU code (AVX2 baseline). A native build tunes for the build machine, which users' CPUs may lack,
# and enables llama.cpp's AMX kernels on CPUs that report AMX, which crash on some virtual machines.
X86_CPU = "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
# What each backend adds to the CPU code (GPU builds keep fast CPU code for the layers that stay on the CPU).
BACKENDS: dict[str, str] = {
    "cpu": "-DGGML_METAL=OFF",
    "cuda": "-DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=75;80;86;89;90",  # Turing (RTX 20) to Hopper, PTX for newer
    "metal": "-DGGML_METAL=ON",
    "vulkan": "-DGGML_VULKAN=ON",
}


def briefcase_app() -> dict[str, Any]:
    with (ROOT / "briefcase.toml").open("rb") as handle:
        app: dict[str, Any] = tomllib.load(handle)["app"]["enclave"]
    return app


def llama_requirement() -> str:
    """The llama-cpp-python requirement from pyproject.toml: the bundle gets the version the package asks for."""
    with (ROOT / "pyproject.toml").open("rb") as handle:
        dependencies: list[str] = tomllib.load(handle)["project"]["dependencies"]
    return next(d for d in dependencies if d.startswith("llama-cpp-python"))


def cmake_args(backend: str, machine: str | None = None) -> str:
    machine = (machine or platform.machine()).lower()
    cpu = X86_CPU if machine in ("x86_64", "amd64") else "-DGGML_NATIVE=OFF"
    if backend == "metal":
        cpu = ""  # Apple Silicon: the build machine's CPU (M1 on CI) is the baseline of every Apple Silicon Mac
    return " ".join(part for part in (cpu, BACKENDS[backend]) if part)


def build_environment(backend: str, system: str | None = None) -> dict[str, str]:
    env = {**os.environ, "CMAKE_ARGS": cmake_args(backend), "FORCE_CMAKE": "1"}
    if (system or platform.system()) == "Darwin":
        # Briefcase installs wheels for the app's minimum macOS; a wheel tagged for the build machine's newer macOS
        # would be refused.
        env["MACOSX_DEPLOYMENT_TARGET"] = str(briefcase_app()["macOS"]["min_os_version"])
    return env


def build_command(backend: str, out: Path, requirement: str | None = None) -> list[str]:
    requirement = requirement or llama_requirement()
    return [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "-w", str(out), requirement]


def manylinux_command(backend: str, out: Path, requirement: str | None = None) -> list[str]:
    """The same build inside briefcase.toml's manylinux image, for the Python version running this script."""
    image = f"quay.io/pypa/{briefcase_app()['linux']['appimage']['manylinux']}_{platform.machine()}"
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    python = f"/opt/python/{tag}-{tag}/bin/python"
    requirement = requirement or llama_requirement()
    uid = f"{os.getuid()}:{os.getgid()}" if hasattr(os, "getuid") else "0:0"
    return [
        "docker", "run", "--rm", "--user", uid, "-e", "HOME=/tmp", "-e", f"CMAKE_ARGS={cmake_args(backend)}",
        "-v", f"{out.resolve()}:/wheelhouse", image,
        python, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "-w", "/wheelhouse", requirement,
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=sorted(BACKENDS), required=True)
    parser.add_argument("--out", type=Path, default=ROOT / "wheelhouse")
    parser.add_argument("--version", help="build exactly this llama-cpp-python version (default: pyproject's range)")
    parser.add_argument("--manylinux", action="store_true", help="build in the AppImage's manylinux image (Docker)")
    parser.add_argument("--dry-run", action="store_true", help="print the command without building")
    args = parser.parse_args(argv)
    requirement = f"llama-cpp-python=={args.version}" if args.version else llama_requirement()
    env = build_environment(args.backend)
    if args.manylinux:
        command = manylinux_command(args.backend, args.out, requirement)
    else:
        command = build_command(args.backend, args.out, requirement)
    print(f"CMAKE_ARGS={shlex.quote(env['CMAKE_ARGS'])}", shlex.join(command), flush=True)
    if args.dry_run:
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("llama_cpp_python-*.whl"):
        old.unlink()
    return subprocess.call(command, env=env)


if __name__ == "__main__":
    sys.exit(main())

"""Build llama-cpp-python wheels for one backend into wheelhouse/, for the installers to bundle.

    python packaging/build_llama_wheels.py --backend cpu|cuda|metal|vulkan [--out wheelhouse]

llama-cpp-python ships only as source on PyPI and a macOS bundle cannot compile at install time, so every installer
carries a wheel built here; briefcase.toml points Briefcase's pip at wheelhouse/ (requirement_installer_args).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# CMake flags per backend. "cpu" is the portable x86-64 build (AVX2 baseline): a native build would enable AMX on
# CPUs that report it, and llama.cpp's AMX kernels crash on some virtual machines.
BACKENDS: dict[str, str] = {
    "cpu": "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON",
    "cuda": "-DGGML_CUDA=on -DGGML_NATIVE=OFF -DCMAKE_CUDA_ARCHITECTURES=75;80;86;89;90",
    "metal": "-DGGML_METAL=on",
    "vulkan": "-DGGML_VULKAN=on -DGGML_NATIVE=OFF",
}


def llama_requirement() -> str:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        dependencies = tomllib.load(handle)["project"]["dependencies"]
    return next(d for d in dependencies if d.startswith("llama-cpp-python"))


def build_command(backend: str, out: Path) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, "CMAKE_ARGS": BACKENDS[backend], "FORCE_CMAKE": "1"}
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "-w", str(out), llama_requirement()]
    return command, env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=sorted(BACKENDS), required=True)
    parser.add_argument("--out", type=Path, default=ROOT / "wheelhouse")
    parser.add_argument("--dry-run", action="store_true", help="print the command without building")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    command, env = build_command(args.backend, args.out)
    print(f"CMAKE_ARGS={env['CMAKE_ARGS']!r}", " ".join(command))
    if args.dry_run:
        return 0
    return subprocess.call(command, env=env)


if __name__ == "__main__":
    sys.exit(main())

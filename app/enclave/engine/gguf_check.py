"""Checks on a model file before llama.cpp opens it.

llama.cpp reports a bad file with a terse message, and for some malformed headers aborts the whole process, so the
file is checked here first: the cheap cases (missing, empty, not GGUF) with a message that says what to do, then the
whole header (counts, string and array sizes, tensor extents) with the model manager's validating reader.
"""

from __future__ import annotations

import struct
from pathlib import Path

from enclave.engine.types import ModelLoadError

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
HEADER = struct.Struct("<4sIQQ")  # magic, version, tensor count, metadata key/value count
MAX_TENSORS = 1_000_000
MAX_KV = 100_000


def check_gguf_file(path: Path) -> None:
    """Raise ModelLoadError unless ``path`` looks like a readable GGUF model file."""
    if not path.exists():
        raise ModelLoadError(f"Model file not found: {path}. Check the path, or open the model again from the menu.")
    if not path.is_file():
        raise ModelLoadError(f"{path} is a folder, not a model file. Choose a .gguf file.")
    try:
        with path.open("rb") as handle:
            raw = handle.read(HEADER.size)
    except OSError as exc:
        raise ModelLoadError(f"Cannot read {path.name}: {exc.strerror or exc}. Check the file's permissions.") from exc
    if len(raw) < HEADER.size:
        raise ModelLoadError(
            f"{path.name} is too small to be a model ({len(raw)} bytes). The download may be incomplete: download it "
            "again."
        )
    magic, version, n_tensors, n_kv = HEADER.unpack(raw)
    if magic != GGUF_MAGIC:
        raise ModelLoadError(
            f"{path.name} is not a GGUF model file. Enclave runs GGUF models (for example "
            "DeepSeek-R1-0528-Qwen3-8B-Q4_K_M.gguf); convert or download the model in GGUF format."
        )
    if version not in SUPPORTED_VERSIONS:
        raise ModelLoadError(
            f"{path.name} uses GGUF version {version}, which this version of Enclave cannot read "
            f"(supported: {', '.join(map(str, SUPPORTED_VERSIONS))})."
        )
    if n_tensors == 0 or n_tensors > MAX_TENSORS or n_kv > MAX_KV:
        raise ModelLoadError(
            f"{path.name} has a damaged header ({n_tensors} tensors, {n_kv} metadata entries). Download it again."
        )
    from enclave.models.gguf import GGUFError, read_gguf_header, shard_paths

    try:
        header = read_gguf_header(path)
    except GGUFError as exc:
        raise ModelLoadError(str(exc)) from exc
    if header.is_split and header.split_no == 0:
        missing = [p.name for p in shard_paths(path, header.split_count) if not p.is_file()]
        if missing:
            raise ModelLoadError(
                f"{path.name} is part 1 of a {header.split_count}-part model, but these parts are missing: "
                f"{', '.join(missing)}. Put all parts in the same folder."
            )

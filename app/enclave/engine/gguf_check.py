"""Checks on a model file before llama.cpp opens it.

llama.cpp reports a bad file with a terse message, and for some malformed headers aborts the whole process, so the
file is checked here first: the cheap cases (missing, empty, not GGUF) with a message that says what to do, then the
whole header (counts, string and array sizes, tensor extents) with the model manager's validating reader, then the
model's hyperparameters against what llama.cpp's loader assumes (``check_hyperparameters``): a layer count of 0 or
over 512, zero attention heads, more key/value heads than heads, a vocabulary whose score or type arrays are shorter
than its token list — each of those stops llama.cpp with an assertion or an out-of-bounds read instead of an error.
The model manager's import runs the same check, so a file that cannot be opened is never added to the list.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import TYPE_CHECKING

from enclave.engine.types import ModelLoadError

if TYPE_CHECKING:
    from enclave.models.gguf import GGUFHeader

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
HEADER = struct.Struct("<4sIQQ")  # magic, version, tensor count, metadata key/value count
MAX_TENSORS = 1_000_000
MAX_KV = 100_000
LLAMA_MAX_LAYERS = 512  # llama.cpp's LLAMA_MAX_LAYERS: more aborts the loader (GGML_ASSERT)
LLAMA_MAX_EXPERTS = 512  # llama.cpp's LLAMA_MAX_EXPERTS
# Architectures whose layers may have no attention heads at all (state-space and RWKV layers).
_HEADLESS = ("mamba", "rwkv", "jamba", "falcon-h1", "lfm2", "granitehybrid", "plamo2", "nemotron_h")


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
    if header.split_no == 0:
        check_hyperparameters(header, path.name)
    if header.is_split and header.split_no == 0:
        missing = [p.name for p in shard_paths(path, header.split_count) if not p.is_file()]
        if missing:
            raise ModelLoadError(
                f"{path.name} is part 1 of a {header.split_count}-part model, but these parts are missing: "
                f"{', '.join(missing)}. Put all parts in the same folder."
            )


def _values(header: GGUFHeader, key: str) -> list[int] | None:
    """An integer key as a list (a per-layer array, or one value); None when absent; [] when not integers."""
    value = header.metadata.get(key)
    if value is None:
        return None
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return list(value)
    return []


def check_hyperparameters(header: GGUFHeader, name: str) -> None:
    """Raise ModelLoadError when the model's shape is one llama.cpp's loader would crash on (see the module doc)."""
    from enclave.models.gguf import GGUFArraySummary

    def damaged(what: str) -> ModelLoadError:
        return ModelLoadError(
            f"{name} cannot be opened: {what}. The file is damaged or was written by a broken converter; download "
            "it again, or choose another model."
        )

    arch = header.architecture
    blocks = _values(header, f"{arch}.block_count") if arch else None
    if blocks is None:
        return  # no architecture or layer count: llama.cpp refuses such a file with an error, not a crash
    if len(blocks) != 1 or not 1 <= blocks[0] <= LLAMA_MAX_LAYERS:
        shown = blocks[0] if len(blocks) == 1 else "not one number"
        raise damaged(f"it claims {shown} layers, and llama.cpp runs models with 1 to {LLAMA_MAX_LAYERS}")
    n_layer = blocks[0]
    embd = _values(header, f"{arch}.embedding_length")
    if embd is not None and (len(embd) != 1 or embd[0] <= 0):
        raise damaged(f"its embedding length is {embd[0] if len(embd) == 1 else 'not one number'}")
    for key in ("attention.head_count", "attention.head_count_kv", "attention.key_length", "attention.value_length"):
        values = _values(header, f"{arch}.{key}")
        if values is None:
            continue
        if not values or len(values) > LLAMA_MAX_LAYERS or any(v < 0 or v > 1 << 20 for v in values):
            raise damaged(f"{arch}.{key} is not a sensible number")
        if len(values) > 1 and len(values) != n_layer:
            raise damaged(f"{arch}.{key} lists {len(values)} layers, but the model has {n_layer}")
    heads = _values(header, f"{arch}.attention.head_count") or []
    heads_kv = _values(header, f"{arch}.attention.head_count_kv") or heads
    if heads and max(heads) == 0 and not arch.startswith(_HEADLESS):
        raise damaged("it claims its layers have no attention heads")
    if len(heads) == 1 and len(heads_kv) == 1 and heads[0] > 0:
        if not 0 < heads_kv[0] <= heads[0] or heads[0] % heads_kv[0]:
            raise damaged(f"it claims {heads_kv[0]} key/value heads for {heads[0]} attention heads")
        key_length = _values(header, f"{arch}.attention.key_length")
        if key_length is None and embd is not None and embd[0] % heads[0]:
            raise damaged(f"its embedding length {embd[0]} does not divide into {heads[0]} heads")
    experts = header.expert_count or 0
    used = header.expert_used_count or 0
    if experts > LLAMA_MAX_EXPERTS or used > experts or (experts > 0 and used == 0):
        raise damaged(f"it claims {used} of {experts} experts per token (llama.cpp allows up to {LLAMA_MAX_EXPERTS})")
    tokens = header.vocab_size
    if tokens is not None:
        if tokens == 0:
            raise damaged("its vocabulary is empty")
        for key in ("tokenizer.ggml.scores", "tokenizer.ggml.token_type"):
            array = header.metadata.get(key)
            if isinstance(array, list | GGUFArraySummary) and len(array) != tokens:
                raise damaged(f"its vocabulary has {tokens} tokens but {len(array)} entries in {key}")

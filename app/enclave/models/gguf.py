"""Read and validate the header of a GGUF model file without llama.cpp.

The model manager needs a file's architecture, context length, layer count, quantization and tensor sizes before it
decides to download, import or load it, and llama.cpp either reports a damaged file tersely or aborts the process. So
the header is parsed here, in pure Python, with every count and length checked against the file size *before* anything
is allocated: a hostile or truncated file fails fast with a :class:`GGUFError` whose message a user can act on.

The parser works over a range reader ``read(offset, size) -> bytes``, so the same code reads a local file or, later, a
remote one with HTTP Range requests. Layout (llama.cpp ``gguf.h``): magic, version, tensor count, key/value count, the
key/values, the tensor infos, then the tensor data aligned to ``general.alignment`` (default 32).
"""

from __future__ import annotations

import math
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_NAME = 64  # GGML_MAX_NAME: llama.cpp rejects tensor names of 64 bytes or more
MAX_KEY = 65_535
# Smallest possible encoding of one entry, used to reject absurd counts before looping over them.
_MIN_KV_BYTES = 8 + 4 + 1  # key length, value type, a one-byte value
_MIN_TENSOR_BYTES = 8 + 4 + 8 + 4 + 8  # name length, n_dims, one dim, type, offset
_READ_CHUNK = 1 << 20
ARRAY_KEEP_LIMIT = 1024  # longer arrays (token lists) are summarized unless asked for


class GGUFError(ValueError):
    """The file is not a usable GGUF model; the message says why in plain words."""


class GGMLType(NamedTuple):
    name: str
    block_size: int  # elements per block
    type_size: int  # bytes per block


# ggml_type ids with (block size, bytes per block): gguf-py GGML_QUANT_SIZES and ggml.h, cross-checked in the tests
# against ggml_blck_size()/ggml_type_size() of the llama.cpp build that is installed.
GGML_TYPES: dict[int, GGMLType] = {
    0: GGMLType("F32", 1, 4),
    1: GGMLType("F16", 1, 2),
    2: GGMLType("Q4_0", 32, 18),
    3: GGMLType("Q4_1", 32, 20),
    6: GGMLType("Q5_0", 32, 22),
    7: GGMLType("Q5_1", 32, 24),
    8: GGMLType("Q8_0", 32, 34),
    9: GGMLType("Q8_1", 32, 36),
    10: GGMLType("Q2_K", 256, 84),
    11: GGMLType("Q3_K", 256, 110),
    12: GGMLType("Q4_K", 256, 144),
    13: GGMLType("Q5_K", 256, 176),
    14: GGMLType("Q6_K", 256, 210),
    15: GGMLType("Q8_K", 256, 292),
    16: GGMLType("IQ2_XXS", 256, 66),
    17: GGMLType("IQ2_XS", 256, 74),
    18: GGMLType("IQ3_XXS", 256, 98),
    19: GGMLType("IQ1_S", 256, 50),
    20: GGMLType("IQ4_NL", 32, 18),
    21: GGMLType("IQ3_S", 256, 110),
    22: GGMLType("IQ2_S", 256, 82),
    23: GGMLType("IQ4_XS", 256, 136),
    24: GGMLType("I8", 1, 1),
    25: GGMLType("I16", 1, 2),
    26: GGMLType("I32", 1, 4),
    27: GGMLType("I64", 1, 8),
    28: GGMLType("F64", 1, 8),
    29: GGMLType("IQ1_M", 256, 56),
    30: GGMLType("BF16", 1, 2),
    34: GGMLType("TQ1_0", 256, 54),
    35: GGMLType("TQ2_0", 256, 66),
    39: GGMLType("MXFP4", 32, 17),
    40: GGMLType("NVFP4", 64, 36),
    41: GGMLType("Q1_0", 128, 18),
    42: GGMLType("Q2_0", 64, 18),
}

# llama_ftype (llama.h) -> the label people use in file names.
FILE_TYPES: dict[int, str] = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4_MOE",
    39: "NVFP4",
    40: "Q1_0",
    41: "Q2_0",
}

# gguf_type id -> (struct format, size); 8 (string) and 9 (array) are handled separately.
_SCALARS: dict[int, tuple[str, int]] = {
    0: ("B", 1),
    1: ("b", 1),
    2: ("H", 2),
    3: ("h", 2),
    4: ("I", 4),
    5: ("i", 4),
    6: ("f", 4),
    7: ("?", 1),
    10: ("Q", 8),
    11: ("q", 8),
    12: ("d", 8),
}
_STRING = 8
_ARRAY = 9


@dataclass(frozen=True)
class GGUFArraySummary:
    """Stands in for a long array (e.g. the 150k-entry token list) that was skipped rather than decoded."""

    item_type: int
    length: int

    def __len__(self) -> int:
        return self.length


@dataclass(frozen=True)
class GGUFTensorInfo:
    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int  # relative to GGUFHeader.data_offset
    n_bytes: int

    @property
    def type_name(self) -> str:
        return GGML_TYPES[self.ggml_type].name

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class GGUFHeader:
    version: int
    metadata: dict[str, object]
    tensors: tuple[GGUFTensorInfo, ...]
    data_offset: int  # absolute offset of the tensor data blob
    file_size: int

    # --- generic metadata access ---------------------------------------------------------------------------------

    def get_int(self, key: str) -> int | None:
        """An integer value; a per-layer array (some architectures) gives its maximum, the worst case for sizing."""
        value = self.metadata.get(key)
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int):
            return value
        if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
            return max(value)
        return None

    def get_str(self, key: str) -> str | None:
        value = self.metadata.get(key)
        return value if isinstance(value, str) else None

    def arch_int(self, suffix: str) -> int | None:
        """``{architecture}.{suffix}``, e.g. ``arch_int("attention.head_count_kv")``."""
        return self.get_int(f"{self.architecture}.{suffix}")

    # --- well-known keys ---------------------------------------------------------------------------------------

    @property
    def architecture(self) -> str:
        """``general.architecture``; empty for split shards after the first, which carry no model metadata."""
        return self.get_str("general.architecture") or ""

    @property
    def name(self) -> str | None:
        return self.get_str("general.name")

    @property
    def context_length(self) -> int | None:
        return self.arch_int("context_length")

    @property
    def block_count(self) -> int | None:
        return self.arch_int("block_count")

    @property
    def embedding_length(self) -> int | None:
        return self.arch_int("embedding_length")

    @property
    def head_count(self) -> int | None:
        return self.arch_int("attention.head_count")

    @property
    def head_count_kv(self) -> int | None:
        """Defaults to head_count as llama.cpp does when the key is absent."""
        value = self.arch_int("attention.head_count_kv")
        return value if value is not None else self.head_count

    @property
    def key_length(self) -> int | None:
        value = self.arch_int("attention.key_length")
        if value is None and self.embedding_length and self.head_count:
            return self.embedding_length // self.head_count
        return value

    @property
    def value_length(self) -> int | None:
        value = self.arch_int("attention.value_length")
        if value is None and self.embedding_length and self.head_count:
            return self.embedding_length // self.head_count
        return value

    @property
    def kv_lora_rank(self) -> int | None:
        return self.arch_int("attention.kv_lora_rank")

    @property
    def expert_count(self) -> int | None:
        return self.arch_int("expert_count")

    @property
    def expert_used_count(self) -> int | None:
        return self.arch_int("expert_used_count")

    @property
    def sliding_window(self) -> int | None:
        return self.arch_int("attention.sliding_window")

    @property
    def chat_template(self) -> str | None:
        return self.get_str("tokenizer.chat_template")

    @property
    def vocab_size(self) -> int | None:
        tokens = self.metadata.get("tokenizer.ggml.tokens")
        return len(tokens) if isinstance(tokens, list | GGUFArraySummary) else None

    @property
    def file_type(self) -> int | None:
        return self.get_int("general.file_type")

    @property
    def quant_label(self) -> str:
        """``Q4_K_M``-style label from ``general.file_type``, else the most common weight type, else ``unknown``."""
        file_type = self.file_type
        if file_type is not None and file_type in FILE_TYPES:
            return FILE_TYPES[file_type]
        weights = Counter(t.ggml_type for t in self.tensors if len(t.shape) >= 2)
        if weights:
            return GGML_TYPES[weights.most_common(1)[0][0]].name
        return "unknown"

    @property
    def total_tensor_bytes(self) -> int:
        return sum(t.n_bytes for t in self.tensors)

    # --- multi-file (gguf-split) models --------------------------------------------------------------------------

    @property
    def split_no(self) -> int:
        """0-based index of this shard (0 for a single file)."""
        return self.get_int("split.no") or 0

    @property
    def split_count(self) -> int:
        """Number of shards (1 for a single file)."""
        return self.get_int("split.count") or 1

    @property
    def split_tensors_count(self) -> int:
        """Tensors in the whole model across shards (this file's count for a single file)."""
        value = self.get_int("split.tensors.count")
        return value if value is not None else len(self.tensors)

    @property
    def is_split(self) -> bool:
        return self.split_count > 1


RangeReader = Callable[[int, int], bytes]


def shard_paths(first: Path, count: int) -> list[Path]:
    """Sibling shard names of a split model, llama.cpp style: name-00001-of-00003.gguf (empty if not so named)."""
    marker = f"-00001-of-{count:05d}"
    if marker not in first.name:
        return []
    return [first.with_name(first.name.replace(marker, f"-{i:05d}-of-{count:05d}")) for i in range(1, count + 1)]


_HEADER_CACHE: dict[tuple[str, int, int, int], GGUFHeader] = {}
_HEADER_CACHE_SIZE = 8


def read_gguf_header(path: Path, *, max_metadata_bytes: int = 64 << 20, keep_large_arrays: bool = False) -> GGUFHeader:
    """Parse and validate ``path``'s header; raises GGUFError naming the file and what is wrong.

    With the default arguments the result is remembered per file (path, size, modification time, inode): one load
    checks, plans and opens the same file, and a 262k-token vocabulary takes most of a second to parse.
    """
    path = Path(path)
    if max_metadata_bytes == 64 << 20 and not keep_large_arrays:
        try:
            st = path.stat()
        except OSError:
            pass
        else:
            key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
            cached = _HEADER_CACHE.get(key)
            if cached is None:
                cached = _read_gguf_header(path, max_metadata_bytes=max_metadata_bytes, keep_large_arrays=False)
                while len(_HEADER_CACHE) >= _HEADER_CACHE_SIZE:
                    _HEADER_CACHE.pop(next(iter(_HEADER_CACHE)))
                _HEADER_CACHE[key] = cached
            return cached
    return _read_gguf_header(path, max_metadata_bytes=max_metadata_bytes, keep_large_arrays=keep_large_arrays)


def _read_gguf_header(path: Path, *, max_metadata_bytes: int, keep_large_arrays: bool) -> GGUFHeader:
    try:
        handle = path.open("rb")
    except FileNotFoundError as exc:
        raise GGUFError(f"{path.name}: the file does not exist ({path}).") from exc
    except IsADirectoryError as exc:
        raise GGUFError(f"{path.name} is a folder, not a model file.") from exc
    except OSError as exc:
        raise GGUFError(f"{path.name}: cannot open the file ({exc.strerror or exc}).") from exc
    with handle:
        try:
            file_size = path.stat().st_size
        except OSError as exc:
            raise GGUFError(f"{path.name}: cannot read the file ({exc.strerror or exc}).") from exc

        def read(offset: int, size: int) -> bytes:
            handle.seek(offset)
            return handle.read(size)

        try:
            return parse_gguf_header(
                read, file_size, max_metadata_bytes=max_metadata_bytes, keep_large_arrays=keep_large_arrays
            )
        except GGUFError as exc:
            raise GGUFError(f"{path.name}: {exc}") from None
        except OSError as exc:
            raise GGUFError(f"{path.name}: cannot read the file ({exc.strerror or exc}).") from exc


def parse_gguf_header(
    read: RangeReader, file_size: int, *, max_metadata_bytes: int = 64 << 20, keep_large_arrays: bool = False
) -> GGUFHeader:
    """Parse a GGUF header through ``read(offset, size)``; ``file_size`` is the full size of this file (or shard).

    Arrays longer than ``ARRAY_KEEP_LIMIT`` items become a :class:`GGUFArraySummary` unless ``keep_large_arrays``:
    the token list alone is hundreds of thousands of strings that the model manager never needs.
    """
    return _Parser(read, file_size, max_metadata_bytes, keep_large_arrays).parse()


class _Parser:
    def __init__(self, read: RangeReader, file_size: int, limit: int, keep_large_arrays: bool) -> None:
        self._read = read
        self._size = file_size
        self._limit = min(limit, file_size)  # the header may not extend past this
        self._keep = keep_large_arrays
        self._buf = bytearray()
        self._pos = 0  # absolute position of the next unread byte; the buffer always starts at offset 0

    # --- byte access -----------------------------------------------------------------------------------------

    def _incomplete(self, needed_end: int) -> GGUFError:
        if needed_end > self._size:
            return GGUFError(
                f"the file is incomplete: it ends inside its header ({self._size:,} bytes). "
                "The download was probably interrupted: download it again."
            )
        return GGUFError(
            f"the header is larger than {self._limit:,} bytes, which no real model needs; "
            "the file is damaged or is not a model."
        )

    def _ensure(self, n: int) -> None:
        end = self._pos + n
        if end <= len(self._buf):
            return
        if end > self._limit:
            raise self._incomplete(end)
        want = min(max(end - len(self._buf), _READ_CHUNK), self._limit - len(self._buf))
        chunk = self._read(len(self._buf), want)
        self._buf += chunk
        if len(self._buf) < end:
            raise GGUFError(
                f"the file is incomplete: it ends inside its header ({len(self._buf):,} of "
                f"{self._size:,} bytes could be read). Download it again."
            )

    def _unpack(self, fmt: str, size: int) -> tuple[Any, ...]:
        self._ensure(size)
        values = struct.unpack_from("<" + fmt, self._buf, self._pos)
        self._pos += size
        return values

    def _u32(self) -> int:
        return int(self._unpack("I", 4)[0])

    def _u64(self) -> int:
        return int(self._unpack("Q", 8)[0])

    def _remaining(self) -> int:
        return self._limit - self._pos

    def _check_claim(self, n_bytes: int, what: str) -> None:
        """Refuse a length or count before allocating or looping: it must fit in the file and the header limit."""
        left_in_file = self._size - self._pos
        if n_bytes > left_in_file:
            raise GGUFError(
                f"the file is incomplete or damaged: {what} but only {left_in_file:,} bytes remain in the file "
                f"({self._size:,} bytes). If it was downloaded, download it again."
            )
        if n_bytes > self._remaining():
            raise self._incomplete(self._pos + n_bytes)

    def _string(self, what: str, max_len: int | None = None) -> str:
        length = self._u64()
        if max_len is not None and length > max_len:
            raise GGUFError(f"the header is damaged: {what} claims {length:,} bytes (at most {max_len:,} allowed).")
        self._check_claim(length, f"{what} claims {length:,} bytes")
        self._ensure(length)
        raw = bytes(self._buf[self._pos : self._pos + length])
        self._pos += length
        return raw.decode("utf-8", errors="replace")

    def _skip_string(self) -> None:
        length = self._u64()
        self._check_claim(length, f"a text value claims {length:,} bytes")
        self._ensure(length)
        self._pos += length

    # --- structure -------------------------------------------------------------------------------------------

    def parse(self) -> GGUFHeader:
        if self._size < 24:
            raise GGUFError(
                f"the file is too small to be a model ({self._size:,} bytes). The download may be incomplete."
            )
        self._ensure(4)
        if bytes(self._buf[:4]) != GGUF_MAGIC:
            raise GGUFError(
                "this is not a GGUF model file. Enclave runs GGUF models (for example "
                "DeepSeek-R1-0528-Qwen3-8B-Q4_K_M.gguf)."
            )
        self._pos = 4
        version = self._u32()
        if version not in SUPPORTED_VERSIONS:
            raise GGUFError(
                f"the file uses GGUF version {version}, which Enclave cannot read "
                f"(supported: {', '.join(map(str, SUPPORTED_VERSIONS))})."
            )
        n_tensors = self._u64()
        n_kv = self._u64()
        budget = self._size - self._pos
        if n_tensors >= 1 << 62 or n_kv >= 1 << 62 or n_tensors * _MIN_TENSOR_BYTES + n_kv * _MIN_KV_BYTES > budget:
            raise GGUFError(
                f"the header is damaged: it claims {n_tensors:,} tensors and {n_kv:,} metadata entries, "
                f"more than a {self._size:,}-byte file can hold."
            )
        metadata: dict[str, object] = {}
        for _ in range(n_kv):
            key = self._string("a metadata key", MAX_KEY)
            if key in metadata:
                raise GGUFError(f"the header is damaged: the metadata key {key!r} appears twice.")
            metadata[key] = self._value(self._u32(), key)
        alignment = self._alignment(metadata)
        infos = [self._tensor_info() for _ in range(n_tensors)]
        data_offset = -(-self._pos // alignment) * alignment
        tensors = self._validate_tensors(infos, alignment, data_offset)
        return GGUFHeader(version, metadata, tensors, data_offset, self._size)

    def _value(self, value_type: int, key: str) -> object:
        if value_type in _SCALARS:
            fmt, size = _SCALARS[value_type]
            return self._unpack(fmt, size)[0]
        if value_type == _STRING:
            return self._string(f"the text of {key!r}")
        if value_type == _ARRAY:
            return self._array(key)
        raise GGUFError(f"the header is damaged: {key!r} has an unknown value type ({value_type}).")

    def _array(self, key: str) -> object:
        item_type = self._u32()
        count = self._u64()
        if item_type == _ARRAY:
            raise GGUFError(f"the header is damaged or unsupported: {key!r} is an array of arrays.")
        if item_type == _STRING:
            min_size = 8
        elif item_type in _SCALARS:
            min_size = _SCALARS[item_type][1]
        else:
            raise GGUFError(f"the header is damaged: the array {key!r} has an unknown item type ({item_type}).")
        self._check_claim(count * min_size, f"the array {key!r} claims {count:,} items")
        keep = self._keep or count <= ARRAY_KEEP_LIMIT
        if item_type != _STRING:
            fmt, size = _SCALARS[item_type]
            self._ensure(count * size)
            if keep:
                values = list(struct.unpack_from(f"<{count}{fmt}", self._buf, self._pos))
            self._pos += count * size
            return values if keep else GGUFArraySummary(item_type, count)
        if keep:
            return [self._string(f"an item of {key!r}") for _ in range(count)]
        for _ in range(count):
            self._skip_string()
        return GGUFArraySummary(item_type, count)

    def _alignment(self, metadata: dict[str, object]) -> int:
        value = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0 or value & (value - 1):
            raise GGUFError(f"the header is damaged: general.alignment is {value!r}, not a power of two.")
        return value

    def _tensor_info(self) -> tuple[str, tuple[int, ...], int, int]:
        name = self._string("a tensor name", MAX_NAME - 1)
        n_dims = self._u32()
        if not 1 <= n_dims <= MAX_DIMS:
            raise GGUFError(f"the header is damaged: tensor {name!r} has {n_dims} dimensions (1 to 4 allowed).")
        shape = tuple(int(d) for d in self._unpack(f"{n_dims}q", 8 * n_dims))
        if any(d < 0 for d in shape):
            raise GGUFError(f"the header is damaged: tensor {name!r} has a negative size {shape}.")
        ggml_type = self._u32()
        offset = self._u64()
        return name, shape, ggml_type, offset

    def _validate_tensors(
        self, infos: list[tuple[str, tuple[int, ...], int, int]], alignment: int, data_offset: int
    ) -> tuple[GGUFTensorInfo, ...]:
        data_size = self._size - data_offset
        seen: set[str] = set()
        tensors: list[GGUFTensorInfo] = []
        for name, shape, ggml_type, offset in infos:
            if name in seen:
                raise GGUFError(f"the header is damaged: the tensor {name!r} appears twice.")
            seen.add(name)
            kind = GGML_TYPES.get(ggml_type)
            if kind is None:
                raise GGUFError(
                    f"tensor {name!r} uses a data type (ggml type {ggml_type}) that this version of Enclave does not "
                    "know. The file may need a newer app, or it is damaged."
                )
            if shape[0] % kind.block_size:
                raise GGUFError(
                    f"the header is damaged: tensor {name!r} has {shape[0]} columns, not a multiple of the "
                    f"{kind.name} block size {kind.block_size}."
                )
            n_elements = math.prod(shape)
            n_bytes = n_elements // kind.block_size * kind.type_size
            if offset % alignment:
                raise GGUFError(f"the header is damaged: tensor {name!r} starts at a misaligned offset {offset:,}.")
            if n_bytes >= 1 << 62 or offset >= 1 << 62:
                raise GGUFError(f"the header is damaged: tensor {name!r} claims an impossible size.")
            tensors.append(GGUFTensorInfo(name, shape, ggml_type, offset, n_bytes))
        ordered = sorted(tensors, key=lambda t: t.offset)
        end = 0
        for tensor in ordered:
            if tensor.offset < end:
                raise GGUFError(f"the header is damaged: tensor {tensor.name!r} overlaps the tensor before it.")
            end = tensor.offset + tensor.n_bytes
        if tensors and end > data_size:
            needed = data_offset + end
            raise GGUFError(
                f"the file is incomplete ({self._size:,} of {needed:,} bytes). "
                "The download was probably interrupted: download it again."
            )
        return tuple(tensors)

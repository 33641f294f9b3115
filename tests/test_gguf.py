"""The GGUF header reader: the real Gemma file, and hand-built good and hostile files."""

from __future__ import annotations

import ctypes
import struct
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from enclave.models.gguf import (
    GGML_TYPES,
    GGUFArraySummary,
    GGUFError,
    parse_gguf_header,
    read_gguf_header,
)

# --- a tiny GGUF writer (struct only) ---------------------------------------------------------------------------

U16, U32, I32, F32, BOOL, STR, ARR, U64 = 2, 4, 5, 6, 7, 8, 9, 10


def _s(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def _value(kind: int, value: object) -> bytes:
    if kind == STR:
        assert isinstance(value, str)
        return _s(value)
    if kind == ARR:
        item_kind, items = value  # type: ignore[misc]
        body = b"".join(_value(item_kind, v) for v in items)
        return struct.pack("<IQ", item_kind, len(items)) + body
    fmt = {U16: "H", U32: "I", I32: "i", F32: "f", BOOL: "?", U64: "Q"}[kind]
    return struct.pack("<" + fmt, value)


Tensor = tuple[str, Sequence[int], int]  # name, shape, ggml type


def tensor_bytes(shape: Sequence[int], ggml_type: int) -> int:
    kind = GGML_TYPES.get(ggml_type)
    if kind is None:
        return 0
    n = 1
    for d in shape:
        n *= d
    return n // kind.block_size * kind.type_size


def build_gguf(
    kvs: Sequence[tuple[str, int, object]] = (),
    tensors: Sequence[Tensor] = (),
    *,
    version: int = 3,
    magic: bytes = b"GGUF",
    n_tensors: int | None = None,
    n_kv: int | None = None,
    offsets: Sequence[int] | None = None,
    with_data: bool = True,
) -> bytes:
    out = bytearray(
        magic
        + struct.pack(
            "<IQQ", version, len(tensors) if n_tensors is None else n_tensors, len(kvs) if n_kv is None else n_kv
        )
    )
    for key, kind, value in kvs:
        out += _s(key) + struct.pack("<I", kind) + _value(kind, value)
    offset = 0
    sizes = []
    for i, (name, shape, ggml_type) in enumerate(tensors):
        size = tensor_bytes(shape, ggml_type)
        sizes.append(size)
        this = offset if offsets is None else offsets[i]
        out += _s(name) + struct.pack("<I", len(shape)) + struct.pack(f"<{len(shape)}q", *shape)
        out += struct.pack("<IQ", ggml_type, this)
        offset += -(-size // 32) * 32
    out += b"\0" * (-len(out) % 32)
    if with_data:
        out += b"\0" * offset
    return bytes(out)


GOOD_KVS: list[tuple[str, int, object]] = [
    ("general.architecture", STR, "qwen3"),
    ("general.name", STR, "Tiny"),
    ("general.file_type", U32, 15),
    ("qwen3.block_count", U32, 2),
    ("qwen3.context_length", U32, 4096),
    ("qwen3.embedding_length", U32, 256),
    ("qwen3.attention.head_count", U32, 4),
    ("qwen3.attention.head_count_kv", U32, 2),
    ("tokenizer.chat_template", STR, "{{ messages }}"),
    ("tokenizer.ggml.tokens", ARR, (STR, ["a", "b", "c"])),
]
GOOD_TENSORS: list[Tensor] = [
    ("token_embd.weight", (256, 3), 12),
    ("blk.0.attn_q.weight", (256, 256), 14),
    ("blk.0.attn_norm.weight", (256,), 0),
    ("output.weight", (256, 3), 8),
]


def write(tmp_path: Path, data: bytes, name: str = "model.gguf") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def error_of(tmp_path: Path, data: bytes, **kwargs: int) -> str:
    with pytest.raises(GGUFError) as info:
        read_gguf_header(write(tmp_path, data), **kwargs)  # type: ignore[arg-type]
    return str(info.value)


# --- the real model ----------------------------------------------------------------------------------------------


def test_reads_the_real_gemma_header(gemma_path: Path) -> None:
    header = read_gguf_header(gemma_path)
    assert header.version == 3
    assert header.architecture == "gemma3"
    assert header.name == "Gemma 3 270m"
    assert header.context_length == 32768
    assert header.block_count == 18
    assert (header.head_count, header.head_count_kv, header.key_length, header.value_length) == (4, 1, 256, 256)
    assert header.sliding_window == 512
    assert header.quant_label == "Q4_K_M"
    assert len(header.tensors) == 236
    assert header.split_count == 1 and header.split_no == 0 and not header.is_split
    assert header.file_size == gemma_path.stat().st_size
    assert isinstance(header.metadata["tokenizer.ggml.tokens"], GGUFArraySummary)
    assert header.vocab_size == 262144
    last_end = max(t.offset + t.n_bytes for t in header.tensors)
    assert header.data_offset + last_end <= header.file_size
    assert header.file_size - header.data_offset - header.total_tensor_bytes < 1 << 20  # only padding left over
    embd = next(t for t in header.tensors if t.name == "token_embd.weight")
    assert embd.shape == (640, 262144) and embd.type_name == "Q8_0"


def test_keep_large_arrays_decodes_the_vocabulary(gemma_path: Path) -> None:
    header = read_gguf_header(gemma_path, keep_large_arrays=True)
    tokens = header.metadata["tokenizer.ggml.tokens"]
    assert isinstance(tokens, list) and len(tokens) == 262144 and all(isinstance(t, str) for t in tokens[:10])


def test_type_table_matches_gguf_py_when_available() -> None:
    gguf = pytest.importorskip("gguf")
    for ggml_type, (block, size) in gguf.GGML_QUANT_SIZES.items():
        if ggml_type.name == "Q8_1":  # an activation type never stored in files; gguf-py 0.19 still has the old size
            continue
        assert (GGML_TYPES[int(ggml_type)].block_size, GGML_TYPES[int(ggml_type)].type_size) == (block, size)


@pytest.mark.slow
def test_tensor_table_matches_gguf_py_when_available(gemma_path: Path) -> None:
    gguf = pytest.importorskip("gguf")
    reference = gguf.GGUFReader(str(gemma_path))  # ~9 s: it decodes the whole 262k-token vocabulary
    header = read_gguf_header(gemma_path)
    mine = {t.name: (header.data_offset + t.offset, t.n_bytes, t.ggml_type) for t in header.tensors}
    theirs = {t.name: (int(t.data_offset), int(t.n_bytes), int(t.tensor_type)) for t in reference.tensors}
    assert mine == theirs


def test_block_sizes_match_the_installed_llama_cpp() -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    lib_dir = Path(llama_cpp.__file__).parent / "lib"
    candidates = [*lib_dir.glob("libggml-base.*"), *lib_dir.glob("ggml-base.dll")]
    if not candidates:
        pytest.skip("libggml-base not found next to llama_cpp")
    lib = ctypes.CDLL(str(candidates[0]))
    lib.ggml_blck_size.restype, lib.ggml_blck_size.argtypes = ctypes.c_int64, [ctypes.c_int]
    lib.ggml_type_size.restype, lib.ggml_type_size.argtypes = ctypes.c_size_t, [ctypes.c_int]
    lib.ggml_type_name.restype, lib.ggml_type_name.argtypes = ctypes.c_char_p, [ctypes.c_int]
    for ggml_type, kind in GGML_TYPES.items():
        assert lib.ggml_type_name(ggml_type).decode().upper() == kind.name
        assert (lib.ggml_blck_size(ggml_type), lib.ggml_type_size(ggml_type)) == (kind.block_size, kind.type_size)


# --- well-formed synthetic files ---------------------------------------------------------------------------------


def test_reads_a_synthetic_file(tmp_path: Path) -> None:
    header = read_gguf_header(write(tmp_path, build_gguf(GOOD_KVS, GOOD_TENSORS)))
    assert header.architecture == "qwen3"
    assert header.chat_template == "{{ messages }}"
    assert header.metadata["tokenizer.ggml.tokens"] == ["a", "b", "c"]
    assert header.key_length == 64 and header.value_length == 64  # embedding_length / head_count
    assert header.head_count_kv == 2
    assert header.quant_label == "Q4_K_M"
    assert [t.n_bytes for t in header.tensors] == [tensor_bytes(s, g) for _, s, g in GOOD_TENSORS]
    assert header.data_offset % 32 == 0


def test_split_shard_keys(tmp_path: Path) -> None:
    kvs = [("split.no", U16, 1), ("split.count", U16, 4), ("split.tensors.count", I32, 1025)]
    header = read_gguf_header(write(tmp_path, build_gguf(kvs, GOOD_TENSORS[:1])))
    assert (header.split_no, header.split_count, header.split_tensors_count, header.is_split) == (1, 4, 1025, True)
    assert header.architecture == ""  # later shards carry no model metadata


def test_quant_label_falls_back_to_the_commonest_weight_type(tmp_path: Path) -> None:
    header = read_gguf_header(write(tmp_path, build_gguf(GOOD_KVS[:2], [GOOD_TENSORS[1], GOOD_TENSORS[2]])))
    assert header.quant_label == "Q6_K"


def test_parses_through_a_range_reader_in_few_requests(tmp_path: Path) -> None:
    data = build_gguf(GOOD_KVS, GOOD_TENSORS)
    calls: list[tuple[int, int]] = []

    def read(offset: int, size: int) -> bytes:
        calls.append((offset, size))
        return data[offset : offset + size]

    header = parse_gguf_header(read, len(data))
    assert len(header.tensors) == 4
    assert len(calls) == 1


# --- hostile and broken files ------------------------------------------------------------------------------------


def test_rejects_a_file_that_is_not_gguf(tmp_path: Path) -> None:
    assert "not a GGUF model file" in error_of(tmp_path, b"PK\x03\x04" + b"\0" * 100)


@pytest.mark.parametrize("version", [1, 4, 0xFFFFFFFF])
def test_rejects_unknown_versions(tmp_path: Path, version: int) -> None:
    assert f"GGUF version {version}" in error_of(tmp_path, build_gguf(GOOD_KVS, GOOD_TENSORS, version=version))


def test_tiny_file(tmp_path: Path) -> None:
    assert "too small" in error_of(tmp_path, b"GGUF")


@pytest.mark.parametrize(("n_tensors", "n_kv"), [(1 << 40, 0), (0, 1 << 40), (2**64 - 1, 2**64 - 1)])
def test_absurd_counts_fail_before_looping(tmp_path: Path, n_tensors: int, n_kv: int) -> None:
    start = time.perf_counter()
    message = error_of(tmp_path, build_gguf(GOOD_KVS, GOOD_TENSORS, n_tensors=n_tensors, n_kv=n_kv))
    assert "more than a" in message
    assert time.perf_counter() - start < 0.5


def test_huge_string_length_fails_fast(tmp_path: Path) -> None:
    data = bytearray(build_gguf(GOOD_KVS, GOOD_TENSORS))
    # the first key's length field sits right after the 24-byte fixed header
    data[24:32] = struct.pack("<Q", 1 << 60)
    start = time.perf_counter()
    assert "claims" in error_of(tmp_path, bytes(data))
    assert time.perf_counter() - start < 0.5


def test_huge_string_value_fails_fast(tmp_path: Path) -> None:
    data = build_gguf([("general.architecture", STR, "x")], GOOD_TENSORS)
    key_end = 24 + 8 + len("general.architecture") + 4
    data = data[:key_end] + struct.pack("<Q", 1 << 60) + data[key_end + 8 :]
    assert "claims 1,152,921,504,606,846,976 bytes" in error_of(tmp_path, data)


def test_billion_item_array_fails_fast(tmp_path: Path) -> None:
    kvs = [("tokenizer.ggml.scores", ARR, (F32, [0.0] * 4))]
    data = bytearray(build_gguf(kvs, GOOD_TENSORS))
    count_at = 24 + 8 + len("tokenizer.ggml.scores") + 4 + 4
    data[count_at : count_at + 8] = struct.pack("<Q", 1_000_000_000)
    start = time.perf_counter()
    assert "claims 1,000,000,000 items" in error_of(tmp_path, bytes(data))
    assert time.perf_counter() - start < 0.5


def test_billion_string_array_fails_fast(tmp_path: Path) -> None:
    kvs = [("tokenizer.ggml.tokens", ARR, (STR, ["a"]))]
    data = bytearray(build_gguf(kvs, GOOD_TENSORS))
    count_at = 24 + 8 + len("tokenizer.ggml.tokens") + 4 + 4
    data[count_at : count_at + 8] = struct.pack("<Q", 1_000_000_000)
    assert "claims 1,000,000,000 items" in error_of(tmp_path, bytes(data))


def test_nested_arrays_are_rejected(tmp_path: Path) -> None:
    data = build_gguf([("x", ARR, (ARR, []))], GOOD_TENSORS)
    assert "array of arrays" in error_of(tmp_path, data)


def test_unknown_value_type(tmp_path: Path) -> None:
    data = build_gguf([("general.architecture", STR, "x")], GOOD_TENSORS)
    type_at = 24 + 8 + len("general.architecture")
    data = data[:type_at] + struct.pack("<I", 77) + data[type_at + 4 :]
    assert "unknown value type (77)" in error_of(tmp_path, data)


def test_duplicate_keys(tmp_path: Path) -> None:
    data = build_gguf([("a", U32, 1), ("a", U32, 2)], GOOD_TENSORS)
    assert "appears twice" in error_of(tmp_path, data)


def test_truncated_tensor_data_says_how_much_is_missing(tmp_path: Path) -> None:
    full = build_gguf(GOOD_KVS, GOOD_TENSORS)
    cut = full[: len(full) - 1000]
    message = error_of(tmp_path, cut)
    assert f"the file is incomplete ({len(cut):,} of" in message
    assert "download it again" in message


def test_truncated_inside_the_header(tmp_path: Path) -> None:
    header_only = build_gguf(GOOD_KVS, GOOD_TENSORS, with_data=False)
    assert "incomplete" in error_of(tmp_path, header_only[: len(header_only) - 60])
    assert "ends inside its header" in error_of(tmp_path, header_only[: len(header_only) - 40])


def test_unknown_tensor_type(tmp_path: Path) -> None:
    data = build_gguf(GOOD_KVS, [("w", (32, 2), 4)], with_data=False) + b"\0" * 4096
    assert "ggml type 4" in error_of(tmp_path, data)


def test_row_size_not_a_multiple_of_the_block(tmp_path: Path) -> None:
    data = build_gguf(GOOD_KVS, [("w", (100, 2), 12)], with_data=False) + b"\0" * 4096
    assert "not a multiple of the Q4_K block size 256" in error_of(tmp_path, data)


def test_misaligned_offset(tmp_path: Path) -> None:
    data = build_gguf(GOOD_KVS, GOOD_TENSORS[:2], offsets=[0, 33])
    assert "misaligned" in error_of(tmp_path, data)


def test_overlapping_tensors(tmp_path: Path) -> None:
    data = build_gguf(GOOD_KVS, GOOD_TENSORS[:2], offsets=[0, 0])
    assert "overlaps" in error_of(tmp_path, data)


def test_tensor_beyond_the_end(tmp_path: Path) -> None:
    data = build_gguf(GOOD_KVS, GOOD_TENSORS[:2], offsets=[0, 1 << 40])
    assert "incomplete" in error_of(tmp_path, data)


def test_too_many_dimensions(tmp_path: Path) -> None:
    data = build_gguf(GOOD_KVS, [("w", (1, 1, 1, 1, 1), 0)])
    assert "5 dimensions" in error_of(tmp_path, data)


def test_negative_dimension(tmp_path: Path) -> None:
    data = build_gguf(GOOD_KVS, [("w", (-32, 1), 0)], with_data=False)
    assert "negative size" in error_of(tmp_path, data)


def test_tensor_name_too_long(tmp_path: Path) -> None:
    data = build_gguf(GOOD_KVS, [("w" * 64, (32,), 0)])
    assert "tensor name" in error_of(tmp_path, data)


def test_duplicate_tensor_names(tmp_path: Path) -> None:
    data = build_gguf(GOOD_KVS, [GOOD_TENSORS[2], GOOD_TENSORS[2]])
    assert "appears twice" in error_of(tmp_path, data)


def test_bad_alignment(tmp_path: Path) -> None:
    data = build_gguf([("general.alignment", U32, 24)], GOOD_TENSORS)
    assert "power of two" in error_of(tmp_path, data)


def test_header_larger_than_the_limit(tmp_path: Path) -> None:
    kvs = [("tokenizer.chat_template", STR, "x" * 5000)]
    assert "larger than 4,096 bytes" in error_of(tmp_path, build_gguf(kvs, GOOD_TENSORS), max_metadata_bytes=4096)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(GGUFError, match="does not exist"):
        read_gguf_header(tmp_path / "nope.gguf")
    with pytest.raises(GGUFError, match="folder"):
        read_gguf_header(tmp_path)


def test_error_message_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, b"not a model at all, just some text" * 3, "notes.gguf")
    with pytest.raises(GGUFError, match=r"^notes\.gguf: this is not a GGUF model file"):
        read_gguf_header(path)


def test_short_reads_from_a_range_reader_count_as_incomplete() -> None:
    data = build_gguf(GOOD_KVS, GOOD_TENSORS)

    def read(offset: int, size: int) -> bytes:
        return data[offset : min(offset + size, 40)]

    with pytest.raises(GGUFError, match="incomplete"):
        parse_gguf_header(read, len(data))

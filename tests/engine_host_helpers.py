"""Helpers for the engine host tests: this process's children (none may be left behind), a model that aborts."""

from __future__ import annotations

import os
from pathlib import Path


def child_pids() -> set[int]:
    """Process ids whose parent is this process (zombies included: a child that was never reaped is left behind
    too). Linux only (reads /proc); elsewhere an empty set, so the checks pass vacuously."""
    proc = Path("/proc")
    if not proc.is_dir():
        return set()
    me = os.getpid()
    found: set[int] = set()
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ")".
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1 and int(fields[1]) == me:
            found.add(int(entry.name))
    return found


def write_gguf_that_aborts_llama_cpp(source: Path, target: Path) -> None:
    """A copy of the model whose vocabulary lists one token twice: every count in the header is sound (our checks
    accept it), but llama.cpp's vocabulary loader ends in ``GGML_ASSERT(id_to_token.size() == token_to_id.size())``
    and aborts the process. A token's text is overwritten in place with an earlier token's text of the same length, so
    nothing else in the file moves."""
    import struct

    data = bytearray(source.read_bytes())
    name = b"tokenizer.ggml.tokens"
    at = data.find(struct.pack("<Q", len(name)) + name) + 8 + len(name)
    array_type, item_type, count = struct.unpack_from("<IIQ", data, at)
    assert (array_type, item_type) == (9, 8), "tokenizer.ggml.tokens is not an array of strings"
    position = at + 16
    first_of_length: dict[int, int] = {}
    for index in range(count):
        length = struct.unpack_from("<Q", data, position)[0]
        text_at = position + 8
        earlier = first_of_length.setdefault(length, text_at)
        if index > 1000 and earlier != text_at and data[earlier : earlier + length] != data[text_at : text_at + length]:
            data[text_at : text_at + length] = data[earlier : earlier + length]
            break
        position = text_at + length
    else:
        raise AssertionError("no two tokens of the same length")
    target.write_bytes(data)


def patch_header_u32(source: Path, target: Path, key: str, value: int) -> Path:
    """A copy of ``source`` with the 32-bit integer metadata value ``key`` overwritten in place (found by its
    length-prefixed name, so it is fast on a model with a 262k-token vocabulary, where gguf-py's reader is slow)."""
    import struct

    data = bytearray(source.read_bytes())
    name = key.encode()
    at = data.find(struct.pack("<Q", len(name)) + name)
    assert at >= 0, f"{key} is not in {source.name}"
    type_at = at + 8 + len(name)
    kind = struct.unpack_from("<I", data, type_at)[0]
    assert kind in (4, 5), f"{key} is not a 32-bit integer (GGUF type {kind})"  # UINT32, INT32
    struct.pack_into("<I" if kind == 4 else "<i", data, type_at + 4, value)
    target.write_bytes(data)
    return target

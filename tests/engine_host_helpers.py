"""Helpers for the engine host tests: this process's children (none may be left behind), a model that aborts."""

from __future__ import annotations

import os
import shutil
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


TOO_MANY_LAYERS = 600  # llama.cpp's LLAMA_MAX_LAYERS is 512


def write_gguf_that_aborts_llama_cpp(source: Path, target: Path) -> None:
    """A copy of the model whose header claims 600 layers: our header check and the load plan accept it (the layers'
    sizes add up to a model that fits), llama.cpp's loader hits ``GGML_ASSERT(n_layer_all <= LLAMA_MAX_LAYERS)`` and
    aborts the process. (A block count of 0 aborts it too, but the load plan now refuses that one first.)"""
    from gguf import GGUFReader

    shutil.copyfile(source, target)
    reader = GGUFReader(target, "r+")
    field = reader.fields["gemma3.block_count"]
    field.parts[field.data[0]][0] = TOO_MANY_LAYERS
    reader.data.flush()
    del reader

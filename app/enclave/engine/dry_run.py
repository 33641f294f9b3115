"""llama.cpp's own dry run: what a load would allocate on each device, asked before anything is allocated.

llama.cpp can load a model with ``no_alloc`` ("only load metadata and simulate memory allocations") and create a
context on it. ``llama_get_memory_breakdown(ctx)`` then tells, per buffer type, how many bytes the weights, the
context (KV cache) and the compute buffers would take: the same accounting the real allocation uses, which is how
newer llama.cpp versions fit their own parameters (``llama-fit-params``). The engine runs it before offloading to a
GPU, compares it with the planner's estimate, and trusts llama.cpp when they disagree (``LlamaCppBackend.load``).

Two details of the llama.cpp that llama-cpp-python 0.3.36 bundles:

- ``no_alloc`` on the memory-mapped load path trips ``GGML_ASSERT(!ml.no_alloc)`` (an abort), so the dry run loads
  with ``use_mmap=False``. Nothing is read beyond the metadata either way.
- ``llama_get_memory_breakdown`` is a C++ function: it returns a ``std::map<ggml_backend_buffer_type_t,
  llama_memory_breakdown_data>`` by value. It is called through ctypes with the Itanium C++ ABI (the caller passes
  the address of the result as a hidden first argument) and the map is read with libstdc++'s red-black tree layout:
  48 bytes of map (an empty comparator padded to 8, then the header node ``{color, parent, left, right}`` and the node
  count), nodes of that header shape followed by the key and three ``size_t`` (model, context, compute).
  :func:`_read_map` checks what it reads (the node count, every key a named buffer type, the tree's parent links) and
  raises :class:`DryRunError` instead of guessing; ``tests/test_dry_run.py`` compares the result with a real load's
  allocation, so a layout change fails there first. The map's nodes are not freed (a few hundred bytes per dry run):
  freeing them would need the C++ destructor.
"""

from __future__ import annotations

import ctypes
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from enclave.engine.llama_runtime import ModelParamsExtra, ggml_library, open_llama

log = logging.getLogger(__name__)

BREAKDOWN_SYMBOL = "_Z26llama_get_memory_breakdownPK13llama_context"  # llama_get_memory_breakdown(llama_context const*)
MAX_BUFFER_TYPES = 256  # far more than any machine has; a larger count means the map was misread


class DryRunError(RuntimeError):
    """llama.cpp's dry run is not available here, or its answer could not be read."""


@dataclass(frozen=True)
class DeviceBytes:
    model: int  # weights
    context: int  # KV cache (and other per-context state)
    compute: int  # compute buffers

    @property
    def total(self) -> int:
        return self.model + self.context + self.compute

    def __add__(self, other: DeviceBytes) -> DeviceBytes:
        return DeviceBytes(self.model + other.model, self.context + other.context, self.compute + other.compute)


@dataclass(frozen=True)
class DryRun:
    """What a load allocates, by llama.cpp device ("CPU" for every host buffer, "Vulkan0", "RPC0", ...)."""

    devices: Mapping[str, DeviceBytes]
    seconds: float

    def on(self, device: str) -> DeviceBytes:
        return self.devices.get(device, DeviceBytes(0, 0, 0))

    def describe(self) -> str:
        """``RPC0: 93 MiB weights + 12 MiB KV + 180 MiB compute · CPU: ...``."""
        mib = 1024 * 1024
        return " · ".join(
            f"{name}: {b.model / mib:,.0f} MiB weights + {b.context / mib:,.0f} MiB KV + {b.compute / mib:,.0f} MiB "
            "compute"
            for name, b in self.devices.items()
        )


class _Node(ctypes.Structure):
    """A libstdc++ ``_Rb_tree_node<pair<ggml_backend_buffer_type_t const, llama_memory_breakdown_data>>``."""

    _fields_ = [
        ("color", ctypes.c_int),
        ("parent", ctypes.c_void_p),
        ("left", ctypes.c_void_p),
        ("right", ctypes.c_void_p),
        ("key", ctypes.c_void_p),
        ("model", ctypes.c_size_t),
        ("context", ctypes.c_size_t),
        ("compute", ctypes.c_size_t),
    ]


class _Map(ctypes.Structure):
    """A libstdc++ ``std::map``: comparator (empty, padded), header node, node count."""

    _fields_ = [
        ("compare", ctypes.c_void_p),
        ("color", ctypes.c_int),
        ("root", ctypes.c_void_p),
        ("leftmost", ctypes.c_void_p),
        ("rightmost", ctypes.c_void_p),
        ("count", ctypes.c_size_t),
    ]


def _breakdown_function() -> Any:
    import llama_cpp.llama_cpp as low

    try:
        function = getattr(low._lib, BREAKDOWN_SYMBOL)
    except AttributeError as exc:
        raise DryRunError("this llama.cpp has no llama_get_memory_breakdown") from exc
    function.restype = None
    function.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    return function


def _read_map(result: _Map) -> list[tuple[int, DeviceBytes]]:
    """The (buffer type, bytes) entries of the map, in key order, checked as they are read."""
    header = ctypes.addressof(result) + _Map.color.offset
    count = int(result.count)
    if count > MAX_BUFFER_TYPES:
        raise DryRunError(f"the memory breakdown reads as {count} buffer types: its layout is not understood")
    if count == 0:
        return []
    if not result.root or _Node.from_address(result.root).parent != header:
        raise DryRunError("the memory breakdown's tree does not point back to its header: layout not understood")
    entries: list[tuple[int, DeviceBytes]] = []
    address = result.leftmost
    for _ in range(count):
        if not address or address == header:
            raise DryRunError("the memory breakdown ended early: its layout is not understood")
        node = _Node.from_address(address)
        if not node.key:
            raise DryRunError("a memory breakdown entry has no buffer type: its layout is not understood")
        entries.append((int(node.key), DeviceBytes(int(node.model), int(node.context), int(node.compute))))
        address = _successor(address, header)
    if address != header:
        raise DryRunError("the memory breakdown holds more entries than it counts: its layout is not understood")
    return entries


def _successor(address: int, header: int) -> int:
    node = _Node.from_address(address)
    if node.right:
        address = node.right
        while _Node.from_address(address).left:
            address = _Node.from_address(address).left
        return address
    parent = node.parent
    while parent != header and address == _Node.from_address(parent).right:
        address = parent
        parent = _Node.from_address(address).parent
    return int(parent)


def memory_breakdown(ctx: int) -> tuple[dict[str, DeviceBytes], dict[str, DeviceBytes]]:
    """Bytes per device and per buffer type of a llama.cpp context (a dry-run one or a real one)."""
    lib = ggml_library()
    lib.ggml_backend_buft_get_device.restype = ctypes.c_void_p
    lib.ggml_backend_buft_get_device.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_buft_is_host.restype = ctypes.c_bool
    lib.ggml_backend_buft_is_host.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_dev_name.restype = ctypes.c_char_p
    lib.ggml_backend_dev_name.argtypes = [ctypes.c_void_p]
    result = _Map()
    _breakdown_function()(ctypes.addressof(result), ctx)
    devices: dict[str, DeviceBytes] = {}
    buffer_types: dict[str, DeviceBytes] = {}
    for buft, used in _read_map(result):
        raw = lib.ggml_backend_buft_name(buft)
        name = raw.decode(errors="replace") if raw else ""
        if not name or not name.isprintable():
            raise DryRunError("a memory breakdown entry names no buffer type: its layout is not understood")
        buffer_types[name] = buffer_types.get(name, DeviceBytes(0, 0, 0)) + used
        device = lib.ggml_backend_buft_get_device(buft)
        if lib.ggml_backend_buft_is_host(buft) or not device:
            device_name = "CPU"  # system RAM: CPU buffers, mapped files, a GPU backend's pinned host buffers
        else:
            device_name = (lib.ggml_backend_dev_name(device) or b"?").decode(errors="replace")
        devices[device_name] = devices.get(device_name, DeviceBytes(0, 0, 0)) + used
    return devices, buffer_types


def dry_run(extra: ModelParamsExtra, **llama_kwargs: Any) -> DryRun:
    """Load ``Llama(**llama_kwargs)`` with ``extra`` as llama.cpp's dry run and report what it would allocate.

    ``extra`` and ``llama_kwargs`` are exactly what the real load will use (progress callbacks are left out).
    """
    started = time.monotonic()
    _breakdown_function()  # fail before loading anything when the symbol is missing
    simulated = ModelParamsExtra(
        devices=extra.devices,
        tensor_overrides=extra.tensor_overrides,
        use_extra_bufts=extra.use_extra_bufts,
        no_alloc=True,
    )
    llm = open_llama(simulated, **{**llama_kwargs, "use_mmap": False})
    try:
        devices, _ = memory_breakdown(int(llm._ctx.ctx))
    finally:
        llm.close()
    return DryRun(devices, time.monotonic() - started)


__all__ = ["DeviceBytes", "DryRun", "DryRunError", "dry_run", "memory_breakdown"]

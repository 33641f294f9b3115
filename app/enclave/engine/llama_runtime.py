"""llama.cpp's process-wide state, set once, and the one way this app constructs a ``llama_cpp.Llama``.

Three things live here because they are per process, not per model:

- **Log routing.** llama.cpp has one global log callback. Installing it from two threads at once (the chat engine
  and the documents embedder loading together) once crashed the app in ``llama_log_internal``; it is now installed
  under a lock, once, before any model is loaded.
- **The CPU's AMX tiles.** A default (native) build of llama.cpp on a CPU that reports AMX compiles ggml's AMX
  matrix kernels and, at load time, moves quantized weights into an "AMX" buffer whose kernels run on AMX tiles.
  Those kernels are known to segfault on some machines (virtual machines among them: llama.cpp issue 20824; upstream
  pull 26954 names two causes, tile-data permission requested on the main thread only, and a tile configuration the
  compiler may drop). Whether a crash will happen can't be told in advance, so when llama.cpp's CPU backend offers the
  AMX buffer type we load with ``use_extra_bufts = false``: weights stay in ordinary CPU buffers and run on the
  AVX-512/AVX2 kernels, which work everywhere. ``ENCLAVE_LLAMA_AMX=1`` opts back in (for a machine where AMX is known
  to work). Builds without AMX (portable builds, AMD CPUs) are untouched: the switch is only flipped when the AMX
  buffer type is really there.
- **The params bridge** (:func:`open_llama`): ``llama_model_params`` has fields llama-cpp-python's ``Llama()`` never
  sets (``devices``, ``tensor_buft_overrides``, ``progress_callback``, ``use_extra_bufts``, ``no_alloc``). ``Llama``
  builds its params with ``llama_cpp.llama_model_default_params()`` looked up at call time; for the duration of one
  construction (under a lock, so concurrent loads never see each other's values) that function is wrapped to set
  ours. :func:`check_bridge` fails loudly if llama-cpp-python's struct layout or ``Llama.__init__`` changes
  (``tests/test_llama_runtime.py`` runs it).
"""

from __future__ import annotations

import ctypes
import inspect
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from enclave.models.hardware import GPUInfo

log = logging.getLogger(__name__)
_llama_log = logging.getLogger("enclave.llama_cpp")

_init_lock = threading.Lock()
_load_lock = threading.RLock()
_initialised = False
_log_callback: Any = None  # keep a reference: llama.cpp calls it from C for the life of the process
_amx_offered: bool | None = None

AMX_OPT_IN = "ENCLAVE_LLAMA_AMX"
# Vulkan drivers that run on the CPU (Mesa's lavapipe reports itself as "llvmpipe (LLVM …)", Google's SwiftShader).
# ggml reports them as ordinary GPUs; they are far slower than the CPU backend, so Auto never picks them.
SOFTWARE_GPU = re.compile(r"llvmpipe|lavapipe|softpipe|swiftshader", re.IGNORECASE)

# The layout this module was written against (llama-cpp-python 0.3.36). A change means the bridge must be reviewed.
EXPECTED_MODEL_PARAMS_FIELDS = (
    "devices",
    "tensor_buft_overrides",
    "n_gpu_layers",
    "split_mode",
    "load_mode",
    "lazy_mode",
    "main_gpu",
    "tensor_split",
    "progress_callback",
    "progress_callback_user_data",
    "kv_overrides",
    "vocab_only",
    "check_tensors",
    "use_extra_bufts",
    "no_host",
    "no_alloc",
    "load_mtp",
)


class BridgeError(RuntimeError):
    """llama-cpp-python changed in a way the params bridge does not understand."""


def init_llama_runtime() -> None:
    """Import llama.cpp and set its process-wide state; safe to call from any thread, any number of times."""
    global _initialised, _log_callback
    with _init_lock:
        if _initialised:
            return
        import llama_cpp  # importing runs llama_backend_init() once

        levels = {1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}  # ggml_log_level

        @llama_cpp.llama_log_callback
        def callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
            message = text.decode("utf-8", errors="replace").rstrip()
            if message:
                # llama.cpp is chatty at INFO and WARNING about normal events; keep those out of the user's console.
                _llama_log.log(logging.DEBUG if levels.get(level, 0) < logging.ERROR else logging.ERROR, "%s", message)

        _log_callback = callback
        llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))
        _initialised = True


def ggml_library() -> Any:
    """The ggml library llama.cpp itself uses (the backend registry lives there)."""
    init_llama_runtime()
    from llama_cpp import _ggml

    lib = _ggml.libggml
    lib.ggml_backend_dev_by_type.restype = ctypes.c_void_p
    lib.ggml_backend_dev_by_type.argtypes = [ctypes.c_int]
    lib.ggml_backend_dev_backend_reg.restype = ctypes.c_void_p
    lib.ggml_backend_dev_backend_reg.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_reg_get_proc_address.restype = ctypes.c_void_p
    lib.ggml_backend_reg_get_proc_address.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.ggml_backend_buft_name.restype = ctypes.c_char_p
    lib.ggml_backend_buft_name.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_dev_buffer_type.restype = ctypes.c_void_p
    lib.ggml_backend_dev_buffer_type.argtypes = [ctypes.c_void_p]
    return lib


@dataclass(frozen=True)
class Device:
    """One of llama.cpp's backend devices."""

    name: str  # e.g. "CPU", "Vulkan0", "CUDA0", "RPC0"
    description: str
    kind: int  # ggml_backend_dev_type: 0 CPU, 1 GPU, 2 integrated GPU, 3 accelerator
    free_bytes: int
    total_bytes: int
    handle: int  # ggml_backend_dev_t

    @property
    def is_gpu(self) -> bool:
        return self.kind in (1, 2)

    @property
    def is_software(self) -> bool:
        """A GPU API implemented on the CPU (lavapipe): usable when asked for, never chosen by Auto."""
        return self.is_gpu and bool(SOFTWARE_GPU.search(self.description))

    def gpu_info(self) -> GPUInfo:
        from enclave.models.hardware import GPUInfo, backend_of, bandwidth_for

        backend = backend_of(self.name)
        unified = self.kind == 2 or backend == "metal"  # Apple's GPUs share the system RAM
        return GPUInfo(
            name=self.description or self.name,
            backend=backend,
            total_bytes=self.total_bytes,
            free_bytes=self.free_bytes,
            unified=unified,
            bandwidth_gbs=bandwidth_for(self.description, self.total_bytes, unified=unified),
            source="llama.cpp",
            device=self.name,
            software=self.is_software,
            max_tensor_bytes=largest_matmul_bytes(self.handle),
        )


class _GgmlInitParams(ctypes.Structure):
    _fields_ = [("mem_size", ctypes.c_size_t), ("mem_buffer", ctypes.c_void_p), ("no_alloc", ctypes.c_bool)]


MATMUL_PROBE_COLUMNS = 512  # llama.cpp checks a weight against a batch of 512 (weight_buft_supported, MUL_MAT)
MATMUL_PROBE_LIMIT = 1 << 40  # sizes above this count as "no limit"


def largest_matmul_bytes(dev: int) -> int | None:
    """The largest tensor (weight or result, bytes) device ``dev`` multiplies, as llama.cpp's loader will ask it.

    When a model loads, llama.cpp keeps a weight in host memory if the device says it cannot run that weight's
    matrix product (``weight_buft_supported``: the weight times a 512-column batch). Vulkan devices refuse tensors
    over their ``maxStorageBufferRange`` — 128 MiB on lavapipe, so Gemma's 170 MiB tied output stays on the CPU
    there. The planner needs the same answer before the load; this asks the device itself with F32 tensors of
    growing size (no memory is allocated: a ``no_alloc`` ggml context). None: no limit below 1 TiB.
    """
    lib = ggml_library()
    lib.ggml_init.restype = ctypes.c_void_p
    lib.ggml_init.argtypes = [_GgmlInitParams]
    lib.ggml_free.restype = None
    lib.ggml_free.argtypes = [ctypes.c_void_p]
    lib.ggml_tensor_overhead.restype = ctypes.c_size_t
    lib.ggml_tensor_overhead.argtypes = []
    lib.ggml_new_tensor_2d.restype = ctypes.c_void_p
    lib.ggml_new_tensor_2d.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    lib.ggml_mul_mat.restype = ctypes.c_void_p
    lib.ggml_mul_mat.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    lib.ggml_backend_dev_supports_op.restype = ctypes.c_bool
    lib.ggml_backend_dev_supports_op.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    f32, width = 0, MATMUL_PROBE_COLUMNS  # GGML_TYPE_F32; weight [width, rows] x batch [width, width] = [rows, width]
    row_bytes = width * 4

    def supported(rows: int) -> bool:
        ctx = lib.ggml_init(_GgmlInitParams(lib.ggml_tensor_overhead() * 8, None, True))
        if not ctx:
            raise MemoryError("ggml_init failed")
        try:
            weight = lib.ggml_new_tensor_2d(ctx, f32, width, rows)
            batch = lib.ggml_new_tensor_2d(ctx, f32, width, width)
            return bool(lib.ggml_backend_dev_supports_op(ctypes.c_void_p(dev), lib.ggml_mul_mat(ctx, weight, batch)))
        finally:
            lib.ggml_free(ctx)

    high = MATMUL_PROBE_LIMIT // row_bytes
    if supported(high):
        return None
    low = 1
    if not supported(low):
        return 0
    while high - low > 1:  # supported(low) and not supported(high)
        middle = (low + high) // 2
        if supported(middle):
            low = middle
        else:
            high = middle
    return low * row_bytes


def devices() -> list[Device]:
    """llama.cpp's devices in registry order (RPC devices appear once registered)."""
    lib = ggml_library()
    lib.ggml_backend_dev_count.restype = ctypes.c_size_t
    lib.ggml_backend_dev_count.argtypes = []
    lib.ggml_backend_dev_get.restype = ctypes.c_void_p
    lib.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
    for fn in ("ggml_backend_dev_name", "ggml_backend_dev_description"):
        getattr(lib, fn).restype = ctypes.c_char_p
        getattr(lib, fn).argtypes = [ctypes.c_void_p]
    lib.ggml_backend_dev_type.restype = ctypes.c_int
    lib.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_dev_memory.restype = None
    size_p = ctypes.POINTER(ctypes.c_size_t)
    lib.ggml_backend_dev_memory.argtypes = [ctypes.c_void_p, size_p, size_p]
    found = []
    for index in range(lib.ggml_backend_dev_count()):
        dev = lib.ggml_backend_dev_get(index)
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        lib.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        found.append(
            Device(
                name=(lib.ggml_backend_dev_name(dev) or b"").decode(errors="replace"),
                description=(lib.ggml_backend_dev_description(dev) or b"").decode(errors="replace"),
                kind=int(lib.ggml_backend_dev_type(dev)),
                free_bytes=int(free.value),
                total_bytes=int(total.value),
                handle=int(dev),
            )
        )
    return found


def _rpc_library() -> Any:
    init_llama_runtime()
    import llama_cpp
    from llama_cpp import _ctypes_extensions

    lib = _ctypes_extensions.load_shared_library("ggml-rpc", Path(llama_cpp.__file__).parent / "lib")
    lib.ggml_backend_rpc_add_server.restype = ctypes.c_void_p
    lib.ggml_backend_rpc_add_server.argtypes = [ctypes.c_char_p]
    lib.ggml_backend_rpc_start_server.restype = None
    lib.ggml_backend_rpc_start_server.argtypes = [
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_size_t,
        ctypes.POINTER(ctypes.c_void_p),
    ]
    return lib


def add_rpc_server(endpoint: str) -> list[Device]:
    """Register llama.cpp's RPC server at ``endpoint`` (host:port) in this process; return its devices.

    The RPC backend has no authentication: use it over loopback (or a tunnel) only. Needs a build with
    ``-DGGML_RPC=on``. llama.cpp does not pick devices registered after start-up by itself: pass their names in
    ``LoadRequest.devices``.
    """
    try:
        rpc = _rpc_library()
    except (OSError, RuntimeError, FileNotFoundError) as exc:
        raise RuntimeError("this llama.cpp build has no RPC backend (build it with -DGGML_RPC=on)") from exc
    before = {d.handle for d in devices()}
    reg = rpc.ggml_backend_rpc_add_server(endpoint.encode())
    if not reg:
        raise RuntimeError(f"could not reach llama.cpp's RPC server at {endpoint}")
    lib = ggml_library()
    lib.ggml_backend_register.restype = None
    lib.ggml_backend_register.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_register(reg)
    return [d for d in devices() if d.handle not in before]


def serve_rpc(endpoint: str, threads: int = 1) -> None:
    """Run llama.cpp's RPC server on ``endpoint`` backed by this process's CPU device (blocks forever)."""
    rpc = _rpc_library()
    cpu = ggml_library().ggml_backend_dev_by_type(0)
    devs = (ctypes.c_void_p * 1)(cpu)
    rpc.ggml_backend_rpc_start_server(endpoint.encode(), None, threads, 1, devs)


def resolve_devices(names: Sequence[str]) -> list[Device]:
    """The named devices (all GPU devices when ``names`` is empty); a name llama.cpp doesn't know is an error."""
    known = devices()
    if not names:
        return [d for d in known if d.is_gpu]
    by_name = {d.name: d for d in known}
    missing = [n for n in names if n not in by_name]
    if missing:
        from enclave.engine.types import ModelLoadError

        available = ", ".join(d.name for d in known) or "none"
        raise ModelLoadError(f"llama.cpp has no device named {', '.join(missing)} (it has: {available}).")
    return [by_name[n] for n in names]


def tensor_override(override: str) -> tuple[str, int]:
    """``"PATTERN=CPU"`` (llama.cpp's -ot syntax) → (pattern, buffer type of that device)."""
    pattern, _, device = override.rpartition("=")
    lib = ggml_library()
    match = [d for d in devices() if d.name.upper() == device.upper()]
    if not pattern or not match:
        raise ValueError(f"not a usable tensor override: {override!r}")
    return pattern, int(lib.ggml_backend_dev_buffer_type(match[0].handle))


def gpu_devices_present() -> bool:
    """Whether llama.cpp has a GPU (or integrated GPU) device registered in this process."""
    return any(d.is_gpu for d in devices())


def cpu_extra_buffer_types() -> list[str]:
    """Names of the extra CPU buffer types llama.cpp would use for weights here (e.g. ``CPU_REPACK``, ``AMX``)."""
    lib = ggml_library()
    cpu = lib.ggml_backend_dev_by_type(0)  # GGML_BACKEND_DEVICE_TYPE_CPU
    if not cpu:
        return []
    reg = lib.ggml_backend_dev_backend_reg(cpu)
    address = lib.ggml_backend_reg_get_proc_address(reg, b"ggml_backend_dev_get_extra_bufts")
    if not address:
        return []
    get_extra = ctypes.CFUNCTYPE(ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p)(address)
    array = get_extra(cpu)
    names: list[str] = []
    index = 0
    while array and array[index]:
        names.append((lib.ggml_backend_buft_name(array[index]) or b"").decode(errors="replace"))
        index += 1
    return names


def amx_offered() -> bool:
    """True when this llama.cpp build would move weights into AMX buffers on this CPU."""
    global _amx_offered
    if _amx_offered is None:
        _amx_offered = any(name.upper().startswith("AMX") for name in cpu_extra_buffer_types())
    return _amx_offered


def use_extra_buffers() -> bool:
    """Whether loads may use llama.cpp's extra (repacked) CPU weight buffers: not when they would be AMX's."""
    if os.environ.get(AMX_OPT_IN) == "1":
        return True
    if amx_offered():
        log.info("the CPU offers AMX: loading without extra buffer types (set %s=1 to use AMX)", AMX_OPT_IN)
        return False
    return True


class _BuftOverride(ctypes.Structure):
    """``struct llama_model_tensor_buft_override {const char * pattern; ggml_backend_buffer_type_t buft;}``."""

    _fields_ = [("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p)]


@dataclass
class ModelParamsExtra:
    """The ``llama_model_params`` fields ``Llama()`` leaves at their defaults. None: leave the default."""

    devices: Sequence[int] | None = None  # ggml_backend_dev_t pointers; the list is NULL-terminated here
    tensor_overrides: Sequence[tuple[str, int]] = ()  # (regex on tensor names, ggml_backend_buffer_type_t)
    progress: Callable[[float], bool] | None = None  # return False to cancel the load
    use_extra_bufts: bool | None = None
    no_alloc: bool | None = None
    _keep: list[Any] = field(default_factory=list, repr=False)  # ctypes objects that must outlive the load

    def apply(self, params: Any) -> None:
        import llama_cpp

        if self.devices is not None:
            devices = (ctypes.c_void_p * (len(self.devices) + 1))(*self.devices, None)
            self._keep.append(devices)
            params.devices = ctypes.cast(devices, ctypes.c_void_p)
        if self.tensor_overrides:
            overrides = (_BuftOverride * (len(self.tensor_overrides) + 1))()  # zeroed: the last entry ends the list
            for i, (pattern, buft) in enumerate(self.tensor_overrides):
                overrides[i].pattern = pattern.encode()
                overrides[i].buft = buft
            self._keep.append(overrides)
            params.tensor_buft_overrides = ctypes.cast(overrides, ctypes.c_void_p)
        if self.progress is not None:
            report = self.progress

            @llama_cpp.llama_progress_callback
            def on_progress(fraction: float, _data: ctypes.c_void_p) -> bool:
                try:
                    return bool(report(float(fraction)))
                except Exception:  # an exception must not cross into C; stop the load instead
                    log.exception("load progress callback failed")
                    return False

            self._keep.append(on_progress)
            params.progress_callback = on_progress
        if self.use_extra_bufts is not None:
            params.use_extra_bufts = self.use_extra_bufts
        if self.no_alloc is not None:
            params.no_alloc = self.no_alloc


def check_bridge() -> None:
    """Raise BridgeError if llama-cpp-python no longer matches what :func:`open_llama` relies on."""
    import llama_cpp
    import llama_cpp.llama as llama_module

    names = tuple(entry[0] for entry in llama_cpp.llama_model_params._fields_)
    if names != EXPECTED_MODEL_PARAMS_FIELDS:
        raise BridgeError(f"llama_model_params changed: {names}")
    if "llama_cpp.llama_model_default_params()" not in inspect.getsource(llama_module.Llama.__init__):
        raise BridgeError("Llama.__init__ no longer builds its params with llama_cpp.llama_model_default_params()")
    if llama_module.llama_cpp is not llama_cpp.llama_cpp:
        raise BridgeError("llama_cpp.llama no longer calls the llama_cpp.llama_cpp module")


@contextmanager
def _bridged(extra: ModelParamsExtra) -> Iterator[list[int]]:
    import llama_cpp.llama_cpp as low

    original = low.llama_model_default_params
    calls: list[int] = []

    def patched() -> Any:
        params = original()
        extra.apply(params)
        calls.append(1)
        return params

    low.llama_model_default_params = patched
    try:
        yield calls
    finally:
        low.llama_model_default_params = original


def open_llama(extra: ModelParamsExtra | None = None, **kwargs: Any) -> Any:
    """Construct ``llama_cpp.Llama(**kwargs)`` with the process set up and ``extra`` applied to its model params.

    Every model this app loads (chat and embeddings) comes through here, so the AMX rule and the log routing hold
    for all of them.
    """
    init_llama_runtime()
    check_bridge()
    extra = extra or ModelParamsExtra()
    if extra.use_extra_bufts is None and not use_extra_buffers():
        extra.use_extra_bufts = False
    from llama_cpp import Llama

    with _load_lock, _bridged(extra) as calls:
        llm: Any = Llama(**kwargs)
    if not calls:
        llm.close()
        raise BridgeError("Llama() did not ask for default model params: the params bridge had no effect")
    llm._enclave_params_keep = extra._keep  # the C side may keep pointers into these for the model's life
    return llm

"""llama.cpp's process-wide set-up and the params bridge, against the installed llama-cpp-python and the real Gemma."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

from enclave.engine import llama_runtime
from enclave.engine.llama_runtime import ModelParamsExtra, check_bridge, open_llama


def test_the_bridge_matches_the_installed_llama_cpp_python() -> None:
    # Fails loudly when llama-cpp-python's struct layout or Llama.__init__ changes: review the bridge then.
    check_bridge()


def test_extra_buffer_types_are_read_from_llama_cpp() -> None:
    names = llama_runtime.cpu_extra_buffer_types()
    assert all(isinstance(n, str) and n for n in names)
    import llama_cpp

    system = llama_cpp.llama_print_system_info().decode()
    # The AMX buffer type is offered exactly when the build has AMX kernels and the CPU lets the process use tiles.
    amx_in_build = "AMX_INT8 = 1" in system
    cpu_flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if not amx_in_build or "amx_tile" not in cpu_flags:
        assert llama_runtime.amx_offered() is False
        assert llama_runtime.use_extra_buffers() is True  # nothing to avoid: repacking stays on
    else:
        assert llama_runtime.amx_offered() is True
        assert llama_runtime.use_extra_buffers() is False


def test_amx_turns_extra_buffers_off_unless_opted_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(llama_runtime, "_amx_offered", True)
    assert llama_runtime.use_extra_buffers() is False
    monkeypatch.setenv(llama_runtime.AMX_OPT_IN, "1")
    assert llama_runtime.use_extra_buffers() is True


def _load_log(gemma_path: Path, extra: ModelParamsExtra | None, caplog: pytest.LogCaptureFixture) -> str:
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="enclave.llama_cpp"):
        llm = open_llama(extra, model_path=str(gemma_path), n_ctx=256, n_threads=2, verbose=False)
        try:
            assert llm.n_ctx() == 256
        finally:
            llm.close()
    return "\n".join(r.getMessage() for r in caplog.records if r.name == "enclave.llama_cpp")


def test_bridge_fields_reach_llama_cpp(gemma_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cpu = llama_runtime.ggml_library().ggml_backend_dev_by_type(0)
    cpu_buft = llama_runtime.ggml_library().ggml_backend_dev_buffer_type(cpu)
    fractions: list[float] = []

    def progress(fraction: float) -> bool:
        fractions.append(fraction)
        return True

    extra = ModelParamsExtra(tensor_overrides=[(r"ffn_(up|down|gate)", cpu_buft)], progress=progress)
    log = _load_log(gemma_path, extra, caplog)
    # llama.cpp itself says the override applied, for every layer's feed-forward tensors.
    overridden = set(re.findall(r"tensor (blk\.\d+\.ffn_\w+\.weight) \(.*?\) buffer type overridden to CPU", log))
    assert len(overridden) >= 3 * 18, log[-2000:]
    assert fractions and fractions[-1] == pytest.approx(1.0)
    assert fractions == sorted(fractions)


def test_a_progress_callback_returning_false_cancels_the_load(gemma_path: Path) -> None:
    calls: list[float] = []

    def stop(fraction: float) -> bool:
        calls.append(fraction)
        return False

    with pytest.raises(ValueError):  # llama-cpp-python: "Failed to load model from file"
        open_llama(ModelParamsExtra(progress=stop), model_path=str(gemma_path), n_ctx=256, verbose=False)
    assert len(calls) == 1


def test_extra_buffers_off_keeps_weights_out_of_repacked_buffers(
    gemma_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    on = _load_log(gemma_path, ModelParamsExtra(use_extra_bufts=True), caplog)
    off = _load_log(gemma_path, ModelParamsExtra(use_extra_bufts=False), caplog)
    repacked = re.compile(r"(CPU_REPACK|AMX) model buffer size")
    assert not repacked.search(off)
    names = llama_runtime.cpu_extra_buffer_types()
    if names:  # this build repacks Q4_K weights for its CPU: the switch really changes the load
        assert repacked.search(on), on[-2000:]


def test_log_routing_is_installed_once_across_threads() -> None:
    code = (
        "import threading\n"
        "from enclave.engine import llama_runtime as r\n"
        "ts = [threading.Thread(target=r.init_llama_runtime) for _ in range(8)]\n"
        "[t.start() for t in ts]; [t.join() for t in ts]\n"
        "cb = r._log_callback\n"
        "r.init_llama_runtime()\n"
        "assert cb is r._log_callback is not None\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "ok", out.stderr

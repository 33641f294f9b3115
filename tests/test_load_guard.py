"""The start-up crash-loop guard: a model that crashed the engine while loading is not reopened by itself."""

from __future__ import annotations

from pathlib import Path

from enclave.usecases.loading import LoadGuard


def test_a_clean_success_or_failure_leaves_nothing(tmp_path: Path) -> None:
    guard = LoadGuard(tmp_path / "last-load.json")
    guard.begin("/models/a.gguf")
    guard.succeeded()
    assert guard.blocked("/models/a.gguf") is None and not guard.marker.exists()
    guard.begin("/models/a.gguf")
    guard.failed(crashed=False, message="Model file not found")
    assert guard.blocked("/models/a.gguf") is None and not guard.marker.exists()


def test_a_crash_while_loading_blocks_only_that_model_until_it_loads(tmp_path: Path) -> None:
    guard = LoadGuard(tmp_path / "last-load.json")
    guard.begin("/models/a.gguf")
    guard.failed(crashed=True, message="The model stopped unexpectedly (llama.cpp: SIGSEGV).")
    again = LoadGuard(tmp_path / "last-load.json")  # the next start
    reason = again.blocked("/models/a.gguf")
    assert reason is not None
    assert reason.startswith("a.gguf was not opened automatically: last time it stopped the engine while loading.")
    assert "SIGSEGV" in reason and reason.endswith("Open it again to retry, or choose another model.")
    assert again.blocked("/models/b.gguf") is None
    again.begin("/models/a.gguf")  # opened by hand
    again.succeeded()
    assert again.blocked("/models/a.gguf") is None


def test_an_app_that_died_mid_load_blocks_it_too(tmp_path: Path) -> None:
    guard = LoadGuard(tmp_path / "last-load.json")
    guard.begin("/models/a.gguf")  # and then nothing: the whole app went down
    reason = LoadGuard(tmp_path / "last-load.json").blocked("/models/a.gguf")
    assert reason is not None and "closed unexpectedly while it was loading" in reason


def test_a_damaged_marker_blocks_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "last-load.json"
    marker.write_text("{not json")
    assert LoadGuard(marker).blocked("/models/a.gguf") is None

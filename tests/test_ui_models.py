"""Settings → Models: the recommendation, a real download from the fake Hub with progress, import, use."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from enclave.models import downloader
from enclave.models.hardware import Hardware
from enclave.models.installed import ModelRegistry
from enclave.ui.models_dialog import ModelsDialog
from enclave.workers.download_worker import DownloadController
from fake_hub import FakeHub, write_tiny_gguf

GPU_8GB = Hardware.from_numbers(vram_gib=8, ram_gib=32, bandwidth_gbs=450)


@pytest.fixture
def setup(tmp_path: Path, qtbot: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ModelsDialog, FakeHub]]:
    hub = FakeHub().start()
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(downloader, "PROGRESS_INTERVAL_S", 0.0)
    registry = ModelRegistry(tmp_path / "models.json")
    controller = DownloadController(registry.path, tmp_path / "models")
    dialog = ModelsDialog(registry, controller, tmp_path / "models", hardware=GPU_8GB)
    qtbot.addWidget(dialog)
    yield dialog, hub
    controller.shutdown()
    hub.stop()


def test_recommends_downloads_and_uses_a_model(setup: tuple[ModelsDialog, FakeHub], tmp_path: Path, qtbot: Any) -> None:
    dialog, hub = setup
    rec = dialog.recommendation
    assert rec is not None and "Qwen3 8B" in rec.entry.display_name and rec.entry.quant.startswith("Q4")
    assert rec.entry.display_name in dialog.recommend_label.text()
    assert dialog.recommend_button.isEnabled() and dialog.recommend_button.text().startswith("Download")
    [served] = write_tiny_gguf(tmp_path / "served.gguf", 3_000_000)
    hub.add(rec.entry.repo_id, rec.entry.files[0].path, served)  # a small stand-in under the real repo name
    progress: list[int] = []
    dialog.progress.valueChanged.connect(progress.append)
    with qtbot.waitSignal(dialog.downloads.finished, timeout=20_000):
        dialog.recommend_button.click()
        assert dialog.progress.isVisible() or dialog.downloads.busy
    assert progress and progress[-1] == 1000
    assert dialog.table.rowCount() == 1
    assert dialog.table.item(0, 3).text() == "verified download"
    assert "runs on the GPU" in dialog.table.item(0, 4).text()
    assert dialog.recommend_button.text() == "Installed"
    dialog.table.selectRow(0)
    with qtbot.waitSignal(dialog.useModel) as used:
        dialog.use_button.click()
    assert Path(used.args[0]).read_bytes() == served.read_bytes()


def test_import_and_bad_file_messages(setup: tuple[ModelsDialog, FakeHub], gemma_path: Path, tmp_path: Path) -> None:
    dialog, _hub = setup
    bad = tmp_path / "bad.gguf"
    bad.write_text("hello")
    assert dialog.import_path(bad) is None
    assert "too small" in dialog.message.text() or "not a GGUF" in dialog.message.text()
    model = dialog.import_path(gemma_path)
    assert model is not None and dialog.table.rowCount() == 1
    assert dialog.table.item(0, 3).text() == "imported (unverified)"


def test_failed_download_is_explained(setup: tuple[ModelsDialog, FakeHub], qtbot: Any) -> None:
    dialog, hub = setup
    hub.faults.status = 401
    rec = dialog.recommendation
    assert rec is not None
    hub.add(rec.entry.repo_id, rec.entry.files[0].path, Path(__file__))
    with qtbot.waitSignal(dialog.downloads.failed, timeout=20_000):
        dialog.recommend_button.click()
    assert "token" in dialog.message.text()
    assert dialog.table.rowCount() == 0

"""Settings → Models: the recommendation, a real download from the fake Hub with progress, import, use."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt

from enclave.models import downloader
from enclave.models.hardware import Hardware
from enclave.models.installed import InstalledModel, ModelRegistry, import_model
from enclave.ui.models_dialog import CHECKING, CHECKING_COMPUTER, OFFLINE_TEXT, ModelsDialog
from enclave.workers.download_worker import DownloadController
from fake_hub import FakeHub, write_tiny_gguf

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import minilm_gguf

GPU_8GB = Hardware.from_numbers(vram_gib=8, ram_gib=32, bandwidth_gbs=450)


@pytest.fixture(scope="module")
def minilm_path() -> Path:
    return minilm_gguf.cached_model_path()


def imported(dialog: ModelsDialog, qtbot: Any, path: Path) -> InstalledModel | None:
    """Import ``path`` with the dialog (on its worker thread) and wait until its rows show their fit again."""
    with qtbot.waitSignal(dialog.importFinished, timeout=20_000) as done:
        dialog.import_path(path)
    model: InstalledModel | None = done.args[0]
    if model is not None:
        qtbot.waitUntil(lambda: not dialog.checking, timeout=20_000)
    return model


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
    qtbot.waitUntil(lambda: dialog.table.rowCount() == 1 and not dialog.checking, timeout=20_000)
    assert dialog.table.rowCount() == 1
    assert dialog.table.item(0, 3).text() == "verified download"
    assert "runs on the GPU" in dialog.table.item(0, 4).text()
    assert dialog.recommend_button.text() == "Installed"
    dialog.table.selectRow(0)
    with qtbot.waitSignal(dialog.useModel) as used:
        dialog.use_button.click()
    assert Path(used.args[0]).read_bytes() == served.read_bytes()


def test_import_and_bad_file_messages(
    setup: tuple[ModelsDialog, FakeHub], gemma_path: Path, tmp_path: Path, qtbot: Any
) -> None:
    dialog, _hub = setup
    bad = tmp_path / "bad.gguf"
    bad.write_text("hello")
    assert imported(dialog, qtbot, bad) is None
    assert "too small" in dialog.message.text() or "not a GGUF" in dialog.message.text()
    model = imported(dialog, qtbot, gemma_path)
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


def test_without_a_network_the_download_says_so_and_offers_retry(
    setup: tuple[ModelsDialog, FakeHub], qtbot: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    dialog, _hub = setup
    monkeypatch.setenv("HF_ENDPOINT", "http://hub.enclave-offline.invalid")  # a name no resolver knows
    with qtbot.waitSignal(dialog.downloads.failed, timeout=30_000):
        dialog.recommend_button.click()
    assert dialog.message.text() == OFFLINE_TEXT
    assert dialog.retry_button.isVisibleTo(dialog)
    with qtbot.waitSignal(dialog.downloads.failed, timeout=30_000):
        dialog.retry_button.click()  # tries the same model again
    assert dialog.message.text() == OFFLINE_TEXT


def test_installed_models_show_their_size_placement_and_need_a_selection(
    setup: tuple[ModelsDialog, FakeHub], gemma_path: Path, minilm_path: Path, qtbot: Any
) -> None:
    dialog, _hub = setup
    assert imported(dialog, qtbot, gemma_path) is not None
    assert imported(dialog, qtbot, minilm_path) is not None
    sizes = {dialog.table.item(r, 0).text(): dialog.table.item(r, 2).text() for r in range(dialog.table.rowCount())}
    assert all(size != "0.0 GB" for size in sizes.values())
    assert any(size.endswith(" MB") for size in sizes.values())  # the small embedding model reads in MB
    ids = [str(dialog.table.item(r, 0).data(Qt.ItemDataRole.UserRole)) for r in range(2)]
    gemma_row = next(r for r in range(2) if dialog.registry.get(ids[r]).role == "chat")
    assert dialog.table.item(gemma_row, 5).text().startswith("Auto (planned: ")  # the load plan's own choice
    assert "-token context" in dialog.table.item(gemma_row, 5).text()
    dialog.table.clearSelection()
    assert not dialog.use_button.isEnabled() and not dialog.remove_button.isEnabled()
    dialog.table.selectRow(gemma_row)
    assert dialog.use_button.isEnabled() and dialog.use_button.text() == "Use for chat"


def test_the_dialog_lists_models_at_once_and_checks_them_in_the_background(
    gemma_path: Path, tmp_path: Path, qtbot: Any
) -> None:
    registry = ModelRegistry(tmp_path / "models.json")
    import_model(registry, gemma_path)
    controller = DownloadController(registry.path, tmp_path / "models")
    try:
        dialog = ModelsDialog(registry, controller, tmp_path / "models")  # no hardware given: probed off this thread
        qtbot.addWidget(dialog)
        # Listed before any header was read or the computer probed: the slow parts say they are being checked.
        assert dialog.table.rowCount() == 1 and dialog.table.item(0, 0).text() == registry.models()[0].name
        assert dialog.table.item(0, 4).text() == CHECKING and dialog.table.item(0, 5).text() == CHECKING
        assert dialog.recommend_label.text() == CHECKING_COMPUTER and not dialog.recommend_button.isVisibleTo(dialog)
        assert dialog.checking
        with qtbot.waitSignal(dialog.rowsChecked, timeout=20_000):
            pass
        assert not dialog.checking and dialog.hardware is not None
        assert dialog.table.item(0, 4).text() not in ("", CHECKING)
        assert dialog.table.item(0, 5).text().startswith("Auto (")
        assert dialog.recommend_label.text() != CHECKING_COMPUTER and dialog.catalog_box.count() > 0
        dialog.close()  # its own task runner stops with it
    finally:
        controller.shutdown()

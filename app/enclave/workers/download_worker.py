"""Model downloads on their own thread, so a multi-gigabyte download never blocks the window.

Same pattern as the engine thread: requests go in as queued signals, progress comes back as (throttled) signals,
pause and cancel are thread-safe events set directly from the GUI thread.
"""

from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import QObject, Signal, Slot

from enclave.models.catalog import CatalogEntry
from enclave.models.downloader import DownloadCancelled, DownloadControl, DownloadError, DownloadPaused
from enclave.models.hub_client import HubError
from enclave.models.installed import ModelRegistry, download_entry
from enclave.workers.threads import WorkerThread

log = logging.getLogger(__name__)


class DownloadWorker(QObject):
    progress = Signal(object)  # DownloadProgress
    finished = Signal(object)  # InstalledModel
    paused = Signal(str)
    cancelled = Signal()
    failed = Signal(str)

    def __init__(self, registry_path: Path, models_dir: Path) -> None:
        super().__init__()
        self._registry_path = registry_path
        self._models_dir = models_dir

    @Slot(object, object)
    def download(self, entry: CatalogEntry, control: DownloadControl) -> None:
        from enclave.models.hf_token import get_token

        try:
            model = download_entry(
                ModelRegistry(self._registry_path),
                entry,
                self._models_dir,
                token=get_token(),
                control=control,
                on_progress=self.progress.emit,
            )
        except DownloadPaused as exc:
            self.paused.emit(str(exc))
        except DownloadCancelled:
            self.cancelled.emit()
        except (DownloadError, HubError) as exc:
            self.failed.emit(str(exc))
        except Exception as exc:  # keep the thread alive and tell the user
            log.exception("download failed")
            self.failed.emit(f"Unexpected error while downloading: {exc}")
        else:
            self.finished.emit(model)


class DownloadController(QObject):
    """GUI-thread facade; one download at a time. Call ``shutdown()`` before the window closes."""

    progress = Signal(object)
    finished = Signal(object)
    paused = Signal(str)
    cancelled = Signal()
    failed = Signal(str)
    _requested = Signal(object, object)

    def __init__(self, registry_path: Path, models_dir: Path, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._worker = DownloadWorker(registry_path, models_dir)
        self._thread = WorkerThread(self._worker, "enclave-downloads")
        self._requested.connect(self._worker.download)
        self._worker.progress.connect(self.progress)
        self._worker.finished.connect(self._done)
        self._worker.finished.connect(self.finished)
        self._worker.paused.connect(self._done)
        self._worker.paused.connect(self.paused)
        self._worker.cancelled.connect(self._done)
        self._worker.cancelled.connect(self.cancelled)
        self._worker.failed.connect(self._done)
        self._worker.failed.connect(self.failed)
        self._control: DownloadControl | None = None
        self.entry: CatalogEntry | None = None

    @property
    def busy(self) -> bool:
        return self._control is not None

    def start(self, entry: CatalogEntry) -> bool:
        if self._control is not None:
            return False
        self._thread.start()  # once: nothing if it runs already
        self._control = DownloadControl()
        self.entry = entry
        self._requested.emit(entry, self._control)
        return True

    def pause(self) -> None:
        if self._control is not None:
            self._control.pause.set()

    def cancel(self) -> None:
        if self._control is not None:
            self._control.cancel.set()

    @Slot()
    def _done(self, *_args: object) -> None:
        self._control = None

    def shutdown(self) -> None:
        self._thread.stop(30_000, before_quit=self.pause)  # pause: keep what was downloaded, it resumes next time

    @property
    def thread_running(self) -> bool:
        return self._thread.running

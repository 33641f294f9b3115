"""Probe the hardware and pick a recommended model off the GUI thread (the probe loads llama.cpp's library)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from PySide6.QtCore import QObject, Signal

log = logging.getLogger(__name__)


class RecommendationFetcher(QObject):
    """``start()`` once; ``ready(Recommendation | None)`` arrives on the GUI thread (queued signal)."""

    ready = Signal(object)

    def __init__(self, models_dir: Path, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._models_dir = models_dir
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="enclave-recommend", daemon=True)
            self._thread.start()

    def wait(self, timeout: float = 10.0) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        from enclave.models.hardware_child import probe_hardware_in_child
        from enclave.models.placement import for_planning
        from enclave.models.recommend import recommend

        try:
            result = recommend(for_planning(probe_hardware_in_child(self._models_dir)))
        except Exception:  # a recommendation is a nicety: never let it break the first screen
            log.exception("could not compute a recommendation")
            result = None
        self.ready.emit(result)

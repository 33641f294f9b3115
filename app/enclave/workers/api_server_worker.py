"""The local API server inside the app: its requests go through the GUI's engine thread, never a second model copy.

``EngineBridge`` is the server's ``ChatEngine`` (enclave.server.app): called on the server's queue thread, it hands
each request to the GUI thread with a queued signal, which submits it to the ``EngineController``, and streams the
controller's signals for that request id back. The controller's worker runs requests one after another, so an API
request and a chat answer take turns on the one model; the API's ``GenerationControl`` travels with the request, so a
client that disconnects cancels it even while it waits behind a chat answer.

``ApiServerController`` starts and stops the server from the settings and reports what the queue does (for the
status bar) as Qt signals.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator

from PySide6.QtCore import QObject, Signal, Slot

from enclave.engine.backend import EngineCrashedError
from enclave.engine.types import (
    EngineError,
    Finished,
    GenerationControl,
    GenerationRequest,
    ModelInfo,
    StreamEvent,
    TextDelta,
)
from enclave.settings.settings import Settings
from enclave.workers.engine_worker import EngineController

log = logging.getLogger(__name__)

# A cancelled request whose engine never answers (the engine thread was shut down under it) gives up after this.
ABANDON_AFTER_CANCEL_S = 30.0


class EngineBridge(QObject):
    """Create on the GUI thread. ``stream_chat`` is called from the API server's queue thread only."""

    _submit = Signal(object, object)

    def __init__(self, controller: EngineController) -> None:
        super().__init__()
        self._controller = controller
        self._streams: dict[str, queue.SimpleQueue[object]] = {}
        self._lock = threading.Lock()
        self._submit.connect(self._on_submit)  # emitted from the queue thread: queued to this (GUI) thread
        controller.textReady.connect(self._on_text)
        controller.generationFinished.connect(self._on_finished)
        controller.generationFailed.connect(self._on_failed)
        controller.generationInterrupted.connect(self._on_interrupted)

    @property
    def model(self) -> ModelInfo | None:
        return self._controller.model

    def stream_chat(self, request: GenerationRequest, control: GenerationControl) -> Iterator[StreamEvent]:
        events: queue.SimpleQueue[object] = queue.SimpleQueue()
        with self._lock:
            self._streams[request.request_id] = events
        self._submit.emit(request, control)
        cancelled_at: float | None = None
        try:
            while True:
                try:
                    item = events.get(timeout=0.1)
                except queue.Empty:
                    if control.cancel.is_set():
                        cancelled_at = cancelled_at or time.monotonic()
                        if time.monotonic() - cancelled_at > ABANDON_AFTER_CANCEL_S:
                            raise EngineError("The engine did not answer the stop request.") from None
                    continue
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, TextDelta | Finished)
                yield item
                if isinstance(item, Finished):
                    return
        finally:
            with self._lock:
                self._streams.pop(request.request_id, None)

    def _put(self, request_id: str, item: object) -> None:
        with self._lock:
            events = self._streams.get(request_id)
        if events is not None:
            events.put(item)

    @Slot(object, object)
    def _on_submit(self, request: GenerationRequest, control: GenerationControl) -> None:
        self._controller.generate(request, control)

    @Slot(str, str, str)
    def _on_text(self, request_id: str, reasoning: str, content: str) -> None:
        self._put(request_id, TextDelta(reasoning=reasoning, content=content))

    @Slot(str, object)
    def _on_finished(self, request_id: str, finished: Finished) -> None:
        self._put(request_id, finished)

    @Slot(str, str)
    def _on_failed(self, request_id: str, message: str) -> None:
        self._put(request_id, EngineError(message))

    @Slot(str, str)
    def _on_interrupted(self, request_id: str, message: str) -> None:
        self._put(request_id, EngineCrashedError(message))


class ApiServerController(QObject):
    """The app's API server: on or off as the settings say. Create on the GUI thread; ``stop()`` before exit."""

    activityChanged = Signal(int, int)  # requests running (0 or 1), requests waiting
    failed = Signal(str)

    def __init__(self, controller: EngineController, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._bridge = EngineBridge(controller)
        self._server: object | None = None
        self._key: tuple[str, int, str] | None = None

    @property
    def url(self) -> str | None:
        if self._server is None:  # off (the default): never import the server stack for nothing
            return None
        from enclave.server.service import ApiServer

        return self._server.url if isinstance(self._server, ApiServer) else None

    def apply(self, settings: Settings) -> None:
        """Start, restart or stop the server to match ``settings``; a failure is reported through ``failed``."""
        key = (settings.api_server_host, settings.api_server_port, settings.api_server_key)
        if settings.api_server_enabled and self._server is not None and key == self._key:
            return
        self.stop()
        if not settings.api_server_enabled:
            return
        from enclave.docs.embedder import active_embedding_model_path
        from enclave.server.app import ServerOptions
        from enclave.server.service import ApiServer, EmbeddingService, ServerConfigError

        try:
            server = ApiServer(
                self._bridge,
                host=settings.api_server_host,
                port=settings.api_server_port,
                options=ServerOptions(api_key=settings.api_server_key or None),
                embeddings=EmbeddingService(active_embedding_model_path(), n_threads=1),
                on_activity=lambda a: self.activityChanged.emit(a.running, a.waiting),
            )
            server.start()
        except (ServerConfigError, OSError) as exc:
            self.failed.emit(f"The local API server could not start: {exc}")
            return
        self._server = server
        self._key = key

    def stop(self) -> None:
        if self._server is None:  # not running: nothing to stop, and no server stack to import at start-up
            return
        from enclave.server.service import ApiServer

        server, self._server = self._server, None
        if isinstance(server, ApiServer):
            server.close()
            self.activityChanged.emit(0, 0)

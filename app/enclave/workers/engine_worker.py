"""The engine thread: one QObject on one dedicated QThread owns the model.

GUI code talks to ``EngineController`` only. Requests travel to the worker as queued signals carrying frozen request
objects; results come back as signals, so the worker never touches a widget or a GUI-owned model. Cancelling and
"Answer now" are ``threading.Event`` flags set directly from the GUI thread: a queued "cancel" signal would wait
behind the very generation it is meant to stop.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QObject, Signal, Slot

from enclave.engine.backend import Backend, EngineCrashedError, ModelLoadCrashedError
from enclave.engine.types import (
    ContextTrimmed,
    EngineError,
    Finished,
    FinishReason,
    GenerationControl,
    GenerationRequest,
    GenerationStats,
    LoadRequest,
    ModelInfo,
    PromptProgress,
    TextDelta,
    ThinkingClosed,
)
from enclave.workers.threads import WorkerThread

log = logging.getLogger(__name__)

# Text reaches the GUI at most this often (25 Hz): enough to look live, few enough signals to keep the GUI idle.
EMIT_INTERVAL_S = 0.04


class EngineWorker(QObject):
    """Runs on the engine thread. Creates the backend there, so importing llama.cpp never delays the first paint."""

    modelLoading = Signal(str)
    loadProgress = Signal(float)  # the fraction of the model read, 0.0 to 1.0 (from llama.cpp, a few times a second)
    modelLoaded = Signal(object)
    modelLoadFailed = Signal(str, bool)  # message, and whether the engine's process crashed during the load
    contextTrimmed = Signal(str, int)
    promptProgress = Signal(str, int, int, float)  # request id, evaluated, total, seconds left (-1: unknown)
    textReady = Signal(str, str, str)
    thinkingClosed = Signal(str, bool)
    generationFinished = Signal(str, object)
    generationFailed = Signal(str, str)
    generationInterrupted = Signal(str, str)  # request id, message: the engine process died mid-answer
    stopped = Signal()

    def __init__(self, backend_factory: Callable[[], Backend]) -> None:
        super().__init__()
        self._backend_factory = backend_factory
        self._backend: Backend | None = None

    def _get_backend(self) -> Backend:
        if self._backend is None:
            self._backend = self._backend_factory()
        return self._backend

    @Slot(object, object)
    def load(self, request: LoadRequest, cancel: threading.Event) -> None:
        self.modelLoading.emit(request.path)
        if cancel.is_set():  # replaced by a newer load (or cancelled) while it waited in the queue
            self.modelLoadFailed.emit(f"Loading {Path(request.path).name} was cancelled.", False)
            return
        backend = self._get_backend()
        try:
            info = backend.load(request, cancel, self.loadProgress.emit)
        except EngineError as exc:
            self._load_failed(backend, str(exc), crashed=isinstance(exc, ModelLoadCrashedError))
        except Exception as exc:  # a bug or a library failure must not kill the engine thread
            log.exception("model load failed")
            self._load_failed(backend, f"Could not load the model: {exc}")
        else:
            self.modelLoaded.emit(info)

    def _load_failed(self, backend: Backend, message: str, *, crashed: bool = False) -> None:
        self.modelLoadFailed.emit(message, crashed)
        still = backend.model  # refused before the old model was freed (a missing or damaged file): it stays
        if still is not None:
            self.modelLoaded.emit(still)

    @Slot(object, object)
    def generate(self, request: GenerationRequest, control: GenerationControl) -> None:
        rid = request.request_id
        if control.cancel.is_set():  # stopped while it waited in the queue
            self.generationFinished.emit(rid, Finished(FinishReason.CANCELLED, GenerationStats()))
            return
        reasoning: list[str] = []
        content: list[str] = []
        last_emit = time.monotonic()

        def flush() -> None:
            nonlocal last_emit
            if reasoning or content:
                self.textReady.emit(rid, "".join(reasoning), "".join(content))
                reasoning.clear()
                content.clear()
            last_emit = time.monotonic()

        def progress(event: PromptProgress) -> None:
            left = -1.0 if event.seconds_left is None else event.seconds_left
            self.promptProgress.emit(rid, event.evaluated, event.total, left)

        control.progress = progress  # called on this thread while a prompt batch runs
        try:
            backend = self._get_backend()
            for event in backend.stream_chat(request, control):
                if isinstance(event, TextDelta):
                    if event.reasoning:
                        reasoning.append(event.reasoning)
                    if event.content:
                        content.append(event.content)
                    if time.monotonic() - last_emit >= EMIT_INTERVAL_S:
                        flush()
                elif isinstance(event, ThinkingClosed):
                    flush()
                    self.thinkingClosed.emit(rid, event.forced)
                elif isinstance(event, PromptProgress):
                    progress(event)
                elif isinstance(event, ContextTrimmed):
                    self.contextTrimmed.emit(rid, event.dropped_messages)
                elif isinstance(event, Finished):
                    flush()
                    self.generationFinished.emit(rid, event)
                    return
            flush()
            self.generationFailed.emit(rid, "The engine stopped without finishing the answer.")
        except EngineCrashedError as exc:
            flush()
            self.generationInterrupted.emit(rid, str(exc))
        except EngineError as exc:
            flush()
            self.generationFailed.emit(rid, str(exc))
        except Exception as exc:
            log.exception("generation failed")
            flush()
            self.generationFailed.emit(rid, f"Unexpected engine error: {exc}")

    @Slot()
    def shutdown(self) -> None:
        try:
            if self._backend is not None:
                self._backend.unload()
        finally:
            self._backend = None
            self.stopped.emit()
            thread = self.thread()
            thread.quit()


_controllers: weakref.WeakSet[EngineController] = weakref.WeakSet()


def running_controllers() -> list[EngineController]:
    """Controllers whose engine thread is still running (tests assert none are left behind)."""
    return [c for c in list(_controllers) if c.thread_running]


class EngineController(QObject):
    """GUI-thread facade over the engine thread. Create it on the GUI thread; call ``shutdown()`` before exit."""

    modelLoading = Signal(str)
    loadProgress = Signal(float)  # the fraction of the model read, 0.0 to 1.0
    modelLoaded = Signal(object)
    modelLoadFailed = Signal(str, bool)  # message, and whether the engine's process crashed during the load
    contextTrimmed = Signal(str, int)
    promptProgress = Signal(str, int, int, float)  # request id, evaluated, total, seconds left (-1: unknown)
    textReady = Signal(str, str, str)
    thinkingClosed = Signal(str, bool)
    generationFinished = Signal(str, object)
    generationFailed = Signal(str, str)
    generationInterrupted = Signal(str, str)  # the engine process died mid-answer; the next request restarts it

    _loadRequested = Signal(object, object)
    _generateRequested = Signal(object, object)
    _shutdownRequested = Signal()

    def __init__(self, backend_factory: Callable[[], Backend], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._worker = EngineWorker(backend_factory)
        self._thread = WorkerThread(self._worker, "enclave-engine")
        self._controls: dict[str, GenerationControl] = {}
        self._model: ModelInfo | None = None
        self._loading = False
        self._load_cancel = threading.Event()  # the newest load's: set by cancel_load() or by a newer load
        self._started = False
        _controllers.add(self)

        # Requests: GUI -> worker. The worker lives in another thread, so these connections are queued.
        self._loadRequested.connect(self._worker.load)
        self._generateRequested.connect(self._worker.generate)
        self._shutdownRequested.connect(self._worker.shutdown)
        # Results: worker -> GUI (queued: this controller lives in the GUI thread).
        self._worker.modelLoading.connect(self._on_loading)
        self._worker.loadProgress.connect(self.loadProgress)
        self._worker.modelLoaded.connect(self._on_loaded)
        self._worker.modelLoadFailed.connect(self._on_load_failed)
        self._worker.contextTrimmed.connect(self.contextTrimmed)
        self._worker.promptProgress.connect(self.promptProgress)
        self._worker.textReady.connect(self.textReady)
        self._worker.thinkingClosed.connect(self.thinkingClosed)
        self._worker.generationFinished.connect(self._on_finished)
        self._worker.generationFailed.connect(self._on_failed)
        self._worker.generationInterrupted.connect(self._on_interrupted)

    # --- state ------------------------------------------------------------------------------------------------

    @property
    def model(self) -> ModelInfo | None:
        return self._model

    @property
    def loading(self) -> bool:
        return self._loading

    @property
    def busy(self) -> bool:
        return bool(self._controls)

    @property
    def thread_running(self) -> bool:
        return self._thread.running

    # --- lifecycle --------------------------------------------------------------------------------------------

    def start(self) -> None:
        if not self._started:
            self._thread.start()
            self._started = True

    def shutdown(self, timeout_ms: int = 30_000) -> None:
        """Stop any generation, unload the model on its own thread, and join the thread."""
        if not self._started:
            return
        self.cancel()
        self._thread.stop(timeout_ms, before_quit=self._shutdownRequested.emit)  # logs if it did not stop
        self._started = False

    # --- requests ---------------------------------------------------------------------------------------------

    def load_model(self, request: LoadRequest) -> None:
        """Load ``request`` after what is queued; a load still running or waiting for this one is cancelled."""
        self.start()
        self.cancel()
        self._load_cancel.set()
        self._load_cancel = threading.Event()
        self._loading = True
        self._loadRequested.emit(request, self._load_cancel)

    def cancel_load(self) -> None:
        """Stop the model load in progress (llama.cpp gives up within a fraction of a second), from any thread."""
        self._load_cancel.set()

    def generate(self, request: GenerationRequest, control: GenerationControl | None = None) -> str:
        """Queue ``request``; ``control`` lets a caller on another thread (the API server) hold the cancel flag."""
        self.start()
        control = control or GenerationControl()
        self._controls[request.request_id] = control
        self._generateRequested.emit(request, control)
        return request.request_id

    def cancel(self, request_id: str | None = None) -> None:
        """Stop one request (or all): takes effect at the next token or prompt batch, from any thread."""
        targets = self._controls.values() if request_id is None else [self._controls.get(request_id)]
        for control in targets:
            if control is not None:
                control.cancel.set()

    def answer_now(self, request_id: str) -> None:
        control = self._controls.get(request_id)
        if control is not None:
            control.answer_now.set()

    # --- results ----------------------------------------------------------------------------------------------

    @Slot(str)
    def _on_loading(self, path: str) -> None:
        self._loading = True
        self.modelLoading.emit(path)

    @Slot(object)
    def _on_loaded(self, info: ModelInfo) -> None:
        self._loading = False
        self._model = info
        self.modelLoaded.emit(info)

    @Slot(str, bool)
    def _on_load_failed(self, message: str, crashed: bool) -> None:
        self._loading = False
        self._model = None
        self.modelLoadFailed.emit(message, crashed)

    @Slot(str, object)
    def _on_finished(self, request_id: str, finished: Finished) -> None:
        self._controls.pop(request_id, None)
        self.generationFinished.emit(request_id, finished)

    @Slot(str, str)
    def _on_failed(self, request_id: str, message: str) -> None:
        self._controls.pop(request_id, None)
        self.generationFailed.emit(request_id, message)

    @Slot(str, str)
    def _on_interrupted(self, request_id: str, message: str) -> None:
        self._controls.pop(request_id, None)
        self.generationInterrupted.emit(request_id, message)

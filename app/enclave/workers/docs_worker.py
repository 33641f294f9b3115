"""The documents thread: indexing and search on one dedicated QThread, never on the GUI thread.

Same pattern as the engine thread: GUI code talks to ``DocsController`` only; requests travel as queued signals with
frozen request objects; results come back as signals. Indexing runs as a chain of small steps (``Ingester.step``:
poll the file reader, or embed one batch of ~16 chunks), each re-posted to the thread's event loop, so a search
asked for while a big folder is being indexed is answered between two steps (within about half a second), not after
the whole folder. Pause and cancel are ``threading.Event`` flags set directly from the GUI thread, checked before
every step. Files are read in a child process (docs/isolation.py) so a hostile file cannot hang or crash the app.

The queue lives in the index file, so closing the app mid-way loses nothing: the next ``start()`` resumes it.

Folders that were added are watched (QFileSystemWatcher on the folder and its subfolders, on this thread): a change
is rescanned after a short quiet period, so saving a file or copying in a batch costs one rescan. Changes made while
Enclave was closed are found by the rescan at start, and a slow periodic rescan catches what the watcher cannot see
(network drives, watch limits).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from PySide6.QtCore import QFileSystemWatcher, QObject, Qt, QTimer, Signal, Slot

from enclave.docs import DEFAULT_COLLECTION
from enclave.fsutil import quarantine
from enclave.workers.threads import WorkerThread

# The documents core (index, readers, search, embedder) is imported on the documents thread when it opens, not by
# the window's first paint: this module is imported at start-up.
if TYPE_CHECKING:
    from enclave.docs.embedder import TextEmbedder
    from enclave.docs.index import DocumentIndex, DocumentInfo, QueueItem
    from enclave.docs.ingest import FileStatus, Ingester, IngestProgress
    from enclave.docs.isolation import FileParser
    from enclave.docs.search import Searcher

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 0.1  # progress reaches the GUI at most 10 times a second
DOCUMENTS_INTERVAL_S = 5.0  # while indexing, the whole document list (pages, passages) at most every 5 s
WAITING_SHOWN = 500  # queued files listed in the Documents window (the progress bar counts them all)
RESCAN_QUIET_MS = 1500  # a folder is rescanned once it has been quiet this long
PERIODIC_RESCAN_MS = 10 * 60 * 1000  # a stat of every file: ~0.03 s per 1,000 unchanged files
MAX_WATCHED_DIRS = 2000  # inotify watches are a per-user resource; the periodic rescan covers the rest


@dataclass(frozen=True)
class AddRequest:
    paths: tuple[str, ...]
    collection: str = DEFAULT_COLLECTION


@dataclass(frozen=True)
class SearchRequest:
    request_id: str
    query: str
    collections: tuple[str, ...] | None = None  # None: every collection
    k: int = 5


@dataclass(frozen=True)
class EmbedderInfo:
    name: str
    model_id: str
    family: str
    dimension: int
    path: str


class IngestControl:
    """Flags the GUI thread sets and the documents thread reads before every step.

    ``pause`` is the user's; ``hold`` is the chat's (set while the model answers, so indexing does not take the
    cores R1 needs) and is never shown as paused.
    """

    def __init__(self) -> None:
        self.pause = threading.Event()
        self.cancel = threading.Event()
        self.hold = threading.Event()


EmbedderFactory = Callable[[Path], "TextEmbedder"]
ACTIVE: Literal["active"] = "active"


class DocsWorker(QObject):
    """Lives on the documents thread; opens the index, the reader process and the embedding model there."""

    progress = Signal(object)  # IngestProgress
    fileStatus = Signal(object)  # FileStatus
    ingestFinished = Signal()  # the queue ran empty, or was cancelled
    ingestPaused = Signal()
    searchFinished = Signal(str, object)  # request id, SearchResponse
    searchFailed = Signal(str, str)  # request id, message
    documentsChanged = Signal(object)  # list[DocumentInfo]
    waitingChanged = Signal(object)  # list[QueueItem]: files queued for indexing (the first WAITING_SHOWN)
    embedderChanged = Signal(object)  # EmbedderInfo, or None: keyword search only
    error = Signal(str)
    stopped = Signal()

    _next = Signal()

    def __init__(
        self,
        index_path: Path,
        embedding_model: Path | Literal["active"] | None,
        control: IngestControl,
        parser_factory: Callable[[], FileParser],
        embedder_factory: EmbedderFactory,
    ) -> None:
        super().__init__()
        self._index_path = index_path
        self._model_setting = embedding_model
        self._control = control
        self._parser_factory = parser_factory
        self._embedder_factory = embedder_factory
        self._index: DocumentIndex | None = None
        self._searcher: Searcher | None = None
        self._ingester: Ingester | None = None
        self._embedder: TextEmbedder | None = None
        self._stepping = False
        self._announce = False  # work was asked for or done since the last ingestFinished
        self._last_progress = 0.0
        self._last_where = ("", "idle")
        self._last_documents = 0.0
        self._closed = False
        self._watcher: QFileSystemWatcher | None = None
        self._changed: set[str] = set()  # watched directories that changed since the last rescan
        self._quiet: QTimer | None = None
        self._periodic: QTimer | None = None
        # Queued explicitly: on one thread an auto connection would call _step directly, recursively, and searches
        # would wait for the whole queue. Queued, each step is one event-loop turn and requests slot in between.
        self._next.connect(self._step, Qt.ConnectionType.QueuedConnection)

    # --- setup ----------------------------------------------------------------------------------------------------

    @Slot()
    def open(self) -> None:
        from enclave.docs.embedder import active_embedding_model_path
        from enclave.docs.index import DocumentIndexError
        from enclave.docs.ingest import Ingester
        from enclave.docs.search import Searcher

        try:
            self._index = self._open_index()
        except DocumentIndexError as exc:
            self.error.emit(str(exc))
            return
        self._searcher = Searcher(self._index)
        self._ingester = Ingester(self._index, None, parser=self._parser_factory())
        path = active_embedding_model_path() if self._model_setting == ACTIVE else self._model_setting
        self._load_embedder(path if isinstance(path, Path) else None)
        self._emit_documents()  # with the files left queued by the last session
        if self._embedder is not None:  # load the vectors now, so the first search is not the one that waits
            self._searcher.vectors(self._embedder.model_id)
        self._watcher = QFileSystemWatcher(self)
        self._watcher.directoryChanged.connect(self._on_directory_changed)
        self._quiet = QTimer(self)
        self._quiet.setSingleShot(True)
        self._quiet.setInterval(RESCAN_QUIET_MS)
        self._quiet.timeout.connect(self._rescan_changed)
        self._periodic = QTimer(self)
        self._periodic.setInterval(PERIODIC_RESCAN_MS)
        self._periodic.timeout.connect(self.rescan)
        self._periodic.start()
        self._rescan(None)  # files changed while Enclave was closed
        self._announce = self._index.queue_size() > 0
        self._schedule()  # resume work left in the queue by the last session

    def _open_index(self) -> DocumentIndex:
        """Open the index; a damaged one is kept aside and a new one started (the documents are still on disk)."""
        from enclave.docs.index import DocumentIndex, DocumentIndexError

        try:
            return DocumentIndex(self._index_path)
        except DocumentIndexError as exc:
            if not exc.damaged:
                raise
        try:
            kept = quarantine(self._index_path, sqlite_sidecars=True)
        except OSError as exc:
            raise DocumentIndexError(
                f"The document index {self._index_path} is damaged and could not be moved aside: {exc}"
            ) from exc
        index = DocumentIndex(self._index_path)
        self.error.emit(
            f"The document index was damaged, so Enclave started a new one (the old file was kept as {kept.name}). "
            "Your files are untouched: add them again to search them."
        )
        return index

    def _load_embedder(self, path: Path | None) -> None:
        from enclave.docs.embedder import EmbedderError

        old, self._embedder = self._embedder, None
        if old is not None:
            old.close()
        if path is not None:
            try:
                self._embedder = self._embedder_factory(path)
            except EmbedderError as exc:
                self.error.emit(f"The embedding model could not be loaded, so search uses keywords only. {exc}")
        if self._ingester is not None:
            self._ingester.set_embedder(self._embedder)
        embedder = self._embedder
        self.embedderChanged.emit(
            None
            if embedder is None
            else EmbedderInfo(
                embedder.name,
                embedder.model_id,
                embedder.family.name,
                embedder.dimension,
                str(path),
            )
        )

    @Slot(object)
    def setEmbeddingModel(self, path: Path | None) -> None:
        if self._ingester is None:
            return
        self._load_embedder(path)
        self._announce = True
        self._schedule()

    # --- indexing -------------------------------------------------------------------------------------------------

    @Slot(object)
    def add(self, request: AddRequest) -> None:
        if self._ingester is None:
            self.error.emit("The document index is not available.")
            return
        for status in self._ingester.add([Path(p) for p in request.paths], request.collection):
            self.fileStatus.emit(status)
        self._emit_waiting()  # the Documents window lists the new files at once, as "Waiting"
        self._watch_folders()
        self._announce = True  # even when every file was unchanged: the GUI learns that the request is done
        self._emit_progress(force=True)
        self._schedule()

    @Slot()
    def resume(self) -> None:
        self._schedule()

    # --- watched folders ----------------------------------------------------------------------------------------

    def _watch_folders(self) -> None:
        """Watch every watched folder and its subfolders (up to MAX_WATCHED_DIRS), adding what is new."""
        if self._watcher is None or self._index is None:
            return
        wanted: list[str] = []
        for _collection, folder in self._index.folders():
            for root, dirs, _files in os.walk(folder):
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                wanted.append(root)
                if len(wanted) >= MAX_WATCHED_DIRS:
                    break
            if len(wanted) >= MAX_WATCHED_DIRS:
                log.info("watching only the first %d folders; the periodic rescan covers the rest", MAX_WATCHED_DIRS)
                break
        current = set(self._watcher.directories())
        new = [d for d in wanted if d not in current]
        if new:
            self._watcher.addPaths(new)

    @Slot(str)
    def _on_directory_changed(self, path: str) -> None:
        self._changed.add(path)
        if self._quiet is not None:
            self._quiet.start()  # restarts: rescan once things are quiet

    @Slot()
    def _rescan_changed(self) -> None:
        if self._index is None:
            return
        from enclave.docs.ingest import is_under

        changed, self._changed = self._changed, set()
        folders = [(c, f) for c, f in self._index.folders() if any(is_under(p, f) for p in changed)]
        if folders:
            self._rescan(folders)

    @Slot()
    def rescan(self) -> None:
        """Rescan every watched folder now (at start, periodically, or when asked)."""
        self._rescan(None)

    def _rescan(self, folders: list[tuple[str, str]] | None) -> None:
        if self._ingester is None:
            return
        from enclave.docs.status import DocStatus

        statuses: list[FileStatus] = self._ingester.rescan(folders)
        changed = False
        for status in statuses:
            if status.status != DocStatus.UNCHANGED:
                self.fileStatus.emit(status)
                changed = changed or status.status == DocStatus.REMOVED
        self._watch_folders()
        if changed:
            self._emit_documents()
        if self._index is not None and self._index.queue_size() > 0:
            self._announce = True
            self._emit_progress(force=True)
            self._schedule()

    def _schedule(self) -> None:
        if not self._stepping and not self._closed:
            self._stepping = True
            self._next.emit()

    @Slot()
    def _step(self) -> None:
        ingester = self._ingester
        if ingester is None or self._closed:
            self._stepping = False
            return
        if self._control.cancel.is_set():
            self._control.cancel.clear()
            ingester.cancel()
            self._announce = True
            self._finish_if_idle(ingester)
            return
        if self._control.pause.is_set():
            self._stepping = False
            self._emit_progress(force=True)
            self.ingestPaused.emit()
            return
        if self._control.hold.is_set():
            self._stepping = False  # resumed by the controller's hold(False)
            return
        if self._finish_if_idle(ingester):
            return
        try:
            status = ingester.step()
        except Exception as exc:  # the model or the index failed: not one file's fault, so stop and say why
            self._control.pause.set()
            self._stepping = False
            self.error.emit(f"Indexing stopped: {exc}")
            self.ingestPaused.emit()
            return
        self._announce = True
        if status is not None:
            self.fileStatus.emit(status)
            if time.monotonic() - self._last_documents >= DOCUMENTS_INTERVAL_S:
                self._emit_documents()  # rows appear as files finish, not all at the end
        if not self._finish_if_idle(ingester):
            self._emit_progress(force=status is not None)
            self._next.emit()

    def _finish_if_idle(self, ingester: Ingester) -> bool:
        """Stop stepping when the queue is empty; tell the GUI once per burst of work (not when there was none)."""
        if not ingester.idle:
            return False
        self._stepping = False
        if self._announce:
            self._announce = False
            self._emit_progress(force=True)
            self._emit_documents()
            self.ingestFinished.emit()
        return True

    def _emit_progress(self, *, force: bool = False) -> None:
        """Throttled, except when a file or its phase changes (the GUI shows which file is read or embedded)."""
        if self._ingester is None:
            return
        now = time.monotonic()
        progress = self._ingester.progress()
        where = (progress.current_path, progress.phase)
        if force or where != self._last_where or now - self._last_progress >= PROGRESS_INTERVAL_S:
            self._last_progress = now
            self._last_where = where
            self.progress.emit(progress)

    def _emit_documents(self) -> None:
        if self._index is not None:
            self._last_documents = time.monotonic()
            self.documentsChanged.emit(self._index.documents())
            self._emit_waiting()

    def _emit_waiting(self) -> None:
        if self._index is not None:
            self.waitingChanged.emit(self._index.queued(WAITING_SHOWN))

    # --- search and management --------------------------------------------------------------------------------

    @Slot(object)
    def search(self, request: SearchRequest) -> None:
        if self._searcher is None:
            self.searchFailed.emit(request.request_id, "The document index is not available.")
            return
        try:
            response = self._searcher.search_with(
                self._embedder, request.query, k=request.k, collections=request.collections
            )
        except Exception as exc:
            self.searchFailed.emit(request.request_id, f"Search failed: {exc}")
        else:
            self.searchFinished.emit(request.request_id, response)

    @Slot(object)
    def remove(self, document_ids: tuple[int, ...]) -> None:
        if self._index is None or self._ingester is None:
            return
        for document_id in document_ids:
            self._ingester.forget(document_id)
        self._index.remove(document_ids)
        self._emit_documents()
        self._emit_progress(force=True)

    @Slot()
    def refresh(self) -> None:
        self._emit_documents()

    @Slot()
    def shutdown(self) -> None:
        self._closed = True
        for timer in (self._quiet, self._periodic):
            if timer is not None:
                timer.stop()
        if self._watcher is not None:
            self._watcher.directoryChanged.disconnect(self._on_directory_changed)
            self._watcher.deleteLater()
            self._watcher = None
        try:
            if self._ingester is not None:
                self._ingester.close()
            if self._embedder is not None:
                self._embedder.close()
            if self._index is not None:
                self._index.close()
        finally:
            self._ingester = self._searcher = self._index = self._embedder = None
            self.stopped.emit()
            self.thread().quit()


_controllers: weakref.WeakSet[DocsController] = weakref.WeakSet()


def running_controllers() -> list[DocsController]:
    """Controllers whose documents thread is still running (tests assert none are left behind)."""
    return [c for c in list(_controllers) if c.thread_running]


def _default_parser() -> FileParser:
    """File readers in a child process with limits (called on the documents thread as it opens)."""
    from enclave.docs.isolation import IsolatedParser

    return IsolatedParser()


def _default_embedder(path: Path) -> TextEmbedder:
    """The embedding model in an engine host process of its own (llama.cpp never runs in the window's process);
    ``ENCLAVE_ENGINE_IN_PROCESS=1`` keeps it here, as it does the chat model (for a debugger or a profiler)."""
    if os.environ.get("ENCLAVE_ENGINE_IN_PROCESS") == "1":
        from enclave.docs.embedder import Embedder

        return Embedder(path)
    from enclave.docs.isolated_embedder import IsolatedEmbedder

    return IsolatedEmbedder(path)


class DocsController(QObject):
    """GUI-thread facade over the documents thread. Create it on the GUI thread; call ``shutdown()`` before exit.

    ``embedding_model``: ``"active"`` (the model chosen in the model manager, or ``$ENCLAVE_EMBEDDING_MODEL``), a
    path, or None for keyword-only search.
    """

    progress = Signal(object)  # IngestProgress: files done/total, current file, its chunks done/total
    fileStatus = Signal(object)  # FileStatus: one per file, as each finishes (or at once: unchanged, skipped)
    ingestFinished = Signal()
    ingestPaused = Signal()
    searchFinished = Signal(str, object)  # request id, SearchResponse
    searchFailed = Signal(str, str)
    documentsChanged = Signal(object)  # list[DocumentInfo]
    waitingChanged = Signal(object)  # list[QueueItem]: files queued for indexing, in order (the first 500)
    embedderChanged = Signal(object)  # EmbedderInfo | None
    error = Signal(str)

    _openRequested = Signal()
    _addRequested = Signal(object)
    _resumeRequested = Signal()
    _searchRequested = Signal(object)
    _removeRequested = Signal(object)
    _refreshRequested = Signal()
    _rescanRequested = Signal()
    _modelRequested = Signal(object)
    _shutdownRequested = Signal()

    def __init__(
        self,
        *,
        index_path: Path | None = None,
        embedding_model: Path | Literal["active"] | None = ACTIVE,
        parser_factory: Callable[[], FileParser] | None = None,
        embedder_factory: EmbedderFactory = _default_embedder,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        if index_path is None:
            from enclave.paths import app_paths

            index_path = app_paths().ensure().documents_db
        self._control = IngestControl()
        parser_factory = parser_factory or _default_parser
        self._worker = DocsWorker(index_path, embedding_model, self._control, parser_factory, embedder_factory)
        self._thread = WorkerThread(self._worker, "enclave-documents")
        self._started = False
        self._progress: IngestProgress | None = None
        self._documents: list[DocumentInfo] = []
        self._waiting: list[QueueItem] = []
        self._embedder_info: EmbedderInfo | None = None
        _controllers.add(self)

        self._openRequested.connect(self._worker.open)
        self._addRequested.connect(self._worker.add)
        self._resumeRequested.connect(self._worker.resume)
        self._searchRequested.connect(self._worker.search)
        self._removeRequested.connect(self._worker.remove)
        self._refreshRequested.connect(self._worker.refresh)
        self._rescanRequested.connect(self._worker.rescan)
        self._modelRequested.connect(self._worker.setEmbeddingModel)
        self._shutdownRequested.connect(self._worker.shutdown)

        self._worker.progress.connect(self._on_progress)
        self._worker.fileStatus.connect(self.fileStatus)
        self._worker.ingestFinished.connect(self.ingestFinished)
        self._worker.ingestPaused.connect(self.ingestPaused)
        self._worker.searchFinished.connect(self.searchFinished)
        self._worker.searchFailed.connect(self.searchFailed)
        self._worker.documentsChanged.connect(self._on_documents)
        self._worker.waitingChanged.connect(self._on_waiting)
        self._worker.embedderChanged.connect(self._on_embedder)
        self._worker.error.connect(self.error)

    # --- state ------------------------------------------------------------------------------------------------

    @property
    def paused(self) -> bool:
        return self._control.pause.is_set()

    @property
    def progress_state(self) -> IngestProgress | None:
        """The last progress received (None before the first)."""
        return self._progress

    @property
    def documents(self) -> list[DocumentInfo]:
        """The last document list received (``DocumentInfo`` objects)."""
        return list(self._documents)

    @property
    def waiting(self) -> list[QueueItem]:
        """The files queued for indexing as last reported (the one being indexed among them)."""
        return list(self._waiting)

    @property
    def embedder_info(self) -> EmbedderInfo | None:
        """The embedding model in use (None: keyword search only, or not known yet)."""
        return self._embedder_info

    @property
    def thread_running(self) -> bool:
        return self._thread.running

    # --- lifecycle --------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the thread, open the index and resume any work left from the last session (unless paused)."""
        if not self._started:
            self._thread.start()
            self._started = True
            self._openRequested.emit()

    def shutdown(self, timeout_ms: int = 30_000) -> None:
        """Stop after the current step (the queue is kept for next time), close everything, and join the thread."""
        if not self._started:
            return
        self._thread.stop(timeout_ms, before_quit=self._shutdownRequested.emit)  # logs if it did not stop
        self._started = False

    # --- requests ---------------------------------------------------------------------------------------------

    def add_paths(self, paths: Iterable[str | Path], collection: str = DEFAULT_COLLECTION) -> None:
        """Queue files and folders for indexing (dropped files, a folder picker...)."""
        self.start()
        self._addRequested.emit(AddRequest(tuple(str(p) for p in paths), collection))

    def pause(self) -> None:
        """Stop indexing after the current step (at most about half a second); searches still work."""
        self._control.pause.set()

    def resume(self) -> None:
        self.start()
        self._control.pause.clear()
        self._resumeRequested.emit()

    def cancel(self) -> None:
        """Drop everything queued; the file in progress keeps what was stored and is marked "cancelled"."""
        self.start()
        self._control.cancel.set()
        self._control.pause.clear()
        self._resumeRequested.emit()

    def search(
        self,
        query: str,
        *,
        collection: str | None = None,
        collections: Iterable[str] | None = None,
        k: int = 5,
    ) -> str:
        """Ask for the k best passages in ``collections`` (or one ``collection``; neither: all); the answer comes as
        ``searchFinished(request_id, SearchResponse)``."""
        self.start()
        request_id = uuid.uuid4().hex
        names = tuple(collections) if collections is not None else (collection,) if collection is not None else None
        self._searchRequested.emit(SearchRequest(request_id, query, names, k))
        return request_id

    def hold(self, held: bool) -> None:
        """Hold indexing while the chat model answers (not shown as paused); release it afterwards."""
        if held:
            self._control.hold.set()
        elif self._control.hold.is_set():
            self._control.hold.clear()
            if self._started:
                self._resumeRequested.emit()

    def remove(self, document_ids: Iterable[int]) -> None:
        self.start()
        self._removeRequested.emit(tuple(int(i) for i in document_ids))

    def refresh(self) -> None:
        self.start()
        self._refreshRequested.emit()

    def rescan(self) -> None:
        """Look at every watched folder again now (the watcher and a periodic rescan do this on their own)."""
        self.start()
        self._rescanRequested.emit()

    def set_embedding_model(self, path: Path | None) -> None:
        """Switch models: documents lacking the new model's vectors are queued and re-embedded (not re-read)."""
        self.start()
        self._modelRequested.emit(path)

    # --- results ----------------------------------------------------------------------------------------------

    @Slot(object)
    def _on_progress(self, progress: IngestProgress) -> None:
        self._progress = progress
        self.progress.emit(progress)

    @Slot(object)
    def _on_embedder(self, info: EmbedderInfo | None) -> None:
        self._embedder_info = info
        self.embedderChanged.emit(info)

    @Slot(object)
    def _on_documents(self, documents: list[DocumentInfo]) -> None:
        self._documents = list(documents)
        self.documentsChanged.emit(documents)

    @Slot(object)
    def _on_waiting(self, waiting: list[QueueItem]) -> None:
        self._waiting = list(waiting)
        self.waitingChanged.emit(waiting)


__all__ = [
    "AddRequest",
    "DocsController",
    "DocsWorker",
    "EmbedderInfo",
    "IngestControl",
    "SearchRequest",
    "running_controllers",
]

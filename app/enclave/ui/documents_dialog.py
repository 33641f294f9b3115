"""The Documents window: what is indexed, in which collection, how it went, and the indexing progress.

It only shows what the documents thread reports (``DocsController`` signals) and sends it requests; it never opens
the index itself. Files that could not be indexed stay listed with the reason and what to do, instead of vanishing.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path, PurePath

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QProgressBar,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from enclave.docs.index import DocumentInfo, QueueItem
from enclave.docs.ingest import DEFAULT_COLLECTION, FileStatus, IngestProgress
from enclave.docs.parsers import KINDS
from enclave.docs.status import DocStatus
from enclave.ui.style import mute
from enclave.workers.docs_worker import DocsController, EmbedderInfo

WAITING = "waiting"  # shown only: queued behind the file being indexed (never stored, not a DocStatus)
STATUS_TEXT = {
    DocStatus.OK: "Indexed",
    DocStatus.UNCHANGED: "Indexed",
    DocStatus.INDEXING: "Indexing…",
    WAITING: "Waiting",
    DocStatus.CANCELLED: "Cancelled — add it again to finish",
    DocStatus.EMPTY: "No text (a scan? Enclave does not read images)",
    DocStatus.ENCRYPTED: "Password-protected — save an unprotected copy and add that",
    DocStatus.UNSUPPORTED: "Not a supported type",
    DocStatus.SKIPPED: "Skipped (not a supported type)",
    DocStatus.TOO_LARGE: "Too large to index",
    DocStatus.DAMAGED: "Damaged or unreadable",
    DocStatus.TIMEOUT: "Took too long to read — add it again to retry",
    DocStatus.MISSING: "Not found",
    DocStatus.REMOVED: "Removed (the file was deleted)",
}
COLUMNS = ("Document", "Collection", "Pages", "Passages", "Status")
# Generated from the readers' own table, so the file picker offers exactly what can be indexed.
FILE_FILTER = f"Documents ({' '.join('*' + suffix for suffix in KINDS)});;All files (*)"


def distinct_names(paths: Iterable[str]) -> dict[str, str]:
    """A display name per path: the file name, plus as many parent folders as it takes to tell apart files that
    share a name (``report.pdf — 2023/tax``); the full path stays in the tooltip."""
    split = {p: PurePath(p.replace("\\", "/")).parts for p in set(paths)}
    by_name: dict[str, list[str]] = {}
    for path, parts in split.items():
        by_name.setdefault(parts[-1] if parts else path, []).append(path)
    names: dict[str, str] = {}
    for name, group in by_name.items():
        if len(group) == 1:
            names[group[0]] = name
            continue
        depth = 1
        while True:
            labels = {p: "/".join(split[p][-1 - depth : -1]) for p in group}
            if len(set(labels.values())) == len(group) or depth >= max(len(split[p]) for p in group):
                break
            depth += 1
        for path in group:
            names[path] = f"{name} — {labels[path]}" if labels[path] else name
    return names


def status_text(status: str) -> str:
    return STATUS_TEXT.get(status, status.replace("_", " ").capitalize())


def progress_text(progress: IngestProgress) -> str:
    """ "Reading report.pdf · file 3 of 10" / "Embedding report.pdf: 40 of 120 passages · file 3 of 10"."""
    if progress.phase == "idle" or not progress.current_path:
        return "Up to date" if progress.files_total == 0 or progress.files_done >= progress.files_total else ""
    name = Path(progress.current_path).name
    where = f"file {min(progress.files_done + 1, progress.files_total)} of {progress.files_total}"
    if progress.phase == "embedding" and progress.current_chunks_total:
        return f"Embedding {name}: {progress.current_chunks_done} of {progress.current_chunks_total} passages · {where}"
    return f"Reading {name} · {where}"


class DocumentsDialog(QDialog):
    """Add, list and remove documents; watch indexing; pause it. ``collectionAdded`` when files go to a collection."""

    collectionUsed = Signal(str)  # files were added to this collection from here
    modelsRequested = Signal()  # "Choose an embedding model…"

    def __init__(self, docs: DocsController, collection: str | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Documents")
        self.resize(860, 540)
        self.docs = docs
        self._problems: dict[str, FileStatus] = {}  # files that could not be indexed, by path
        self._current = ""  # the file being indexed
        self._rows: dict[str, QTreeWidgetItem] = {}  # by path: a file's status changes without rebuilding the table

        self.collection = QComboBox(self)
        self.collection.setAccessibleName("Collection new files are added to")
        self.collection.setMinimumWidth(180)
        new_collection = QPushButton("New collection…", self)
        new_collection.clicked.connect(self._new_collection)
        self.add_files_button = QPushButton("Add files…", self)
        self.add_files_button.clicked.connect(self.add_files)
        self.add_folder_button = QPushButton("Add folder…", self)
        self.add_folder_button.setToolTip("The folder is watched: new, changed and deleted files are picked up")
        self.add_folder_button.clicked.connect(self.add_folder)
        self.remove_button = QPushButton("Remove", self)
        self.remove_button.setToolTip("Remove the selected documents from the index (the files stay on disk)")
        self.remove_button.clicked.connect(self.remove_selected)
        top = QHBoxLayout()
        top.addWidget(QLabel("Add to:", self))
        top.addWidget(self.collection)
        top.addWidget(new_collection)
        top.addStretch(1)
        top.addWidget(self.add_files_button)
        top.addWidget(self.add_folder_button)
        top.addWidget(self.remove_button)

        self.tree = QTreeWidget(self)
        self.tree.setHeaderLabels(list(COLUMNS))
        self.tree.setRootIsDecorated(False)
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.tree.setAccessibleName("Indexed documents")
        header = self.tree.header()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for column in range(1, len(COLUMNS)):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        self.empty_label = QLabel(
            "No documents yet. Drag files or folders onto the Enclave window, or use Add files… / Add folder…. "
            "Everything is read and indexed on this computer.",
            self,
        )
        self.empty_label.setWordWrap(True)
        mute(self.empty_label)

        self.progress = QProgressBar(self)
        self.progress.setAccessibleName("Indexing progress")
        self.progress.setFormat("%v / %m files")
        self.progress_label = QLabel(self)
        mute(self.progress_label)
        self.pause_button = QPushButton("Pause", self)
        self.pause_button.clicked.connect(self.toggle_pause)
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.setToolTip("Drop the files still waiting; what is indexed stays")
        self.cancel_button.clicked.connect(self.docs.cancel)
        progress_row = QHBoxLayout()
        progress_row.addWidget(self.progress, 1)
        progress_row.addWidget(self.pause_button)
        progress_row.addWidget(self.cancel_button)

        self.model_label = QLabel(self)
        self.model_label.setWordWrap(True)
        mute(self.model_label)
        self.models_button = QPushButton("Choose an embedding model…", self)
        self.models_button.setToolTip("Download or pick one in Models (e.g. nomic-embed-text-v1.5, 84 MB)")
        self.models_button.clicked.connect(self.modelsRequested)
        model_row = QHBoxLayout()
        model_row.addWidget(self.model_label, 1)
        model_row.addWidget(self.models_button)
        self.error_label = QLabel(self)
        self.error_label.setWordWrap(True)
        self.error_label.hide()

        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.tree, 1)
        layout.addWidget(self.empty_label)
        layout.addLayout(progress_row)
        layout.addWidget(self.progress_label)
        layout.addLayout(model_row)
        layout.addWidget(self.error_label)
        layout.addWidget(buttons)

        docs.documentsChanged.connect(self._on_documents)
        docs.waitingChanged.connect(self._on_waiting)
        docs.progress.connect(self._on_progress)
        docs.fileStatus.connect(self._on_file_status)
        docs.ingestPaused.connect(self._update_pause)
        docs.embedderChanged.connect(self.show_embedder)
        docs.error.connect(self._on_error)
        self._set_collections([collection or DEFAULT_COLLECTION])
        if collection:
            self.collection.setCurrentText(collection)
        self._on_documents(docs.documents)
        state = docs.progress_state
        if state is not None:
            self._on_progress(state)
        else:
            self._show_idle()
        self.show_embedder(docs.embedder_info)
        docs.refresh()

    # --- collections ------------------------------------------------------------------------------------------

    def _set_collections(self, extra: list[str]) -> None:
        current = self.collection.currentText()
        names = sorted({d.collection for d in self.docs.documents} | set(extra) | {DEFAULT_COLLECTION})
        self.collection.blockSignals(True)
        self.collection.clear()
        self.collection.addItems(names)
        self.collection.setCurrentText(current or extra[0])
        self.collection.blockSignals(False)

    def _new_collection(self) -> None:
        name, ok = QInputDialog.getText(self, "New collection", "Name:")
        name = name.strip()
        if ok and name:
            self._set_collections([name])
            self.collection.setCurrentText(name)

    # --- requests ---------------------------------------------------------------------------------------------

    def add_paths(self, paths: list[str]) -> None:
        if paths:
            collection = self.collection.currentText() or DEFAULT_COLLECTION
            self.docs.add_paths(paths, collection)
            self.collectionUsed.emit(collection)

    def add_files(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Add documents", str(Path.home()), FILE_FILTER)
        self.add_paths(paths)

    def add_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a folder of documents", str(Path.home()))
        self.add_paths([folder] if folder else [])

    def remove_selected(self) -> None:
        ids = [item.data(0, Qt.ItemDataRole.UserRole) for item in self.tree.selectedItems()]
        document_ids = [int(i) for i in ids if isinstance(i, int)]
        for item in self.tree.selectedItems():
            self._problems.pop(item.toolTip(0), None)
        if document_ids:
            self.docs.remove(document_ids)
        self._on_documents(self.docs.documents)

    @Slot()
    def toggle_pause(self) -> None:
        if self.docs.paused:
            self.docs.resume()
        else:
            self.docs.pause()
        self._update_pause()

    # --- results ----------------------------------------------------------------------------------------------

    @Slot(object)
    def _on_documents(self, documents: list[DocumentInfo]) -> None:
        self._set_collections([self.collection.currentText() or DEFAULT_COLLECTION])
        self._render(documents, self.docs.waiting)

    @Slot(object)
    def _on_waiting(self, waiting: list[QueueItem]) -> None:
        self._render(self.docs.documents, waiting)

    def _render(self, documents: list[DocumentInfo], waiting: list[QueueItem]) -> None:
        """One row per indexed document, per file that could not be indexed, and per file still waiting (the one
        being read or embedded says so), so the table fills while indexing runs instead of at the end."""
        selected = {item.toolTip(0) for item in self.tree.selectedItems()}
        rows: list[tuple[str, list[str], object, str]] = []  # path, cells after the name, document id, status tip
        shown: set[str] = set()
        queued = {q.path for q in waiting}
        for d in documents:
            pages = "" if d.page_count is None else f"{d.page_count:,}"
            waiting_here = d.status == DocStatus.INDEXING and d.path != self._current and d.path in queued
            status = WAITING if waiting_here else d.status
            rows.append((d.path, [d.collection, pages, f"{d.chunks:,}", status_text(status)], d.id, d.error or ""))
            shown.add(d.path)
        for path, problem in self._problems.items():
            if path not in shown:
                cells = [problem.collection, "", "", status_text(problem.status)]
                rows.append((path, cells, None, problem.error or ""))
                shown.add(path)
        for queued_item in waiting:
            if queued_item.path not in shown:
                status = DocStatus.INDEXING if queued_item.path == self._current else WAITING
                rows.append((queued_item.path, [queued_item.collection, "", "", status_text(status)], None, ""))
                shown.add(queued_item.path)
        names = distinct_names(path for path, *_ in rows)
        self.tree.clear()
        self._rows = {}
        for path, cells, document_id, tip in rows:
            item = QTreeWidgetItem([names[path], *cells])
            if document_id is not None:
                item.setData(0, Qt.ItemDataRole.UserRole, document_id)
            item.setToolTip(0, path)
            if tip:
                item.setToolTip(4, tip)
            self.tree.addTopLevelItem(item)
            item.setSelected(path in selected)
            self._rows[path] = item
        self.empty_label.setVisible(self.tree.topLevelItemCount() == 0)
        if self.progress.isHidden():
            self._show_idle()

    def _set_status(self, path: str, status: str) -> None:
        """One row's status, in place (the whole table is rebuilt only when the document list arrives)."""
        item = self._rows.get(path)
        if item is not None:
            item.setText(4, status_text(status))

    @Slot(object)
    def _on_file_status(self, status: FileStatus) -> None:
        if status.status in (DocStatus.OK, DocStatus.UNCHANGED, DocStatus.SKIPPED, DocStatus.REMOVED):
            self._problems.pop(status.path, None)
            self._set_status(status.path, status.status)
        elif status.status != DocStatus.INDEXING:
            self._problems[status.path] = status
            self._on_documents(self.docs.documents)

    @Slot(object)
    def _on_progress(self, progress: IngestProgress) -> None:
        busy = progress.phase != "idle" and progress.files_total > progress.files_done
        current = progress.current_path if busy else ""
        if current != self._current:
            self._current = current
            self._set_status(current, DocStatus.INDEXING)  # the file before it was set by its own status
        if not busy:
            self._show_idle()
            return
        self.progress.show()
        self.progress.setRange(0, max(1, progress.files_total))
        self.progress.setValue(progress.files_done)
        self.progress_label.setText(progress_text(progress))
        self.pause_button.setEnabled(True)
        self.cancel_button.setEnabled(True)
        self._update_pause()

    def _show_idle(self) -> None:
        self.progress.setRange(0, 1)
        self.progress.setValue(1)
        self.progress.hide()
        count = sum(d.status == DocStatus.OK for d in self.docs.documents)
        self.progress_label.setText(
            "Indexing is paused."
            if self.docs.paused
            else f"Up to date: {count:,} document{'s' * (count != 1)} indexed."
        )
        self.pause_button.setEnabled(self.docs.paused)
        self.cancel_button.setEnabled(False)
        self._update_pause()

    @Slot()
    def _update_pause(self) -> None:
        paused = self.docs.paused
        self.pause_button.setText("Resume" if paused else "Pause")
        if paused:
            self.progress.setFormat("Paused · %v / %m files")
        elif self.progress.maximum() > 1 or self.progress.value() < self.progress.maximum():
            self.progress.setFormat("%v / %m files")

    @Slot(object)
    def show_embedder(self, info: EmbedderInfo | None) -> None:
        self.models_button.setText("Choose an embedding model…" if info is None else "Change…")
        if info is None:
            self.model_label.setText(
                "No embedding model is chosen, so search matches keywords only. Choose one under File → Models… "
                "(role: embedding) to also find passages by meaning."
            )
        else:
            self.model_label.setText(
                f"Embedding model: {info.name} ({info.dimension}-dimensional) · search combines keywords and meaning"
            )

    @Slot(str)
    def _on_error(self, message: str) -> None:
        self.error_label.setText(message)
        self.error_label.show()


__all__ = ["DocumentsDialog", "distinct_names", "progress_text", "status_text"]

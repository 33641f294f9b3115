"""Settings → Models: what this computer should run, what is installed, downloads with progress.

The hardware probe and fit estimates are Qt-free (enclave.models); downloads run on their own thread
(workers.download_worker). This dialog only shows their results and forwards the user's choices.

Nothing here waits on the GUI thread for a disk, a probe or a model header: the rows are listed at once with
"Checking…", and the probe, each model's fit and load plan (they read its GGUF header), imports and removals run on
worker threads (workers.tasks); their results fill the dialog in as they arrive.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from enclave.models.catalog import Catalog, CatalogEntry, load_catalog
from enclave.models.downloader import DownloadProgress
from enclave.models.fit import FitEstimate, Verdict, estimate_entry
from enclave.models.hardware import Hardware, probe_hardware
from enclave.models.hardware_child import last_probe
from enclave.models.installed import InstalledModel, ModelError, ModelRegistry
from enclave.models.placement import for_planning
from enclave.models.recommend import Recommendation, recommend
from enclave.usecases.models import import_file, remove_model
from enclave.workers.download_worker import DownloadController
from enclave.workers.tasks import URGENT, Task, TaskRunner

VERDICT_TEXT = {
    Verdict.FULL_GPU: "runs on the GPU",
    Verdict.PARTIAL_OFFLOAD: "GPU + CPU",
    Verdict.MOE_EXPERTS_IN_RAM: "GPU, experts in RAM",
    Verdict.CPU_ONLY: "CPU only",
    Verdict.WONT_FIT: "won't fit",
}


def fit_text(estimate: FitEstimate) -> str:
    if estimate.verdict is Verdict.WONT_FIT:
        return "won't fit"
    rate = estimate.tokens_per_second
    speed = f"{rate:.0f}" if rate >= 1.5 else f"{rate:.1f}"
    how = "measured here" if estimate.speed_measured else "estimate"
    return f"{VERDICT_TEXT[estimate.verdict]}, ~{speed} tok/s ({how}), {estimate.context_length:,} ctx"


def gb(size: int) -> str:
    """1.2 GB, or 91 MB for a small model (a MiniLM would otherwise read "0.0 GB")."""
    if size < 1e9:
        return f"{max(1, round(size / 1e6))} MB"
    return f"{size / 1e9:.1f} GB"


# What the download reports when there is no network, worded by the OS, urllib3 or huggingface_hub.
OFFLINE_MARKERS = (
    "name or service not known",
    "temporary failure in name resolution",
    "nodename nor servname",
    "getaddrinfo failed",
    "network is unreachable",
    "failed to resolve",
    "failed to establish a new connection",
    "no route to host",
)
OFFLINE_TEXT = "No internet connection — Enclave works offline; downloading a model needs a connection."


def download_error_text(text: str) -> str:
    """The sentence a failed download shows: a missing connection in plain words, anything else as reported."""
    if any(marker in text.lower() for marker in OFFLINE_MARKERS):
        return OFFLINE_TEXT
    return f"The download failed: {text}"


CHECKING = "Checking…"  # a row's fit and placement until its header has been read
CHECKING_COMPUTER = "Checking this computer…"  # the recommendation until the hardware probe has answered


# --- the work done on worker threads: plain functions, no Qt ----------------------------------------------------


@dataclass(frozen=True)
class Planning:
    """What the dialog's upper half shows: this computer, the catalog, the recommendation, each variant's fit."""

    hardware: Hardware
    catalog: Catalog
    recommendation: Recommendation | None
    variants: tuple[tuple[str, str], ...]  # (the "Other variants" text, catalog id)


def planning(hardware: Hardware, catalog: Catalog) -> Planning:
    variants = tuple(
        (f"{entry.display_name} · {gb(entry.total_size)} · {fit_text(estimate_entry(entry, hardware))}", entry.id)
        for entry in catalog.chat()
    )
    return Planning(hardware, catalog, recommend(hardware, catalog), variants)


def probe_planning(models_dir: Path) -> Planning:
    """Planning for this computer. The probe with llama.cpp's device list runs in a child process (recommendation
    worker); until one has finished, what is known without llama.cpp (which the window's process never loads). Plans
    see Auto's GPUs with their measured speed factors."""
    hardware = for_planning(last_probe() or probe_hardware(models_dir, use_llama_cpp=False))
    return planning(hardware, load_catalog())


def runs_on_text(model: InstalledModel, hardware: Hardware) -> str:
    """Where the model would run: "Auto (planned: GPU: 28 of 36 layers · …)", or the model's own settings."""
    if model.role != "chat":
        return "CPU (embedding)"
    from enclave.models.placement import PlanChoices, PlanError, plan_load

    overrides = model.overrides
    choices = PlanChoices(
        context_length=_int_or_none(overrides.get("context_length")),
        gpu_layers=_int_or_none(overrides.get("gpu_layers")),
        kv_cache_type=str(overrides["kv_cache_type"]) if "kv_cache_type" in overrides else None,
    )
    try:
        plan = plan_load(Path(model.path), hardware, choices)
    except (PlanError, ValueError, OSError) as exc:
        return f"Auto (cannot plan: {exc})"
    return f"Auto (planned: {plan.summary()})" if not plan.user_fields else plan.summary()


def file_fit_text(model: InstalledModel, hardware: Hardware) -> str:
    """Fit from the file's own header (imported models have no catalog facts)."""
    from enclave.models.fit import FitError, estimate_fit, facts_from_headers
    from enclave.models.gguf import GGUFError, read_gguf_header

    try:
        facts = facts_from_headers([read_gguf_header(Path(p)) for p in model.paths])
        return fit_text(estimate_fit(facts, hardware))
    except (GGUFError, FitError, OSError) as exc:
        return f"unknown ({exc})"


def row_facts(model: InstalledModel, hardware: Hardware, catalog: Catalog) -> tuple[str, str]:
    """A row's "On this computer" and "Runs on" (reads the model's GGUF header: a worker thread's job)."""
    entry = catalog.get(model.catalog_id) if model.catalog_id else None
    fit = fit_text(estimate_entry(entry, hardware)) if entry is not None else file_fit_text(model, hardware)
    return fit, runs_on_text(model, hardware)


class ModelsDialog(QDialog):
    useModel = Signal(str)  # the path of the model to load for chat
    useEmbeddingModel = Signal(str)  # the path of the embedding model documents are now embedded with
    rowsChecked = Signal()  # every listed model's fit and placement are shown
    importFinished = Signal(object)  # the InstalledModel an import_path() added, or None when the file was refused

    def __init__(
        self,
        registry: ModelRegistry,
        downloads: DownloadController,
        models_dir: Path,
        parent: QWidget | None = None,
        hardware: Hardware | None = None,
        tasks: TaskRunner | None = None,
    ) -> None:
        """``hardware``: plan for this (no probe). ``tasks``: the window's runner for the work off the GUI thread;
        without one the dialog has its own, shut down when it closes."""
        super().__init__(parent)
        self.setWindowTitle("Models")
        self.setAccessibleName("Models")
        self.resize(860, 560)
        self.registry = registry
        self.downloads = downloads
        self.models_dir = models_dir
        self.tasks = tasks if tasks is not None else TaskRunner(self, name="enclave-models-dialog")
        self._own_tasks = tasks is None
        self._started: list[Task] = []  # this dialog's tasks: their results are dropped once it has closed
        # Known once the background probe has answered (at once when ``hardware`` is given).
        self.hardware: Hardware | None = None
        self.catalog: Catalog | None = None
        self.recommendation: Recommendation | None = None
        self._planning = True  # until this computer has been checked (or that failed)
        self._start_recommended = False  # "Download the recommended model" was asked for before it was known
        self._generation = 0  # of the rows shown: a late fit for rows listed before is not shown in newer ones
        self._unchecked: set[str] = set()  # ids of rows still "Checking…"
        self._working = 0  # imports and removals under way
        self._closed = False

        # --- recommendation ---
        self.recommend_label = QLabel(self)
        self.recommend_label.setWordWrap(True)
        self.recommend_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.recommend_button = QPushButton(self)
        self.recommend_button.setAccessibleName("Download the recommended model")
        self.recommend_button.clicked.connect(self.download_recommended)
        self.catalog_box = QComboBox(self)
        self.catalog_box.setAccessibleName("Other DeepSeek R1 variants")
        self.catalog_button = QPushButton("Download", self)
        self.catalog_button.setAccessibleName("Download the selected variant")
        self.catalog_button.clicked.connect(self.download_selected)

        # --- download progress ---
        self.progress = QProgressBar(self)
        self.progress.setAccessibleName("Download progress")
        self.progress_label = QLabel(self)
        self.pause_button = QPushButton("Pause", self)
        self.pause_button.setAccessibleName("Pause the download")
        self.pause_button.clicked.connect(downloads.pause)
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.setAccessibleName("Cancel the download")
        self.cancel_button.clicked.connect(downloads.cancel)

        # --- installed ---
        self.table = QTableWidget(0, 6, self)
        self.table.setAccessibleName("Installed models")
        self.table.setHorizontalHeaderLabels(["Model", "Quant", "Size", "Source", "On this computer", "Runs on"])
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(5, QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().hide()
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QTableWidget.SelectionMode.SingleSelection)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        self.use_button = QPushButton("Use for chat", self)
        self.use_button.setAccessibleName("Use the selected model for chat")
        self.use_button.clicked.connect(self.use_selected)
        self.remove_button = QPushButton("Remove…", self)
        self.remove_button.setAccessibleName("Remove the selected model")
        self.remove_button.clicked.connect(self.remove_selected)
        self.settings_button = QPushButton("Model settings…", self)
        self.settings_button.setAccessibleName("Settings for the selected model")
        self.settings_button.setToolTip("Context length, GPU layers and KV cache type for this model only")
        self.settings_button.clicked.connect(self.edit_selected)
        self.token_button = QPushButton("Hugging Face token…", self)
        self.token_button.setAccessibleName("Set the Hugging Face token")
        self.token_button.setToolTip("Only for gated models; kept in the system keyring, never in a file")
        self.token_button.clicked.connect(self.edit_token)
        self.import_button = QPushButton("Import a GGUF file…", self)
        self.import_button.setAccessibleName("Import a model file")
        self.import_button.clicked.connect(self.import_file)
        self.message = QLabel(self)
        self.message.setWordWrap(True)
        self.working = QProgressBar(self)  # busy while an import or a removal runs
        self.working.setAccessibleName("Working")
        self.working.setRange(0, 0)
        self.working.setMaximumWidth(120)
        self.working.setTextVisible(False)
        self.working.hide()
        self.retry_button = QPushButton("Retry", self)
        self.retry_button.setAccessibleName("Retry the download")
        self.retry_button.clicked.connect(self.retry)
        self.retry_button.hide()
        self._last_entry: CatalogEntry | None = None

        recommended = QGroupBox("Recommended for this computer", self)
        rec_layout = QVBoxLayout(recommended)
        rec_layout.addWidget(self.recommend_label)
        rec_row = QHBoxLayout()
        rec_row.addWidget(self.recommend_button)
        rec_row.addStretch(1)
        rec_layout.addLayout(rec_row)
        other_row = QHBoxLayout()
        other_row.addWidget(self.catalog_box, 1)
        other_row.addWidget(self.catalog_button)
        rec_layout.addLayout(other_row)
        progress_row = QHBoxLayout()
        progress_row.addWidget(self.progress, 1)
        progress_row.addWidget(self.pause_button)
        progress_row.addWidget(self.cancel_button)
        rec_layout.addLayout(progress_row)
        rec_layout.addWidget(self.progress_label)

        installed = QGroupBox("Installed", self)
        inst_layout = QVBoxLayout(installed)
        inst_layout.addWidget(self.table)
        buttons = QHBoxLayout()
        buttons.addWidget(self.use_button)
        buttons.addWidget(self.remove_button)
        buttons.addWidget(self.settings_button)
        buttons.addStretch(1)
        buttons.addWidget(self.token_button)
        buttons.addWidget(self.import_button)
        inst_layout.addLayout(buttons)

        layout = QVBoxLayout(self)
        layout.addWidget(recommended)
        layout.addWidget(installed, 1)
        message_row = QHBoxLayout()
        message_row.addWidget(self.working)
        message_row.addWidget(self.message, 1)
        message_row.addWidget(self.retry_button)
        layout.addLayout(message_row)

        downloads.progress.connect(self._on_progress)
        downloads.finished.connect(self._on_finished)
        downloads.failed.connect(self._on_failed)
        downloads.paused.connect(self._on_paused)
        downloads.cancelled.connect(self._on_cancelled)
        self._show_recommendation()
        self._set_downloading(downloads.busy)
        self.refresh()
        if hardware is not None:
            self._on_planning(planning(hardware, load_catalog()))
        else:
            self._run(probe_planning, models_dir, on_done=self._on_planning, on_error=self._on_planning_failed)

    def _run(
        self,
        fn: Callable[..., Any],
        *args: Any,
        on_done: Callable[[Any], object],
        on_error: Callable[[BaseException], object] | None = None,
        priority: int = URGENT,
    ) -> Task:
        """``fn(*args)`` on a worker thread; ``on_done``/``on_error`` here, unless the dialog has closed since. The
        rows' checks are background work (``priority`` 0); everything else is something the user waits for."""
        self._started = [t for t in self._started if not t.done]
        task = self.tasks.run(fn, *args, on_done=on_done, on_error=on_error, priority=priority)
        if self._closed:
            task.cancel()
        self._started.append(task)
        return task

    def done(self, result: int) -> None:
        self._stop_tasks()
        super().done(result)

    def closeEvent(self, event: QCloseEvent) -> None:
        self._stop_tasks()  # QDialog.closeEvent calls done() only when the dialog was shown
        super().closeEvent(event)

    def _stop_tasks(self) -> None:
        self._closed = True  # a download that ends later does not start work for this closed dialog
        for task in self._started:
            task.cancel()  # what is still running finishes, but the closed dialog is not updated
        if self._own_tasks:
            self.tasks.shutdown()

    # --- recommendation and downloads -------------------------------------------------------------------------

    def _on_planning(self, plan: Planning) -> None:
        self._planning = False
        self.hardware, self.catalog, self.recommendation = plan.hardware, plan.catalog, plan.recommendation
        self.catalog_box.clear()
        for text, entry_id in plan.variants:
            self.catalog_box.addItem(text, entry_id)
        self._show_recommendation()
        self._set_downloading(self.downloads.busy)
        self._check_rows()
        if self._start_recommended:
            self._start_recommended = False
            self.download_recommended()

    def _on_planning_failed(self, exc: BaseException) -> None:
        self._planning = False
        self._start_recommended = False
        if self.message.text() == CHECKING_COMPUTER:
            self.message.clear()
        self.recommend_label.setText(f"Could not check this computer ({exc}). You can still import a GGUF model.")
        self.recommend_button.hide()
        self._unchecked.clear()
        for row in range(self.table.rowCount()):
            self._show_row(row, ("unknown", "unknown"))
        self.rowsChecked.emit()

    def _show_recommendation(self) -> None:
        rec = self.recommendation
        if self.hardware is None:
            self.recommend_label.setText(CHECKING_COMPUTER)
            self.recommend_button.hide()
            return
        if rec is None:
            self.recommend_label.setText(
                "Nothing in the catalog fits this computer's memory. You can still import a smaller GGUF model."
            )
            self.recommend_button.hide()
            return
        self.recommend_button.show()
        self.recommend_label.setText(f"<b>{rec.entry.display_name}</b> ({gb(rec.entry.total_size)}) — {rec.reason}")
        installed = any(m.catalog_id == rec.entry.id for m in self.registry.models())
        self.recommend_button.setText("Installed" if installed else f"Download ({gb(rec.entry.total_size)})")
        self.recommend_button.setEnabled(not installed)

    def _start(self, entry: CatalogEntry) -> None:
        free = self.hardware.disk_free if self.hardware is not None else None
        if free is not None and free < entry.total_size:
            self.message.setText(f"{entry.display_name} needs {gb(entry.total_size)}; only {gb(free)} is free.")
            return
        self._last_entry = entry
        self.retry_button.hide()
        if self.downloads.start(entry):
            self.message.setText(f"Downloading {entry.display_name}…")
            self._set_downloading(True)

    @Slot()
    def retry(self) -> None:
        if self._last_entry is not None:
            self._start(self._last_entry)

    @Slot()
    def download_recommended(self) -> None:
        if self.recommendation is not None:
            self._start(self.recommendation.entry)
        elif self.hardware is None:  # still probing: it starts once the recommendation is known
            self._start_recommended = True
            self.message.setText(CHECKING_COMPUTER)

    @Slot()
    def download_selected(self) -> None:
        entry_id = self.catalog_box.currentData()
        if entry_id and self.catalog is not None:
            self._start(self.catalog.get(str(entry_id)))

    def _set_downloading(self, active: bool) -> None:
        self.progress.setVisible(active)
        self.pause_button.setVisible(active)
        self.cancel_button.setVisible(active)
        self.progress_label.setVisible(active)
        self.catalog_button.setEnabled(not active and self.catalog is not None)
        if self.recommendation is not None and not active:
            self._show_recommendation()
        elif active:
            self.recommend_button.setEnabled(False)

    @Slot(object)
    def _on_progress(self, p: DownloadProgress) -> None:
        self.progress.setRange(0, 1000)
        self.progress.setValue(int(1000 * p.bytes_done / max(p.bytes_total, 1)))
        eta = f", about {p.eta_s / 60:.0f} min left" if p.eta_s else ""
        self.progress_label.setText(
            f"{p.file} ({p.file_index + 1} of {p.file_count}): {gb(p.bytes_done)} of {gb(p.bytes_total)} "
            f"at {p.speed_bps / 1e6:.1f} MB/s{eta}"
        )

    @Slot(object)
    def _on_finished(self, model: InstalledModel) -> None:
        self.message.setText(f"{model.name} is installed and verified.")
        # The download thread wrote the list: read it again, off this thread.
        self._run(ModelRegistry, self.registry.path, on_done=self._on_listed, on_error=self._on_list_failed)

    def _on_listed(self, registry: ModelRegistry) -> None:
        self.registry = registry
        self._set_downloading(False)
        self.refresh()

    def _on_list_failed(self, exc: BaseException) -> None:
        self._set_downloading(False)
        self.message.setText(f"Could not read the list of installed models: {exc}")

    @Slot(str)
    def _on_failed(self, text: str) -> None:
        self._set_downloading(False)
        self.message.setText(download_error_text(text))
        self.retry_button.setVisible(self._last_entry is not None)

    @Slot(str)
    def _on_paused(self, text: str) -> None:
        self._set_downloading(False)
        self.message.setText(f"{text} Press Download again to continue.")

    @Slot()
    def _on_cancelled(self) -> None:
        self._set_downloading(False)
        self.message.setText("Download cancelled; the partial file was deleted.")

    # --- installed models -------------------------------------------------------------------------------------

    def refresh(self) -> None:
        """List the installed models at once; each row's fit and placement follow from a worker thread."""
        models = self.registry.models()
        self._generation += 1
        self.table.setRowCount(len(models))
        for row, model in enumerate(models):
            source = "verified download" if model.verified else "imported (unverified)"
            values = [model.name, model.quant, gb(model.size), source, CHECKING, CHECKING]
            for column, value in enumerate(values):
                item = QTableWidgetItem(value)
                item.setData(Qt.ItemDataRole.UserRole, model.id)
                item.setToolTip(value)
                self.table.setItem(row, column, item)
        self._update_buttons()
        self._check_rows()

    @property
    def checking(self) -> bool:
        """This computer, or some row's fit and placement, is still being checked on a worker thread."""
        return self._planning or bool(self._unchecked)

    def _check_rows(self) -> None:
        """Fit and placement of every row, each computed on a worker thread (once the hardware is known)."""
        if self.hardware is None or self.catalog is None:
            return  # _on_planning checks them
        models = self.registry.models()
        generation = self._generation
        self._unchecked = {m.id for m in models}
        if not models:
            self.rowsChecked.emit()
        for model in models:
            self._run(
                row_facts,
                model,
                self.hardware,
                self.catalog,
                on_done=partial(self._on_row_facts, generation, model.id),
                on_error=partial(self._on_row_failed, generation, model.id),
                priority=0,
            )

    def _on_row_facts(self, generation: int, model_id: str, facts: tuple[str, str]) -> None:
        if generation != self._generation:
            return  # the rows were listed again since
        row = next((r for r in range(self.table.rowCount()) if self._row_id(r) == model_id), None)
        if row is not None:
            self._show_row(row, facts)
        self._unchecked.discard(model_id)
        if not self._unchecked:
            self.rowsChecked.emit()

    def _on_row_failed(self, generation: int, model_id: str, exc: BaseException) -> None:
        self._on_row_facts(generation, model_id, (f"unknown ({exc})", f"Auto (cannot plan: {exc})"))

    def _row_id(self, row: int) -> str | None:
        item = self.table.item(row, 0)
        return str(item.data(Qt.ItemDataRole.UserRole)) if item is not None else None

    def _show_row(self, row: int, facts: tuple[str, str]) -> None:
        for column, value in zip((4, 5), facts, strict=True):
            item = self.table.item(row, column)
            if item is not None:
                item.setText(value)
                item.setToolTip(value)

    @Slot()
    def _update_buttons(self) -> None:
        """Use, Remove and Model settings act on the selected row: disabled (and saying why) without one."""
        model = self.selected() if self.table.selectedItems() else None
        for button in (self.use_button, self.remove_button, self.settings_button):
            button.setEnabled(model is not None)
        self.remove_button.setEnabled(model is not None and not self._working)  # one change of the list at a time
        embedding = model is not None and model.role == "embedding"
        self.use_button.setText("Use for documents" if embedding else "Use for chat")
        self.use_button.setToolTip("" if model is not None else "Select a model in the list first")

    def selected(self) -> InstalledModel | None:
        row = self.table.currentRow()
        item = self.table.item(row, 0) if row >= 0 else None
        return self.registry.get(str(item.data(Qt.ItemDataRole.UserRole))) if item is not None else None

    @Slot()
    def use_selected(self) -> None:
        model = self.selected()
        if model is not None:
            self.registry.set_active(model.id, model.role)
            if model.role == "chat":
                self.useModel.emit(model.path)
                self.message.setText(f"Loading {model.name}; the chat stays, and the next answer comes from it.")
            else:
                self.useEmbeddingModel.emit(model.path)
                self.message.setText(f"Documents are re-embedded with {model.name} in the background.")

    @Slot()
    def remove_selected(self) -> None:
        model = self.selected()
        if model is None:
            return
        what = "Its files will be deleted." if model.source == "catalog" else "Your file stays where it is."
        if QMessageBox.question(self, "Remove model", f"Remove {model.name}? {what}") != QMessageBox.StandardButton.Yes:
            return
        self._set_working(True)
        self.message.setText(f"Removing {model.name}…")
        self._run(
            remove_model,
            self.registry.path,
            model.id,
            self.models_dir,
            on_done=partial(self._on_removed, model),
            on_error=self._on_remove_failed,
        )

    def _on_removed(self, model: InstalledModel, registry: ModelRegistry) -> None:
        self._set_working(False)
        self.registry = registry
        self.message.setText(f"Removed {model.name}.")
        self.refresh()

    def _on_remove_failed(self, exc: BaseException) -> None:
        self._set_working(False)
        self.message.setText(str(exc))

    def _set_working(self, working: bool) -> None:
        """The busy bar and the buttons that change the list, while an import or a removal runs."""
        self._working = max(0, self._working + (1 if working else -1))
        busy = self._working > 0
        self.working.setVisible(busy)
        self.import_button.setEnabled(not busy)
        self._update_buttons()

    @Slot()
    def edit_selected(self) -> None:
        model = self.selected()
        if model is None:
            return
        dialog = ModelSettingsDialog(model, self)
        if dialog.exec():
            try:
                self.registry.set_overrides(model.id, dialog.overrides())
            except ModelError as exc:
                self.message.setText(str(exc))
                return
            self.message.setText(f"Saved. {model.name} uses these settings the next time it loads.")

    @Slot()
    def edit_token(self) -> None:
        from PySide6.QtWidgets import QInputDialog, QLineEdit

        from enclave.models.hf_token import TokenStoreError, set_token

        token, ok = QInputDialog.getText(
            self, "Hugging Face token", "Token (starts with hf_):", QLineEdit.EchoMode.Password
        )
        if not ok or not token.strip():
            return
        try:
            set_token(token)
        except TokenStoreError as exc:
            self.message.setText(str(exc))
        else:
            self.message.setText("Token saved in the system keyring.")

    @Slot()
    def import_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import a model", str(Path.home()), "GGUF models (*.gguf)")
        if path:
            self.import_path(Path(path))

    def import_path(self, path: Path) -> Task:
        """Check and register ``path`` on a worker thread (the dialog says so meanwhile); ``importFinished`` then
        brings the model, or None when the file was refused (the message says why)."""
        self._set_working(True)
        self.message.setText(f"Checking {path.name}…")
        return self._run(
            import_file,
            self.registry.path,
            path,
            on_done=self._on_imported,
            on_error=partial(self._on_import_failed, path),
        )

    def _on_imported(self, result: tuple[ModelRegistry, InstalledModel]) -> None:
        self._set_working(False)
        self.registry, model = result
        self.message.setText(f"Imported {model.name} (unverified: it did not come from the catalog).")
        self.refresh()
        self.importFinished.emit(model)

    def _on_import_failed(self, path: Path, exc: BaseException) -> None:
        self._set_working(False)
        self.message.setText(str(exc) if isinstance(exc, ModelError) else f"Could not import {path.name}: {exc}")
        self.importFinished.emit(None)


def _int_or_none(value: object) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class ModelSettingsDialog(QDialog):
    """Per-model overrides of the global settings."""

    def __init__(self, model: InstalledModel, parent: QWidget | None = None) -> None:
        from PySide6.QtWidgets import QDialogButtonBox, QFormLayout, QSpinBox

        from enclave.engine.types import KV_CACHE_TYPES

        super().__init__(parent)
        self.setWindowTitle(f"Settings for {model.name}")
        current = model.overrides
        self.context = QSpinBox(self)
        self.context.setRange(0, 1 << 20)
        self.context.setSingleStep(1024)
        self.context.setSpecialValueText("Use the global setting")
        self.context.setValue(int(current.get("context_length", 0)))
        self.context.setAccessibleName("Context length for this model")
        self.layers = QSpinBox(self)
        self.layers.setRange(-2, 1000)
        self.layers.setSpecialValueText("Use the global setting")
        self.layers.setValue(int(current.get("gpu_layers", -2)))
        self.layers.setAccessibleName("GPU layers for this model (-1: all)")
        self.cache = QComboBox(self)
        self.cache.addItems(list(KV_CACHE_TYPES))
        self.cache.setCurrentText(str(current.get("kv_cache_type", "f16")))
        self.cache.setAccessibleName("KV cache type")
        form = QFormLayout(self)
        form.addRow("Context length", self.context)
        form.addRow("GPU layers", self.layers)
        form.addRow("KV cache", self.cache)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel, self)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def overrides(self) -> dict[str, int | str]:
        result: dict[str, int | str] = {"kv_cache_type": self.cache.currentText()}
        if self.context.value() > 0:
            result["context_length"] = max(256, self.context.value())
        if self.layers.value() >= -1:
            result["gpu_layers"] = self.layers.value()
        return result

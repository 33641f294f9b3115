"""Settings → a form over the typed Settings; validation comes from the settings module, not from the widgets.

One group per area (Model, Thinking, Documents, Appearance, Privacy, Advanced), each row with a line of help. To add
a setting, add its widget in ``__init__`` and a row to its area's group (or a new group) in ``_layout_groups``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from enclave.settings.settings import Settings, SettingsError, validate
from enclave.ui.style import SPACE_M, SPACE_S, TYPE_CAPTION, mute, scaled_font

APPEARANCE_LABELS = (("Same as the system", "system"), ("Light", "light"), ("Dark", "dark"))

MODEL_FIELDS = ("model_path", "context_length", "gpu_layers", "kv_cache_type", "threads", "device")


class SettingsDialog(QDialog):
    appearanceChanged = Signal(str)  # previewed live; Cancel goes back to the original

    def __init__(
        self,
        settings: Settings,
        parent: QWidget | None = None,
        *,
        embedding_models: Sequence[tuple[str, str]] = (),
        embedding_active: str | None = None,
        placement: str = "",
        devices: Sequence[tuple[str, str]] = (),
    ) -> None:
        """``embedding_models``: (id, name) of the installed embedding models; ``embedding_active``: the id in use;
        ``placement``: where the loaded model runs now (the load plan), shown beside the Auto choices;
        ``devices``: (llama.cpp device name, label) of each GPU llama.cpp reports, for "Run on"."""
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.setAccessibleName("Settings")
        self._original = settings
        self.result_settings: Settings | None = None

        self.model_path = QLineEdit(settings.model_path or "", self)
        self.model_path.setAccessibleName("Model file")
        browse = QPushButton("Browse…", self)
        browse.setAccessibleName("Choose a model file")
        browse.clicked.connect(self._browse)
        model_row = QHBoxLayout()
        model_row.setContentsMargins(0, 0, 0, 0)
        model_row.addWidget(self.model_path, 1)
        model_row.addWidget(browse)

        # Auto (the load plan decides) is the lowest value of each box; an explicit value is the user's and wins.
        self.context = self._spin(0, 1_048_576, settings.context_length or 0, "Context length (tokens)", step=512)
        self.context.setSpecialValueText("Auto")
        layers = settings.gpu_layers if settings.gpu_layers is not None else -2
        self.gpu_layers = self._spin(-2, 1000, layers, "GPU layers (Auto, -1 = all, 0 = CPU only)")
        self.gpu_layers.setSpecialValueText("Auto (what fits)")
        self.kv_cache = QComboBox(self)
        self.kv_cache.setAccessibleName("KV cache type")
        for label, value in (("Auto", None), ("f16 (full precision)", "f16"), ("q8_0", "q8_0"), ("q4_0", "q4_0")):
            self.kv_cache.addItem(label, value)
        self.kv_cache.setCurrentIndex(max(0, self.kv_cache.findData(settings.kv_cache_type)))
        self.device = QComboBox(self)
        self.device.setAccessibleName("Run on")
        self.device.setToolTip("Auto prefers a discrete GPU and never a GPU driver that runs on the CPU")
        self.device.addItem("Auto", None)
        for name, label in devices:
            self.device.addItem(label, name)
        self.device.addItem("CPU only", "CPU")
        if settings.device and self.device.findData(settings.device) < 0:
            self.device.addItem(settings.device, settings.device)  # chosen earlier; not among the devices probed now
        self.device.setCurrentIndex(max(0, self.device.findData(settings.device)))
        self.plan = QLabel(f"Planned now: {placement}" if placement else "Auto values are planned when a model loads.")
        self.plan.setWordWrap(True)
        self.plan.setAccessibleName("Where the model runs")
        self.threads = self._spin(0, 1024, settings.threads or 0, "CPU threads (0 = automatic)")
        self.threads.setSpecialValueText("Automatic")
        self.temperature, self.temperature_default = self._optional_float(settings.temperature, 0.0, 2.0, 0.6)
        self.top_p, self.top_p_default = self._optional_float(settings.top_p, 0.0, 1.0, 0.95)
        self.max_tokens = self._spin(0, 1_048_576, settings.max_tokens, "Maximum answer length (0 = no limit)")
        self.max_tokens.setSpecialValueText("No limit")
        self.think_budget = self._spin(0, 1_048_576, settings.think_budget, "Thinking budget in tokens (0 = off)")
        self.think_budget.setSpecialValueText("Off (think as long as needed)")
        self.system_prompt = QPlainTextEdit(settings.default_system_prompt, self)
        self.system_prompt.setAccessibleName("Default system prompt for new chats")
        self.system_prompt.setFixedHeight(80)
        self.embedding = QComboBox(self)
        self.embedding.setAccessibleName("Embedding model for document search")
        self.embedding.setToolTip("Documents are searched by meaning with this model; changing it re-embeds them")
        self.embedding.addItem("None — keyword search only", None)
        for model_id, name in embedding_models:
            self.embedding.addItem(name, model_id)
        index = self.embedding.findData(embedding_active) if embedding_active else 0
        self.embedding.setCurrentIndex(max(0, index))
        self._embedding_original = self.chosen_embedding
        self.appearance = QComboBox(self)
        self.appearance.setAccessibleName("Appearance")
        for label, value in APPEARANCE_LABELS:
            self.appearance.addItem(label, value)
        self.appearance.setCurrentIndex(max(0, self.appearance.findData(settings.appearance)))
        self.appearance.currentIndexChanged.connect(lambda _i: self.appearanceChanged.emit(self.chosen_appearance))
        self.error = QLabel(self)
        self.error.setWordWrap(True)
        self.error.hide()
        self.model_row = model_row

        self._make_api_server_widgets(settings)
        content = QWidget(self)
        self.groups = QVBoxLayout(content)
        self.groups.setSpacing(SPACE_M)
        self._layout_groups()
        self.groups.addStretch(1)
        scroll = QScrollArea(self)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setWidget(content)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel, self)
        buttons.accepted.connect(self._accept)
        buttons.rejected.connect(self.reject)
        outer = QVBoxLayout(self)
        outer.addWidget(scroll, 1)
        outer.addWidget(self.error)
        outer.addWidget(buttons)
        self.resize(640, 720)

    def _layout_groups(self) -> None:
        model = self.group("Model", "Which model answers, and how much of it runs on the GPU. Auto lets Enclave plan.")
        self.row(model, "Model file", self.model_row, "A .gguf file; Models… lists the ones installed.")
        self.row(model, "Run on", self.device, "Auto prefers a discrete GPU; CPU only if a GPU driver misbehaves.")
        self.row(model, "Context length", self.context, "How much of the chat the model can see at once.")
        self.row(model, "GPU layers", self.gpu_layers, "More layers on the GPU answer faster; Auto fits what fits.")
        self.row(model, "", self.plan)
        thinking = self.group("Thinking", "How DeepSeek R1 reasons and answers.")
        self.row(thinking, "Thinking budget", self.think_budget, "Cap the reasoning before the answer (per chat).")
        self.row(thinking, "Maximum answer length", self.max_tokens, "Longer answers are cut off, with Continue.")
        self.row(
            thinking,
            "Temperature",
            self._with_default(self.temperature, self.temperature_default),
            "Lower is more focused, higher more varied; R1 is tuned for 0.6.",
        )
        self.row(thinking, "Top-p", self._with_default(self.top_p, self.top_p_default))
        self.row(thinking, "Default system prompt", self.system_prompt, "Instructions every new chat starts with.")
        documents = self.group("Documents", "Documents dropped on the window are searched to answer, with citations.")
        self.row(documents, "Search by meaning with", self.embedding, "Without a model, search matches keywords.")
        appearance = self.group("Appearance", "")
        self.row(appearance, "Theme", self.appearance, "Applied at once; “system” follows the desktop.")
        self.group(
            "Privacy",
            "Chats, documents and models stay on this computer. Nothing is sent anywhere unless you start a model "
            "download; the Hugging Face token (for gated models) is kept in the system keyring.",
        )
        self._layout_api_server()
        advanced = self.group("Advanced", "Leave these on Auto unless you know your hardware.")
        self.row(advanced, "KV cache", self.kv_cache, "Smaller types fit a longer context in the same memory.")
        self.row(advanced, "CPU threads", self.threads, "Automatic uses the physical cores.")

    def group(self, title: str, help_text: str) -> QFormLayout:
        """A titled group with a line of help; returns its form for rows."""
        box = QGroupBox(title, self)
        box.setAccessibleName(title)
        form = QFormLayout(box)
        form.setVerticalSpacing(SPACE_S)
        if help_text:
            label = QLabel(help_text, box)
            label.setWordWrap(True)
            mute(label)
            form.addRow(label)
        self.groups.addWidget(box)
        return form

    def row(self, form: QFormLayout, label: str, field: QWidget | QHBoxLayout, help_text: str = "") -> None:
        if isinstance(field, QHBoxLayout):
            holder = QWidget(self)
            field.setContentsMargins(0, 0, 0, 0)
            holder.setLayout(field)
            field = holder
        if help_text:
            field.setToolTip(help_text)
            box = QWidget(self)
            column = QVBoxLayout(box)
            column.setContentsMargins(0, 0, 0, 0)
            column.setSpacing(2)
            column.addWidget(field)
            line = QLabel(help_text, box)
            line.setWordWrap(True)
            line.setFont(scaled_font(line, TYPE_CAPTION))
            mute(line)
            column.addWidget(line)
            field = box
        form.addRow(label, field)

    @property
    def chosen_appearance(self) -> str:
        return str(self.appearance.currentData())

    def _make_api_server_widgets(self, settings: Settings) -> None:
        """Local API server (enclave.server): off by default; its address with a copy button."""
        self.api_enabled = QCheckBox("Serve the model to other programs", self)
        self.api_enabled.setChecked(settings.api_server_enabled)
        self.api_host = QLineEdit(settings.api_server_host, self)
        self.api_host.setAccessibleName("API server address to listen on")
        self.api_port = self._spin(1, 65535, settings.api_server_port, "API server port")
        self.api_key = QLineEdit(settings.api_server_key, self)
        self.api_key.setEchoMode(QLineEdit.EchoMode.Password)
        self.api_key.setPlaceholderText("none (only for 127.0.0.1)")
        self.api_key.setAccessibleName("API key clients must send")
        self.api_address = QLabel(self)
        self.api_address.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        copy = QPushButton("Copy", self)
        copy.setAccessibleName("Copy the API address")
        copy.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.api_address.text()))
        self.api_address_row = QHBoxLayout()
        self.api_address_row.addWidget(self.api_address, 1)
        self.api_address_row.addWidget(copy)
        self.api_host.textChanged.connect(self._show_api_address)
        self.api_port.valueChanged.connect(self._show_api_address)
        self._show_api_address()

    def _layout_api_server(self) -> None:
        api = self.group(
            "Local API server",
            "Other programs can use the model through an OpenAI- and DeepSeek-compatible API. Off unless switched on.",
        )
        api.addRow(self.api_enabled)
        self.row(api, "Address", self.api_host, "127.0.0.1: this computer only; any other address needs an API key.")
        self.row(api, "Port", self.api_port)
        self.row(api, "API key", self.api_key, "Clients send it as “Authorization: Bearer KEY”.")
        self.row(api, "Base URL", self.api_address_row)

    def _show_api_address(self) -> None:
        host = self.api_host.text().strip() or "127.0.0.1"
        self.api_address.setText(f"http://{f'[{host}]' if ':' in host else host}:{self.api_port.value()}/v1")

    def _spin(self, low: int, high: int, value: int, accessible: str, step: int = 1) -> QSpinBox:
        spin = QSpinBox(self)
        spin.setRange(low, high)
        spin.setSingleStep(step)
        spin.setValue(value)
        spin.setAccessibleName(accessible)
        return spin

    def _optional_float(
        self, value: float | None, low: float, high: float, fallback: float
    ) -> tuple[QDoubleSpinBox, QCheckBox]:
        spin = QDoubleSpinBox(self)
        spin.setRange(low, high)
        spin.setSingleStep(0.05)
        spin.setDecimals(2)
        spin.setValue(value if value is not None else fallback)
        use_default = QCheckBox("Model's recommended value", self)
        use_default.setChecked(value is None)
        spin.setEnabled(value is not None)
        use_default.toggled.connect(lambda checked: spin.setEnabled(not checked))
        return spin, use_default

    def _with_default(self, spin: QDoubleSpinBox, default: QCheckBox) -> QWidget:
        box = QWidget(self)
        row = QHBoxLayout(box)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(spin)
        row.addWidget(default)
        return box

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a model", self.model_path.text(), "GGUF models (*.gguf)")
        if path:
            self.model_path.setText(path)

    def collected(self) -> Settings:
        return replace(
            self._original,
            model_path=self.model_path.text().strip() or None,
            context_length=self.context.value() or None,
            gpu_layers=None if self.gpu_layers.value() == -2 else self.gpu_layers.value(),
            kv_cache_type=self.kv_cache.currentData(),
            threads=self.threads.value() or None,
            device=self.device.currentData(),
            temperature=None if self.temperature_default.isChecked() else self.temperature.value(),
            top_p=None if self.top_p_default.isChecked() else self.top_p.value(),
            max_tokens=self.max_tokens.value(),
            think_budget=self.think_budget.value(),
            default_system_prompt=self.system_prompt.toPlainText(),
            appearance=self.chosen_appearance,
            api_server_enabled=self.api_enabled.isChecked(),
            api_server_host=self.api_host.text().strip(),
            api_server_port=self.api_port.value(),
            api_server_key=self.api_key.text(),
        )

    def _accept(self) -> None:
        try:
            self.result_settings = validate(self.collected())
        except SettingsError as exc:
            self.error.setText(str(exc))
            self.error.show()
            return
        self.accept()

    @property
    def chosen_embedding(self) -> str | None:
        data = self.embedding.currentData()
        return str(data) if data else None

    def embedding_changed(self) -> bool:
        return self.chosen_embedding != self._embedding_original

    def model_changed(self) -> bool:
        new = self.result_settings
        return new is not None and any(getattr(new, f) != getattr(self._original, f) for f in MODEL_FIELDS)

"""The first screen when no model is loaded: what Enclave is, and one clear thing to do."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeyEvent, QShowEvent
from PySide6.QtWidgets import QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from enclave.ui.style import mute, scaled_font


class WelcomePage(QWidget):
    openModelRequested = Signal()
    downloadRequested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAccessibleName("Welcome")
        title = QLabel("Run DeepSeek R1 privately on this computer", self)
        title.setFont(scaled_font(self, 1.6, bold=True))
        title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        title.setWordWrap(True)
        intro = QLabel(
            "Your chats, documents and models stay on this machine. Nothing is sent anywhere.\n"
            "Open a GGUF model file you have, or let Enclave pick and download the DeepSeek R1 for this computer.",
            self,
        )
        intro.setAlignment(Qt.AlignmentFlag.AlignCenter)
        intro.setWordWrap(True)
        mute(intro)
        self.open_button = QPushButton("Open a GGUF model…", self)
        self.open_button.setAccessibleName("Open a GGUF model file")
        self.open_button.setDefault(True)
        self.open_button.clicked.connect(self.openModelRequested)
        self.download_button = QPushButton("Get the DeepSeek R1 that suits this computer…", self)
        self.download_button.setAccessibleName("Choose and download a model")
        self.download_button.setToolTip("Enclave checks this computer's memory and recommends a variant to download")
        self.download_button.clicked.connect(self.downloadRequested)
        self.recommendation = QLabel(self)
        self.recommendation.setWordWrap(True)
        self.recommendation.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.recommendation.setAccessibleName("Recommended model")
        self.recommendation.hide()
        self.status = QLabel(self)
        self.status.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.status.setAccessibleName("Model status")
        self.progress = QProgressBar(self)
        self.progress.setRange(0, 0)
        self.progress.setTextVisible(False)
        self.progress.setMaximumWidth(320)
        self.progress.hide()

        layout = QVBoxLayout(self)
        layout.setContentsMargins(48, 48, 48, 48)
        layout.setSpacing(14)
        layout.addStretch(2)
        layout.addWidget(title)
        layout.addWidget(intro)
        layout.addSpacing(8)
        layout.addWidget(self.open_button, 0, Qt.AlignmentFlag.AlignHCenter)
        layout.addWidget(self.recommendation)
        layout.addWidget(self.download_button, 0, Qt.AlignmentFlag.AlignHCenter)
        layout.addWidget(self.progress, 0, Qt.AlignmentFlag.AlignHCenter)
        layout.addWidget(self.status)
        layout.addStretch(3)

    def focus_first(self) -> None:
        """Keyboard focus starts on the page's main action (Enter presses it), not on the chat list."""
        if self.isVisible():
            target = self.open_button if self.open_button.isEnabled() else self.download_button
            target.setFocus(Qt.FocusReason.OtherFocusReason)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        """Enter presses the focused button, as in a dialog (a plain page would ignore it)."""
        focused = self.focusWidget()
        enter = event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter)
        if enter and isinstance(focused, QPushButton) and focused.isEnabled() and self.isAncestorOf(focused):
            focused.click()
            return
        super().keyPressEvent(event)

    def show_needs_model(self) -> None:
        self.status.setText("A chat needs a model. Open a GGUF file you have, or download the recommended one.")

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        self.focus_first()

    def show_recommendation(self, name: str, size_gb: float, reason: str) -> None:
        """Name the variant this computer should run, why, and offer it in one click."""
        self.recommendation.setText(f"Recommended for this computer: <b>{name}</b> ({size_gb:.1f} GB). {reason}")
        self.recommendation.show()
        self.download_button.setText(f"Download {name}…")

    def show_loading(self, text: str) -> None:
        self.status.setText(text)
        self.progress.show()
        self.open_button.setEnabled(False)

    def show_error(self, text: str) -> None:
        self.progress.hide()
        self.open_button.setEnabled(True)
        self.status.setText(f"Could not open the model. {text}")

    def reset(self) -> None:
        self.progress.hide()
        self.open_button.setEnabled(True)
        self.status.clear()

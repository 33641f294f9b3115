"""The conversation list: a Qt item model over the store's conversations, with search and actions."""

from __future__ import annotations

from PySide6.QtCore import QAbstractListModel, QModelIndex, QPersistentModelIndex, QPoint, Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QLineEdit, QListView, QMenu, QPushButton, QVBoxLayout, QWidget

from enclave.storage.chats import Conversation

ConversationIdRole = Qt.ItemDataRole.UserRole + 1
AnyIndex = QModelIndex | QPersistentModelIndex


class ConversationListModel(QAbstractListModel):
    """Lives on the GUI thread and is refreshed from the store there; no worker ever touches it."""

    def __init__(self) -> None:
        super().__init__()
        self._rows: list[Conversation] = []

    def set_conversations(self, conversations: list[Conversation]) -> None:
        self.beginResetModel()
        self._rows = list(conversations)
        self.endResetModel()

    def rowCount(self, parent: AnyIndex = QModelIndex()) -> int:  # noqa: B008 (Qt signature)
        return 0 if parent.isValid() else len(self._rows)

    def data(self, index: AnyIndex, role: int = Qt.ItemDataRole.DisplayRole) -> object:
        if not index.isValid() or not 0 <= index.row() < len(self._rows):
            return None
        conversation = self._rows[index.row()]
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole, Qt.ItemDataRole.AccessibleTextRole):
            return conversation.title
        if role == ConversationIdRole:
            return conversation.id
        return None

    def row_of(self, conversation_id: int) -> int:
        return next((i for i, c in enumerate(self._rows) if c.id == conversation_id), -1)

    def conversation_ids(self) -> list[int]:
        return [c.id for c in self._rows]


class ConversationPanel(QWidget):
    conversationSelected = Signal(int)
    newRequested = Signal()
    renameRequested = Signal(int)
    deleteRequested = Signal(int)
    exportRequested = Signal(int)
    searchChanged = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = ConversationListModel()
        self.new_button = QPushButton("New chat", self)
        self.new_button.setAccessibleName("New chat")
        self.new_button.setToolTip("Start a new chat (Ctrl+N)")
        self.new_button.clicked.connect(self.newRequested)
        self.search = QLineEdit(self)
        self.search.setPlaceholderText("Search chats (Ctrl+F)")
        self.search.setAccessibleName("Search chats")
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(self.searchChanged)
        self.view = QListView(self)
        self.view.setModel(self.model)
        self.view.setAccessibleName("Chats")
        self.view.setUniformItemSizes(True)
        self.view.setEditTriggers(QListView.EditTrigger.NoEditTriggers)
        self.view.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.view.customContextMenuRequested.connect(self._menu)
        self.view.selectionModel().currentChanged.connect(self._on_current)

        top = QHBoxLayout()
        top.setContentsMargins(0, 0, 0, 0)
        top.addWidget(self.new_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 4, 8)
        layout.addLayout(top)
        layout.addWidget(self.search)
        layout.addWidget(self.view, 1)

    def set_conversations(self, conversations: list[Conversation], current: int | None) -> None:
        blocker = self.view.selectionModel().blockSignals(True)
        self.model.set_conversations(conversations)
        row = self.model.row_of(current) if current is not None else -1
        if row >= 0:
            self.view.setCurrentIndex(self.model.index(row, 0))
        self.view.selectionModel().blockSignals(blocker)

    def current_id(self) -> int | None:
        index = self.view.currentIndex()
        value = index.data(ConversationIdRole) if index.isValid() else None
        return int(value) if value is not None else None

    def _on_current(self, current: QModelIndex, _previous: QModelIndex) -> None:
        value = current.data(ConversationIdRole) if current.isValid() else None
        if value is not None:
            self.conversationSelected.emit(int(value))

    def _menu(self, position: QPoint) -> None:
        index = self.view.indexAt(position)
        if not index.isValid():
            return
        conversation_id = int(index.data(ConversationIdRole))
        menu = QMenu(self)
        menu.addAction("Rename…", lambda: self.renameRequested.emit(conversation_id))
        menu.addAction("Export…", lambda: self.exportRequested.emit(conversation_id))
        menu.addSeparator()
        menu.addAction("Delete…", lambda: self.deleteRequested.emit(conversation_id))
        menu.exec(self.view.viewport().mapToGlobal(position))

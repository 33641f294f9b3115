"""The conversation list: chats grouped by date (Today, Yesterday, Previous 7 days…), with search and actions.

Rename and delete are icon buttons that appear on the row under the pointer, and in the right-click menu. From the
search box, Down moves into the results and Enter opens the first one; Esc (handled by the window) clears it.
"""

from __future__ import annotations

import datetime as dt

from PySide6.QtCore import (
    QAbstractListModel,
    QEvent,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QPoint,
    QRect,
    QSize,
    Qt,
    Signal,
)
from PySide6.QtGui import QKeyEvent, QMouseEvent, QPainter, QPalette
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QLineEdit,
    QListView,
    QMenu,
    QPushButton,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QVBoxLayout,
    QWidget,
)

from enclave.storage.chats import Conversation
from enclave.ui.style import ICON_SIZE, RADIUS_S, SPACE_S, SPACE_XS, TYPE_CAPTION, icon, mix, muted_text, scaled_font

ConversationIdRole = Qt.ItemDataRole.UserRole + 1
HeaderRole = Qt.ItemDataRole.UserRole + 2
AnyIndex = QModelIndex | QPersistentModelIndex
ROW_ACTIONS = (("rename", "pencil-outline", "Rename"), ("delete", "trash-can-outline", "Delete"))


def date_group(timestamp: float, today: dt.date | None = None) -> str:
    """The heading a chat last active at ``timestamp`` is listed under."""
    today = today or dt.date.today()
    day = dt.date.fromtimestamp(timestamp)
    age = (today - day).days
    if age <= 0:
        return "Today"
    if age == 1:
        return "Yesterday"
    if age < 7:
        return "Previous 7 days"
    if age < 30:
        return "Previous 30 days"
    if day.year == today.year:
        return day.strftime("%B")
    return str(day.year)


class ConversationListModel(QAbstractListModel):
    """Lives on the GUI thread and is refreshed from the store there; no worker ever touches it.

    Rows are date headings (disabled, so the keyboard skips them) and conversations, newest first.
    """

    def __init__(self) -> None:
        super().__init__()
        self._rows: list[Conversation | str] = []

    def set_conversations(self, conversations: list[Conversation], *, grouped: bool = True) -> None:
        self.beginResetModel()
        rows: list[Conversation | str] = []
        heading = None
        for conversation in conversations:
            group = date_group(conversation.updated_at)
            if grouped and group != heading:
                rows.append(group)
                heading = group
            rows.append(conversation)
        self._rows = rows
        self.endResetModel()

    def rowCount(self, parent: AnyIndex = QModelIndex()) -> int:  # noqa: B008 (Qt signature)
        return 0 if parent.isValid() else len(self._rows)

    def flags(self, index: AnyIndex) -> Qt.ItemFlag:
        if index.isValid() and isinstance(self._rows[index.row()], str):
            return Qt.ItemFlag.NoItemFlags
        return super().flags(index)

    def data(self, index: AnyIndex, role: int = Qt.ItemDataRole.DisplayRole) -> object:
        if not index.isValid() or not 0 <= index.row() < len(self._rows):
            return None
        row = self._rows[index.row()]
        if isinstance(row, str):
            if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.AccessibleTextRole):
                return row
            return True if role == HeaderRole else None
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole, Qt.ItemDataRole.AccessibleTextRole):
            return row.title
        if role == ConversationIdRole:
            return row.id
        return None

    def row_of(self, conversation_id: int) -> int:
        return next(
            (i for i, c in enumerate(self._rows) if isinstance(c, Conversation) and c.id == conversation_id), -1
        )

    def conversation_ids(self) -> list[int]:
        return [c.id for c in self._rows if isinstance(c, Conversation)]

    def headings(self) -> list[str]:
        return [r for r in self._rows if isinstance(r, str)]

    def first_conversation_row(self) -> int:
        return next((i for i, c in enumerate(self._rows) if isinstance(c, Conversation)), -1)


class ConversationDelegate(QStyledItemDelegate):
    """Headings in small muted capitals; chats as rounded rows with rename/delete icons on hover."""

    actionClicked = Signal(str, int)  # action name, conversation id

    def sizeHint(self, option: QStyleOptionViewItem, index: AnyIndex) -> QSize:
        height = option.fontMetrics.height()
        if index.data(HeaderRole):
            return QSize(option.rect.width(), height + SPACE_S * 2 + SPACE_XS)
        return QSize(option.rect.width(), height + SPACE_S * 2)

    @staticmethod
    def action_rects(rect: QRect) -> dict[str, QRect]:
        size = ICON_SIZE + SPACE_XS
        top = rect.top() + (rect.height() - size) // 2
        right = rect.right() - SPACE_XS
        rects = {}
        for name, _icon, _tip in reversed(ROW_ACTIONS):
            rects[name] = QRect(right - size, top, size, size)
            right -= size + SPACE_XS
        return rects

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: AnyIndex) -> None:
        palette: QPalette = option.palette
        rect = option.rect
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        text = str(index.data(Qt.ItemDataRole.DisplayRole) or "")
        if index.data(HeaderRole):
            font = scaled_font(option.widget, TYPE_CAPTION, bold=True) if option.widget else painter.font()
            painter.setFont(font)
            painter.setPen(muted_text(palette))
            painter.drawText(
                rect.adjusted(SPACE_S, SPACE_S, 0, 0), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, text
            )
            painter.restore()
            return
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        hovered = bool(option.state & QStyle.StateFlag.State_MouseOver)
        base = palette.color(QPalette.ColorRole.Window)
        if selected or hovered:
            tint = palette.color(QPalette.ColorRole.Highlight)
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(mix(base, tint, 0.22 if selected else 0.1))
            painter.drawRoundedRect(rect.adjusted(2, 1, -2, -1), RADIUS_S, RADIUS_S)
        text_rect = rect.adjusted(SPACE_S, 0, -SPACE_S, 0)
        if hovered:
            rects = self.action_rects(rect)
            text_rect.setRight(min(r.left() for r in rects.values()) - SPACE_XS)
            for name, icon_name, _tip in ROW_ACTIONS:
                icon(icon_name, palette).paint(painter, rects[name].adjusted(2, 2, -2, -2))
        painter.setPen(palette.color(QPalette.ColorRole.WindowText))
        elided = option.fontMetrics.elidedText(text, Qt.TextElideMode.ElideRight, text_rect.width())
        painter.drawText(text_rect, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, elided)
        painter.restore()

    def editorEvent(self, event: QEvent, model: object, option: QStyleOptionViewItem, index: AnyIndex) -> bool:
        if event.type() == QEvent.Type.MouseButtonRelease and isinstance(event, QMouseEvent):
            conversation_id = index.data(ConversationIdRole)
            if conversation_id is not None:
                for name, rect in self.action_rects(option.rect).items():
                    if rect.contains(event.position().toPoint()):
                        self.actionClicked.emit(name, int(conversation_id))
                        return True
        return super().editorEvent(event, model, option, index)  # type: ignore[arg-type]


class ConversationPanel(QWidget):
    conversationSelected = Signal(int)
    conversationActivated = Signal(int)  # Enter on a chat (or on the search box): open it and start typing
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
        self.search.installEventFilter(self)
        self.view = QListView(self)
        self.view.setModel(self.model)
        self.view.setAccessibleName("Chats")
        self.view.setMouseTracking(True)  # hover shows the row's rename/delete buttons
        self.view.setFrameShape(QListView.Shape.NoFrame)
        self.view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.view.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.delegate = ConversationDelegate(self.view)
        self.delegate.actionClicked.connect(self._on_row_action)
        self.view.setItemDelegate(self.delegate)
        self.view.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.view.customContextMenuRequested.connect(self._menu)
        self.view.selectionModel().currentChanged.connect(self._on_current)
        self.view.clicked.connect(lambda index: self._on_current(index, QModelIndex()))  # also the current row
        self.view.installEventFilter(self)
        self.view.setAutoFillBackground(False)
        self.view.viewport().setAutoFillBackground(False)

        top = QHBoxLayout()
        top.setContentsMargins(0, 0, 0, 0)
        top.addWidget(self.new_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(SPACE_S, SPACE_S, SPACE_XS, SPACE_S)
        layout.setSpacing(SPACE_S)
        layout.addLayout(top)
        layout.addWidget(self.search)
        layout.addWidget(self.view, 1)

    def set_conversations(self, conversations: list[Conversation], current: int | None) -> None:
        blocker = self.view.selectionModel().blockSignals(True)
        self.model.set_conversations(conversations, grouped=not self.search.text().strip())
        row = self.model.row_of(current) if current is not None else -1
        if row >= 0:
            self.view.setCurrentIndex(self.model.index(row, 0))
        self.view.selectionModel().blockSignals(blocker)

    def current_id(self) -> int | None:
        index = self.view.currentIndex()
        value = index.data(ConversationIdRole) if index.isValid() else None
        return int(value) if value is not None else None

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.KeyPress and isinstance(event, QKeyEvent):
            key = event.key()
            if watched is self.search and key == Qt.Key.Key_Down:
                self._select_row(self.model.first_conversation_row())
                self.view.setFocus(Qt.FocusReason.TabFocusReason)
                return True
            if watched is self.search and key in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
                row = self.model.first_conversation_row()
                if row >= 0:
                    self._select_row(row)
                    self.conversationActivated.emit(int(self.model.index(row, 0).data(ConversationIdRole)))
                return True
            if watched is self.view and key in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
                current = self.current_id()
                if current is not None:
                    self.conversationActivated.emit(current)
                return True
        return super().eventFilter(watched, event)

    def _select_row(self, row: int) -> None:
        if row >= 0:
            self.view.setCurrentIndex(self.model.index(row, 0))

    def _on_current(self, current: QModelIndex, _previous: QModelIndex) -> None:
        value = current.data(ConversationIdRole) if current.isValid() else None
        if value is not None:
            self.conversationSelected.emit(int(value))

    def _on_row_action(self, name: str, conversation_id: int) -> None:
        (self.renameRequested if name == "rename" else self.deleteRequested).emit(conversation_id)

    def _menu(self, position: QPoint) -> None:
        index = self.view.indexAt(position)
        if not index.isValid() or index.data(ConversationIdRole) is None:
            return
        conversation_id = int(index.data(ConversationIdRole))
        menu = QMenu(self)
        menu.addAction("Rename…", lambda: self.renameRequested.emit(conversation_id))
        menu.addAction("Export…", lambda: self.exportRequested.emit(conversation_id))
        menu.addSeparator()
        menu.addAction("Delete…", lambda: self.deleteRequested.emit(conversation_id))
        menu.exec(self.view.viewport().mapToGlobal(position))

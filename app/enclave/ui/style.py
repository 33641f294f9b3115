"""The window's look, defined once: spacing, type scale, icons, light and dark palettes.

Colours are never hard-coded in widgets: they are derived from the current palette when painted, so a switch between
light and dark (the Appearance setting, or the system's) is followed live. Icons come from qtawesome's Material
Design set and are re-tinted when the palette changes.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFocusEvent, QFont, QFontDatabase, QIcon, QPainter, QPaintEvent, QPalette, QPen
from PySide6.QtWidgets import QApplication, QToolButton, QWidget

# --- spacing (px) and type scale ------------------------------------------------------------------------------------

SPACE_XS = 4
SPACE_S = 8
SPACE_M = 12
SPACE_L = 16
SPACE_XL = 24
RADIUS = 10  # bubbles, cards
RADIUS_S = 6  # buttons, focus rings
ICON_SIZE = 16
READING_WIDTH = 780  # the centred column of a conversation

TYPE_CAPTION = 0.85  # footers, dates, help lines
TYPE_BODY = 1.0
TYPE_SUBTITLE = 1.15
TYPE_TITLE = 1.6

APPEARANCES = ("system", "light", "dark")


def mix(a: QColor, b: QColor, amount: float) -> QColor:
    """``a`` moved ``amount`` (0..1) of the way towards ``b``."""
    return QColor.fromRgbF(
        a.redF() + (b.redF() - a.redF()) * amount,
        a.greenF() + (b.greenF() - a.greenF()) * amount,
        a.blueF() + (b.blueF() - a.blueF()) * amount,
    )


def subtle_background(palette: QPalette, amount: float = 0.06) -> QColor:
    """A tint of the base colour towards the text colour: code blocks, user bubbles."""
    return mix(palette.color(QPalette.ColorRole.Base), palette.color(QPalette.ColorRole.Text), amount)


def subtle_border(palette: QPalette) -> QColor:
    return subtle_background(palette, 0.18)


def muted_text(palette: QPalette) -> QColor:
    """Secondary text (footers, labels): the text colour faded halfway into the background."""
    return mix(palette.color(QPalette.ColorRole.Text), palette.color(QPalette.ColorRole.Base), 0.45)


def fixed_font() -> QFont:
    return QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)


def scaled_font(widget: QWidget, factor: float, *, bold: bool = False) -> QFont:
    font = QFont(widget.font())
    if font.pointSizeF() > 0:
        font.setPointSizeF(font.pointSizeF() * factor)
    else:
        font.setPixelSize(max(1, round(font.pixelSize() * factor)))
    font.setBold(bold)
    return font


def mute(widget: QWidget) -> None:
    """Secondary text via the palette's placeholder role: it follows theme changes with no code of ours."""
    widget.setForegroundRole(QPalette.ColorRole.PlaceholderText)


def contrast(a: QColor, b: QColor) -> float:
    """WCAG contrast ratio of two colours (1 = identical, 21 = black on white)."""

    def luminance(c: QColor) -> float:
        def channel(v: float) -> float:
            return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4

        return 0.2126 * channel(c.redF()) + 0.7152 * channel(c.greenF()) + 0.0722 * channel(c.blueF())

    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


# --- icons ----------------------------------------------------------------------------------------------------------


def icon(name: str, palette: QPalette, role: QPalette.ColorRole = QPalette.ColorRole.ButtonText) -> QIcon:
    """A Material Design icon (qtawesome's ``mdi6`` set) tinted with a palette colour."""
    import qtawesome

    color = palette.color(role)
    disabled = palette.color(QPalette.ColorGroup.Disabled, role)
    return qtawesome.icon(f"mdi6.{name}", color=color, color_disabled=disabled)


class IconButton(QToolButton):
    """A flat icon button with a tooltip and a visible keyboard-focus ring; its icon follows the palette.

    ``revealed`` False paints nothing (the message actions that appear on hover) unless the button has focus, so a
    keyboard user still sees where they are.
    """

    def __init__(self, icon_name: str, tooltip: str, parent: QWidget | None = None, *, text: str = "") -> None:
        super().__init__(parent)
        self.icon_name = icon_name
        self.revealed = True
        self.setAutoRaise(True)
        self.setToolTip(tooltip)
        self.setAccessibleName(tooltip)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setIconSize(QSize(ICON_SIZE, ICON_SIZE))
        if text:
            self.setText(text)
            self.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self._retint()

    def set_icon_name(self, name: str) -> None:
        self.icon_name = name
        self._retint()

    def set_revealed(self, revealed: bool) -> None:
        if revealed != self.revealed:
            self.revealed = revealed
            self.update()

    def _retint(self) -> None:
        self.setIcon(icon(self.icon_name, self.palette()))

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange:
            self._retint()

    def focusInEvent(self, event: QFocusEvent) -> None:
        super().focusInEvent(event)
        self.update()

    def focusOutEvent(self, event: QFocusEvent) -> None:
        super().focusOutEvent(event)
        self.update()

    def paintEvent(self, event: QPaintEvent) -> None:
        if not self.revealed and not self.hasFocus():
            return
        super().paintEvent(event)
        if self.hasFocus():
            painter = QPainter(self)
            painter.setRenderHint(QPainter.RenderHint.Antialiasing)
            painter.setPen(QPen(self.palette().color(QPalette.ColorRole.Highlight), 2))
            painter.drawRoundedRect(QRectF(self.rect()).adjusted(1, 1, -1, -1), RADIUS_S, RADIUS_S)
            painter.end()


# --- palettes and appearance ----------------------------------------------------------------------------------------


def _palette(colors: dict[QPalette.ColorRole, str], disabled_text: str) -> QPalette:
    palette = QPalette()
    for role, value in colors.items():
        palette.setColor(role, QColor(value))
    for role in (QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText, QPalette.ColorRole.WindowText):
        palette.setColor(QPalette.ColorGroup.Disabled, role, QColor(disabled_text))
    return palette


R = QPalette.ColorRole


def light_palette() -> QPalette:
    return _palette(
        {
            R.Window: "#f7f7f8",
            R.WindowText: "#1f2328",
            R.Base: "#ffffff",
            R.AlternateBase: "#f2f3f5",
            R.Text: "#1f2328",
            R.Button: "#f2f3f5",
            R.ButtonText: "#1f2328",
            R.BrightText: "#ffffff",
            R.Highlight: "#2f6feb",
            R.HighlightedText: "#ffffff",
            R.Link: "#1a5fd0",
            R.LinkVisited: "#6639ba",
            R.ToolTipBase: "#1f2328",
            R.ToolTipText: "#ffffff",
            R.PlaceholderText: "#6e7781",
            R.Mid: "#d0d7de",
            R.Dark: "#afb8c1",
            R.Light: "#ffffff",
            R.Midlight: "#eaeef2",
            R.Shadow: "#8c959f",
        },
        "#a0a7b0",
    )


def dark_palette() -> QPalette:
    return _palette(
        {
            R.Window: "#1e1f22",
            R.WindowText: "#e6e6e6",
            R.Base: "#26272b",
            R.AlternateBase: "#2c2d31",
            R.Text: "#e6e6e6",
            R.Button: "#2e2f34",
            R.ButtonText: "#e6e6e6",
            R.BrightText: "#ffffff",
            R.Highlight: "#4c8dff",
            R.HighlightedText: "#ffffff",
            R.Link: "#7cb2ff",
            R.LinkVisited: "#c4a5ff",
            R.ToolTipBase: "#e6e6e6",
            R.ToolTipText: "#1e1f22",
            R.PlaceholderText: "#9aa0a6",
            R.Mid: "#3a3b40",
            R.Dark: "#141517",
            R.Light: "#45464c",
            R.Midlight: "#35363b",
            R.Shadow: "#000000",
        },
        "#6b6f76",
    )


def system_is_dark(app: QApplication) -> bool:
    return app.styleHints().colorScheme() == Qt.ColorScheme.Dark


def apply_appearance(app: QApplication, appearance: str) -> None:
    """Fusion with Enclave's light or dark palette; "system" follows the desktop's colour scheme. Applied live."""
    if app.style().name().lower() != "fusion":
        app.setStyle("Fusion")
    dark = appearance == "dark" or (appearance == "system" and system_is_dark(app))
    app.setPalette(dark_palette() if dark else light_palette())

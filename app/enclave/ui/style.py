"""Colours and fonts derived from the current palette, so light and dark themes both work without hard-coded colours."""

from __future__ import annotations

from PySide6.QtGui import QColor, QFont, QFontDatabase, QPalette
from PySide6.QtWidgets import QWidget


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

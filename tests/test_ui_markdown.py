"""The streaming Markdown view: same result streamed or loaded, code blocks copyable, no re-render per chunk."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QUrl
from PySide6.QtGui import QGuiApplication

from enclave.ui.markdown_view import MarkdownView

TEXT = (
    "# Plan\n\nFirst a paragraph with **bold** and `code`.\n\n- one\n- two\n\n"
    "```python\ndef f(x):\n    return x * 2\n```\n\nA table:\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n"
    "```\nplain block\n```\n\nThe end."
)


def stream(view: MarkdownView, text: str, step: int, qtbot: Any) -> None:
    for i in range(0, len(text), step):
        view.append(text[i : i + step])
    view.finish()


def test_streamed_and_loaded_text_render_the_same(qtbot: Any) -> None:
    streamed, loaded = MarkdownView(), MarkdownView()
    qtbot.addWidget(streamed)
    qtbot.addWidget(loaded)
    stream(streamed, TEXT, 3, qtbot)
    loaded.set_markdown(TEXT)
    assert streamed.markdown() == loaded.markdown() == TEXT
    assert streamed.toPlainText() == loaded.toPlainText()
    plain = loaded.toPlainText()
    assert "**" not in plain and "Plan" in plain and "return x * 2" in plain
    assert loaded.code_block(0) == "def f(x):\n    return x * 2"
    assert loaded.code_block(1) == "plain block"


def test_copy_link_puts_the_code_on_the_clipboard(qtbot: Any) -> None:
    view = MarkdownView()
    qtbot.addWidget(view)
    view.set_markdown(TEXT)
    view.anchorClicked.emit(QUrl("copy:0"))
    assert QGuiApplication.clipboard().text() == "def f(x):\n    return x * 2"


def test_streaming_is_throttled(qtbot: Any) -> None:
    view = MarkdownView()
    qtbot.addWidget(view)
    for _ in range(200):
        view.append("word ")
    assert view.updating  # chunks are queued, not rendered one by one
    qtbot.waitUntil(lambda: not view.updating, timeout=2000)
    assert "word word" in view.toPlainText()
    view.finish()

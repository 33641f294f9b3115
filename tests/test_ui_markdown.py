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


TRICKY = (
    "Intro line\n```js\nlet a = 1;\n\nlet b = 2;\n```\nAfter the fence.\n\n"
    "1. Step one\n\n   ```bash\n   echo nested\n   ```\n\n2. Step two\n\n"
    "| x | y |\n|---|---|\n| 1 | 2 |\nText right after the table.\n\n"
    "> quoted\n\n## Heading\n\n```python\nunterminated = True\n``"
)


def blocks(view: MarkdownView) -> list[tuple[str, int, bool, bool]]:
    """The document's structure: text, heading level, in a list, inside a frame (code block or table)."""
    document = view.document()
    result = []
    block = document.begin()
    while block.isValid():
        in_frame = document.frameAt(block.position()) is not document.rootFrame()
        result.append((block.text(), block.blockFormat().headingLevel(), block.textList() is not None, in_frame))
        block = block.next()
    return result


def test_rendering_as_it_streams_ends_like_loading_from_history(qtbot: Any) -> None:
    loaded = MarkdownView()
    qtbot.addWidget(loaded)
    loaded.set_markdown(TRICKY)
    for step in (1, 2, 5, 13):
        streamed = MarkdownView()
        qtbot.addWidget(streamed)
        for i in range(0, len(TRICKY), step):
            streamed.append(TRICKY[i : i + step])
            streamed.flush()  # render every chunk: exercises the live code frame and the tail
        streamed.finish()
        assert blocks(streamed) == blocks(loaded), f"step {step}"
        assert [streamed.code_block(i) for i in range(4)] == [loaded.code_block(i) for i in range(4)]
    assert loaded.code_block(0) == "let a = 1;\n\nlet b = 2;"
    assert loaded.code_block(1) == "echo nested"
    assert loaded.code_block(2) == "unterminated = True\n``"


def test_a_live_code_block_can_be_copied_while_it_streams(qtbot: Any) -> None:
    view = MarkdownView()
    qtbot.addWidget(view)
    view.append("Here:\n\n```python\nx = 1\ny = 2\n``")
    view.flush()
    assert view.code_block(0) == "x = 1\ny = 2"  # the half-typed closing fence is held back
    assert "``" not in view.toPlainText().split("Copy", 1)[1]
    view.finish()


def test_long_replies_render_only_what_changed(qtbot: Any, monkeypatch: Any) -> None:
    """A 20k-token reply must not slow down as it grows: no render ever sees more than a paragraph or so."""
    from enclave.ui import markdown_view

    rendered: list[int] = []
    real = markdown_view.renderer()
    original = real.render

    def counting(text: str, first_code_index: int = 0, citations: frozenset[int] = frozenset()) -> Any:
        rendered.append(len(text))
        return original(text, first_code_index, citations)

    monkeypatch.setattr(real, "render", counting)
    paragraph = "Some words that make up a sentence of a typical answer, with `code` and **bold**. " * 4
    code = "```python\n" + "".join(f"value_{i} = compute({i})\n" for i in range(200)) + "```\n\n"
    reply = (paragraph + "\n\n") * 150 + code + (paragraph + "\n\n") * 50  # ~80 kB, about 20k tokens
    view = MarkdownView()
    qtbot.addWidget(view)
    for i in range(0, len(reply), 16):
        view.append(reply[i : i + 16])
        if i % 64 == 0:
            view.flush()
    view.finish()
    assert view.markdown() == reply
    assert max(rendered) < 2 * len(paragraph)  # the 200-line code block streamed natively, never re-rendered
    assert sum(rendered) < 4 * len(reply)

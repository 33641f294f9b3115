"""Split a streamed reply into reasoning (``<think>…</think>``) and answer text.

Tokens arrive a few characters at a time and a tag can be cut anywhere, so the parser holds back only the shortest
tail that could still turn into the tag it is waiting for; everything else is released at once so the UI streams
smoothly. Feeding text whole or character by character gives the same concatenated result.
"""

from __future__ import annotations

import enum

from enclave.engine.types import TextDelta


class _Mode(enum.Enum):
    START = "start"  # not yet known whether the reply opens with <think>
    THINK_LEAD = "think_lead"  # inside thinking, dropping whitespace right after <think>
    THINK = "think"
    ANSWER_LEAD = "answer_lead"  # after </think>, dropping the whitespace R1 puts before the answer
    ANSWER = "answer"


def _partial_suffix_len(text: str, tag: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``tag`` (what may still become the tag)."""
    for size in range(min(len(text), len(tag) - 1), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0


class ReasoningParser:
    """Streaming ``<think>`` splitter for one reply.

    ``starts_in_thinking`` is True when the prompt already opened the block (R1-Distill's generation prompt ends in
    ``<think>\\n``); then only ``</think>`` is looked for. Otherwise ``<think>`` counts only at the very start of the
    reply (after optional whitespace); later it is ordinary text, as is any ``</think>`` in the answer.
    """

    def __init__(self, *, starts_in_thinking: bool, open_tag: str = "<think>", close_tag: str = "</think>") -> None:
        if not open_tag or not close_tag:
            raise ValueError("open_tag and close_tag must be non-empty")
        self._open = open_tag
        self._close = close_tag
        self._mode = _Mode.THINK_LEAD if starts_in_thinking else _Mode.START
        self._held = ""  # text not yet released: it may be (part of) a tag or leading whitespace
        self._closed = False
        self._saw = starts_in_thinking

    @property
    def in_thinking(self) -> bool:
        return self._mode in (_Mode.THINK_LEAD, _Mode.THINK)

    @property
    def thinking_closed(self) -> bool:
        """A ``</think>`` was seen, or thinking was closed by ``close_thinking``."""
        return self._closed

    @property
    def saw_thinking(self) -> bool:
        """The reply had a thinking block (opened by the prompt or by the model)."""
        return self._saw

    def feed(self, text: str) -> TextDelta:
        """Consume newly generated text; return the parts that are certain now."""
        reasoning: list[str] = []
        content: list[str] = []
        buf = self._held + text
        self._held = ""
        while buf:
            if self._mode is _Mode.START:
                rest = buf.lstrip()
                if rest.startswith(self._open):
                    self._mode = _Mode.THINK_LEAD
                    self._saw = True
                    buf = rest[len(self._open) :]
                elif not rest or self._open.startswith(rest):
                    self._held = buf  # only whitespace and/or the start of <think> so far: undecided
                    buf = ""
                else:
                    self._mode = _Mode.ANSWER  # an ordinary reply: leading whitespace is kept
            elif self._mode is _Mode.THINK_LEAD:
                buf = buf.lstrip()
                if buf:
                    self._mode = _Mode.THINK
            elif self._mode is _Mode.THINK:
                end = buf.find(self._close)
                if end >= 0:
                    reasoning.append(buf[:end])
                    buf = buf[end + len(self._close) :]
                    self._mode = _Mode.ANSWER_LEAD
                    self._closed = True
                else:
                    keep = _partial_suffix_len(buf, self._close)
                    reasoning.append(buf[: len(buf) - keep])
                    self._held = buf[len(buf) - keep :]
                    buf = ""
            elif self._mode is _Mode.ANSWER_LEAD:
                buf = buf.lstrip()
                if buf:
                    self._mode = _Mode.ANSWER
            else:
                content.append(buf)
                buf = ""
        return TextDelta(reasoning="".join(reasoning), content="".join(content))

    def close_thinking(self) -> TextDelta:
        """Force thinking to end (budget reached, or "Answer now"): held text is reasoning, what follows is answer.

        Before the reply has shown whether it opens ``<think>``, the held text is whitespace or a partial open tag,
        neither of which is reasoning or answer, so it is dropped. In answer mode this does nothing.
        """
        if self._mode in (_Mode.ANSWER, _Mode.ANSWER_LEAD):
            return TextDelta()
        held = self._held if self._mode is _Mode.THINK else ""
        self._held = ""
        self._mode = _Mode.ANSWER_LEAD
        self._closed = True
        return TextDelta(reasoning=held)

    def flush(self) -> TextDelta:
        """End of stream: release held text (reasoning if thinking never closed, else content)."""
        held, self._held = self._held, ""
        if not held:
            return TextDelta()
        if self._mode is _Mode.THINK:
            return TextDelta(reasoning=held)
        self._mode = _Mode.ANSWER  # START: whitespace or a partial "<think" that never completed is answer text
        return TextDelta(content=held)

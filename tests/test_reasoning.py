"""ReasoningParser: table-driven cases, each checked under every way the stream could have been chunked."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pytest

from enclave.engine.reasoning import ReasoningParser
from enclave.engine.types import TextDelta


@dataclass(frozen=True)
class Case:
    id: str
    starts_in_thinking: bool
    text: str
    reasoning: str
    content: str
    closed: bool
    saw: bool


CASES = [
    # The R1-Distill prompt already opened <think>: only </think> appears in the output.
    Case(
        "distill",
        True,
        "\nLet me think.\n</think>\n\nThe answer is 4.",
        "Let me think.\n",
        "The answer is 4.",
        True,
        True,
    ),
    Case("distill-no-whitespace", True, "Okay.</think>Answer", "Okay.", "Answer", True, True),
    Case("distill-unclosed", True, "Thinking forever", "Thinking forever", "", False, True),
    Case("distill-only-whitespace", True, " \n \n", "", "", False, True),
    Case("distill-empty-reasoning", True, "\n</think>\n\nHi", "", "Hi", True, True),
    Case("inner-whitespace-kept", True, "a\n\n b</think>  x \n y\n", "a\n\n b", "x \n y\n", True, True),
    Case("second-close-is-content", True, "a</think>b</think>c", "a", "b</think>c", True, True),
    Case("partial-close-not-completed", True, "a </th b</think>c", "a </th b", "c", True, True),
    Case("overlapping-prefix", True, "a<</think>b", "a<", "b", True, True),
    Case("double-slash", True, "x<//think></think>y", "x<//think>", "y", True, True),
    Case("unicode", True, "思考 ✓</think>\n答案 ✓", "思考 ✓", "答案 ✓", True, True),
    Case("unclosed-ends-in-partial-tag", True, "hmm </thin", "hmm </thin", "", False, True),
    # R1-0528: the model opens <think> itself.
    Case("0528", False, "<think>\nHmm.\n</think>\n\nHi!", "Hmm.\n", "Hi!", True, True),
    Case("0528-leading-whitespace", False, "  \n<think>x</think>y", "x", "y", True, True),
    Case("0528-empty-thinking", False, "<think>\n\n</think>\n\nJust answer.", "", "Just answer.", True, True),
    Case("0528-unclosed", False, "<think>\nstill going", "still going", "", False, True),
    Case("only-open-tag", False, "<think>", "", "", False, True),
    Case("later-open-is-text", False, "<think>a</think>b <think>c", "a", "b <think>c", True, True),
    # No thinking block: everything is answer, tags included.
    Case(
        "no-thinking", False, "Hello <think> not a tag </think>", "", "Hello <think> not a tag </think>", False, False
    ),
    Case("leading-whitespace-kept", False, "\n\nHello", "", "\n\nHello", False, False),
    Case("close-in-answer-mode", False, "Hi </think> there", "", "Hi </think> there", False, False),
    Case("similar-tag", False, "<thinking>x</thinking>", "", "<thinking>x</thinking>", False, False),
    Case("partial-open-at-end", False, "<thin", "", "<thin", False, False),
    Case("whitespace-only", False, " \n", "", " \n", False, False),
    Case("empty", False, "", "", "", False, False),
]


def run(parser: ReasoningParser, chunks: Iterable[str]) -> tuple[str, str]:
    reasoning, content = [], []
    for delta in [*(parser.feed(c) for c in chunks), parser.flush()]:
        reasoning.append(delta.reasoning)
        content.append(delta.content)
    return "".join(reasoning), "".join(content)


def chunkings(text: str) -> Iterable[list[str]]:
    """Whole, char by char, every 2-split, and every 3-split of short texts."""
    yield [text]
    yield list(text)
    for i in range(len(text) + 1):
        yield [text[:i], text[i:]]
    if len(text) <= 40:
        for i in range(len(text) + 1):
            for j in range(i, len(text) + 1):
                yield [text[:i], text[i:j], text[j:]]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_every_chunking_gives_the_same_split(case: Case) -> None:
    for chunks in chunkings(case.text):
        parser = ReasoningParser(starts_in_thinking=case.starts_in_thinking)
        assert run(parser, chunks) == (case.reasoning, case.content), chunks
        assert parser.thinking_closed is case.closed, chunks
        assert parser.saw_thinking is case.saw, chunks
        assert parser.in_thinking is (case.saw and not case.closed), chunks


@pytest.mark.parametrize(
    ("starts", "chunk", "expected"),
    [
        (True, "Some thought", TextDelta(reasoning="Some thought")),
        (True, "Some thought <", TextDelta(reasoning="Some thought ")),  # "<" may start </think>
        (True, "Some thought </thi", TextDelta(reasoning="Some thought ")),
        (True, "Some thought <x", TextDelta(reasoning="Some thought <x")),  # cannot become </think>: released
        (True, "Some thought </think>\n\nAns", TextDelta(reasoning="Some thought ", content="Ans")),
        (False, "Plain answer <", TextDelta(content="Plain answer <")),  # answer mode holds nothing back
        (False, "<thi", TextDelta()),  # could still be <think>
        (False, "<think>\nfirst", TextDelta(reasoning="first")),
    ],
)
def test_holds_back_only_a_possible_tag(starts: bool, chunk: str, expected: TextDelta) -> None:
    assert ReasoningParser(starts_in_thinking=starts).feed(chunk) == expected


def test_state_follows_the_stream() -> None:
    parser = ReasoningParser(starts_in_thinking=False)
    assert (parser.in_thinking, parser.saw_thinking, parser.thinking_closed) == (False, False, False)
    parser.feed("<think>")
    assert (parser.in_thinking, parser.saw_thinking, parser.thinking_closed) == (True, True, False)
    parser.feed("x</think>")
    assert (parser.in_thinking, parser.saw_thinking, parser.thinking_closed) == (False, True, True)


def test_close_thinking_flushes_held_text_as_reasoning() -> None:
    parser = ReasoningParser(starts_in_thinking=True)
    assert parser.feed("Let me see </th") == TextDelta(reasoning="Let me see ")
    assert parser.close_thinking() == TextDelta(reasoning="</th")
    assert parser.thinking_closed and not parser.in_thinking
    # The engine injected "\n</think>\n\n" into the context; the model's answer follows, leading blank lines dropped.
    assert parser.feed("\n\nThe answer") == TextDelta(content="The answer")
    assert parser.feed(" </think> stays") == TextDelta(content=" </think> stays")
    assert parser.flush() == TextDelta()


def test_close_thinking_before_the_model_opened_it() -> None:
    parser = ReasoningParser(starts_in_thinking=False)
    assert parser.feed(" <thi") == TextDelta()
    assert parser.close_thinking() == TextDelta()  # a partial open tag is neither reasoning nor answer
    assert parser.thinking_closed and not parser.saw_thinking
    assert parser.feed("\nAnswer <think>") == TextDelta(content="Answer <think>")


def test_close_thinking_in_answer_mode_does_nothing() -> None:
    parser = ReasoningParser(starts_in_thinking=False)
    assert parser.feed("Hello") == TextDelta(content="Hello")
    assert parser.close_thinking() == TextDelta()
    assert not parser.thinking_closed
    assert parser.feed(" world") == TextDelta(content=" world")


def test_close_thinking_right_after_open_tag() -> None:
    parser = ReasoningParser(starts_in_thinking=True)
    assert parser.feed("\n") == TextDelta()
    assert parser.close_thinking() == TextDelta()
    assert parser.feed("Answer") == TextDelta(content="Answer")


def test_unclosed_thinking_flushes_as_reasoning() -> None:
    parser = ReasoningParser(starts_in_thinking=False)
    assert parser.feed("<think>\nstill thinking <") == TextDelta(reasoning="still thinking ")
    assert parser.flush() == TextDelta(reasoning="<")
    assert not parser.thinking_closed and parser.saw_thinking


def test_custom_tags() -> None:
    text = "<reasoning>\nabc</reasoning>\nanswer </think>"
    for chunks in chunkings(text):
        parser = ReasoningParser(starts_in_thinking=False, open_tag="<reasoning>", close_tag="</reasoning>")
        assert run(parser, chunks) == ("abc", "answer </think>")


def test_empty_tags_are_rejected() -> None:
    with pytest.raises(ValueError):
        ReasoningParser(starts_in_thinking=True, close_tag="")

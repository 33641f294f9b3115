"""Fit a conversation into the context window, visibly.

Enclave never truncates silently: when the next turn would not fit, the oldest turns are left out whole (a user
message together with its answer) and the caller is told how many, so the chat can show a marker.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from enclave.engine.types import ChatMessage, PromptTooLongError


@dataclass(frozen=True)
class FittedMessages:
    messages: tuple[ChatMessage, ...]
    dropped: int
    tokens: int


def fit_messages(
    messages: Sequence[ChatMessage],
    count_tokens: Callable[[Sequence[ChatMessage]], int],
    budget: int,
) -> FittedMessages:
    """Drop the oldest non-system turns until ``count_tokens(messages) <= budget``.

    System messages are always kept; the last message (the question being asked) is never dropped. Raises
    PromptTooLongError when even the system prompt plus the last message does not fit.
    """
    system = [m for m in messages if m.role == "system"]
    turns = [m for m in messages if m.role != "system"]
    dropped = 0
    while True:
        candidate = (*system, *turns)
        tokens = count_tokens(candidate)
        if tokens <= budget:
            return FittedMessages(candidate, dropped, tokens)
        if len(turns) <= 1:
            raise PromptTooLongError(
                f"This message needs {tokens:,} tokens but only {budget:,} fit in the model's context after leaving "
                "room for the answer. Shorten the message or system prompt, or raise the context length in Settings."
            )
        # Drop a whole exchange: the oldest message and any answers that followed it, so turns stay paired.
        turns.pop(0)
        dropped += 1
        while len(turns) > 1 and turns[0].role != "user":
            turns.pop(0)
            dropped += 1

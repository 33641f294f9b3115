"""Asking the model: the request the GUI's chat, ``enclave chat`` and any later caller send for the same question.

- ``history`` — what of a stored conversation is sent back: the system prompt, every question and the answers that
  ended usably (complete, stopped, interrupted), never earlier reasoning, never failed or empty answers.
- ``chat_request`` — the model's recommended sampling (DeepSeek's for R1), then the user's settings, then explicit
  values (command-line flags); the length limit and thinking budget the same way (0 in settings = none).
- ``ground_in_documents`` — a question with numbered sources in place of the bare question, within the room the
  conversation leaves in the context (``docs.prompt.sources_budget``), and the sources to store with the answer.

Qt-free, so the CLI and the GUI cannot drift apart (they did: the CLI ignored the saved sampling settings).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from enclave.docs.prompt import Source, build_document_prompt, estimate_tokens, sources_budget
from enclave.engine.types import ChatMessage, GenerationRequest, ModelInfo, SamplingParams
from enclave.settings.settings import Settings
from enclave.storage.chats import Message, MessageStatus

if TYPE_CHECKING:
    from enclave.docs.search import SearchResult

SENDABLE = (MessageStatus.COMPLETE, MessageStatus.CANCELLED, MessageStatus.INTERRUPTED)
MESSAGE_OVERHEAD_TOKENS = 8  # role markers and separators the chat template adds around each message
DEFAULT_CONTEXT = 4096  # the budget's context when no model reports one


@dataclass(frozen=True)
class History:
    messages: tuple[ChatMessage, ...]
    sent_ids: tuple[int, ...]  # the stored messages that were sent (the system prompt has none)


def history(system_prompt: str, stored: Sequence[Message]) -> History:
    """The messages of a stored conversation that go back to the model, oldest first."""
    messages: list[ChatMessage] = []
    if system_prompt.strip():
        messages.append(ChatMessage("system", system_prompt))
    sent: list[int] = []
    for message in stored:
        if message.role == "user" or (
            message.role == "assistant" and message.status in SENDABLE and message.content.strip()
        ):
            messages.append(ChatMessage("user" if message.role == "user" else "assistant", message.content))
            sent.append(message.id)
    return History(tuple(messages), tuple(sent))


def sampling_for(
    model: ModelInfo,
    settings: Settings | None,
    *,
    temperature: float | None = None,
    top_p: float | None = None,
    seed: int | None = None,
) -> SamplingParams:
    """The model's recommended sampling < the user's settings < explicit values (None = not given)."""
    sampling = model.default_sampling
    chosen = {
        "temperature": temperature if temperature is not None else (settings.temperature if settings else None),
        "top_p": top_p if top_p is not None else (settings.top_p if settings else None),
        "seed": seed,
    }
    given = {name: value for name, value in chosen.items() if value is not None}
    return replace(sampling, **given) if given else sampling  # type: ignore[arg-type]


def chat_request(
    messages: Sequence[ChatMessage],
    model: ModelInfo,
    settings: Settings | None,
    *,
    temperature: float | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    max_tokens: int | None = None,
    think_budget: int | None = None,
) -> GenerationRequest:
    """The request for ``messages``: settings fill what the caller leaves as None; 0 in settings means no limit."""
    if max_tokens is None and settings is not None:
        max_tokens = settings.max_tokens or None
    if think_budget is None and settings is not None:
        think_budget = settings.think_budget or None
    return GenerationRequest(
        messages=tuple(messages),
        sampling=sampling_for(model, settings, temperature=temperature, top_p=top_p, seed=seed),
        max_tokens=max_tokens,
        think_budget=think_budget,
    )


@dataclass(frozen=True)
class Grounded:
    request: GenerationRequest  # the question replaced by the sources and the question
    sources: tuple[Source, ...]  # numbered as the prompt cites them
    nothing_relevant: bool  # the search found nothing relevant (the model is told so)
    no_room: bool  # relevant passages exist but the conversation left no room for them


def ground_in_documents(request: GenerationRequest, results: Sequence[SearchResult], n_ctx: int | None) -> Grounded:
    """``request`` with its last (user) message answered from ``results``, within the context's room."""
    if not request.messages or request.messages[-1].role != "user":
        raise ValueError("only a question (the last message from the user) can be grounded in documents")
    earlier, question = request.messages[:-1], request.messages[-1].content
    used = sum(estimate_tokens(m.content) + MESSAGE_OVERHEAD_TOKENS for m in earlier)
    budget = sources_budget(n_ctx or DEFAULT_CONTEXT, used)
    context = build_document_prompt(question, results, budget_tokens=budget)
    grounded = replace(request, messages=(*earlier, ChatMessage("user", context.prompt)))
    return Grounded(
        grounded, context.sources, context.nothing_relevant, not context.sources and not context.nothing_relevant
    )


__all__ = [
    "MESSAGE_OVERHEAD_TOKENS",
    "SENDABLE",
    "Grounded",
    "History",
    "chat_request",
    "ground_in_documents",
    "history",
    "sampling_for",
]

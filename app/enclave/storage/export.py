"""Export a conversation to Markdown (for reading and sharing) or JSON (for other tools; a stable, versioned schema).

JSON schema, version 1::

    {"format": "enclave-chat", "version": 1,
     "conversation": {"title", "system_prompt", "created_at", "updated_at"},
     "messages": [{"role", "content", "reasoning", "status", "model", "created_at", "thinking_seconds",
                   "stats": {...} | null, "error",
                   "sources": [{"number", "path", "label", "page"}] | null}]}

``sources`` (added in 0.2, still version 1: readers ignore keys they do not know) is null when the answer did not
search documents and an empty list when the search found nothing relevant.

Timestamps are Unix seconds. Database ids are left out: they mean nothing outside this computer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

from enclave.fsutil import atomic_write_text
from enclave.storage.chats import ChatStore, Conversation, Message, MessageStatus

__all__ = [
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "conversation_to_json",
    "conversation_to_markdown",
    "export_conversation",
]

EXPORT_FORMAT = "enclave-chat"
EXPORT_VERSION = 1

_ROLE_HEADINGS = {"system": "System", "user": "You", "assistant": "Assistant"}


def _status_note(message: Message) -> str | None:
    if message.status is MessageStatus.INTERRUPTED:
        return "*⚠ Interrupted: Enclave closed before this answer was finished.*"
    if message.status is MessageStatus.CANCELLED:
        return "*⚠ Stopped before the answer was finished.*"
    if message.status is MessageStatus.FAILED:
        detail = f": {message.error}" if message.error else ""
        return f"*⚠ Failed{detail}*"
    if message.status is MessageStatus.STREAMING:
        return "*⚠ Still being written when this was exported.*"
    return None


def _fence_html(text: str) -> str:
    """Keep the model's text from closing our <details> block early."""
    return text.replace("</details>", "&lt;/details&gt;")


def conversation_to_markdown(conv: Conversation, messages: Sequence[Message]) -> str:
    """Readable Markdown; reasoning sits in a collapsed ``<details>`` block that GitHub and most viewers fold."""
    created = datetime.fromtimestamp(conv.created_at).strftime("%Y-%m-%d %H:%M")
    parts = [f"# {conv.title.strip() or 'Untitled chat'}", f"*Exported from Enclave · started {created}*"]
    if conv.system_prompt.strip():
        parts.append("## System prompt\n\n" + conv.system_prompt.strip())
    for message in messages:
        heading = f"## {_ROLE_HEADINGS.get(message.role, message.role.title())}"
        if message.role == "assistant" and message.model:
            heading += f" ({message.model})"
        block = [heading]
        if message.reasoning.strip():
            summary = "Thinking"
            if message.thinking_seconds is not None:
                summary += f" ({message.thinking_seconds:.0f} s)"
            block.append(
                f"<details><summary>{summary}</summary>\n\n{_fence_html(message.reasoning.strip())}\n\n</details>"
            )
        if message.content.strip():
            block.append(message.content.strip())
        if message.sources:
            block.append("**Sources**\n\n" + "\n".join(f"{s.number}. {s.label} — `{s.path}`" for s in message.sources))
        note = _status_note(message)
        if note:
            block.append(note)
        parts.append("\n\n".join(block))
    return "\n\n".join(parts) + "\n"


def conversation_to_json(conv: Conversation, messages: Sequence[Message]) -> str:
    """JSON in the ``enclave-chat`` v1 schema (see the module docstring); deterministic for identical input."""
    document = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "conversation": {
            "title": conv.title,
            "system_prompt": conv.system_prompt,
            "created_at": conv.created_at,
            "updated_at": conv.updated_at,
        },
        "messages": [
            {
                "role": message.role,
                "content": message.content,
                "reasoning": message.reasoning,
                "status": message.status.value,
                "model": message.model,
                "created_at": message.created_at,
                "thinking_seconds": message.thinking_seconds,
                "stats": None if message.stats is None else asdict(message.stats),
                "error": message.error,
                "sources": None
                if message.sources is None
                else [{"number": s.number, "path": s.path, "label": s.label, "page": s.page} for s in message.sources],
            }
            for message in messages
        ],
    }
    return json.dumps(document, ensure_ascii=False, indent=2) + "\n"


def export_conversation(store: ChatStore, conversation_id: int, path: Path) -> None:
    """Write the conversation to ``path``: ``.md``/``.markdown`` → Markdown, ``.json`` → JSON; anything else is a
    ValueError (the save dialog should offer only these). Raises OSError if the file cannot be written."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in {".md", ".markdown"}:
        render = conversation_to_markdown
    elif suffix == ".json":
        render = conversation_to_json
    else:
        raise ValueError(f"Cannot export to {path.name}: choose a .md or .json file name.")
    conv = store.conversation(conversation_id)
    atomic_write_text(path, render(conv, store.messages(conversation_id)))

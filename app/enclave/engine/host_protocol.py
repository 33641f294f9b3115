"""The engine host's wire protocol: what the app (``IsolatedBackend``) and ``enclave engine-host`` say to each other.

Every message is one JSON object (UTF-8) sent with ``Connection.send_bytes`` over a ``multiprocessing.connection``
link with a random key; never pickle, so a host taken over by a hostile model file cannot run code in the app by what
it sends back. Every message has a ``type``; requests and their answers carry the request's ``id`` (a string). The
receiving side checks every field's type (:class:`ProtocolError` otherwise).

Protocol version 2 (:data:`PROTOCOL_VERSION`; 2 added the embedding messages and ``load_progress``). The app
sends ``hello`` first; the host answers ``hello`` with its own version, and the app refuses a host that speaks
another one.

App → host

================  ==============================================  ================================================
type              fields                                          answer
================  ==============================================  ================================================
``hello``         ``protocol``                                    ``hello``
``load``          ``id``, ``request`` (a LoadRequest)             ``loaded`` or ``error`` (``cancelled``)
``unload``        ``id``                                          ``unloaded``
``tokenize``      ``id``, ``text``, ``special``                   ``tokens`` or ``error``
``count_tokens``  ``id``, ``text``                                ``count`` or ``error``
``generate``      ``id``, ``request`` (a GenerationRequest)       the stream below, ending ``finished`` or ``error``
``cancel``        ``id`` of a running ``generate`` or ``load``    none: ``finished`` (cancelled) or ``error``
``answer_now``    ``id`` of a running ``generate``                none: ``thinking_closed`` (forced) in the stream
``shutdown``      (none)                                          none: the host frees the model and exits
``embed_open``    ``id``, ``path``, ``n_threads``, ``batch``      ``embedder`` or ``error``
``embed``         ``id``, ``texts``, ``role`` (documents/query)   ``vectors`` or ``error``
``embed_count``   ``id``, ``text``                                ``count`` or ``error``
================  ==============================================  ================================================

A host serves one role: the chat model (``load`` … ``answer_now``), or the documents' embedding model (``embed_*``;
``n_threads`` and ``batch`` may be null for the defaults).

``cancel`` and ``answer_now`` are read by a thread of their own in the host, so they take effect while the host is
busy: between two tokens, inside a prompt batch (llama.cpp's abort callback sees the flag), or during a load (its
progress callback does).

Host → app

===================  ==================================================  ==========================================
type                 fields                                              meaning
===================  ==================================================  ==========================================
``hello``            ``protocol``, ``pid``, ``version`` (Enclave's)      the handshake's answer
``load_progress``    ``id``, ``fraction`` (0.0 to 1.0)                   a load in progress, a few times a second
``loaded``           ``id``, ``info`` (a ModelInfo)                      the model is resident
``unloaded``         ``id``                                              no model is resident
``tokens``           ``id``, ``tokens`` (list of int)                    tokenize's answer
``count``            ``id``, ``count``                                   count_tokens' / embed_count's answer
``embedder``         ``id``, ``info`` (name, model_id, dimension, family,  the embedding model is open
                     max_text_tokens)
``vectors``          ``id``, ``rows``, ``dimension``, ``data``           normalised vectors: base64 of rows ×
                                                                         dimension little-endian float32
``context_trimmed``  ``id``, ``dropped_messages``                        stream event ContextTrimmed
``prompt_progress``  ``id``, ``evaluated``, ``total``, ``seconds_left``  stream event PromptProgress (batch ended)
``batch_progress``   ``id``, ``evaluated``, ``total``, ``seconds_left``  inside a batch, for control.progress
``delta``            ``id``, ``reasoning``, ``content``                  stream event TextDelta
``thinking_closed``  ``id``, ``forced``                                  stream event ThinkingClosed
``finished``         ``id``, ``reason``, ``stats`` (GenerationStats)     stream event Finished: the last one
``error``            ``id``, ``kind``, ``message``, ``resident``         the request failed (kind: ERROR_KINDS);
                                                                         ``resident``: a model is still loaded
===================  ==================================================  ==========================================

``seconds_left`` may be null. A host that dies says nothing: the app sees the connection close and reads the host's
standard error (llama.cpp's abort message) for the explanation.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any, TypeVar

from enclave.engine.types import (
    ChatMessage,
    ContextTrimmed,
    EngineError,
    Finished,
    FinishReason,
    GenerationRequest,
    GenerationStats,
    LoadRequest,
    ModelInfo,
    ModelLoadCancelled,
    ModelLoadError,
    PromptProgress,
    PromptTooLongError,
    SamplingParams,
    StreamEvent,
    TextDelta,
    ThinkingClosed,
)

PROTOCOL_VERSION = 2
# A long chat's messages, or a tokenized document, fit comfortably; anything larger is refused unread.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
ERROR_KINDS = ("load", "cancelled", "prompt_too_long", "engine", "internal")

T = TypeVar("T")


class ProtocolError(ValueError):
    """A message that is not what the protocol says it is."""


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, ensure_ascii=False).encode("utf-8", errors="surrogatepass")


def decode(data: bytes) -> dict[str, Any]:
    try:
        message = json.loads(data.decode("utf-8", errors="replace"))
    except ValueError as exc:
        raise ProtocolError(f"not JSON: {exc}") from exc
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError("not a message object with a type")
    return message


def get(message: dict[str, Any], key: str, kind: type[T]) -> T:
    """``message[key]``, which must be a ``kind`` (an int is accepted for a float; a bool is never an int)."""
    if key not in message:
        raise ProtocolError(f"{message.get('type')!r} message without {key!r}")
    return _check(message[key], kind, key)


def _check(value: Any, kind: type[T], where: str) -> T:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ProtocolError(f"{where} should be {kind.__name__}, not {type(value).__name__}")
    return value


def get_optional(message: dict[str, Any], key: str, kind: type[T]) -> T | None:
    if message.get(key) is None:
        return None
    return get(message, key, kind)


# --- requests and answers: the engine's frozen dataclasses, field by field -----------------------------------------
#
# Encoded with dataclasses.asdict; decoded by walking the dataclass's own fields and checking each value against the
# field's annotation, so a field added to LoadRequest or ModelInfo travels without a change here (and a type this
# module cannot check is refused loudly rather than passed on unchecked).

_SCALARS: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool}
_ROLES = ("system", "user", "assistant")


def _nested() -> dict[str, type]:
    return {"SamplingParams": SamplingParams, "ChatMessage": ChatMessage}


def _value(annotation: str, value: Any, where: str) -> Any:
    annotation = annotation.strip()
    if annotation.endswith("| None"):
        return None if value is None else _value(annotation.removesuffix("| None"), value, where)
    if annotation in _SCALARS:
        return _check(value, _SCALARS[annotation], where)
    if annotation == "Role":
        if value not in _ROLES:
            raise ProtocolError(f"{where}: unknown role {value!r}")
        return value
    if annotation.startswith("tuple[") and annotation.endswith(", ...]"):
        if not isinstance(value, list):
            raise ProtocolError(f"{where} should be a list")
        item = annotation.removeprefix("tuple[").removesuffix(", ...]")
        return tuple(_value(item, element, where) for element in value)
    nested = _nested().get(annotation)
    if nested is not None:
        return from_json(nested, value)
    raise ProtocolError(f"{where}: no wire form for {annotation}")


def to_json(value: Any) -> dict[str, Any]:
    """A request or answer dataclass as a JSON object."""
    return dataclasses.asdict(value)


def from_json(cls: type[T], data: Any) -> T:
    """Rebuild dataclass ``cls`` from ``data``, checking every field; missing fields with a default keep it."""
    if not isinstance(data, dict):
        raise ProtocolError(f"{cls.__name__} should be an object")
    values: dict[str, Any] = {}
    for item in dataclasses.fields(cls):  # type: ignore[arg-type]  # every cls passed here is a dataclass
        if item.name not in data:
            if item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING:
                raise ProtocolError(f"{cls.__name__} without {item.name!r}")
            continue
        values[item.name] = _value(str(item.type), data[item.name], f"{cls.__name__}.{item.name}")
    return cls(**values)


def load_request_to_json(request: LoadRequest) -> dict[str, Any]:
    return to_json(request)


def load_request_from_json(data: Any) -> LoadRequest:
    return from_json(LoadRequest, data)


def generation_request_to_json(request: GenerationRequest) -> dict[str, Any]:
    return to_json(request)


def generation_request_from_json(data: Any) -> GenerationRequest:
    return from_json(GenerationRequest, data)


def model_info_to_json(info: ModelInfo) -> dict[str, Any]:
    return to_json(info)


def model_info_from_json(data: Any) -> ModelInfo:
    return from_json(ModelInfo, data)


def progress_to_json(request_id: str, progress: PromptProgress, *, inside_batch: bool) -> dict[str, Any]:
    return {
        "type": "batch_progress" if inside_batch else "prompt_progress",
        "id": request_id,
        "evaluated": progress.evaluated,
        "total": progress.total,
        "seconds_left": progress.seconds_left,
    }


def progress_from_json(message: dict[str, Any]) -> PromptProgress:
    return PromptProgress(
        get(message, "evaluated", int), get(message, "total", int), get_optional(message, "seconds_left", float)
    )


def event_to_json(request_id: str, event: StreamEvent) -> dict[str, Any]:
    if isinstance(event, TextDelta):
        return {"type": "delta", "id": request_id, "reasoning": event.reasoning, "content": event.content}
    if isinstance(event, PromptProgress):
        return progress_to_json(request_id, event, inside_batch=False)
    if isinstance(event, ThinkingClosed):
        return {"type": "thinking_closed", "id": request_id, "forced": event.forced}
    if isinstance(event, ContextTrimmed):
        return {"type": "context_trimmed", "id": request_id, "dropped_messages": event.dropped_messages}
    if isinstance(event, Finished):
        return {
            "type": "finished",
            "id": request_id,
            "reason": event.reason.value,
            "stats": dataclasses.asdict(event.stats),
        }
    raise TypeError(f"not a stream event: {event!r}")


def event_from_json(message: dict[str, Any]) -> StreamEvent | None:
    """The stream event in ``message``, or None when it is not one."""
    kind = message["type"]
    if kind == "delta":
        return TextDelta(reasoning=get(message, "reasoning", str), content=get(message, "content", str))
    if kind == "prompt_progress":
        return progress_from_json(message)
    if kind == "thinking_closed":
        return ThinkingClosed(forced=get(message, "forced", bool))
    if kind == "context_trimmed":
        return ContextTrimmed(get(message, "dropped_messages", int))
    if kind == "finished":
        try:
            reason = FinishReason(get(message, "reason", str))
        except ValueError as exc:
            raise ProtocolError(str(exc)) from exc
        return Finished(reason, from_json(GenerationStats, message.get("stats")))
    return None


def error_to_json(request_id: str, exc: BaseException, *, resident: bool) -> dict[str, Any]:
    if isinstance(exc, ModelLoadCancelled):
        kind = "cancelled"
    elif isinstance(exc, ModelLoadError):
        kind = "load"
    elif isinstance(exc, PromptTooLongError):
        kind = "prompt_too_long"
    elif isinstance(exc, EngineError):
        kind = "engine"
    else:
        kind = "internal"
    message = str(exc) if kind != "internal" else f"Unexpected engine error: {exc}"
    return {"type": "error", "id": request_id, "kind": kind, "message": message, "resident": resident}


def error_from_json(message: dict[str, Any]) -> EngineError:
    kind = get(message, "kind", str)
    text = get(message, "message", str)
    if kind == "cancelled":
        return ModelLoadCancelled(text)
    if kind == "load":
        return ModelLoadError(text)
    if kind == "prompt_too_long":
        return PromptTooLongError(text)
    return EngineError(text)


def embedder_info_to_json(embedder: Any) -> dict[str, Any]:
    """What the app needs to know of an open ``docs.embedder.Embedder``."""
    return {
        "name": embedder.name,
        "model_id": embedder.model_id,
        "dimension": embedder.dimension,
        "family": dataclasses.asdict(embedder.family),
        "max_text_tokens": embedder.max_text_tokens(),
    }


def vectors_to_json(request_id: str, vectors: Any) -> dict[str, Any]:
    import numpy as np

    array = np.ascontiguousarray(vectors, dtype="<f4")
    rows, dimension = array.shape
    data = base64.b64encode(array.tobytes()).decode("ascii")
    return {"type": "vectors", "id": request_id, "rows": rows, "dimension": dimension, "data": data}


def vectors_from_json(message: dict[str, Any]) -> Any:
    """The float32 array (rows × dimension) of a ``vectors`` message."""
    import numpy as np

    rows, dimension = get(message, "rows", int), get(message, "dimension", int)
    try:
        raw = base64.b64decode(get(message, "data", str), validate=True)
    except ValueError as exc:
        raise ProtocolError(f"vectors: {exc}") from exc
    if rows < 0 or dimension <= 0 or len(raw) != rows * dimension * 4:
        raise ProtocolError("vectors: the data does not match rows × dimension")
    return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(rows, dimension)

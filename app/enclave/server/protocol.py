"""The wire format: OpenAI's chat-completions and embeddings JSON, with DeepSeek's ``reasoning_content``.

Requests are checked with pydantic models; anything malformed, of the wrong type, or asking for a feature Enclave does
not have (tools, images, several choices) becomes an ``ApiError`` that the app sends as an OpenAI-style error body.
Responses are plain dicts built here, so the streamed chunks and the final object always agree.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from enclave.engine.types import (
    ChatMessage,
    FinishReason,
    GenerationRequest,
    GenerationStats,
    ModelInfo,
    SamplingParams,
)

MAX_STOP_STRINGS = 4  # as OpenAI and DeepSeek allow
MAX_EMBEDDING_INPUTS = 256


class ApiError(Exception):
    """An error the client should read, sent as ``{"error": {...}}`` with ``status``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


# --- requests ---------------------------------------------------------------------------------------------------


class _Strict(BaseModel):
    # Unknown fields are ignored (clients send many optional ones); the ones that matter are listed below.
    model_config = ConfigDict(extra="ignore", strict=True)


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class Message(_Strict):
    role: str
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None


class StreamOptions(_Strict):
    include_usage: bool = False


class ChatCompletionRequest(_Strict):
    messages: list[Message] = Field(min_length=1)
    model: str | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int | None = None
    # llama.cpp's server extension: a GBNF grammar the reply must follow (structured output).
    grammar: str | None = None
    # Features Enclave does not have; sending them is an error, not silence.
    tools: Any = None
    tool_choice: Any = None
    functions: Any = None
    function_call: Any = None
    response_format: dict[str, Any] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None

    @field_validator("temperature", "top_p", mode="before")
    @classmethod
    def _ints_are_numbers(cls, value: Any) -> Any:
        # JSON has one number type: 1 is as good a temperature as 1.0 (bools are not numbers).
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


class EmbeddingRequest(_Strict):
    input: str | list[str]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None


def _validation_error(exc: ValidationError) -> ApiError:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    message = first.get("msg", "invalid value")
    more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
    return ApiError(400, f"Invalid request: '{where}': {message}{more}.", param=where or None)


def parse_body(raw: bytes) -> dict[str, Any]:
    import json

    if not raw.strip():
        raise ApiError(400, "The request body is empty; send a JSON object.")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError(400, f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(data, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    return data


def parse_chat(data: dict[str, Any]) -> ChatCompletionRequest:
    try:
        request = ChatCompletionRequest.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(exc) from None
    unsupported = (
        ("tools", request.tools, "Tool calls are not supported by Enclave's local server."),
        ("functions", request.functions, "Function calls are not supported by Enclave's local server."),
        ("function_call", request.function_call, "Function calls are not supported by Enclave's local server."),
    )
    for param, value, message in unsupported:
        if value:
            raise ApiError(400, message, param=param, code="unsupported_parameter")
    if request.tool_choice not in (None, "none"):
        raise ApiError(400, "Tool calls are not supported by Enclave's local server.", param="tool_choice")
    if request.n not in (None, 1):
        raise ApiError(400, "Only one choice per request is supported (n must be 1).", param="n")
    if request.logprobs or request.top_logprobs:
        raise ApiError(400, "Log probabilities are not supported by Enclave's local server.", param="logprobs")
    if request.response_format is not None and request.response_format.get("type", "text") != "text":
        raise ApiError(
            400,
            "Only text responses are supported; for structured output send a GBNF 'grammar'.",
            param="response_format",
        )
    stops = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
    if len(stops) > MAX_STOP_STRINGS:
        raise ApiError(400, f"At most {MAX_STOP_STRINGS} stop strings are allowed.", param="stop")
    return request


def stop_strings(request: ChatCompletionRequest) -> list[str]:
    stops = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
    return [s for s in stops if s]


_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


def _message_text(index: int, message: Message) -> str:
    content = message.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for part in content:
        kind = part.get("type")
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append(part["text"])
        elif kind in ("image_url", "input_image", "image"):
            raise ApiError(
                400, "Images are not supported: the local model reads text only.", param=f"messages.{index}.content"
            )
        else:
            raise ApiError(
                400,
                f"Unsupported content part {kind!r}: only text parts are accepted.",
                param=f"messages.{index}.content",
            )
    return "".join(parts)


def to_generation(request: ChatCompletionRequest, model: ModelInfo, *, max_tokens_limit: int) -> GenerationRequest:
    """The engine request for ``request``: messages, limits, and sampling (the model's recommendation if none sent)."""
    messages: list[ChatMessage] = []
    for index, message in enumerate(request.messages):
        role = _ROLES.get(message.role)
        if role is None:
            raise ApiError(
                400,
                f"Unsupported role {message.role!r}: use system, user or assistant (tool results are not supported).",
                param=f"messages.{index}.role",
            )
        messages.append(ChatMessage(role, _message_text(index, message)))  # type: ignore[arg-type]
    if messages[-1].role == "assistant":
        raise ApiError(400, "The last message must come from the user (or the system), not the assistant.")
    max_tokens = request.max_completion_tokens or request.max_tokens
    if max_tokens is not None and max_tokens > max_tokens_limit:
        raise ApiError(
            400, f"max_tokens may be at most {max_tokens_limit} on this server (got {max_tokens}).", param="max_tokens"
        )
    sampling: SamplingParams = model.default_sampling  # DeepSeek's recommendation for R1 when the client sends none
    if request.temperature is not None:
        sampling = replace(sampling, temperature=request.temperature)
    if request.top_p is not None:
        sampling = replace(sampling, top_p=request.top_p)
    if request.seed is not None:
        sampling = replace(sampling, seed=request.seed)
    return GenerationRequest(
        messages=tuple(messages),
        sampling=sampling,
        max_tokens=max_tokens if max_tokens is not None else max_tokens_limit,
        grammar=request.grammar,
    )


def parse_embeddings(data: dict[str, Any]) -> list[str]:
    try:
        request = EmbeddingRequest.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(exc) from None
    if request.encoding_format != "float":
        raise ApiError(400, "Only encoding_format 'float' is supported.", param="encoding_format")
    if request.dimensions is not None:
        raise ApiError(400, "Choosing the embedding dimensions is not supported.", param="dimensions")
    texts = [request.input] if isinstance(request.input, str) else request.input
    if not texts:
        raise ApiError(400, "'input' must not be empty.", param="input")
    if len(texts) > MAX_EMBEDDING_INPUTS:
        raise ApiError(400, f"At most {MAX_EMBEDDING_INPUTS} inputs per request.", param="input")
    return texts


# --- responses --------------------------------------------------------------------------------------------------


def model_id(info: ModelInfo) -> str:
    """The id clients see: the model file's name without ``.gguf``."""
    from pathlib import Path

    return Path(info.path).name.removesuffix(".gguf")


def new_completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def finish_reason(reason: FinishReason, *, stopped_by_string: bool) -> str:
    if stopped_by_string:
        return "stop"
    return "length" if reason is FinishReason.LENGTH else "stop"


def usage(stats: GenerationStats) -> dict[str, Any]:
    return {
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.completion_tokens,
        "total_tokens": stats.prompt_tokens + stats.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": stats.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": stats.reasoning_tokens},
        # DeepSeek's names for the same split of the prompt.
        "prompt_cache_hit_tokens": stats.cached_tokens,
        "prompt_cache_miss_tokens": stats.prompt_tokens - stats.cached_tokens,
    }


@dataclass
class Completion:
    """Identity shared by every chunk of one answer."""

    id: str
    model: str
    created: int

    @classmethod
    def start(cls, model: str) -> Completion:
        return cls(new_completion_id(), model, int(time.time()))

    def chunk(
        self, delta: dict[str, Any], finish: str | None = None, *, usage_: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if usage_ is not None:
            body["usage"] = usage_
        return body

    def usage_chunk(self, usage_: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [],
            "usage": usage_,
        }

    def whole(self, content: str, reasoning: str, finish: str, usage_: dict[str, Any]) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if reasoning:
            message["reasoning_content"] = reasoning
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
            "usage": usage_,
        }


def models_list(chat: ModelInfo | None, embedding_names: Sequence[str]) -> dict[str, Any]:
    created = int(time.time())
    data = []
    if chat is not None:
        data.append({"id": model_id(chat), "object": "model", "created": created, "owned_by": "enclave"})
    data += [{"id": name, "object": "model", "created": created, "owned_by": "enclave"} for name in embedding_names]
    return {"object": "list", "data": data}

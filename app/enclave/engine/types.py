"""Immutable values that cross the engine boundary.

Requests travel from the GUI thread to the engine thread inside queued Qt signals, so everything here is frozen:
once a request is sent nobody can change it under the worker's feet.
"""

from __future__ import annotations

import enum
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

Role = Literal["system", "user", "assistant"]


def new_request_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class ChatMessage:
    """One turn as the model sees it. Assistant turns carry the answer only, never earlier reasoning."""

    role: Role
    content: str


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    seed: int | None = None


# DeepSeek's published recommendation for the R1 family (model cards: temperature 0.6, top-p 0.95).
R1_SAMPLING = SamplingParams(temperature=0.6, top_p=0.95, top_k=20, min_p=0.0, repeat_penalty=1.0)


@dataclass(frozen=True)
class LoadRequest:
    """What to load and what the user chose; None is Auto: the engine plans it (``enclave.models.placement``)."""

    path: str
    n_ctx: int | None = None
    n_gpu_layers: int | None = None  # -1: every layer; 0: CPU only
    n_threads: int | None = None
    n_batch: int | None = None
    kv_cache_type: str | None = None  # "f16", "q8_0" or "q4_0": a quantized cache fits more context in the same memory
    # llama.cpp device names to offload to (e.g. "Vulkan0", "RPC0"); ("CPU",): CPU only; (): Auto (the planner's pick:
    # discrete GPUs first, never a GPU API that runs on the CPU such as lavapipe)
    devices: tuple[str, ...] = ()
    gpu_memory_limit: int | None = None  # bytes of GPU memory the plan may use; None: what the devices report free
    request_id: str = field(default_factory=new_request_id)


KV_CACHE_TYPES = ("f16", "q8_0", "q4_0")


@dataclass(frozen=True)
class GenerationRequest:
    messages: tuple[ChatMessage, ...]
    sampling: SamplingParams = SamplingParams()
    max_tokens: int | None = None  # None: until the model stops or the context is full
    think_budget: int | None = None  # None: unlimited thinking; N: close </think> after N thinking tokens
    # A llama.cpp GBNF grammar the reply must follow (tests use it to get a real <think> stream from a small model;
    # an API client may ask for structured output). Tokens the engine injects itself (a forced </think>) are fed to
    # the grammar too, so the grammar should allow them where they can appear.
    grammar: str | None = None
    request_id: str = field(default_factory=new_request_id)


@dataclass
class GenerationControl:
    """Flags the GUI thread sets directly (threading.Event is thread-safe); the engine polls them.

    ``progress``, when set, is called on the engine thread while a prompt batch is being evaluated (at most every
    ~0.1 s), so a long prompt shows movement between the ``PromptProgress`` events that end each batch.
    """

    cancel: threading.Event = field(default_factory=threading.Event)
    answer_now: threading.Event = field(default_factory=threading.Event)
    progress: Callable[[PromptProgress], None] | None = None


class FinishReason(enum.StrEnum):
    STOP = "stop"
    LENGTH = "length"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class ModelInfo:
    path: str
    name: str
    architecture: str
    file_size: int
    n_ctx: int
    n_ctx_train: int
    chat_format: str  # human-readable name of the prompt format in use
    chat_format_source: str  # why: "built-in", "model file template", "fallback for architecture X"
    reasoning: bool  # the model emits <think> … </think>
    default_sampling: SamplingParams
    load_seconds: float = 0.0
    placement: str = ""  # where it runs, e.g. "GPU: 28 of 36 layers · experts in RAM · 65,536-token context · q8_0 KV"


@dataclass(frozen=True)
class GenerationStats:
    prompt_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens reused from the KV cache, not evaluated again
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    prompt_seconds: float = 0.0
    generation_seconds: float = 0.0
    context_used: int = 0
    context_size: int = 0

    @property
    def tokens_per_second(self) -> float:
        if self.generation_seconds <= 0:
            return 0.0
        return self.completion_tokens / self.generation_seconds


# --- events streamed by Backend.stream_chat -------------------------------------------------------------------


@dataclass(frozen=True)
class ContextTrimmed:
    """The oldest ``dropped_messages`` messages (after the system prompt) did not fit and were left out."""

    dropped_messages: int


@dataclass(frozen=True)
class PromptProgress:
    """``evaluated`` of ``total`` prompt tokens read; inside a batch, an estimate from llama.cpp's graph progress."""

    evaluated: int
    total: int
    seconds_left: float | None = None  # from the speed measured so far in this prompt; None before any measurement


@dataclass(frozen=True)
class TextDelta:
    reasoning: str = ""
    content: str = ""


@dataclass(frozen=True)
class ThinkingClosed:
    """Thinking ended; ``forced`` when the budget or "Answer now" closed it rather than the model."""

    forced: bool


@dataclass(frozen=True)
class Finished:
    reason: FinishReason
    stats: GenerationStats


StreamEvent = ContextTrimmed | PromptProgress | TextDelta | ThinkingClosed | Finished


class EngineError(Exception):
    """A failure the user should read: the message says what went wrong and what to do."""


class ModelLoadError(EngineError):
    pass


class ModelLoadCancelled(ModelLoadError):
    """The user cancelled the load; nothing is loaded."""


class PromptTooLongError(EngineError):
    pass

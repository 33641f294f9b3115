"""The llama-cpp-python backend.

We drive llama.cpp's token loop ourselves instead of ``create_chat_completion`` for three reasons the product needs:
the prompt is evaluated in small slices so a stop request lands within ~200 ms even on a CPU; the thinking budget and
"Answer now" inject ``</think>`` into the running sequence; and the KV cache is reused across turns by prefix match
(the same rule llama-cpp-python's ``generate`` uses), so turn 8 does not re-read turns 1-7.
"""

from __future__ import annotations

import codecs
import ctypes
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from enclave.engine.chat_format import ChatFormat, select_chat_format
from enclave.engine.context import fit_messages
from enclave.engine.gguf_check import check_gguf_file
from enclave.engine.reasoning import ReasoningParser
from enclave.engine.stop_strings import StopStringMatcher
from enclave.engine.types import (
    KV_CACHE_TYPES,
    R1_SAMPLING,
    ChatMessage,
    ContextTrimmed,
    EngineError,
    Finished,
    FinishReason,
    GenerationControl,
    GenerationRequest,
    GenerationStats,
    LoadRequest,
    ModelInfo,
    ModelLoadError,
    PromptProgress,
    SamplingParams,
    StreamEvent,
    TextDelta,
    ThinkingClosed,
)

log = logging.getLogger(__name__)

# Each prompt slice should take about this long, so a stop request is honoured quickly during long prompts.
PROMPT_SLICE_TARGET_S = 0.12
FIRST_PROMPT_SLICE = 32


_llama_log_callback: Any = None
_llama_log = logging.getLogger("enclave.llama_cpp")


def _route_llama_logs() -> None:
    """Send llama.cpp's own log lines to Python logging instead of stderr.

    Some of them bypass llama-cpp-python's ``verbose=False`` and would land in the middle of ``enclave chat``'s
    stderr, where the model's thinking is printed.
    """
    global _llama_log_callback
    if _llama_log_callback is not None:
        return
    import llama_cpp

    levels = {1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}  # ggml_log_level

    @llama_cpp.llama_log_callback
    def callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        message = text.decode("utf-8", errors="replace").rstrip()
        if message:
            # llama.cpp is chatty at INFO and WARNING about normal events; keep those out of the user's console.
            _llama_log.log(logging.DEBUG if levels.get(level, 0) < logging.ERROR else logging.ERROR, "%s", message)

    _llama_log_callback = callback  # keep a reference: llama.cpp calls it from C for the life of the process
    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))


def default_threads() -> int:
    """llama-cpp-python defaults to half the cores; decoding on a desktop CPU wants all physical ones."""
    return max(1, os.cpu_count() or 1)


class LlamaCppBackend:
    """One resident llama.cpp model; every method runs on the engine thread."""

    def __init__(self) -> None:
        self._llm: Any = None
        self._info: ModelInfo | None = None
        self._format: ChatFormat | None = None
        self._n_batch = 512
        _route_llama_logs()

    # --- model lifecycle --------------------------------------------------------------------------------------

    @property
    def model(self) -> ModelInfo | None:
        return self._info

    @property
    def chat_format(self) -> ChatFormat | None:
        return self._format

    @property
    def n_cached_tokens(self) -> int:
        """Tokens currently held in the KV cache (for tests and benchmarks)."""
        return int(self._llm.n_tokens) if self._llm is not None else 0

    def load(self, request: LoadRequest, cancel: threading.Event | None = None) -> ModelInfo:
        path = Path(request.path)
        check_gguf_file(path)  # clear errors for missing, truncated or non-GGUF files before llama.cpp opens them
        self.unload()  # one model at a time: free the old one before allocating the next
        started = time.monotonic()
        from llama_cpp import Llama

        threads = request.n_threads or default_threads()
        if request.kv_cache_type not in KV_CACHE_TYPES:
            raise ModelLoadError(
                f"Unknown KV cache type {request.kv_cache_type!r}; use one of {', '.join(KV_CACHE_TYPES)}."
            )
        import llama_cpp

        cache_type = {
            "f16": llama_cpp.GGML_TYPE_F16,
            "q8_0": llama_cpp.GGML_TYPE_Q8_0,
            "q4_0": llama_cpp.GGML_TYPE_Q4_0,
        }[request.kv_cache_type]
        try:
            llm = Llama(
                model_path=str(path),
                n_ctx=request.n_ctx,
                n_batch=request.n_batch,
                n_ubatch=request.n_batch,
                n_gpu_layers=request.n_gpu_layers,
                n_threads=threads,
                n_threads_batch=threads,
                swa_full=True,  # sliding-window models (Gemma 3) need a full cache for prefix reuse across turns
                flash_attn=True,  # smaller compute buffers at long contexts (the fit estimate assumes it), a bit faster
                type_k=cache_type,
                type_v=cache_type,  # a quantized V cache needs flash attention, which is on
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelLoadError(
                f"llama.cpp could not load {path.name}: {exc}. The file may be damaged, for a model architecture this "
                "version of Enclave does not support, or too large for this computer's memory."
            ) from exc
        self._llm = llm
        self._n_batch = request.n_batch
        metadata: dict[str, str] = dict(llm.metadata)
        architecture = metadata.get("general.architecture", "unknown")
        name = metadata.get("general.name") or path.stem
        model = llm._model
        fmt = select_chat_format(
            architecture=architecture,
            model_name=f"{name} {path.name}",
            template=metadata.get("tokenizer.chat_template"),
            bos_token=_token_text(model, model.token_bos()),
            eos_token=_token_text(model, model.token_eos()),
        )
        self._format = fmt
        self._info = ModelInfo(
            path=str(path),
            name=name,
            architecture=architecture,
            file_size=path.stat().st_size,
            n_ctx=llm.n_ctx(),
            n_ctx_train=model.n_ctx_train(),
            chat_format=fmt.name,
            chat_format_source=fmt.source,
            reasoning=fmt.reasoning,
            default_sampling=R1_SAMPLING if fmt.reasoning else SamplingParams(),
            load_seconds=time.monotonic() - started,
        )
        log.info("loaded %s (%s, format %s) in %.1f s", name, architecture, fmt.name, self._info.load_seconds)
        return self._info

    def unload(self) -> None:
        if self._llm is not None:
            self._llm.close()
            self._llm = None
        self._info = None
        self._format = None

    # --- tokens -----------------------------------------------------------------------------------------------

    def _require(self) -> tuple[Any, ChatFormat, ModelInfo]:
        if self._llm is None or self._format is None or self._info is None:
            raise EngineError("No model is loaded. Open a GGUF model first.")
        return self._llm, self._format, self._info

    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        llm, _, _ = self._require()
        return list(llm.tokenize(text.encode("utf-8"), add_bos=False, special=special))

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text, special=True))

    def prompt_tokens(self, messages: Sequence[ChatMessage]) -> list[int]:
        """Render and tokenize; add BOS when the model wants one and the format (e.g. a file template) left it out."""
        llm, fmt, _ = self._require()
        tokens = self.tokenize(fmt.render(messages), special=True)
        bos = llm._model.token_bos()
        if llm._model.add_bos_token() and bos >= 0 and (not tokens or tokens[0] != bos):
            tokens.insert(0, bos)
        return tokens

    def render_prompt(self, request: GenerationRequest) -> str:
        _, fmt, _ = self._require()
        return fmt.render(request.messages)

    # --- generation -------------------------------------------------------------------------------------------

    def stream_chat(self, request: GenerationRequest, control: GenerationControl) -> Iterator[StreamEvent]:
        llm, _, _ = self._require()
        try:
            yield from self._stream_chat(request, control)
        except RuntimeError as exc:
            # llama_decode failed (out of memory, a full KV cache, a backend error): the cache may now disagree with
            # what we think it holds, so start clean next time rather than reuse a damaged prefix.
            llm.reset()
            llm._ctx.kv_cache_clear()
            raise EngineError(
                f"llama.cpp failed while generating: {exc}. Try again; if it keeps failing, lower the context "
                "length or the GPU layers in Settings."
            ) from exc

    def _stream_chat(self, request: GenerationRequest, control: GenerationControl) -> Iterator[StreamEvent]:
        llm, fmt, info = self._require()
        n_ctx = info.n_ctx
        reserve = request.max_tokens if request.max_tokens else n_ctx // 4
        reserve = max(1, min(reserve, n_ctx // 2))
        fitted = fit_messages(request.messages, lambda msgs: len(self.prompt_tokens(msgs)), budget=n_ctx - reserve)
        if fitted.dropped:
            yield ContextTrimmed(fitted.dropped)
        prompt = self.prompt_tokens(fitted.messages)

        started = time.monotonic()
        cached = self._reuse_prefix(llm, prompt)
        pending = prompt[cached:]
        total = len(pending)
        done = 0
        slice_size = min(FIRST_PROMPT_SLICE, self._n_batch)
        while done < total:
            if control.cancel.is_set():
                # Whatever was evaluated stays valid in the cache; the next turn reuses it.
                yield Finished(
                    FinishReason.CANCELLED,
                    GenerationStats(prompt_tokens=len(prompt), cached_tokens=cached, context_size=n_ctx),
                )
                return
            chunk = pending[done : done + slice_size]
            t0 = time.monotonic()
            llm.eval(chunk)
            elapsed = max(time.monotonic() - t0, 1e-6)
            done += len(chunk)
            yield PromptProgress(done, total)
            per_token = elapsed / len(chunk)
            slice_size = max(8, min(self._n_batch, int(PROMPT_SLICE_TARGET_S / per_token)))
        prompt_seconds = time.monotonic() - started

        sampling = request.sampling
        if sampling.seed is not None:
            llm.set_seed(sampling.seed)
        # Installed as the Llama's sampler so llm.sample() keeps one chain (and its penalty history) for the reply.
        llm._sampler = llm._init_sampler(
            top_k=sampling.top_k,
            top_p=sampling.top_p,
            min_p=sampling.min_p,
            temp=sampling.temperature,
            repeat_penalty=sampling.repeat_penalty,
        )
        parser = ReasoningParser(starts_in_thinking=fmt.opens_thinking)
        stops = StopStringMatcher(fmt.stop_strings)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        vocab = llm._model.vocab
        import llama_cpp

        completion = 0
        reasoning_tokens = 0
        reason = FinishReason.STOP
        gen_started = time.monotonic()
        thinking_reported = False
        budget = request.think_budget
        try:
            while True:
                if control.cancel.is_set():
                    reason = FinishReason.CANCELLED
                    break
                if parser.in_thinking and (
                    control.answer_now.is_set() or (budget is not None and reasoning_tokens >= budget)
                ):
                    yield from self._emit(parser.close_thinking())
                    close_tokens = self.tokenize(fmt.close_thinking_text(), special=True)
                    if llm.n_tokens + len(close_tokens) >= n_ctx:
                        reason = FinishReason.LENGTH
                        break
                    llm.eval(close_tokens)
                    thinking_reported = True
                    yield ThinkingClosed(forced=True)
                if request.max_tokens is not None and completion >= request.max_tokens:
                    reason = FinishReason.LENGTH
                    break
                if llm.n_tokens >= n_ctx:
                    reason = FinishReason.LENGTH
                    break
                token = llm.sample()
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    break
                completion += 1
                if parser.in_thinking:
                    reasoning_tokens += 1
                llm.eval([token])
                text = decoder.decode(_token_piece(vocab, token))
                visible, stopped = stops.feed(text)
                was_thinking = parser.in_thinking
                yield from self._emit(parser.feed(visible))
                if was_thinking and not parser.in_thinking and not thinking_reported:
                    thinking_reported = True
                    yield ThinkingClosed(forced=False)
                if stopped:
                    break
            tail = stops.flush() if reason is not FinishReason.CANCELLED and not stops.stopped else ""
            yield from self._emit(parser.feed(tail + decoder.decode(b"", final=True)))
            yield from self._emit(parser.flush())
        finally:
            llm._sampler = None
        gen_seconds = time.monotonic() - gen_started
        yield Finished(
            reason,
            GenerationStats(
                prompt_tokens=len(prompt),
                cached_tokens=cached,
                completion_tokens=completion,
                reasoning_tokens=reasoning_tokens,
                prompt_seconds=prompt_seconds,
                generation_seconds=gen_seconds,
                context_used=int(llm.n_tokens),
                context_size=n_ctx,
            ),
        )

    @staticmethod
    def _emit(delta: TextDelta) -> Iterator[StreamEvent]:
        if delta.reasoning or delta.content:
            yield delta

    @staticmethod
    def _reuse_prefix(llm: Any, prompt: Sequence[int]) -> int:
        """Keep the longest cached prefix of ``prompt``; return how many tokens need no evaluation."""
        cached = 0
        for a, b in zip(llm._input_ids.tolist(), prompt, strict=False):
            if a != b:
                break
            cached += 1
        if cached >= len(prompt):
            cached = len(prompt) - 1  # re-evaluate the last token so fresh logits exist to sample from
        if cached > 0 and llm._ctx.kv_cache_seq_rm(-1, cached, -1):
            llm.n_tokens = cached
            return cached
        llm.reset()
        llm._ctx.kv_cache_clear()
        return 0


def _token_piece(vocab: Any, token: int) -> bytes:
    import llama_cpp

    size = 64
    while True:
        buf = ctypes.create_string_buffer(size)
        n = llama_cpp.llama_token_to_piece(vocab, token, buf, size, 0, True)
        if n >= 0:
            return bytes(buf.raw[:n])
        size = -n


def _token_text(model: Any, token: int) -> str:
    if token < 0:
        return ""
    try:
        return str(model.token_get_text(token))
    except Exception:  # some vocabularies have no text for special ids
        return ""

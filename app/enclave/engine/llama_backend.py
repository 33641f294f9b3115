"""The llama-cpp-python backend.

We drive llama.cpp's token loop ourselves instead of ``create_chat_completion`` for three reasons the product needs:
the prompt is read in full batches at llama.cpp's own speed while a stop request still lands within milliseconds
(llama.cpp's abort callback stops the batch in flight; see ``_PromptWatch``); the thinking budget and "Answer now"
inject ``</think>`` into the running sequence; and the KV cache is reused across turns by prefix match (the same rule
llama-cpp-python's ``generate`` uses), so turn 8 does not re-read turns 1-7.
"""

from __future__ import annotations

import codecs
import ctypes
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from enclave.engine.chat_format import ChatFormat, select_chat_format
from enclave.engine.context import fit_messages
from enclave.engine.gguf_check import check_gguf_file
from enclave.engine.llama_runtime import (
    Device,
    ModelParamsExtra,
    init_llama_runtime,
    open_llama,
    resolve_devices,
    tensor_override,
)
from enclave.engine.reasoning import ReasoningParser
from enclave.engine.stop_strings import StopStringMatcher
from enclave.engine.types import (
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
    ModelLoadCancelled,
    ModelLoadError,
    PromptProgress,
    SamplingParams,
    StreamEvent,
    TextDelta,
    ThinkingClosed,
)

if TYPE_CHECKING:
    from enclave.engine.dry_run import DryRun
    from enclave.models.hardware import Hardware
    from enclave.models.placement import LoadPlan

log = logging.getLogger(__name__)

# Where llama.cpp cannot abort a running batch (GPU backends: only ggml's CPU backend polls the abort callback), the
# prompt is evaluated in slices sized to take about this long, so a stop request is still honoured quickly.
PROMPT_SLICE_TARGET_S = 0.12
FIRST_PROMPT_SLICE = 32
LOAD_PROGRESS_INTERVAL_S = 0.1
# How often progress inside a running prompt batch is reported.
PROGRESS_INTERVAL_S = 0.1


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
        self._abortable = True  # every layer on the CPU backend, which polls llama.cpp's abort callback
        self._graph_nodes: int | None = None  # abort-callback calls in one batch: progress inside a batch
        self._plan: LoadPlan | None = None
        self._dry_run: DryRun | None = None  # llama.cpp's dry run of the last load (offloading loads only)
        self._plan_hardware: Hardware | None = None
        init_llama_runtime()

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

    def load(
        self,
        request: LoadRequest,
        cancel: threading.Event | None = None,
        progress: Callable[[float], None] | None = None,
    ) -> ModelInfo:
        """Plan (``enclave.models.placement``), then load exactly that plan; ``cancel`` stops the load."""
        path = Path(request.path)
        check_gguf_file(path)  # clear errors for missing, truncated or non-GGUF files before llama.cpp opens them
        plan = self.plan(request)
        self.unload()  # one model at a time: free the old one before allocating the next
        started = time.monotonic()
        devices, extra, settings = self._load_settings(plan, request, cancel, progress)
        self._dry_run = None
        if devices and plan.n_gpu_layers != 0:
            plan = self._check_with_dry_run(plan, request, extra, settings, devices)
            settings["n_gpu_layers"] = plan.n_gpu_layers
        try:
            llm = open_llama(extra, **settings)
        except (ValueError, RuntimeError, OSError) as exc:
            if cancel is not None and cancel.is_set():
                raise ModelLoadCancelled(f"Loading {path.name} was cancelled.") from exc
            if devices and plan.n_gpu_layers != 0:
                names = ", ".join(d.name for d in devices)
                raise ModelLoadError(
                    f"llama.cpp could not load {path.name} onto {names}: {exc}. The GPU may not have enough free "
                    "memory for this plan: lower the GPU layers or the context length, or choose CPU only in "
                    "Settings → Run on."
                ) from exc
            raise ModelLoadError(
                f"llama.cpp could not load {path.name}: {exc}. The file may be damaged, for a model architecture this "
                "version of Enclave does not support, or too large for this computer's memory."
            ) from exc
        self._llm = llm
        self._n_batch = plan.n_batch
        offloading = plan.n_gpu_layers != 0 and bool(devices)
        self._abortable = not offloading  # only ggml's CPU backend polls the abort callback
        self._graph_nodes = None
        self._plan = plan
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
            placement=plan.summary(),
        )
        log.info("loaded %s (%s, format %s) in %.1f s", name, architecture, fmt.name, self._info.load_seconds)
        return self._info

    def _load_settings(
        self,
        plan: LoadPlan,
        request: LoadRequest,
        cancel: threading.Event | None = None,
        progress: Callable[[float], None] | None = None,
    ) -> tuple[list[Device], ModelParamsExtra, dict[str, Any]]:
        """The devices, the bridged model params and the ``Llama()`` arguments that load ``plan``."""
        threads = plan.n_threads or default_threads()
        import llama_cpp

        cache_type = {
            "f16": llama_cpp.GGML_TYPE_F16,
            "q8_0": llama_cpp.GGML_TYPE_Q8_0,
            "q4_0": llama_cpp.GGML_TYPE_Q4_0,
        }[plan.kv_cache_type]
        devices = self._devices(request)
        extra = ModelParamsExtra(
            devices=[d.handle for d in devices],  # always explicit: [] keeps llama.cpp off every GPU (CPU only)
            tensor_overrides=[tensor_override(o) for o in plan.tensor_overrides],
            progress=_load_progress(cancel, progress) if cancel is not None or progress is not None else None,
        )
        settings: dict[str, Any] = dict(
            model_path=str(Path(request.path)),
            n_ctx=plan.n_ctx,
            n_batch=plan.n_batch,
            n_ubatch=plan.n_batch,
            n_gpu_layers=plan.n_gpu_layers,
            n_threads=threads,
            n_threads_batch=threads,
            swa_full=True,  # sliding-window models (Gemma 3) need a full cache for prefix reuse across turns
            flash_attn=True,  # smaller compute buffers at long contexts (the fit estimate assumes it), a bit faster
            type_k=cache_type,
            type_v=cache_type,  # a quantized V cache needs flash attention, which is on
            verbose=False,
        )
        return devices, extra, settings

    def _check_with_dry_run(
        self,
        plan: LoadPlan,
        request: LoadRequest,
        extra: ModelParamsExtra,
        settings: dict[str, Any],
        devices: Sequence[Device],
    ) -> LoadPlan:
        """Ask llama.cpp what ``plan`` allocates on each GPU before allocating it (``enclave.engine.dry_run``).

        A difference of more than 10 % from the planner's figures is logged. When llama.cpp needs more than a
        device has room for, llama.cpp is trusted: fewer layers are offloaded (each new count checked by another dry
        run) and the plan says why. A number of GPU layers the user chose is loaded as chosen.
        """
        from enclave.engine.dry_run import DeviceBytes, DryRunError, dry_run
        from enclave.models.fit import GPU_RESERVE
        from enclave.models.placement import restrict_gpu_memory

        hardware = self._plan_hardware
        names = [d.name for d in devices]
        mib = 1024 * 1024

        def attempt(layers: int) -> Any:
            try:
                return dry_run(extra, **{**settings, "n_gpu_layers": layers})
            except (DryRunError, ValueError, RuntimeError, OSError) as exc:
                log.warning("llama.cpp's dry run failed (%s); loading the plan unchecked", exc)
                return None

        dry = attempt(plan.n_gpu_layers)
        if dry is None:
            return plan
        on_gpus = sum((dry.on(name) for name in names), DeviceBytes(0, 0, 0))
        breakdown = plan.estimate.breakdown if plan.estimate is not None else None
        planned_compute = (breakdown.compute - breakdown.host_compute) * len(names) if breakdown is not None else 0
        for what, planned, real in (
            ("weights", plan.device_weight_bytes, on_gpus.model),
            ("KV cache", plan.device_kv_bytes, on_gpus.context),
            ("compute buffers", planned_compute, on_gpus.compute),
        ):
            if abs(real - planned) > 0.10 * max(planned, real, 1) and max(planned, real) > 16 * mib:
                log.warning(
                    "plan vs llama.cpp's dry run on %s: %s %.0f MiB planned, %.0f MiB by llama.cpp",
                    ", ".join(names), what, planned / mib, real / mib,
                )  # fmt: skip
        log.info("llama.cpp's dry run (%.2f s): %s", dry.seconds, dry.describe())
        self._dry_run = dry
        if hardware is None or "GPU layers" in plan.user_fields:
            return plan
        room = {
            g.device: g.usable_bytes - GPU_RESERVE
            for g in restrict_gpu_memory(hardware, request.gpu_memory_limit).gpus
            if g.device in names
        }

        def excess(run: Any) -> int:
            return max((run.on(name).total - limit for name, limit in room.items()), default=0)

        layers = plan.n_gpu_layers if plan.n_gpu_layers >= 0 else plan.block_count + 1
        first = layers
        for _ in range(8):
            over = excess(dry)
            if over <= 0 or layers <= 0:
                break
            on_device = sum(dry.on(name).model + dry.on(name).context for name in room)
            per_layer = max(1, on_device // max(1, layers))
            layers = max(0, layers - max(1, -(-over // per_layer)))
            if layers == 0:
                break
            retry = attempt(layers)
            if retry is None:
                layers = 0  # no dry run to trust for a smaller offload: stay on the safe side
                break
            dry = retry
        if layers == first:
            return plan
        note = (
            f"llama.cpp's dry run needs more GPU memory than the plan estimated: {layers} of {first} layers "
            "offloaded instead."
            if layers
            else "llama.cpp's dry run needs more GPU memory than this device has free: the model runs on the CPU."
        )
        log.warning("%s (%s)", note, dry.describe())
        self._dry_run = dry if layers else None
        return replace(
            plan,
            n_gpu_layers=layers,
            notes=(*plan.notes, note),
            device_weight_bytes=sum(dry.on(n).model for n in names) if layers else 0,
            device_kv_bytes=sum(dry.on(n).context for n in names) if layers else 0,
        )

    def plan(self, request: LoadRequest) -> LoadPlan:
        """The load plan for ``request`` on this computer, as llama.cpp in this process sees it."""
        from enclave.models.hardware import probe_hardware
        from enclave.models.placement import PlanChoices, PlanError, plan_load
        from enclave.models.speed import calibrated

        hardware = calibrated(replace(probe_hardware(), gpus=tuple(d.gpu_info() for d in self._devices(request))))
        self._plan_hardware = hardware
        choices = PlanChoices(
            context_length=request.n_ctx,
            gpu_layers=request.n_gpu_layers,
            kv_cache_type=request.kv_cache_type,
            threads=request.n_threads,
            batch=request.n_batch,
            gpu_memory_limit=request.gpu_memory_limit,
        )
        try:
            return plan_load(Path(request.path), hardware, choices)
        except PlanError as exc:
            raise ModelLoadError(str(exc)) from exc

    @staticmethod
    def _devices(request: LoadRequest) -> list[Device]:
        """The llama.cpp devices this load uses: those named, none for "CPU", or Auto's pick (``choose_gpus``)."""
        from enclave.models.placement import choose_gpus, is_cpu_only

        if is_cpu_only(request.devices):
            return []
        found = resolve_devices(request.devices)  # Auto: every GPU llama.cpp reports; a name it lacks is an error
        chosen = {g.device for g in choose_gpus([d.gpu_info() for d in found], request.devices)}
        return [d for d in found if d.name in chosen]

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
        if not (yield from self._read_prompt(llm, prompt[cached:], control)):
            # Only whole batches were kept (an aborted batch leaves nothing behind); the next turn reuses them.
            yield Finished(
                FinishReason.CANCELLED,
                GenerationStats(prompt_tokens=len(prompt), cached_tokens=cached, context_size=n_ctx),
            )
            return
        prompt_seconds = time.monotonic() - started

        import llama_cpp

        sampling = request.sampling
        if sampling.seed is not None:
            llm.set_seed(sampling.seed)
        grammar = None
        if request.grammar is not None:
            from llama_cpp import LlamaGrammar

            # llama-cpp-python does not parse the grammar; llama.cpp returns NULL for a bad one, and adding NULL to the
            # sampler chain would crash. Parse it once here to turn that into a readable error.
            checked = llama_cpp.llama_sampler_init_grammar(llm._model.vocab, request.grammar.encode(), b"root")
            if not checked:
                raise EngineError("The grammar could not be parsed (GBNF with a 'root' rule is expected).")
            llama_cpp.llama_sampler_free(checked)
            grammar = LlamaGrammar.from_string(request.grammar, verbose=False)
        # Installed as the Llama's sampler so llm.sample() keeps one chain (and its penalty history) for the reply.
        llm._sampler = llm._init_sampler(
            top_k=sampling.top_k,
            top_p=sampling.top_p,
            min_p=sampling.min_p,
            temp=sampling.temperature,
            repeat_penalty=sampling.repeat_penalty,
            grammar=grammar,
        )
        parser = ReasoningParser(starts_in_thinking=fmt.opens_thinking)
        stops = StopStringMatcher(fmt.stop_strings)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        vocab = llm._model.vocab

        completion = 0
        reasoning_tokens = 0
        reason = FinishReason.STOP
        gen_started = time.monotonic()
        thinking_reported = False
        budget = request.think_budget
        close_refused = False
        try:
            while True:
                if control.cancel.is_set():
                    reason = FinishReason.CANCELLED
                    break
                if (
                    parser.in_thinking
                    and not close_refused
                    and (control.answer_now.is_set() or (budget is not None and reasoning_tokens >= budget))
                ):
                    close_tokens = self.tokenize(fmt.close_thinking_text(), special=True)
                    if grammar is not None and not _grammar_allows(llm._sampler.sampler, close_tokens):
                        # The request's grammar has no room for </think> here; injecting it would make llama.cpp's
                        # grammar throw (and abort the process). The grammar decides when thinking ends.
                        log.warning("the grammar does not allow closing the thinking block now; not forcing it")
                        close_refused = True
                        continue
                    yield from self._emit(parser.close_thinking())
                    if llm.n_tokens + len(close_tokens) >= n_ctx:
                        reason = FinishReason.LENGTH
                        break
                    llm.eval(close_tokens)
                    for close_token in close_tokens:  # the grammar and the penalties see them as if sampled
                        llama_cpp.llama_sampler_accept(llm._sampler.sampler, close_token)
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
        if reason is not FinishReason.CANCELLED:
            self._calibrate(completion, gen_seconds)
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

    def _calibrate(self, tokens: int, seconds: float) -> None:
        """Remember how fast this device really decodes (``enclave.models.speed``): only for a plan wholly on one
        device with Auto layers, where the plan's predicted speed is for exactly this placement."""
        plan, hardware = self._plan, self._plan_hardware
        if (
            plan is None
            or hardware is None
            or plan.estimate is None
            or seconds <= 0
            or "GPU layers" in plan.user_fields
        ):
            return
        from enclave.models.fit import Verdict
        from enclave.models.speed import cpu_key, gpu_key, record_generation

        if plan.n_gpu_layers == 0 or not plan.has_gpu:
            key, applied, share = cpu_key(hardware), hardware.cpu_speed_factor, 1.0
        elif plan.estimate.verdict is Verdict.FULL_GPU and len(hardware.gpus) == 1:
            # The GPU's own part: an output layer it could not take runs on the CPU (fit.output_on_gpu).
            key, applied = gpu_key(hardware.gpus[0]), hardware.gpus[0].speed_factor
            share = plan.estimate.gpu_time_share
        else:
            return
        predicted = plan.estimate.tokens_per_second
        factor = record_generation(key, applied, predicted, tokens / seconds, tokens, share=share)
        if factor is not None:
            log.info("speed on %s: %.2f tokens/s measured, factor %.4g", key, tokens / seconds, factor)

    def _read_prompt(
        self, llm: Any, pending: Sequence[int], control: GenerationControl
    ) -> Generator[StreamEvent, None, bool]:
        """Evaluate ``pending``, yielding progress; return False when the stop request came first.

        On the CPU backend the prompt goes in full ``n_batch`` batches and a stop aborts the batch in flight
        (``llama_decode`` returns 2; llama.cpp drops that batch from the KV cache, and ``Llama.n_tokens`` only moves
        after a batch succeeds, so cache and counters agree). Where a batch can't be aborted, batches are sized by time.
        """
        total = len(pending)
        done = 0
        watch = _PromptWatch(control, total, self._graph_nodes)
        size = self._n_batch if self._abortable else min(FIRST_PROMPT_SLICE, self._n_batch)
        if self._abortable:
            set_abort_callback(llm, watch.callback)
        try:
            while done < total:
                if control.cancel.is_set():
                    return False
                chunk = pending[done : done + size]
                watch.begin_batch(done, len(chunk))
                t0 = time.monotonic()
                try:
                    llm.eval(chunk)
                except RuntimeError:
                    if control.cancel.is_set():  # llama_decode returned 2: aborted by the stop request
                        return False
                    raise
                elapsed = max(time.monotonic() - t0, 1e-6)
                if len(chunk) == self._n_batch and self._abortable:
                    self._graph_nodes = watch.end_batch()
                done += len(chunk)
                watch.tokens_done(done)
                yield PromptProgress(done, total, watch.seconds_left(done))
                if not self._abortable:
                    size = max(8, min(self._n_batch, int(PROMPT_SLICE_TARGET_S * len(chunk) / elapsed)))
        finally:
            if self._abortable:
                set_abort_callback(llm, None)
        return True

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


def _grammar_allows(chain: Any, tokens: Sequence[int]) -> bool:
    """Whether the grammar in sampler ``chain`` would accept ``tokens`` next (checked on a clone of the chain)."""
    import llama_cpp

    clone = llama_cpp.llama_sampler_clone(chain)
    try:
        grammar = None
        for index in range(llama_cpp.llama_sampler_chain_n(clone)):
            sampler = llama_cpp.llama_sampler_chain_get(clone, index)
            if llama_cpp.llama_sampler_name(sampler) == b"grammar":
                grammar = sampler
                break
        if grammar is None:
            return True
        for token in tokens:
            data = (llama_cpp.llama_token_data * 1)(llama_cpp.llama_token_data(token, 0.0, 0.0))
            candidates = llama_cpp.llama_token_data_array(data=data, size=1, selected=-1, sorted=False)
            llama_cpp.llama_sampler_apply(grammar, ctypes.byref(candidates))
            if math.isinf(data[0].logit):  # the grammar masks tokens it rejects with -inf
                return False
            llama_cpp.llama_sampler_accept(grammar, token)
        return True
    finally:
        llama_cpp.llama_sampler_free(clone)


def _load_progress(cancel: threading.Event | None, report: Callable[[float], None] | None) -> Callable[[float], bool]:
    """llama.cpp's load progress callback: pass the fraction on (at most every LOAD_PROGRESS_INTERVAL_S) and return
    False, which makes llama.cpp give up the load, once ``cancel`` is set."""
    last = [0.0]

    def callback(fraction: float) -> bool:
        if report is not None:
            now = time.monotonic()
            if now - last[0] >= LOAD_PROGRESS_INTERVAL_S or fraction >= 1.0:
                last[0] = now
                try:
                    report(min(1.0, max(0.0, float(fraction))))
                except Exception:  # a progress display must not break the load
                    log.exception("load progress report failed")
        return cancel is None or not cancel.is_set()

    return callback


class _PromptWatch:
    """llama.cpp's abort callback while a prompt batch runs: stop when asked, and report progress inside the batch.

    ggml's CPU backend calls the callback after every graph node, from the thread that called ``llama_decode`` (the
    engine thread). The number of calls in one batch is the graph's node count; once a full batch has been counted,
    calls so far / node count says how far the running batch is.
    """

    def __init__(self, control: GenerationControl, total: int, graph_nodes: int | None) -> None:
        import llama_cpp

        self._control = control
        self._total = total
        self._graph_nodes = graph_nodes
        self._calls = 0
        self._batch_start = 0
        self._batch_len = 0
        self._last_report = time.monotonic()
        self._started = time.monotonic()
        self._rate: float | None = None  # tokens per second over the finished batches of this prompt
        self.callback = llama_cpp.ggml_abort_callback(self._should_abort)

    def _should_abort(self, _data: Any) -> bool:
        control = self._control
        if control.cancel.is_set():
            return True
        self._calls += 1
        report = control.progress
        if report is not None and self._graph_nodes:
            now = time.monotonic()
            if now - self._last_report >= PROGRESS_INTERVAL_S:
                self._last_report = now
                fraction = min(0.99, self._calls / self._graph_nodes)
                evaluated = self._batch_start + int(self._batch_len * fraction)
                try:
                    report(PromptProgress(evaluated, self._total, self.seconds_left(evaluated)))
                except Exception:  # nothing may be raised into C
                    log.exception("prompt progress report failed")
        return False

    def begin_batch(self, start: int, length: int) -> None:
        self._calls = 0
        self._batch_start = start
        self._batch_len = length

    def end_batch(self) -> int:
        self._graph_nodes = self._calls
        return self._calls

    def tokens_done(self, done: int) -> None:
        elapsed = time.monotonic() - self._started
        if elapsed > 0 and done > 0:
            self._rate = done / elapsed

    def seconds_left(self, evaluated: int) -> float | None:
        if not self._rate:
            return None
        return max(0.0, (self._total - evaluated) / self._rate)


def set_abort_callback(llm: Any, callback: Any) -> None:
    """Install (or, with None, remove) llama.cpp's abort callback on ``llm``'s context."""
    import llama_cpp

    if callback is None:
        callback = llama_cpp.ggml_abort_callback()  # a NULL function pointer: no callback
    llm._enclave_abort_callback = callback  # keep it alive while llama.cpp may call it
    llama_cpp.llama_set_abort_callback(llm._ctx.ctx, callback, None)


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

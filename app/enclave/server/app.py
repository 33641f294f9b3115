"""The Starlette application: ``/v1/models``, ``/v1/chat/completions`` (streamed or not), ``/v1/embeddings``.

The same routes are served without the ``/v1`` prefix, as DeepSeek's API does, so a DeepSeek client needs only its
base URL changed. Every request waits its turn in the ``Scheduler``; a client that goes away while waiting leaves the
queue, and one that goes away while its answer streams cancels the generation.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from enclave.engine.backend import EngineCrashedError
from enclave.engine.stop_strings import StopStringMatcher
from enclave.engine.types import (
    EngineError,
    Finished,
    FinishReason,
    GenerationControl,
    GenerationRequest,
    GenerationStats,
    ModelInfo,
    StreamEvent,
    TextDelta,
)
from enclave.server import protocol
from enclave.server.protocol import ApiError, Completion
from enclave.server.scheduler import Emit, Job, JobDone, QueueFull, QueueTimeout, Scheduler, SchedulerClosed

log = logging.getLogger(__name__)

DISCONNECT_POLL_S = 0.05


class ChatEngine(Protocol):
    """What the server needs of the engine: a ``Backend`` (headless) or the GUI's engine thread (workers/)."""

    @property
    def model(self) -> ModelInfo | None: ...

    def stream_chat(self, request: GenerationRequest, control: GenerationControl) -> Iterator[StreamEvent]:
        """Called on the scheduler's thread, one request at a time."""
        ...


class EmbeddingEngine(Protocol):
    @property
    def names(self) -> Sequence[str]:
        """Model ids to list (empty when no embedding model is configured)."""
        ...

    def embed(self, texts: Sequence[str]) -> tuple[list[list[float]], int]:
        """Vectors and the tokens read; runs on the embedding queue's thread. Raises ApiError for the client."""
        ...


@dataclass
class ServerOptions:
    api_key: str | None = None
    max_body_bytes: int = 4 * 1024 * 1024
    max_tokens: int | None = None  # None: the model's context length
    retry_after_s: int = 10


def create_app(
    engine: ChatEngine,
    scheduler: Scheduler,
    options: ServerOptions,
    embeddings: EmbeddingEngine | None = None,
    embedding_scheduler: Scheduler | None = None,
) -> Starlette:
    api = _Api(engine, scheduler, options, embeddings, embedding_scheduler)
    routes = []
    for prefix in ("/v1", ""):
        routes += [
            Route(f"{prefix}/models", api.models, methods=["GET"]),
            Route(f"{prefix}/chat/completions", api.chat, methods=["POST"]),
            Route(f"{prefix}/embeddings", api.embeddings, methods=["POST"]),
        ]
    return Starlette(routes=routes, exception_handlers={ApiError: _error_response})


async def _error_response(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


def _sse(data: dict[str, Any] | str) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


class _Api:
    def __init__(
        self,
        engine: ChatEngine,
        scheduler: Scheduler,
        options: ServerOptions,
        embeddings: EmbeddingEngine | None,
        embedding_scheduler: Scheduler | None,
    ) -> None:
        self.engine = engine
        self.scheduler = scheduler
        self.options = options
        self.embedding_engine = embeddings
        self.embedding_scheduler = embedding_scheduler

    # --- checks shared by every route ---------------------------------------------------------------------------

    def _authorize(self, request: Request) -> None:
        key = self.options.api_key
        if not key:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), key.encode()):
            raise ApiError(
                401,
                "Missing or wrong API key: send 'Authorization: Bearer KEY' with the key this server was started with.",
                kind="authentication_error",
                code="invalid_api_key",
            )

    async def _json_body(self, request: Request) -> dict[str, Any]:
        limit = self.options.max_body_bytes
        too_large = ApiError(413, f"The request body is larger than this server's limit of {limit:,} bytes.")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise too_large
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
        return protocol.parse_body(b"".join(chunks))

    def _busy(self, message: str) -> ApiError:
        return ApiError(
            503,
            message,
            kind="server_busy",
            code="queue_timeout",
            headers={"Retry-After": str(self.options.retry_after_s)},
        )

    def _submit(self, scheduler: Scheduler, work: Callable[[GenerationControl, Emit], None]) -> Job:
        try:
            return scheduler.submit(work)
        except QueueFull:
            raise self._busy("Too many requests are waiting for the model; try again shortly.") from None
        except SchedulerClosed:
            raise ApiError(503, "The server is shutting down.", kind="server_error") from None

    async def _wait_turn(self, request: Request, scheduler: Scheduler, job: Job) -> None:
        """Wait until ``job`` runs; leave the queue if the client disconnects; 503 past the wait limit."""
        waiting = asyncio.ensure_future(scheduler.wait_started(job))
        try:
            while not waiting.done():
                await asyncio.wait({waiting}, timeout=DISCONNECT_POLL_S)
                if not waiting.done() and await request.is_disconnected():
                    scheduler.withdraw(job)
                    # Nobody reads this answer; 499 is the usual log entry for "client closed the request".
                    raise ApiError(499, "The client disconnected while waiting.")
            waiting.result()
        except QueueTimeout:
            raise self._busy(
                f"The model is busy: this request waited more than {scheduler.max_wait_s:g} s for its turn."
            ) from None
        finally:
            if not waiting.done():
                waiting.cancel()

    # --- routes -------------------------------------------------------------------------------------------------

    async def models(self, request: Request) -> Response:
        self._authorize(request)
        names = list(self.embedding_engine.names) if self.embedding_engine is not None else []
        return JSONResponse(protocol.models_list(self.engine.model, names))

    async def chat(self, request: Request) -> Response:
        self._authorize(request)
        body = protocol.parse_chat(await self._json_body(request))
        info = self.engine.model
        if info is None:
            raise ApiError(503, "No model is loaded in Enclave; open a model first.", kind="server_error")
        limit = min(self.options.max_tokens or info.n_ctx, info.n_ctx)
        generation = protocol.to_generation(body, info, max_tokens_limit=limit)
        engine = self.engine

        def work(control: GenerationControl, emit: Emit) -> None:
            for event in engine.stream_chat(generation, control):
                emit(event)

        job = self._submit(self.scheduler, work)
        try:
            await self._wait_turn(request, self.scheduler, job)
        except BaseException:
            self.scheduler.withdraw(job)
            raise
        answer = _Answer(job, protocol.stop_strings(body), Completion.start(protocol.model_id(info)))
        if body.stream:
            include_usage = body.stream_options is not None and body.stream_options.include_usage
            return StreamingResponse(
                answer.stream(include_usage),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        watcher = asyncio.ensure_future(_cancel_on_disconnect(request, job))
        try:
            return JSONResponse(await answer.whole())
        finally:
            watcher.cancel()
            job.control.cancel.set()  # no-op once finished; stops the engine if this handler was cancelled

    async def embeddings(self, request: Request) -> Response:
        self._authorize(request)
        texts = protocol.parse_embeddings(await self._json_body(request))
        service, scheduler = self.embedding_engine, self.embedding_scheduler
        if service is None or scheduler is None or not service.names:
            raise ApiError(
                400,
                "No embedding model is configured in Enclave; choose one in File → Models… (role: embedding).",
                code="model_not_found",
            )
        result: list[tuple[list[list[float]], int]] = []

        def work(_control: GenerationControl, _emit: Emit) -> None:
            result.append(service.embed(texts))

        job = self._submit(scheduler, work)
        await self._wait_turn(request, scheduler, job)
        while True:
            item = await job.events.get()
            if isinstance(item, JobDone):
                if item.error is not None:
                    raise _as_api_error(item.error)
                break
        vectors, tokens = result[0]
        return JSONResponse(
            {
                "object": "list",
                "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
                "model": service.names[0],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )


async def _cancel_on_disconnect(request: Request, job: Job) -> None:
    while not await request.is_disconnected():
        await asyncio.sleep(DISCONNECT_POLL_S)
    job.control.cancel.set()


def _as_api_error(error: BaseException) -> ApiError:
    if isinstance(error, ApiError):
        return error
    if isinstance(error, SchedulerClosed):
        return ApiError(503, "The server is shutting down.", kind="server_error")
    if isinstance(error, EngineCrashedError):
        return ApiError(503, f"The engine stopped unexpectedly: {error}", kind="server_error", code="engine_crashed")
    if isinstance(error, EngineError):
        return ApiError(500, str(error), kind="server_error")
    log.error("API request failed", exc_info=error)
    return ApiError(500, f"Unexpected server error: {error}", kind="server_error")


class _Answer:
    """One running chat job seen from the HTTP side: text split into reasoning and content, stop strings applied."""

    def __init__(self, job: Job, stops: list[str], completion: Completion) -> None:
        self.job = job
        self.stops = StopStringMatcher(stops)
        self.stopped_by_string = False
        self.completion = completion
        self.finished: Finished | None = None

    async def _deltas(self) -> AsyncIterator[TextDelta]:
        """Text as it comes, then ``self.finished`` is set; raises ApiError when the engine failed.

        Pieces already waiting in the queue when the loop gets to it are sent as one delta (one SSE chunk): a busy
        machine then spends less of its CPU per token outside llama.cpp, and nothing is held back that has arrived.
        """
        events = self.job.events
        while True:
            batch = [await events.get()]
            while not events.empty():
                batch.append(events.get_nowait())
            reasoning: list[str] = []
            content: list[str] = []
            for item in batch:
                if isinstance(item, TextDelta):
                    if not self.stopped_by_string:
                        reasoning.append(item.reasoning)
                        content.append(self._through_stops(item.content))
                    continue
                if reasoning or content:
                    merged = TextDelta(reasoning="".join(reasoning), content="".join(content))
                    reasoning, content = [], []
                    if merged.reasoning or merged.content:
                        yield merged
                if isinstance(item, JobDone):
                    if item.error is not None:
                        raise _as_api_error(item.error)
                    if self.finished is None:
                        raise ApiError(500, "The engine stopped without finishing the answer.", kind="server_error")
                    return
                if isinstance(item, Finished):
                    self.finished = item
            merged = TextDelta(reasoning="".join(reasoning), content="".join(content))
            if merged.reasoning or merged.content:
                yield merged

    def _through_stops(self, content: str) -> str:
        """``content`` less any stop string and what follows it (then generation is stopped)."""
        if not content or self.stops is None or self.stopped_by_string:
            return content
        content, hit = self.stops.feed(content)
        if hit:
            self.stopped_by_string = True
            self.job.control.cancel.set()  # the rest would be cut anyway: stop generating it
        return content

    def _finish(self) -> tuple[str, dict[str, Any]]:
        finished = self.finished or Finished(FinishReason.STOP, GenerationStats())
        reason = protocol.finish_reason(finished.reason, stopped_by_string=self.stopped_by_string)
        return reason, protocol.usage(finished.stats)

    def _tail(self) -> str:
        """Held-back text that turned out not to be a stop string."""
        return "" if self.stopped_by_string else self.stops.flush()

    async def whole(self) -> dict[str, Any]:
        reasoning: list[str] = []
        content: list[str] = []
        async for delta in self._deltas():
            reasoning.append(delta.reasoning)
            content.append(delta.content)
        content.append(self._tail())
        reason, usage = self._finish()
        return self.completion.whole("".join(content), "".join(reasoning), reason, usage)

    async def stream(self, include_usage: bool) -> AsyncIterator[bytes]:
        completion = self.completion
        try:
            yield _sse(completion.chunk({"role": "assistant", "content": ""}))
            try:
                async for delta in self._deltas():
                    if delta.reasoning:
                        yield _sse(completion.chunk({"content": None, "reasoning_content": delta.reasoning}))
                    if delta.content:
                        yield _sse(completion.chunk({"content": delta.content, "reasoning_content": None}))
            except ApiError as exc:
                yield _sse(exc.body())
                yield _sse("[DONE]")
                return
            tail = self._tail()
            if tail:
                yield _sse(completion.chunk({"content": tail, "reasoning_content": None}))
            reason, usage = self._finish()
            yield _sse(completion.chunk({}, reason))
            if include_usage:
                yield _sse(completion.usage_chunk(usage))
            yield _sse("[DONE]")
        finally:
            # Reached early when the client disconnected (Starlette cancels the stream): stop the generation.
            self.job.control.cancel.set()


__all__ = ["ChatEngine", "EmbeddingEngine", "ServerOptions", "create_app"]

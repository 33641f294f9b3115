"""A scripted Backend for GUI and worker tests.

The engine itself is tested against llama.cpp; GUI tests need a backend whose output they can predict and pace.
ScriptedBackend follows the same protocol and honours cancel and "Answer now" the way the real one does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from enclave.engine.types import (
    R1_SAMPLING,
    ContextTrimmed,
    Finished,
    FinishReason,
    GenerationControl,
    GenerationRequest,
    GenerationStats,
    LoadRequest,
    ModelInfo,
    ModelLoadError,
    PromptProgress,
    StreamEvent,
    TextDelta,
    ThinkingClosed,
)


@dataclass
class Script:
    reasoning: str = "Let me think about this step by step."
    answer: str = "The answer is **42**.\n\n```python\nprint(42)\n```\n"
    chunk_chars: int = 4
    delay_s: float = 0.002
    dropped_messages: int = 0
    fail_with: str | None = None
    prompt_tokens: int = 0  # > 0: report reading a prompt this long in four steps, pausing at each
    prompt_pause_s: float = 0.0


@dataclass
class ScriptedBackend:
    script: Script = field(default_factory=Script)
    n_ctx: int = 4096
    requests: list[GenerationRequest] = field(default_factory=list)
    _model: ModelInfo | None = None
    generating: threading.Event = field(default_factory=threading.Event)

    @property
    def model(self) -> ModelInfo | None:
        return self._model

    def load(
        self,
        request: LoadRequest,
        cancel: threading.Event | None = None,
        progress: Callable[[float], None] | None = None,
    ) -> ModelInfo:
        path = Path(request.path)
        if not path.is_file():
            raise ModelLoadError(f"Model file not found: {path}")
        self._model = ModelInfo(
            path=str(path),
            name=path.stem,
            architecture="scripted",
            file_size=path.stat().st_size,
            n_ctx=request.n_ctx or self.n_ctx,  # Auto: the scripted model's whole context
            n_ctx_train=self.n_ctx,
            chat_format="Scripted",
            chat_format_source="test backend",
            reasoning=True,
            default_sampling=R1_SAMPLING,
            placement=f"CPU · {request.n_ctx or self.n_ctx:,}-token context · f16 KV",
        )
        return self._model

    def unload(self) -> None:
        self._model = None

    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        return [len(word) for word in text.split()]

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def _chunks(self, text: str) -> Iterator[str]:
        step = self.script.chunk_chars
        for i in range(0, len(text), step):
            yield text[i : i + step]

    def stream_chat(self, request: GenerationRequest, control: GenerationControl) -> Iterator[StreamEvent]:
        self.requests.append(request)
        self.generating.set()
        try:
            if self.script.fail_with:
                from enclave.engine.types import EngineError

                raise EngineError(self.script.fail_with)
            if self.script.dropped_messages:
                yield ContextTrimmed(self.script.dropped_messages)
            total = self.script.prompt_tokens
            for step in range(1, 5 if total else 0):
                if control.cancel.is_set():
                    break
                time.sleep(self.script.prompt_pause_s)
                yield PromptProgress(total * step // 4, total, self.script.prompt_pause_s * (4 - step))
            produced = 0
            forced = False
            for piece in self._chunks(self.script.reasoning):
                if control.cancel.is_set():
                    yield Finished(FinishReason.CANCELLED, GenerationStats(completion_tokens=produced))
                    return
                if control.answer_now.is_set():
                    forced = True
                    break
                time.sleep(self.script.delay_s)
                produced += 1
                yield TextDelta(reasoning=piece)
            yield ThinkingClosed(forced=forced)
            reason = FinishReason.STOP
            for piece in self._chunks(self.script.answer):
                if control.cancel.is_set():
                    yield Finished(FinishReason.CANCELLED, GenerationStats(completion_tokens=produced))
                    return
                if request.max_tokens is not None and produced >= request.max_tokens:
                    reason = FinishReason.LENGTH  # like llama.cpp: the answer stops mid-sentence at the limit
                    break
                time.sleep(self.script.delay_s)
                produced += 1
                yield TextDelta(content=piece)
            yield Finished(
                reason,
                GenerationStats(
                    prompt_tokens=10,
                    completion_tokens=produced,
                    generation_seconds=max(produced * self.script.delay_s, 1e-3),
                    context_used=10 + produced,
                    context_size=self.n_ctx,
                ),
            )
        finally:
            self.generating.clear()

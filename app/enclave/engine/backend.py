"""The seam between the app and an inference library.

The worker thread talks to a ``Backend`` only; llama-cpp-python is one implementation and GUI tests script another.
A backend holds at most one model; every call happens on the single engine thread, so implementations need no locks
except for the ``GenerationControl`` flags, which are thread-safe events.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Protocol

from enclave.engine.types import (
    EngineError,
    GenerationControl,
    GenerationRequest,
    LoadRequest,
    ModelInfo,
    ModelLoadError,
    StreamEvent,
)


class EngineCrashedError(EngineError):
    """The engine's process stopped unexpectedly (llama.cpp aborted, or the process was killed).

    Unlike other engine errors this is not about the request: what was streamed before it is an interrupted answer,
    and the same request may well succeed once the engine has been started again.
    """


class ModelLoadCrashedError(ModelLoadError):
    """The engine's process stopped while it loaded the model: the model is likely to crash it again, so the app
    does not open it by itself at the next start (see ``usecases.loading.LoadGuard``)."""


class Backend(Protocol):
    @property
    def model(self) -> ModelInfo | None:
        """The resident model, or None."""
        ...

    def load(
        self,
        request: LoadRequest,
        cancel: threading.Event | None = None,
        progress: Callable[[float], None] | None = None,
    ) -> ModelInfo:
        """Close any resident model, then load ``request.path``. Raises ModelLoadError with a readable message.

        ``cancel`` stops the load (ModelLoadCancelled) within a fraction of a second; ``progress`` gets the fraction
        of the weights read (0.0 to 1.0) a few times a second."""
        ...

    def unload(self) -> None: ...

    def tokenize(self, text: str, *, special: bool = False) -> list[int]: ...

    def count_tokens(self, text: str) -> int: ...

    def stream_chat(self, request: GenerationRequest, control: GenerationControl) -> Iterator[StreamEvent]:
        """Yield events for one reply; the last event is always ``Finished`` unless an EngineError is raised.

        ``control.cancel`` is honoured between tokens and between prompt batches; ``control.answer_now`` closes the
        thinking block and lets the model answer.
        """
        ...

"""Stop strings for streamed text.

Text that might be the start of a stop string is held back until it is known not to be one, so a stop marker such as
``<｜User｜>`` never flashes on screen before being cut.
"""

from __future__ import annotations

from collections.abc import Sequence


class StopStringMatcher:
    def __init__(self, stop_strings: Sequence[str]) -> None:
        self._stops = tuple(s for s in stop_strings if s)
        self._held = ""
        self.stopped = False

    def feed(self, text: str) -> tuple[str, bool]:
        """Return (text safe to show, whether a stop string was reached)."""
        if self.stopped:
            return "", True
        buffer = self._held + text
        first = -1
        for stop in self._stops:
            index = buffer.find(stop)
            if index != -1 and (first == -1 or index < first):
                first = index
        if first != -1:
            self._held = ""
            self.stopped = True
            return buffer[:first], True
        keep = 0
        for stop in self._stops:
            for length in range(min(len(stop) - 1, len(buffer)), 0, -1):
                if buffer.endswith(stop[:length]):
                    keep = max(keep, length)
                    break
        self._held = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep], False

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held

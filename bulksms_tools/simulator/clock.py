"""The simulator's clock: wall-clock time plus an offset that tests can move, never going backwards.

Everything with a date goes through it: creation and send times, the moment a sender's queue releases a message,
status steps and their callbacks, daily caps. Moving it forward (`POST /_simulator/clock`) makes a day pass at
once: queues drain, caps reset, callbacks that fell due are posted. Real waits (request latency, callback retries)
stay on the event loop's own clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class SimulatorClock:
    """`now()`: seconds since the epoch, `time.time() + offset`, never smaller than a value it returned before."""

    def __init__(self) -> None:
        self.offset = 0.0
        self._last = 0.0
        self._listeners: list[Callable[[], None]] = []

    def now(self) -> float:
        current = time.time() + self.offset
        if current < self._last:
            return self._last
        self._last = current
        return current

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call `listener` after every jump of the clock (the callback timer re-arms itself)."""
        self._listeners.append(listener)

    def advance(self, seconds: float) -> None:
        """Move the clock forward by `seconds` (>= 0)."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self.offset += seconds
        self._changed()

    def set_offset(self, offset: float, allow_backwards: bool) -> None:
        """Set the offset from the wall clock; backwards only when nothing recorded a time yet (`allow_backwards`)."""
        if offset < self.offset and not allow_backwards:
            raise ValueError("the clock only moves backwards while the simulator holds no message (reset it first)")
        self.offset = offset
        if allow_backwards:
            self._last = 0.0
        self._changed()

    def reset(self) -> None:
        self.offset = 0.0
        self._last = 0.0
        self._changed()

    def _changed(self) -> None:
        for listener in self._listeners:
            listener()

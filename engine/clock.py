"""Clocks the core reads its time from.  The core never sleeps: it only stamps events.

A virtual clock in tests and in-process scenarios; the monotonic clock in the engine.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now_ns(self) -> int: ...


class VirtualClock:
    """A clock that moves only when told to, so runs are reproducible."""

    __slots__ = ("_now_ns",)

    def __init__(self, start_ns: int = 0) -> None:
        self._now_ns = start_ns

    def now_ns(self) -> int:
        return self._now_ns

    def advance(self, ns: int) -> None:
        if ns < 0:
            raise ValueError("a virtual clock cannot go backwards")
        self._now_ns += ns


class MonotonicClock:
    """Nanoseconds since the clock was made, from time.monotonic_ns()."""

    __slots__ = ("_origin",)

    def __init__(self) -> None:
        self._origin = time.monotonic_ns()

    def now_ns(self) -> int:
        return time.monotonic_ns() - self._origin

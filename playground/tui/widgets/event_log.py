"""The event log: a line per event, the newest last, under an optional filter."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from textual.widgets import Log

LOG_LINES = 1000


class EventLog(Log):
    """Keeps every line it was given (up to LOG_LINES), shows those that match the filter."""

    def __init__(self) -> None:
        super().__init__(id="events", max_lines=LOG_LINES)
        self.kept: deque[str] = deque(maxlen=LOG_LINES)  # every line, unfiltered: a new filter redraws
        self.filter = ""  # only lines containing this (a cgroup, a kind, a pid)

    def add(self, lines: Iterable[str]) -> None:
        lines = list(lines)
        self.kept.extend(lines)
        shown = [line for line in lines if self.filter in line]
        if shown:
            self.write_lines(shown)

    def set_filter(self, text: str) -> None:
        """Show only the kept lines containing ``text`` (all for an empty one), these and the ones to come."""
        self.filter = text
        self.clear()
        self.write_lines([line for line in self.kept if text in line])
        self.border_title = f"events matching {text!r}" if text else ""

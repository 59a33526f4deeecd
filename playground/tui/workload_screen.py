"""One workload's detail (Enter on the workloads table): its plan, its pages, its own log lines
and its events, kept up to date while open; Escape closes it.

Its log lines are those the workloads this TUI spawned sent through LogHub (``WorkloadLogs``
keeps them by pid); its events are the feed's events that name its pid.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, Log, Static

from common.limits import PAGE_SIZE
from common.units import format_size
from playground.tui.describe import describe
from playground.tui.workload_text import compute_text, elrange_text, ending_text, plan_text, state_text, time_text
from wire.snapshot import WorkloadRow

LINES_PER_PID = 200  # log lines kept of each workload
PIDS = 256  # workloads whose lines are kept (the engine keeps as many exited records)


class WorkloadLogs(logging.Handler):
    """The log records of the workloads this TUI spawned, by pid (a LogHub handler: records
    arrive on its listener thread)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self._lines: OrderedDict[int, deque[str]] = OrderedDict()
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        pid = record.process
        if pid is None:
            return
        line = f"{time.strftime('%H:%M:%S', time.localtime(record.created))} {record.getMessage()}"
        with self._lock:
            lines = self._lines.get(pid)
            if lines is None:
                lines = self._lines[pid] = deque(maxlen=LINES_PER_PID)
                while len(self._lines) > PIDS:
                    self._lines.popitem(last=False)
            lines.append(line)

    def lines(self, pid: int) -> list[str] | None:
        """Its lines, oldest first; None when no record ever came from ``pid`` (not ours)."""
        with self._lock:
            lines = self._lines.get(pid)
            return None if lines is None else list(lines)


def summary_text(w: WorkloadRow, rate: float, now_ns: int) -> str:
    resident, swapped = int(w["resident"]), int(w["swapped"])
    lines = [
        f"[b]{w['role']} {w['name']}[/b]   pid {w['pid']}   in {w['cgroup']}",
        f"state    {state_text(w, now_ns)}",
        f"plan     {plan_text(w)}",
        f"elrange  {elrange_text(w)}",
        f"pages    resident {resident:,} ({format_size(resident * PAGE_SIZE)})   swapped {swapped:,} "
        f"({format_size(swapped * PAGE_SIZE)})   faults {int(w['faults']):,}   now {rate:,.0f}/s",
    ]
    if w.get("runtime_ns"):
        lines.append(f"time     {time_text(w.get('runtime_ns', 0), w.get('paging_ns', 0))}")
        if "compute_ns" in w:
            lines.append(f"compute  {compute_text(w['compute_ns'], w.get('compute_from', ''))}")
    if w["state"] == "exited":
        lines.insert(2, f"ended    {ending_text(w)}")
    return "\n".join(lines)


class WorkloadScreen(ModalScreen[None]):
    """The detail of the workload ``pid``, from the app's feed, redrawn 4 times a second."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "close", "Close")]
    DEFAULT_CSS = """
    WorkloadScreen {
        align: center middle;
    }
    #workload-detail {
        width: 90%;
        height: 90%;
        padding: 0 1;
        border: thick $primary;
        background: $surface;
    }
    #workload-summary {
        height: auto;
        margin-bottom: 1;
    }
    #workload-log, #workload-events {
        height: 1fr;
        border: round $secondary;
    }
    """

    def __init__(self, pid: int) -> None:
        super().__init__()
        self.pid = pid
        self.summary = ""  # what each part shows now
        self.events: list[str] = []
        self.log_lines: list[str] = []

    def compose(self) -> ComposeResult:
        with Vertical(id="workload-detail"):
            yield Static(id="workload-summary")
            yield Label("its log (what it said, when this TUI started it)", classes="workload-heading")
            yield Log(id="workload-log", max_lines=500)
            yield Label("its events", classes="workload-heading")
            yield Log(id="workload-events", max_lines=500)

    def on_mount(self) -> None:
        self.query_one("#workload-detail").border_title = f"workload {self.pid}"
        self.query_one("#workload-detail").border_subtitle = "esc closes"
        self.refresh_detail()
        self.set_interval(0.25, self.refresh_detail)

    def refresh_detail(self) -> None:
        feed = getattr(self.app, "feed", None)
        if feed is None:
            return
        snap = feed.snapshot
        w = next((row for row in snap["workloads"] if row["pid"] == self.pid), None)
        if w is None:
            summary = f"pid {self.pid}: no longer in the engine's records (it keeps the newest 256 that exited)"
        else:
            summary = summary_text(w, float(feed.fault_rate.get(self.pid, 0.0)), int(snap["t_ns"]))
        if summary != self.summary:
            self.query_one("#workload-summary", Static).update(summary)
            self.summary = summary
        logs: WorkloadLogs | None = getattr(self.app, "workload_logs", None)
        lines = logs.lines(self.pid) if logs is not None else None
        if lines is None:
            lines = ["(not started by this TUI: its log lines went to the stderr of whoever started it)"]
        self._show_lines("#workload-log", lines, "log_lines")
        events = [describe(e) for e in feed.events if e.get("pid") == self.pid]
        self._show_lines("#workload-events", events or ["(none in the last events this TUI kept)"], "events")

    def _show_lines(self, selector: str, lines: list[str], attribute: str) -> None:
        shown: list[str] = getattr(self, attribute)
        if lines == shown:
            return
        log = self.query_one(selector, Log)
        if lines[: len(shown)] == shown:  # only new lines: append them
            log.write_lines(lines[len(shown) :])
        else:
            log.clear()
            log.write_lines(lines)
        setattr(self, attribute, lines)

    def action_close(self) -> None:
        self.dismiss(None)

"""The event log: a line per event, stamped with the engine's clock, the newest last.

Pressure (limit hits and pages reclaimed, summed from each stats message) is folded into one
line per cgroup per second; Enter on such a line opens the reclaim trace of that second, the
engine's reclaim batches, which the feed receives only while a trace is open.  A cursor
selects a line and the pane under the log says what the kernel did there.  ``/`` filters as
you type; ``n``/``N`` jump to the next or previous match in the whole log.
"""

from __future__ import annotations

import itertools
import logging
import re
import time
from collections import deque
from collections.abc import Iterable
from typing import Any, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import Input, Static

from playground.feed import FeedState
from playground.tui.describe import KIND_WIDTH, Known, event_text, explain, is_failure
from playground.tui.widgets.log_lines import Entry, LogLines, Trace

PENDING_KEPT = 512  # reclaim batches of one cgroup waiting for the stats message that sums them

# What a workload process logs that the engine's own events already say (workload_start, workload_exit):
# workloads/process.py's two lines, as they come formatted through the LogHub's queue.
WORKLOAD_LOGGER = "epc.workload"
REPEATS = re.compile(r"(enclave|vm) \d+ (starts in .+|exits: \S+)")

HELP = """\
## Events

One line per engine event, the newest last, stamped with the engine's clock as `dmesg` stamps
the kernel's log: `[   83.456]` is 83.456 s after the engine started. `log` lines are what a
workload this TUI started logged itself; `ktap` lines come from a scenario. Failures (SIGBUS,
ENOMEM, OOM kills, stalls, workloads that did not exit `ok`) are red and say what failed.

`pressure` lines sum, per cgroup and per second, the limit hits on its own `misc.max` and the
pages reclaimed from its own LRU (the engine sends these by the thousand). `▸` marks a line with
a reclaim trace: its batches (context, the walk's root, scanned / rotated / written, where the
walk's cursor went, why it stopped). Every kind and its fields: `docs/scenarios.md`, *Events*.

`tab` reaches the log: a cursor selects a line, and the pane under the log says what the kernel
did there and the function it mirrors. Moving the cursor stops the log following the new lines;
`end` follows them again. `/` filters as you type (case ignored; `a,b` shows the lines with
either); `enter` keeps the filter, `esc` clears it, and `n`/`N` then find its lines among all.

The TUI receives the engine's reclaim batches only while a trace is open (they come by the
thousand a second): a line of a second before that has none to show, so the cgroup's next
line opens with its batches, and the pressure lines from then on have theirs (`▸`).
"""


class FilterInput(Input):
    """The filter, typed at the log's bottom: every key refilters; Enter keeps it, Esc clears it."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "clear", "Clear filter")]

    def action_clear(self) -> None:
        log = self.parent
        assert isinstance(log, EventLog)
        log.close_filter(keep=False)


class EventLog(Vertical):
    """The log's lines, its filter and the explanation of the selected line; fed by take()."""

    HELP = HELP
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "toggle_trace", "Trace", tooltip="on a pressure line: open or close its reclaim trace"),
        Binding("n", "next_match(1)", "Next match", tooltip="the next line matching the last filter, in the whole log"),
        Binding("N", "next_match(-1)", "Previous match", show=False, tooltip="the previous line matching it"),
        Binding("escape", "clear_filter", "Clear filter", show=False, tooltip="every line again (n/N still find)"),
    ]
    DEFAULT_CSS = """
    EventLog > #event-filter { display: none; height: 1; border: none; padding: 0 1; }
    EventLog > #event-filter.open { display: block; }
    EventLog > #event-explain { display: none; height: auto; max-height: 4; padding: 0 1; background: $boost; }
    EventLog > #event-explain.open { display: block; }
    """

    def __init__(self) -> None:
        super().__init__(id="events")
        self.known = Known()
        self.lines = LogLines(self._moved, self.toggle_trace)
        self.feed: FeedState | None = None
        self._events_seen = 0  # feed.received when last taken
        self._trace_seen = 0  # feed.trace_received when last taken
        self._pressure_line: dict[str, Entry] = {}  # the newest pressure line of each cgroup
        self._pending: dict[str, deque[dict[str, Any]]] = {}  # reclaim batches awaiting their pressure line
        self._expanded: set[Entry] = set()
        self._open_next: set[str] = set()  # cgroups whose next pressure line opens with its trace
        self._tracing_since: int | None = None  # engine time the trace was asked for
        self._clock = (0, 0.0)  # the engine's newest t_ns and our monotonic time then: stamps for log lines
        self._explained = ""

    def compose(self) -> ComposeResult:
        yield self.lines
        yield FilterInput(placeholder="filter as you type: text, or a,b for either; enter keeps, esc clears",
                          id="event-filter", compact=True)  # fmt: skip
        yield Static(id="event-explain")

    def on_mount(self) -> None:
        self._show_title()

    # -- what the app feeds in --------------------------------------------------

    def take(self, feed: FeedState, records: Iterable[logging.LogRecord] = ()) -> None:
        """The events and reclaim batches the feed received since the last take, and the records
        the workloads this app started logged (those the engine's events say already left out)."""
        if feed is not self.feed:  # a new engine: its numbering starts again
            self.feed, self._events_seen, self._trace_seen = feed, 0, 0
            self._pending.clear()
            if self._expanded:
                feed.want_trace(True)
        t_ns = int(feed.snapshot["t_ns"])
        if t_ns != self._clock[0]:
            self._clock = (t_ns, time.monotonic())
        for workload in feed.snapshot["workloads"]:
            if workload["name"] and self.known.names.get(workload["pid"]) != workload["name"]:
                self.known.names[workload["pid"]] = workload["name"]
        new = min(feed.trace_received - self._trace_seen, len(feed.trace))
        self._trace_seen = feed.trace_received
        if new and self._expanded:
            self._take_batches(itertools.islice(feed.trace, len(feed.trace) - new, None))
        new = min(feed.received - self._events_seen, len(feed.events))
        self._events_seen = feed.received
        self.add_events(itertools.islice(feed.events, len(feed.events) - new, None))
        self.add_records(records)

    def add_events(self, events: Iterable[dict[str, Any]]) -> None:
        added: list[Entry] = []
        for event in events:
            kind = str(event.get("kind"))
            t_ns = event.get("t_ns")
            if kind == "pressure":
                entry = self._fold_pressure(event)
                if entry is not None:
                    added.append(entry)
                continue
            self.known.learn(event)
            added.append(Entry(t_ns, kind, event_text(event, self.known), is_failure(event), event))
        self.lines.append(added)
        self._forget_gone()

    def add_records(self, records: Iterable[logging.LogRecord]) -> None:
        added = [
            Entry(self.now_ns(), "log", f"{record.processName}[{record.process}] {record.getMessage()}")
            for record in records
            if not (record.name == WORKLOAD_LOGGER and REPEATS.fullmatch(record.getMessage()))
        ]
        self.lines.append(added)

    def add_line(self, kind: str, text: str) -> None:
        """A line that is no engine event (a scenario's KTAP line): stamped with the engine's time now."""
        failure = kind == "ktap" and text.startswith("not ok")
        self.lines.append([Entry(self.now_ns(), kind, text, failure)])

    def now_ns(self) -> int:
        """The engine's clock now, as near as the newest stats message and the time since tell."""
        t_ns, at = self._clock
        return t_ns + int((time.monotonic() - at) * 1e9) if at else t_ns

    # -- pressure and its trace -------------------------------------------------

    def _fold_pressure(self, event: dict[str, Any]) -> Entry | None:
        """Add a stats message's pressure sums to its cgroup's line of that second; a new line (returned) else."""
        cgroup, t_ns = str(event["cgroup"]), event.get("t_ns")
        second = int(t_ns) // 10**9 if t_ns is not None else None
        line = self._pressure_line.get(cgroup)
        new = None
        if line is None or line.gone or second is None or line.second != second:
            summed = {"kind": "pressure", "t_ns": t_ns, "cgroup": cgroup, "hits": 0, "reclaimed": 0}
            line = new = Entry(t_ns, "pressure", "", event=summed, second=second)
            self._pressure_line[cgroup] = line
            if self._expanded:  # tracing: this second's batches come under it (those since the trace was asked for)
                started = self._tracing_since
                partial = started is not None and second is not None and started > second * 10**9
                line.trace = Trace(since_ns=started if partial else None)
                if cgroup in self._open_next:  # opened on a line of its cgroup with no trace: this one shows it
                    self._open_next.discard(cgroup)
                    line.expanded = True
                    self._expanded.add(line)
        assert line.event is not None
        line.event["hits"] += int(event.get("hits", 0))
        line.event["reclaimed"] += int(event.get("reclaimed", 0))
        line.text = event_text(line.event, self.known)
        if t_ns is not None:
            line.last_tick_ns = int(t_ns)
            self._attach_batches(line)
        if new is None:
            self.lines.redraw(line)
        return new

    def _attach_batches(self, line: Entry) -> None:
        """The pending batches of the line's cgroup up to its newest stats message go under it."""
        if not self._pending or line.event is None:
            return
        pending = self._pending.get(str(line.event["cgroup"]))
        if not pending:
            return
        if line.trace is None:
            line.trace = Trace()
        while pending and int(pending[0].get("t_ns", 0)) <= line.last_tick_ns:
            line.trace.add(pending.popleft())

    def _take_batches(self, batches: Iterable[dict[str, Any]]) -> None:
        touched: set[str] = set()
        for batch in batches:
            cgroup = str(batch.get("cgroup"))
            pending = self._pending.get(cgroup)
            if pending is None:
                pending = self._pending[cgroup] = deque(maxlen=PENDING_KEPT)
            pending.append(batch)
            touched.add(cgroup)
        for cgroup in touched:  # batches that came late for a line already summed
            line = self._pressure_line.get(cgroup)
            if line is not None and not line.gone and line.trace is not None:
                pending = self._pending[cgroup]
                if pending and int(pending[0].get("t_ns", 0)) <= line.last_tick_ns:
                    self._attach_batches(line)
                    self.lines.redraw(line)

    def toggle_trace(self, entry: Entry) -> None:
        """Open or close a pressure line's reclaim trace; the feed receives batches while any is open."""
        if entry.kind != "pressure" or entry.event is None:
            return
        cgroup = str(entry.event["cgroup"])
        entry.expanded = not entry.expanded
        if entry.expanded:
            self._expanded.add(entry)
            now = self.now_ns()
            newest = entry is self._pressure_line.get(cgroup)
            if entry.trace is None and newest and entry.second == now // 10**9:
                entry.trace = Trace(since_ns=now)  # its second still runs: the batches from now on go under it
            elif entry.trace is None:
                self._open_next.add(cgroup)  # none for this second: the cgroup's next line opens with its batches
        else:
            self._expanded.discard(entry)
            if not any(str(e.event and e.event["cgroup"]) == cgroup and e.trace is None for e in self._expanded):
                self._open_next.discard(cgroup)
        self._want_trace()
        self.lines.redraw(entry)
        self.lines.commit()
        if entry.expanded and entry is self.lines.selected():
            self.lines.reveal()

    def _want_trace(self) -> None:
        tracing = bool(self._expanded)
        if tracing and self._tracing_since is None:
            self._tracing_since = self.now_ns()
        if self.feed is not None and self.feed.tracing != tracing:
            self.feed.want_trace(tracing)
            self._trace_seen = self.feed.trace_received  # from now on
        if not tracing:
            self._tracing_since = None
            self._pending.clear()
            self._open_next.clear()

    def _forget_gone(self) -> None:
        for cgroup in [c for c, line in self._pressure_line.items() if line.gone]:
            del self._pressure_line[cgroup]
        gone = {entry for entry in self._expanded if entry.gone}
        if gone:
            self._expanded -= gone
            self._want_trace()

    # -- keys (the lines have the focus; the panel has the keys, for the help) -----

    def action_toggle_trace(self) -> None:
        self.lines.action_toggle_trace()

    def action_next_match(self, direction: int) -> None:
        self.lines.action_next_match(direction)

    def action_clear_filter(self) -> None:
        self.lines.action_clear_filter()

    # -- filter -----------------------------------------------------------------

    @property
    def filter(self) -> str:
        return self.lines.pattern

    def set_filter(self, text: str) -> None:
        """Show only the lines matching ``text`` (case ignored; ``a,b``: either), these and those to come."""
        self.lines.set_filter(text)
        self._show_title()

    def open_filter(self) -> None:
        """The filter input at the log's bottom, with the filter in force; every key refilters."""
        field = self.query_one("#event-filter", FilterInput)
        field.value = self.lines.pattern
        field.add_class("open")
        field.focus()

    def close_filter(self, keep: bool) -> None:
        field = self.query_one("#event-filter", FilterInput)
        field.remove_class("open")
        if not keep:
            self.set_filter("")
        self.lines.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "event-filter":
            event.stop()
            self.set_filter(event.value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "event-filter":
            event.stop()
            self.close_filter(keep=True)

    # -- title and explanation --------------------------------------------------

    def _show_title(self) -> None:
        lines = self.lines
        if lines.pattern:
            title = f"events matching {lines.pattern!r}: {len(lines.shown)} of {len(lines.entries)}"
        else:
            title = "events"
        self.border_title = title
        after = len(lines.shown) - 1 - lines.cursor
        self.border_subtitle = f"{after} newer below: end follows" if not lines.follow and after > 0 else ""

    def _moved(self) -> None:
        """The cursor moved, or its line changed: the title and the explanation follow."""
        if not self.is_mounted:
            return
        self._show_title()
        pane = self.query_one("#event-explain", Static)
        if not self.lines.has_focus:
            pane.remove_class("open")
            return
        pane.add_class("open")
        said = self.explanation()
        if said != self._explained:
            self._explained = said
            pane.update(said)

    def explanation(self) -> str:
        """What the kernel did at the selected line (the pane under the log shows it while the log has focus)."""
        entry = self.lines.selected()
        if entry is None:
            return "No event yet. Lines come as the engine acts: make a cgroup (n), start a workload (e)."
        if entry.event is not None:
            said = explain(entry.event, self.known)
            if entry.kind == "pressure":
                said += " Enter: " + ("close its trace." if entry.expanded else "its reclaim trace.")
            return said
        if entry.kind == "ktap":
            return "A line of the running scenario's KTAP report: ok or not ok per check, # for its notes."
        return "A line a workload this TUI started logged itself (its own log, not an engine event)."

    # -- helpers for the app and tests -------------------------------------------

    def texts(self, everything: bool = False) -> list[str]:
        """``kind text`` of each shown line (every kept line with ``everything``), without the stamp."""
        entries = self.lines.entries if everything else self.lines.shown
        return [f"{entry.kind:<{KIND_WIDTH}} {entry.text}" for entry in entries]

    def focus_lines(self) -> None:
        self.lines.focus()

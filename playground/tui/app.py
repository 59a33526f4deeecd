"""The Textual playground: the cgroup tree with usage bars, details, workloads and events.

A client of the engine through the protocol only (EngineFeed for what it shows,
EngineClient for what it does).  The screen refreshes on a 4 Hz timer from the feed,
which keeps recording while the display is paused.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import signal
import threading
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from rich.text import Text
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Log, Sparkline, Static, Tree
from textual.widgets.tree import TreeNode

from common.limits import PAGE_SIZE, U64_MAX
from common.units import format_size, parse_size
from playground.feed import EngineFeed, FeedState
from playground.launch import LogHub
from playground.scenario.backends.base import WorkloadSpec
from playground.scenario.ktap import Progress, RunObserver
from playground.tui.screens import HelpScreen, PromptScreen, ScenarioScreen, SignalScreen, SpawnRequest, SpawnScreen
from wire import protocol
from wire.protocol import EngineError, Outcome
from wire.snapshot import CgroupRow, Snapshot, WorkloadRow
from workloads.cli import main as workload_main
from workloads.client import NoEngine

DISCONNECTED = "engine disconnected: r starts a new one"
BAR = 16
NAME_COLUMN = 16  # where the bars start, counted from the root's name
LOG_LINES = 1000
VM_HOLD_NS = 30 * 10**9  # a guest VM spawned here holds its EPC this long
SIGNALS = (*protocol.SIGNALS, "STOP", "CONT", "USR1")  # what k offers: a scenario's, and a few more


def usage_bar(current: int, limit: int, peak: int, width: int = BAR) -> str:
    """``█████░░┃░░``: current against the effective limit, ``┃`` at the peak."""
    if limit <= 0:
        return "!" * width
    filled = min(width, round(width * current / limit))
    cells = ["█"] * filled + ["░"] * (width - filled)
    mark = min(width - 1, int(width * peak / limit)) if peak else -1
    if mark >= 0 and mark >= filled:
        cells[mark] = "┃"
    return "".join(cells)


def effective_limits(snapshot: Snapshot) -> dict[str, int]:
    """Each cgroup's smallest misc.max up to the root, or the capacity."""
    capacity = int(snapshot["capacity"])
    limits: dict[str, int] = {}
    for cg in snapshot["cgroups"]:  # pre-order: parents first
        path = cg["path"]
        parent = path.rsplit("/", 1)[0] or "/"
        own = cg["misc_max"] if cg["misc_max"] is not None else U64_MAX
        limits[path] = min(own, limits.get(parent, capacity)) if path != "/" else capacity
    return limits


def status_line(snap: Snapshot, running: int, stalled: int = 0) -> str:
    """The header line: the EPC, what is free, ksgxd, workloads (those that stall among them)."""
    capacity, free = int(snap["capacity"]), int(snap["free"])
    stalls = f" ([b red]{stalled} stalled[/])" if stalled else ""
    return (
        f" EPC {format_size(capacity)}   free {format_size(free)} ({free // PAGE_SIZE} pages)   "
        f"ksgxd {'[b]running[/b]' if snap['ksgxd'] else 'idle'}   workloads running {running}{stalls}"
    )


FINE_ENDINGS = (Outcome.OK, Outcome.KILLED)  # how a workload may end without it being a failure


def workload_state(workload: WorkloadRow, now_ns: int) -> str | Text:
    """The workloads table's state cell: running; stalled and for how long, in red; how it exited,
    in red when that was a failure (SIGBUS, ENOMEM or another errno, OOM, failed)."""
    state = workload["state"]
    if state == "running":
        return "running"
    if state == "stalled":
        seconds = max(0, now_ns - int(workload.get("stalled_ns") or now_ns)) // 10**9
        return Text(f"stalled {seconds}s", style="bold red")
    reason = workload["reason"] or "?"
    return f"exited: {reason}" if reason in FINE_ENDINGS else Text(f"exited: {reason}", style="red")


class EpcApp(App[None]):
    """Watch and steer an emulated SGX host."""

    TITLE = "epc-playground"
    CSS_PATH = Path(__file__).with_name("app.tcss")  # absolute: subclasses elsewhere find it too
    BINDINGS = [
        Binding("n", "new_cgroup", "New cgroup"),
        Binding("x", "remove_cgroup", "Remove"),
        Binding("m", "set_misc_max", "misc.max"),
        Binding("M", "set_memory_max", "memory.max"),
        Binding("e", "spawn('enclave')", "Enclave"),
        Binding("v", "spawn('vm')", "VM"),
        Binding("k", "kill", "Kill"),
        Binding("K", "signal('KILL')", "Kill -9", show=False),
        Binding("p", "pause", "Pause"),
        Binding("slash", "filter", "Filter"),
        Binding("f", "find", "Find"),
        Binding("o", "run_scenario", "Scenario"),
        Binding("S", "stop_scenario", "Stop scenario", show=False),
        Binding("r", "restart_engine", "New engine", show=False),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit"),
    ]
    # The command palette (ctrl+p) offers every action, with a line on what it does.
    PALETTE = [
        ("New cgroup", "mkdir a child of the selected cgroup (n)", "new_cgroup"),
        ("Remove cgroup", "rmdir the selected cgroup; EBUSY while it has children or tasks (x)", "remove_cgroup"),
        ("Set misc.max", "the selected cgroup's EPC limit: a size like 64M, or max (m)", "set_misc_max"),
        ("Set memory.max", "the selected cgroup's backing-store limit (M)", "set_memory_max"),
        ("Spawn enclaves", "enclave workloads into the selected cgroup (e)", "spawn('enclave')"),
        ("Spawn guest VMs", "VMs with unreclaimable virtual EPC into the selected cgroup (v)", "spawn('vm')"),
        ("Kill workload", "send a signal of your choice to the selected workload (k)", "kill"),
        ("Kill workload with SIGKILL", "kill -9 the selected workload (K)", "signal('KILL')"),
        ("Pause display", "freeze the screen; history keeps recording (p)", "pause"),
        ("Filter events", "show only event lines containing a text: a cgroup, a kind, a pid (/)", "filter"),
        ("Find cgroup", "move to the next cgroup whose path contains a text (f)", "find"),
        ("Run scenario", "a bundled scenario or a TOML file on this engine, KTAP in the log (o)", "run_scenario"),
        ("Stop scenario", "stop the scenario that is running: its workloads are killed (S)", "stop_scenario"),
        ("New engine", "start an engine of our own after ours went away (r)", "restart_engine"),
        ("Help", "what the screen shows and every key (?)", "help"),
    ]

    def __init__(self, endpoint: str, *, owns_engine: Any = None, feed: FeedState | None = None) -> None:
        super().__init__()
        self.endpoint = endpoint
        self.owns_engine = owns_engine  # the engine process this app started, stopped on quit
        self.feed: FeedState | None = feed  # given: snapshots draw from fixed data
        self.paused = False
        self.selected = "/"
        self.nodes: dict[str, TreeNode[str]] = {}
        self.labels: dict[str, tuple[str, int, int, int]] = {}  # each node's label and what it was made from
        self.rows: dict[str, tuple[Any, ...]] = {}  # what each workload row shows now
        self.shown: dict[str, str] = {}  # what each Static shows now
        self.logs = _Lines()
        self.lines: deque[str] = deque(maxlen=LOG_LINES)  # every event line, unfiltered: a new filter redraws
        self.hub = LogHub(self.logs)
        self.children_spawned: list[Any] = []
        self._events_seen = 0  # feed.received when the log was last brought up to date
        self.search = ""
        self.scenario_stop: threading.Event | None = None  # set: the running scenario stops
        self.scenario_progress = ""  # shown in the status line while a scenario runs
        self.event_filter = ""  # only event lines containing this (a cgroup, a kind, a pid)
        self.capacity = "128MiB"  # of an engine started with `r`

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="status")
        with Horizontal():
            tree: Tree[str] = Tree("/ (all EPC)", data="/", id="cgroups")
            tree.root.expand()
            yield tree
            with Vertical(id="right"):
                yield Static(id="details")
                usage = Sparkline([], id="usage-history")
                yield usage
                reclaimed = Sparkline([], id="reclaim-history")
                yield reclaimed
                yield DataTable(id="workloads", cursor_type="row")
                yield Log(id="events", max_lines=LOG_LINES)
        yield Footer()

    def on_mount(self) -> None:
        self.nodes["/"] = self.query_one("#cgroups", Tree).root
        table = self.query_one("#workloads", DataTable)
        table.add_columns("pid", "cgroup", "kind", "name", "size", "resident", "swapped", "faults/s", "state")
        if self.feed is None:
            try:
                self.feed = EngineFeed(self.endpoint)
            except NoEngine as e:
                self.notify(str(e), severity="error", timeout=10)
                return
        self.refresh_view()
        self.set_interval(0.25, self.tick)

    # -- refresh --------------------------------------------------------------

    def tick(self) -> None:
        if self.feed is None:
            return
        self.feed.poll()
        if not self.feed.connected:
            if self.sub_title != DISCONNECTED:
                self.notify("the engine is gone: press r to start a new one", severity="error", timeout=10)
            self.sub_title = DISCONNECTED
            return
        if not self.paused:
            self.refresh_view()

    def refresh_view(self) -> None:
        assert self.feed is not None
        snap = self.feed.snapshot
        running = sum(1 for w in snap["workloads"] if w["state"] != "exited")
        stalled = sum(1 for w in snap["workloads"] if w["state"] == "stalled")
        status = status_line(snap, running, stalled) + self.scenario_progress
        self._show("#status", status)
        self._refresh_tree(snap)
        self._refresh_details(snap)
        self._refresh_workloads(snap)
        self._refresh_events()

    def _refresh_tree(self, snap: Snapshot) -> None:
        limits = effective_limits(snap)
        seen = set()
        for cg in snap["cgroups"]:
            path = cg["path"]
            seen.add(path)
            key = (cg["misc_current"], cg["misc_peak"], limits[path])
            if self.labels.get(path, ("",))[1:] == key:
                continue  # unchanged: nothing to format or draw
            text = self._label(cg, limits[path])
            node = self.nodes.get(path)
            if node is None:
                parent = self.nodes.get(path.rsplit("/", 1)[0] or "/")
                if parent is None:
                    continue
                node = parent.add(Text(text), data=path, expand=True)
                self.nodes[path] = node
            else:
                node.set_label(Text(text))
            self.labels[path] = (text, *key)
        for path in [p for p in self.nodes if p not in seen]:
            self.nodes.pop(path).remove()
            self.labels.pop(path, None)

    @staticmethod
    def _label(cg: CgroupRow, limit: int) -> str:
        """Name, bar and numbers, the bars of every depth in one column (the tree indents 4 a level)."""
        path = cg["path"]
        name = "/ (all EPC)" if path == "/" else path.rsplit("/", 1)[-1]
        width = max(4, NAME_COLUMN - 4 * (path.count("/") if path != "/" else 0))
        name = name if len(name) <= width else name[: width - 1] + "…"
        current, peak = int(cg["misc_current"]), int(cg["misc_peak"])
        shown = "max" if limit >= U64_MAX else format_size(limit)
        return f"{name:<{width}} {usage_bar(current, limit, peak)} {format_size(current)} / {shown}"

    def _refresh_details(self, snap: Snapshot) -> None:
        assert self.feed is not None
        cg = next((c for c in snap["cgroups"] if c["path"] == self.selected), None)
        if cg is None:
            self.selected = "/"
            return
        memory_max = "max" if cg["memory_max"] is None else str(cg["memory_max"])
        events = cg["memory_events"]
        if cg["misc_max"] is None:  # the root: no limit, no events file, the capacity instead
            limit = f"misc.capacity sgx_epc {snap['capacity']}    (the root has no misc.max)"
        else:
            misc_max = "max" if cg["misc_max"] >= U64_MAX else str(cg["misc_max"])
            limit = (
                f"misc.max      sgx_epc {misc_max}    misc.events  sgx_epc.max {cg['misc_events']}"
                f" (local {cg['misc_events_local']})"
            )
        lines = [
            f"[b]{cg['path']}[/b]",
            f"misc.current  sgx_epc {cg['misc_current']}    misc.peak  sgx_epc {cg['misc_peak']}",
            limit,
            f"memory.current {cg['memory_current']}    memory.max {memory_max}"
            f"    oom {events[3]}  oom_kill {events[4]}",
            f"own pages: reclaimable {cg['reclaimable']}  unreclaimable {cg['unreclaimable']}"
            f"    swapped out {cg['swapped']}    tasks {len(cg['procs'])}",
        ]
        self._show("#details", "\n".join(lines))
        # Sparklines scale from their smallest value to their largest: a leading 0 makes it 0 to the largest.
        usage = list(self.feed.usage.get(self.selected, ()))
        reclaimed = list(self.feed.reclaim.get(self.selected, ()))
        usage_line = self.query_one("#usage-history", Sparkline)
        usage_line.data = [0, *usage]
        usage_line.border_title = f"misc.current, last minute: 0 to {format_size(max(usage, default=0))}"
        reclaim_line = self.query_one("#reclaim-history", Sparkline)
        reclaim_line.data = [0, *reclaimed]
        reclaim_line.border_title = f"pages reclaimed per tick, last minute: 0 to {max(reclaimed, default=0)}"

    def _show(self, selector: str, text: str) -> None:
        """Update a fixed-size Static only when its text changed (and without a layout pass)."""
        if self.shown.get(selector) != text:
            self.shown[selector] = text
            self.query_one(selector, Static).update(text, layout=False)

    def _refresh_workloads(self, snap: Snapshot) -> None:
        table = self.query_one("#workloads", DataTable)
        rows = {str(w["pid"]): w for w in snap["workloads"]}
        for key in [k for k in list(table.rows) if k.value not in rows]:
            table.remove_row(key)
            self.rows.pop(str(key.value), None)
        rates = self.feed.fault_rate if self.feed is not None else {}
        for pid, w in rows.items():
            shown = self.rows.get(pid)
            state = workload_state(w, int(snap["t_ns"]))
            # An exited workload's enclaves are gone: it keeps the size it had.
            size = format_size(int(w["size"])) if w.get("size") else shown[4] if shown else "-"
            rate = f"{rates.get(w['pid'], 0.0):,.0f}"
            cells = (pid, w["cgroup"], w["role"], w["name"], size, w["resident"], w["swapped"], rate, state)
            if shown is None:
                table.add_row(*cells, key=pid)
            elif shown != cells:  # redraw only the cells that changed
                for column, old, new in zip(table.columns, shown, cells, strict=True):
                    if old != new:
                        table.update_cell(pid, column, new, update_width=len(str(new)) > len(str(old)))
            self.rows[pid] = cells

    def _refresh_events(self) -> None:
        assert self.feed is not None
        new = min(self.feed.received - self._events_seen, len(self.feed.events))
        self._events_seen = self.feed.received
        fresh = list(itertools.islice(self.feed.events, len(self.feed.events) - new, None))
        lines = [_describe(e) for e in fresh] + self.logs.take()
        self.lines.extend(lines)
        shown = [line for line in lines if self.event_filter in line]
        if shown:
            self.query_one("#events", Log).write_lines(shown)

    def _redraw_events(self) -> None:
        """The log again from what was kept, under the current filter."""
        log = self.query_one("#events", Log)
        log.clear()
        log.write_lines([line for line in self.lines if self.event_filter in line])
        log.border_title = f"events matching {self.event_filter!r}" if self.event_filter else ""

    # -- actions --------------------------------------------------------------

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted[str]) -> None:
        self.selected = event.node.data or "/"
        if self.feed is not None:
            self._refresh_details(self.feed.snapshot)

    def _engine(self, action: str, *args: Any) -> bool:
        """One request to the engine; an error becomes a one-line notification."""
        if not isinstance(self.feed, EngineFeed):
            self.notify("no engine", severity="error")
            return False
        try:
            getattr(self.feed.client, action)(*args)
        except EngineError as e:
            self.notify(f"{action} {args[0]}: {e.message} ({e.code})", severity="error")
            return False
        except NoEngine as e:
            self.notify(str(e), severity="error")
            return False
        return True

    def action_new_cgroup(self) -> None:
        def made(name: str | None) -> None:
            if name:
                self._engine("mkdir", f"{self.selected.rstrip('/')}/{name}")

        self.push_screen(PromptScreen(f"New cgroup under {self.selected}", "name"), made)

    def action_remove_cgroup(self) -> None:
        if self.selected == "/":
            self.notify("the root cgroup cannot be removed", severity="warning")
            return
        self._engine("rmdir", self.selected)

    def action_set_misc_max(self) -> None:
        self._ask_limit("misc.max", lambda nbytes: f"sgx_epc {nbytes}", "sgx_epc max")

    def action_set_memory_max(self) -> None:
        self._ask_limit("memory.max", str, "max")

    def _ask_limit(self, file: str, render: Any, unlimited: str) -> None:
        if self.selected == "/":
            self.notify(f"the root cgroup has no {file}", severity="warning")
            return
        path = f"{self.selected}/{file}"

        def answer(text: str | None) -> None:
            if not text:
                return
            if text == "max":
                value = unlimited
            else:
                try:
                    value = render(parse_size(text))
                except ValueError as e:
                    self.notify(str(e), severity="error")
                    return
            self._engine("write", path, value)

        self.push_screen(PromptScreen(f"{path}: a size like 64M, or max", "64M"), answer)

    def action_spawn(self, kind: str) -> None:
        def spawn(request: SpawnRequest | None) -> None:
            if request is None:
                return
            try:
                size_bytes = parse_size(request.size)
                count, passes = int(request.count), int(request.passes)
            except ValueError:
                self.notify("size like 16MiB; count and passes whole numbers", severity="error")
                return
            enclave = request.kind == "enclave"  # a vm: one pass, then it holds its EPC
            passes, duration_ns = (max(1, passes), None) if enclave else (1, VM_HOLD_NS)
            spec = WorkloadSpec("", self.selected, request.kind, size_bytes, request.pattern, passes, duration_ns)
            for _ in range(max(1, min(count, 64))):
                process = self.hub.spawn(workload_main, spec.to_argv(self.endpoint), name=request.kind)
                self.children_spawned.append(process)

        self.push_screen(SpawnScreen(self.selected, kind), spawn)

    def _selected_pid(self) -> int | None:
        table = self.query_one("#workloads", DataTable)
        if not table.row_count:
            self.notify("no workload selected: spawn one with e or v", severity="warning")
            return None
        return int(table.get_row_at(table.cursor_row)[0])

    def action_kill(self) -> None:
        pid = self._selected_pid()
        if pid is not None:
            self.push_screen(SignalScreen(pid, SIGNALS), lambda name: self.action_signal(name, pid) if name else None)

    def action_signal(self, name: str, pid: int | None = None) -> None:
        """Send SIG``name`` to ``pid`` (the selected workload by default)."""
        pid = pid if pid is not None else self._selected_pid()
        if pid is None:
            return
        try:
            os.kill(pid, getattr(signal, f"SIG{name}"))
        except ProcessLookupError:
            self.notify(f"pid {pid} is already gone", severity="warning")
            return
        self.notify(f"SIG{name} sent to pid {pid}")

    def action_filter(self) -> None:
        def set_filter(text: str | None) -> None:
            if text is not None:
                self.event_filter = text
                self._redraw_events()

        self.push_screen(
            PromptScreen("Show events containing (empty: all)", "/pods/db, reclaim, 1234", self.event_filter),
            set_filter,
        )

    def action_find(self) -> None:
        def find(text: str | None) -> None:
            if text:
                self.search = text
                self.find_cgroup(text)

        self.push_screen(PromptScreen("Find the cgroup whose path contains", "db", self.search), find)

    def find_cgroup(self, text: str) -> None:
        """Move to the next cgroup after the selected one whose path contains ``text`` (wrapping)."""
        cgroups = self.feed.snapshot["cgroups"] if self.feed is not None else []
        paths = [c["path"] for c in cgroups if c["path"] in self.nodes]  # the engine's pre-order
        start = paths.index(self.selected) + 1 if self.selected in paths else 0
        for path in paths[start:] + paths[:start]:
            if text.lower() in path.lower():
                self.query_one("#cgroups", Tree).move_cursor(self.nodes[path])
                return
        self.notify(f"no cgroup path contains {text!r}", severity="warning")

    def action_run_scenario(self) -> None:
        from playground.scenario.load import ScenarioError, load_scenario
        from playground.scenarios import bundled, resolve

        if self.scenario_stop is not None:
            self.notify("a scenario is running: S stops it", severity="warning")
            return
        if not isinstance(self.feed, EngineFeed):
            self.notify("no engine", severity="error")
            return
        listed = {}
        for name, path in bundled().items():
            with contextlib.suppress(ScenarioError):
                listed[name] = load_scenario(path).description

        def chosen(name: str | None) -> None:
            if not name:
                return
            try:
                scenario = load_scenario(resolve(name))
            except ScenarioError as e:
                self.notify(str(e), severity="error", timeout=10)
                return
            self.scenario_stop = threading.Event()
            self.run_worker(functools.partial(self._run_scenario, scenario, self.scenario_stop), thread=True)

        self.push_screen(ScenarioScreen(listed), chosen)

    def _run_scenario(self, scenario: Any, stop: threading.Event) -> None:
        """In a worker thread: the runner on this engine, its KTAP into the event log."""
        from playground.scenario.backends.base import BackendError
        from playground.scenario.backends.real import RealBackend
        from playground.scenario.ktap import KtapWriter, Observers
        from playground.scenario.runner import run_scenario

        name = scenario.name
        try:
            backend = RealBackend.attach(self.endpoint, scenario.memory)
        except (NoEngine, BackendError) as e:
            self.call_from_thread(self._scenario_done, name, f"cannot run: {e}", "error")
            return
        try:
            ktap = KtapWriter(_LinesOut(lambda line: self.call_from_thread(self._scenario_line, line)))
            report = run_scenario(scenario, backend, Observers(ktap, _ProgressOut(self, name)), stop=stop)
        except BackendError as e:
            self.call_from_thread(self._scenario_done, name, f"stopped: {e}", "error")
            return
        finally:
            backend.close()
        how = "stopped" if report.cancelled else "passed" if report.exit_code == 0 else "FAILED"
        summary = f"{how}: {report.passed} of {len(report.results)} expects passed"
        if report.step_failures:
            summary += f", {len(report.step_failures)} steps failed"
        self.call_from_thread(self._scenario_done, name, summary, "information" if how == "passed" else "warning")

    def _scenario_line(self, line: str) -> None:
        text = f"{'ktap':<15} {line}"
        self.lines.append(text)
        if self.event_filter in text:
            self.query_one("#events", Log).write_line(text)

    def _scenario_done(self, name: str, summary: str, severity: Any) -> None:
        self.scenario_stop = None
        self.scenario_progress = ""
        self.notify(f"scenario {name}: {summary}", severity=severity, timeout=10)

    def action_stop_scenario(self) -> None:
        if self.scenario_stop is None:
            self.notify("no scenario is running: o runs one", severity="warning")
            return
        self.scenario_stop.set()
        self.notify("stopping the scenario: its workloads are killed")

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for title, help_text, action in self.PALETTE:
            yield SystemCommand(title, help_text, functools.partial(self.run_action, action))

    def action_restart_engine(self) -> None:
        """Start a new engine of our own after the old one went away, and follow it."""
        if self.feed is not None and self.feed.connected:
            self.notify("the engine is still there", severity="warning")
            return
        from playground.launch import drain_output, start_engine_process

        try:
            engine, endpoint = start_engine_process(["--capacity", self.capacity], dict(os.environ))
        except RuntimeError as e:
            self.notify(str(e), severity="error")
            return
        drain_output(engine)  # nobody else reads its pipes: it must never block on them
        if self.feed is not None:
            self.feed.close()
        self.owns_engine, self.endpoint = engine, endpoint
        for path in [p for p in self.nodes if p != "/"]:
            self.nodes.pop(path).remove()
        self.labels.clear()
        self.feed = EngineFeed(endpoint)
        self._events_seen = 0
        self.sub_title = ""
        self.notify(f"a new engine serves {endpoint}")

    def action_pause(self) -> None:
        self.paused = not self.paused
        self.sub_title = "paused (still recording)" if self.paused else ""

    async def action_quit(self) -> None:
        for child in self.children_spawned:
            if child.is_alive():
                child.terminate()
        if self.feed is not None:
            self.feed.close()
        self.hub.close()
        if self.owns_engine is not None:
            self.owns_engine.terminate()
            self.owns_engine.wait(10)
        self.exit()


class _LinesOut:
    """A text stream that hands each complete line to ``emit`` (KTAP into the event log)."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        self.emit = emit
        self.partial = ""

    def write(self, text: str) -> int:
        *lines, self.partial = (self.partial + text).split("\n")
        for line in lines:
            self.emit(line)
        return len(text)

    def flush(self) -> None:
        pass


class _ProgressOut(RunObserver):
    """A scenario's progress into the status line (from the worker thread)."""

    def __init__(self, app: EpcApp, name: str) -> None:
        self.app, self.name = app, name

    def progress(self, progress: Progress) -> None:
        step = f"step {progress.step}/{progress.total} ({progress.kind})" if progress.step else "finishing"
        self.app.scenario_progress = f"   scenario {self.name}: {step}"  # a str assignment: the next refresh shows it


class _Lines(logging.Handler):
    """Log records from the processes this app spawned, for the event log."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"log  {record.processName}[{record.process}] {record.getMessage()}")

    def take(self) -> list[str]:
        out, self.lines = self.lines, []
        return out


def _pressure(e: dict[str, Any]) -> str:
    """Limit hits on a cgroup's own limit and pages reclaimed from its LRU, since the last stats."""
    parts = [f"limit hit x{e['hits']}"] if e["hits"] else []
    if e["reclaimed"]:
        parts.append(f"{e['reclaimed']} pages reclaimed")
    return f"{e['cgroup']}: {', '.join(parts)}"


def _stall_end(e: dict[str, Any]) -> str:
    """How a stall ended, after how long and how many more failed charges."""
    how = {"resumed": "goes on", "exited": "ended by its exit"}.get(e["how"], f"failed: {e['how']}")
    return f"{e['op']} {how} after {e['stalled_ns'] / 1e9:.1f} s, {e['retries']} more tries"


def _describe(event: dict[str, Any]) -> str:
    kind = str(event.get("kind"))
    details: Callable[[dict[str, Any]], str] | None = {
        "pressure": _pressure,
        "enomem": lambda e: f"pid {e['pid']} in {e['cgroup']}: {e['op']} ENOMEM",
        "sigbus": lambda e: f"pid {e['pid']} in {e['cgroup']}: SIGBUS ({e['errno']})",
        "stall": lambda e: f"{e['name']} (pid {e['pid']}) in {e['cgroup']}: {e['op']} stalls, no reclaim can help",
        "stall_end": lambda e: f"{e['name']} (pid {e['pid']}) in {e['cgroup']}: {_stall_end(e)}",
        "oom_kill": lambda e: f"{e['cgroup']}: OOM killer picked pid {e['pid']}",
        "workload_start": lambda e: f"{e['role']} {e['name']} (pid {e['pid']}) starts in {e['cgroup']}",
        "workload_exit": lambda e: f"{e['name']} (pid {e['pid']}) exited: {e['reason']}",
        "write": lambda e: f"{e['path']} <- {e['value']}",
        "mkdir": lambda e: f"mkdir {e['cgroup']}",
        "ksgxd_wake": lambda e: f"ksgxd woken, {e['free_pages']} pages free",
        "secs_writeback": lambda e: f"enclave {e['enclave']}: SECS written out",
        "ecreate": lambda e: f"enclave {e['enclave']} created by pid {e['pid']}",
        "release": lambda e: f"enclave {e['enclave']} released: {e['pages_freed']} pages",
        "rmdir": lambda e: f"rmdir {e['cgroup']}{' (dying)' if e['dying'] else ''}",
        "malformed": lambda e: f"a {e['topic']} message from the engine could not be read, skipped ({e['error']})",
    }.get(kind)
    text = details(event) if details else ", ".join(f"{k}={v}" for k, v in event.items() if k not in ("kind", "seq"))
    return f"{kind:<15} {text}"

"""The Textual playground: the cgroup tree with usage bars, details, workloads and events.

A client of the engine through the protocol only (EngineFeed for what it shows,
EngineClient for what it does).  The screen refreshes on a 4 Hz timer from the feed,
which keeps recording while the display is paused.  The panels are widgets of their own
(``playground/tui/widgets``); this module composes them and holds the actions.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import signal
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from common.limits import PAGE_SIZE
from common.units import format_size, parse_size
from playground.feed import EngineFeed, FeedState
from playground.launch import LogHub
from playground.scenario.backends.base import WorkloadSpec
from playground.tui.describe import describe
from playground.tui.scenario_worker import run_scenario_thread
from playground.tui.screens import HelpScreen, PromptScreen, ScenarioScreen, SignalScreen, SpawnRequest, SpawnScreen
from playground.tui.widgets.cgroup_tree import CgroupTree
from playground.tui.widgets.details import Details
from playground.tui.widgets.event_log import EventLog
from playground.tui.widgets.workload_table import WorkloadTable
from playground.tui.workload_screen import WorkloadLogs
from wire import protocol
from wire.protocol import EngineError
from wire.snapshot import Snapshot
from workloads.cli import main as workload_main
from workloads.client import NoEngine

log = logging.getLogger(__name__)

DISCONNECTED = "engine disconnected: r starts a new one"
VM_HOLD_NS = 30 * 10**9  # a guest VM spawned here holds its EPC this long
SIGNALS = (*protocol.SIGNALS, "STOP", "CONT", "USR1")  # what k offers: a scenario's, and a few more


def status_line(snap: Snapshot, running: int, stalled: int = 0) -> str:
    """The header line: the EPC, what is free, ksgxd, workloads (those that stall among them)."""
    capacity, free = int(snap["capacity"]), int(snap["free"])
    stalls = f" ([b red]{stalled} stalled[/])" if stalled else ""
    return (
        f" EPC {format_size(capacity)}   free {format_size(free)} ({free // PAGE_SIZE} pages)   "
        f"ksgxd {'[b]running[/b]' if snap['ksgxd'] else 'idle'}   workloads running {running}{stalls}"
    )


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

    def __init__(
        self, endpoint: str, *, owns_engine: Any = None, feed: FeedState | None = None, attached: str = ""
    ) -> None:
        super().__init__()
        self.endpoint = endpoint
        self.owns_engine = owns_engine  # the engine process this app started, stopped on quit
        self.attached = attached  # said on start: an engine this app did not start, and what that means
        self.feed: FeedState | None = feed  # given: snapshots draw from fixed data
        self.paused = False
        self.selected = "/"
        self.logs = _Lines()
        self.workload_logs = WorkloadLogs()  # the same records, by pid: a workload's detail shows its own
        self.hub = LogHub(self.logs, self.workload_logs)
        self.children_spawned: list[Any] = []
        self._events_seen = 0  # feed.received when the log was last brought up to date
        self.search = ""
        self.scenario_stop: threading.Event | None = None  # set: the running scenario stops
        self.scenario_status = ""  # shown in the status line while a scenario runs
        self.status = ""
        self.capacity = "128MiB"  # of an engine started with `r`
        self.screenshot_dir = "."  # where screenshots go
        self.refresh_failed = ""  # the last refresh error said, so a repeating one is said once
        self.stopped = False  # stop_everything ran

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="status")
        with Horizontal():
            yield CgroupTree()
            with Vertical(id="right"):
                yield Details()
                yield WorkloadTable()
                yield EventLog()
        yield Footer()

    @property
    def cgroup_tree(self) -> CgroupTree:
        return self.query_one(CgroupTree)

    @property
    def workload_table(self) -> WorkloadTable:
        return self.query_one(WorkloadTable)

    @property
    def event_log(self) -> EventLog:
        return self.query_one(EventLog)

    def on_mount(self) -> None:
        self._catch_signals()
        if self.attached:
            self.notify(self.attached, timeout=10)
        if self.feed is None:
            try:
                self.feed = EngineFeed(self.endpoint)
            except NoEngine as e:
                self.notify(str(e), severity="error", timeout=10)
                return
        self.refresh_view()
        self.set_interval(0.25, self.tick)

    def _catch_signals(self) -> None:
        """SIGTERM and SIGHUP (kill, timeout, systemd, a lost terminal) quit as q does: what this
        app started stops and the terminal is restored."""
        if threading.current_thread() is not threading.main_thread():
            return
        loop = __import__("asyncio").get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(signum, lambda: self.call_later(self.action_quit))

    # -- refresh --------------------------------------------------------------

    def tick(self) -> None:
        self.children_spawned = [child for child in self.children_spawned if child.is_alive()]  # reaps the ended
        if self.feed is None:
            return
        try:
            self.feed.poll()
        except Exception as e:  # a display must outlive what it displays
            self._refresh_error("reading the engine's messages", e)
            return
        if not self.feed.connected:
            if self.sub_title != DISCONNECTED:
                self.notify("the engine is gone: press r to start a new one", severity="error", timeout=10)
            self.sub_title = DISCONNECTED
            return
        if not self.paused:
            self.refresh_view()

    def refresh_view(self) -> None:
        """Every panel from the feed.  An exception here is a bug of ours: it is logged and said
        once in a notification, and the app goes on (the next refresh may well succeed)."""
        try:
            self._refresh()
        except Exception as e:
            self._refresh_error("drawing the screen", e)
        else:
            self.refresh_failed = ""

    def _refresh_error(self, doing: str, error: Exception) -> None:
        log.exception("epc-playground tui: %s failed", doing)
        said = f"{doing} failed: {type(error).__name__}: {error}"
        if said != self.refresh_failed:
            self.refresh_failed = said
            self.notify(said, severity="error", timeout=10)

    def _refresh(self) -> None:
        assert self.feed is not None
        snap = self.feed.snapshot
        running = sum(1 for w in snap["workloads"] if w["state"] != "exited")
        stalled = sum(1 for w in snap["workloads"] if w["state"] == "stalled")
        self._show_status(status_line(snap, running, stalled) + self.scenario_status)
        self.cgroup_tree.show(snap)
        self._show_details()
        self.workload_table.show(snap, self.feed.fault_rate, self.selected)
        self._take_events()

    def _show_status(self, text: str) -> None:
        if text != self.status:
            self.status = text
            self.query_one("#status", Static).update(text, layout=False)

    def _show_details(self) -> None:
        assert self.feed is not None
        usage, reclaimed = self.feed.usage.get(self.selected, ()), self.feed.reclaim.get(self.selected, ())
        if not self.query_one(Details).show(self.feed.snapshot, self.selected, usage, reclaimed):
            self.selected = "/"  # removed: the root until the tree's cursor says otherwise

    def _take_events(self) -> None:
        assert self.feed is not None
        new = min(self.feed.received - self._events_seen, len(self.feed.events))
        self._events_seen = self.feed.received
        fresh = itertools.islice(self.feed.events, len(self.feed.events) - new, None)
        self.event_log.add([describe(e) for e in fresh] + self.logs.take())

    # -- actions --------------------------------------------------------------

    def on_tree_node_highlighted(self, event: CgroupTree.NodeHighlighted[str]) -> None:
        self.selected = event.node.data or "/"
        self.workload_table.select_cgroup(self.selected)
        if self.feed is not None:
            self._show_details()

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
        """The selected workload's pid, when it is a live workload of this engine; else None, said why.
        An exited workload's pid may be another process's by now: it is never signalled."""
        workload = self.workload_table.selected()
        if workload is None:
            self.notify("no workload selected: spawn one with e or v", severity="warning")
            return None
        if workload["state"] == "exited":
            name = workload["name"] or "pid"
            self.notify(f"{name} {workload['pid']} has exited: nothing to signal", severity="warning")
            return None
        return int(workload["pid"])

    def action_kill(self) -> None:
        pid = self._selected_pid()
        if pid is not None:
            self.push_screen(SignalScreen(pid, SIGNALS), lambda name: self.action_signal(name, pid) if name else None)

    def action_signal(self, name: str, pid: int | None = None) -> None:
        """Send SIG``name`` to ``pid`` (the selected workload by default), if it is still a live
        workload of this engine (the snapshot may have changed while the signal list was open)."""
        pid = pid if pid is not None else self._selected_pid()
        if pid is None:
            return
        workload = self.workload_table.workloads.get(pid)
        if workload is None or workload["state"] == "exited":
            self.notify(f"pid {pid} is no longer a running workload: nothing sent", severity="warning")
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
                self.event_log.set_filter(text)

        self.push_screen(
            PromptScreen("Show events containing (empty: all)", "/pods/db, reclaim, 1234", self.event_log.filter),
            set_filter,
        )

    @property
    def event_filter(self) -> str:
        return self.event_log.filter

    def action_find(self) -> None:
        def find(text: str | None) -> None:
            if text:
                self.search = text
                self.find_cgroup(text)

        self.push_screen(PromptScreen("Find the cgroup whose path contains", "db", self.search), find)

    def find_cgroup(self, text: str) -> None:
        """Move to the next cgroup after the selected one whose path contains ``text`` (wrapping)."""
        cgroups = self.feed.snapshot["cgroups"] if self.feed is not None else []
        tree = self.cgroup_tree
        paths = [c["path"] for c in cgroups if c["path"] in tree.nodes]  # the engine's pre-order
        start = paths.index(self.selected) + 1 if self.selected in paths else 0
        for path in paths[start:] + paths[:start]:
            if text.lower() in path.lower():
                tree.move_cursor(tree.nodes[path])
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
            run = functools.partial(run_scenario_thread, self, self.endpoint, scenario, self.scenario_stop)
            self.run_worker(run, thread=True)

        self.push_screen(ScenarioScreen(listed), chosen)

    def scenario_line(self, line: str) -> None:
        self.event_log.add([f"{'ktap':<15} {line}"])

    def scenario_progress(self, text: str) -> None:
        self.scenario_status = text

    def scenario_done(self, name: str, summary: str, severity: Any) -> None:
        self.scenario_stop = None
        self.scenario_status = ""
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

    def deliver_screenshot(
        self, filename: str | None = None, path: str | None = None, time_format: str | None = None
    ) -> str | None:
        """Save the screen as SVG in the screenshot directory (the current one by default), not in
        ~/Downloads, which servers and containers do not have; say where, or why not."""
        try:
            saved = self.save_screenshot(filename, path or self.screenshot_dir, time_format)
        except OSError as e:
            self.notify(f"cannot save the screenshot: {e}", severity="error", timeout=10)
            return None
        self.notify(f"screenshot saved: {os.path.abspath(saved)}", timeout=10)
        return saved

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
        self.stop_engine()  # the one we started before, if any: gone, but not yet waited for
        self.owns_engine, self.endpoint = engine, endpoint
        self.cgroup_tree.clear_cgroups()
        try:
            self.feed = EngineFeed(endpoint)
        except NoEngine as e:
            self.feed = None
            self.notify(str(e), severity="error", timeout=10)
            return
        self._events_seen = 0
        self.sub_title = ""
        self.notify(f"a new engine serves {endpoint}")

    def action_pause(self) -> None:
        self.paused = not self.paused
        self.sub_title = "paused (still recording)" if self.paused else ""

    async def action_quit(self) -> None:
        self.stop_everything()
        self.exit()

    def stop_everything(self) -> None:
        """Stop what this app started: a scenario, the workloads, the engine (idempotent)."""
        if self.stopped:
            return
        self.stopped = True
        if self.scenario_stop is not None:
            self.scenario_stop.set()
        for child in self.children_spawned:
            if child.is_alive():
                child.terminate()
        for child in self.children_spawned:
            child.join(5)
        self.children_spawned = []
        if self.feed is not None:
            self.feed.close()
        self.hub.close()
        self.stop_engine()

    def stop_engine(self) -> None:
        if self.owns_engine is not None:
            if self.owns_engine.poll() is None:
                self.owns_engine.terminate()
            self.owns_engine.wait(10)
            self.owns_engine = None


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

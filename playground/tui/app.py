"""The Textual playground: the cgroup tree with usage bars, details, workloads and events.

A client of the engine through the protocol only (EngineFeed for what it shows,
EngineClient for what it does).  The screen refreshes on a timer from the feed (4 Hz, or
the config file's rate), which keeps recording while the display is paused.  The panels
are widgets of their own (``playground/tui/widgets``), the dialogs screens of their own
(``playground/tui/screens``); this module composes them and holds the actions.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rich.markup import escape
from textual import events
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Header, HelpPanel, Static

from common.limits import PAGE_SIZE
from common.units import format_size, parse_size, shown
from playground.feed import EngineFeed, FeedState
from playground.launch import LogHub
from playground.scenario.backends.base import WorkloadSpec
from playground.tui.config import TuiConfig, save_theme
from playground.tui.footer import ShellFooter
from playground.tui.keys import InOrderKeys
from playground.tui.scenario_worker import run_scenario_thread
from playground.tui.screens.help import HelpScreen, help_sections
from playground.tui.screens.picker import ScenarioScreen
from playground.tui.screens.prompt import LIMIT_WORDS, PromptScreen, size_error, size_text
from playground.tui.screens.signal import SignalScreen
from playground.tui.screens.spawn import SpawnRequest, SpawnScreen
from playground.tui.step_mode import frozen_status, step_note, waiting
from playground.tui.views.frames import FrameMapScreen
from playground.tui.views.lru import LruScreen
from playground.tui.widgets.cgroup_tree import CgroupTree
from playground.tui.widgets.details import Details
from playground.tui.widgets.event_log import EventLog
from playground.tui.widgets.flat_view import FlatView
from playground.tui.widgets.workload_table import NAMES, WorkloadTable
from playground.tui.workload_screen import WorkloadLogs
from wire import protocol
from wire.protocol import EngineError
from wire.snapshot import Snapshot, knobs_short
from workloads.cli import main as workload_main
from workloads.client import NoEngine

log = logging.getLogger(__name__)

DISCONNECTED = "engine disconnected: r starts a new one"
NARROW, SHORT = 120, 36  # below these columns / rows the screen is laid out tighter (app.tcss: -narrow, -short)
SIGNALS = (*protocol.SIGNALS, "STOP", "CONT", "USR1")  # what k offers: a scenario's, and a few more


def status_line(snap: Snapshot, running: int, stalled: int = 0) -> str:
    """The header line: the EPC, what is free, ksgxd, workloads (those that stall among them), and
    the engine's knobs that are not V17's, so that its numbers are never taken for the kernel's."""
    capacity, free = int(snap["capacity"]), int(snap["free"])
    stalls = f" ([b red]{stalled} stalled[/])" if stalled else ""
    knobs = knobs_short(snap)
    return (
        f" EPC {format_size(capacity)}   free {format_size(free)} ({free // PAGE_SIZE} pages)   "
        f"ksgxd {'[b]running[/b]' if snap['ksgxd'] else 'idle'}   workloads running {running}{stalls}"
        + (f"   [b yellow]not V17: {escape(knobs)}[/]" if knobs else "")
    )


class EpcApp(InOrderKeys):
    """Watch and steer an emulated SGX host."""

    TITLE = "epc-playground"
    CSS_PATH = Path(__file__).with_name("app.tcss")  # absolute: subclasses elsewhere find it too
    # Short footer labels (the footer puts ? and q first); the tooltip is the help's longer text.
    BINDINGS = [
        Binding("question_mark", "help", "Help", tooltip="this help: the focused panel's keys first"),
        Binding("q", "quit", "Quit", tooltip="quit (stops the engine and workloads this TUI started)"),
        Binding("n", "new_cgroup", "New", tooltip="new cgroup under the selected one"),
        Binding("x", "remove_cgroup", "Rmdir", tooltip="remove the selected cgroup (EBUSY with children or tasks)"),
        Binding("m", "set_misc_max", "misc.max", tooltip="set misc.max (the EPC limit) of the selected cgroup"),
        Binding("M", "set_memory_max", "mem.max", tooltip="set memory.max (backing store) of the selected cgroup"),
        Binding("e", "spawn('enclave')", "Enclave", tooltip="spawn enclaves into the selected cgroup"),
        Binding("v", "spawn('vm')", "VM", tooltip="spawn guest VMs (unreclaimable EPC) into the selected cgroup"),
        Binding("k", "kill", "Kill", tooltip="send a signal of your choice to the selected workload"),
        Binding("K", "signal('KILL')", "Kill -9", show=False, tooltip="SIGKILL the selected workload"),
        Binding("p", "pause", "Pause", tooltip="pause the display (history keeps recording)"),
        Binding("slash", "filter", "Filter", tooltip="show only event lines containing a text"),
        Binding("f", "find", "Find", tooltip="move to the next cgroup whose path contains a text"),
        Binding("o", "run_scenario", "Scenario", tooltip="run a scenario (bundled or a file), its KTAP in the log"),
        Binding("S", "stop_scenario", "Stop", tooltip="stop the running scenario"),
        Binding("X", "clean_scenario", "Clean up", tooltip="remove the cgroups the last scenario left"),
        Binding(
            "w", "sweep", "Sweep", show=False, tooltip="sweep the selected cgroup's limit over a scenario: the curve"
        ),
        Binding("r", "restart_engine", "New engine", show=False, tooltip="start a new engine after ours went away"),
        Binding("u", "toggle_units", "Units", show=False, tooltip="details in human units or the kernel's raw text"),
        Binding("L", "lru", "LRU", tooltip="the selected cgroup's LRU, head first, and the next reclaim batch"),
        Binding("F", "frame_map", "Frames", tooltip="the EPC frame map, by cgroup or by kind"),
        Binding("z", "freeze", "Freeze", tooltip="step mode: freeze the engine, or thaw it"),
        Binding("full_stop", "step('request')", "Step", show=False, tooltip="while frozen: one request step"),
        Binding("comma", "step('reclaim')", "Reclaim step", show=False, tooltip="while frozen: one reclaim batch"),
        Binding("escape", "hide_help_panel", show=False),  # the Keys panel (help: MORE_KEYS)
    ]
    # The command palette (ctrl+p) offers every action, with a line on what it does.
    PALETTE = [
        ("New cgroup", "mkdir a child of the selected cgroup (n)", "new_cgroup"),
        ("Remove cgroup", "rmdir the selected cgroup; EBUSY while it has children or tasks (x)", "remove_cgroup"),
        ("Set misc.max", f"the selected cgroup's EPC limit: {LIMIT_WORDS} (m)", "set_misc_max"),
        ("Set memory.max", "the selected cgroup's backing-store limit (M)", "set_memory_max"),
        ("Spawn enclaves", "enclave workloads into the selected cgroup (e)", "spawn('enclave')"),
        ("Spawn guest VMs", "VMs with unreclaimable virtual EPC into the selected cgroup (v)", "spawn('vm')"),
        ("Kill workload", "send a signal of your choice to the selected workload (k)", "kill"),
        ("Kill workload with SIGKILL", "kill -9 the selected workload (K)", "signal('KILL')"),
        ("Pause display", "freeze the screen; history keeps recording (p)", "pause"),
        ("Toggle units", "the details in human units or as the kernel's raw text (u)", "toggle_units"),
        ("Filter events", "show only event lines containing a text (case ignored; a,b: either) (/)", "filter"),
        ("Find cgroup", "move to the next cgroup whose path contains a text (f)", "find"),
        ("Run scenario", "a bundled scenario or a TOML file on this engine, KTAP in the log (o)", "run_scenario"),
        ("Stop scenario", "stop the scenario that is running: its workloads are killed (S)", "stop_scenario"),
        ("Clean up scenario", "remove the cgroups the last scenario made and left (X)", "clean_scenario"),
        ("Sweep a limit", "run a scenario at a range of the selected cgroup's limit: the curve, the knee (w)", "sweep"),
        ("New engine", "start an engine of our own after ours went away (r)", "restart_engine"),
        ("LRU view", "the selected cgroup's LRU, head first, and what the next reclaim batch does (L)", "lru"),
        ("EPC frame map", "every frame of the EPC, by cgroup or by kind (F)", "frame_map"),
        ("Freeze / thaw", "step mode: the engine runs nothing until you step it (z)", "freeze"),
        ("Step a request", "while frozen: one step of the oldest ready request (.)", "step('request')"),
        ("Step reclaim", "while frozen: one batch of the pending reclaim work (,)", "step('reclaim')"),
        ("Help", "what the screen shows and every key (?)", "help"),
    ]

    def __init__(
        self,
        endpoint: str,
        *,
        owns_engine: Any = None,
        feed: FeedState | None = None,
        attached: str = "",
        config: TuiConfig | None = None,
    ) -> None:
        super().__init__()
        self.config = config if config is not None else TuiConfig()  # the defaults: nothing read, nothing saved
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
        self.search = ""
        self.scenario_stop: threading.Event | None = None  # set: the running scenario stops
        self.scenario_status = ""  # shown in the status line while a scenario runs
        self.scenario_before: set[str] = set()  # the cgroups there when the scenario started
        self.scenario_made: set[str] = set()  # the paths of its mkdir steps
        self.status = ""
        self.capacity = str(self.config.capacity)  # of an engine started with `r`
        self.knob_argv: list[str] = []  # the series' knobs of an engine started with `r` (tui --nr-to-scan ...)
        self.profile_argv: list[str] = []  # and its cost profile (tui --profile NAME)
        self.screenshot_dir = self.config.screenshot_dir  # where screenshots go
        self.scenario_left: list[str] = []  # cgroups the last scenario made and left, parents first
        self.last_scenario = ""  # the name or file of the scenario this TUI last ran: what a sweep proposes
        self.sweep_jobs: int | None = None  # points a sweep runs at once (None: this machine's cores)
        self.saved_theme = ""  # the theme the config file holds (not written back)
        wanted = self.config.columns or NAMES
        self.columns = tuple(name for name in wanted if name in NAMES) or NAMES  # the workloads table's
        self.refresh_failed = ""  # the last refresh error said, so a repeating one is said once
        self.stopped = False  # stop_everything ran
        self.frozen = False  # this TUI froze the engine (step mode)

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="status")
        with Horizontal():
            yield CgroupTree()
            yield FlatView()
            with Vertical(id="right"):
                yield Details()
                yield WorkloadTable(columns=self.columns)
                yield EventLog()
        yield ShellFooter()

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
        self._apply_config()
        if self.attached:
            self.notify(self.attached, timeout=10)
        if self.feed is None:
            try:
                self.feed = EngineFeed(self.endpoint)
            except NoEngine as e:
                self.notify(str(e), severity="error", timeout=10)
                return
        self.refresh_view()
        self.refresh_timer = self.set_interval(1 / self.config.refresh_hz, self.tick)

    def _apply_config(self) -> None:
        """The config's theme and columns (checked here, where the themes and columns are known);
        each key that did not hold is one notice, said at start."""
        notices = list(self.config.notices)
        where = f"{self.config.path}: " if self.config.path is not None else ""
        theme = self.config.theme
        if theme is not None and theme not in self.available_themes:
            themes = ", ".join(sorted(self.available_themes))
            notices.append(f"{where}theme ignored: {shown(theme)} is not one of {themes}")
        elif theme is not None:
            self.theme = theme
        if self.config.columns is not None:
            unknown = ", ".join(shown(name) for name in self.config.columns if name not in NAMES)
            if unknown:
                notices.append(f"{where}columns: {unknown} ignored (the columns: {', '.join(NAMES)})")
        for notice in notices:
            log.warning("epc-playground tui: %s", notice)
            self.notify(notice, title="config", severity="warning", timeout=20)
        self.saved_theme = self.theme  # what the file says, in effect: not written back
        self.theme_changed_signal.subscribe(self, self._save_theme)

    def _save_theme(self, theme: Any) -> None:
        """A theme picked in the palette, written into the config file (said if it cannot be)."""
        if self.config.path is None or theme.name == self.saved_theme:
            return
        try:
            save_theme(self.config.path, str(theme.name))
        except OSError as e:
            self.notify(f"the theme is not saved in {self.config.path}: {e}", severity="warning")
            return
        self.saved_theme = theme.name

    def on_resize(self, event: events.Resize) -> None:
        """A tighter layout below NARROW columns or SHORT rows (app.tcss: ``.-narrow``, ``.-short``)."""
        self.set_class(event.size.width < NARROW, "-narrow")
        self.set_class(event.size.height < SHORT, "-short")

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
        self._show_status(self.status_text(snap))
        self.cgroup_tree.show(snap)
        self._show_details()
        self.workload_table.show(snap, self.feed.fault_rate, self.selected)
        self._take_events()

    def status_text(self, snap: Snapshot) -> str:
        """The status line: the EPC and the workloads, step mode, a scenario's progress."""
        running = sum(1 for w in snap["workloads"] if w["state"] != "exited")
        stalled = sum(1 for w in snap["workloads"] if w["state"] == "stalled")
        return status_line(snap, running, stalled) + frozen_status(snap) + self.scenario_status

    def _show_status(self, text: str) -> None:
        if text != self.status:
            self.status = text
            self.query_one("#status", Static).update(text, layout=False)

    def _show_details(self) -> None:
        assert self.feed is not None
        if not self.query_one(Details).show(self.feed, self.selected):
            self.selected = "/"  # removed: the root until the tree's cursor says otherwise

    def action_toggle_units(self) -> None:
        self.query_one(Details).toggle_units()
        if self.feed is not None:
            self._show_details()

    def _take_events(self) -> None:
        assert self.feed is not None
        self.event_log.take(self.feed, self.logs.take())

    # -- actions --------------------------------------------------------------

    def on_tree_node_highlighted(self, event: CgroupTree.NodeHighlighted[str]) -> None:
        self.selected = event.node.data or "/"
        self.workload_table.select_cgroup(self.selected)
        if self.feed is not None:
            self._show_details()

    def engine_client(self) -> Any:
        """What the actions send the engine's ops to: the feed's client (an EngineClient, or the
        in-process host's); None when there is none (a fixed feed)."""
        return getattr(self.feed, "client", None)

    def _engine(self, action: str, *args: Any) -> bool:
        """One request to the engine; an error becomes a one-line notification."""
        error = self._request(action, *args)
        if error:
            self.notify(error, severity="error")
        return not error

    def _request(self, action: str, *args: Any) -> str:
        """One request to the engine: what went wrong, in one line, or "" (a prompt shows it)."""
        return self._ask(action, *args)[1]

    def _ask(self, action: str, *args: Any) -> tuple[Any, str]:
        """One request to the engine: (its answer, "") or (None, what went wrong in one line)."""
        client = self.engine_client()
        if client is None:
            return None, "no engine"
        try:
            return getattr(client, action)(*args), ""
        except EngineError as e:
            return None, f"{' '.join([action, *map(str, args[:1])])}: {e.message} ({e.code})"
        except NoEngine as e:
            return None, str(e)

    def action_new_cgroup(self) -> None:
        def make(name: str) -> str | None:
            if not name:
                return "type a name, or Esc"
            path = f"{self.selected.rstrip('/')}/{name}"
            error = self._request("mkdir", path)
            if not error:
                self.cgroup_tree.select_when_shown = path  # selected once the tree shows it
            return error or None

        self.push_screen(PromptScreen(f"New cgroup under {self.selected}", placeholder="name", check=make))

    def action_remove_cgroup(self) -> None:
        if self.selected == "/":
            self.notify("the root cgroup cannot be removed", severity="warning")
            return
        self._engine("rmdir", self.selected)

    def action_set_misc_max(self) -> None:
        self._ask_limit("misc.max", "misc_max", "sgx_epc ")

    def action_set_memory_max(self) -> None:
        self._ask_limit("memory.max", "memory_max", "")

    def _ask_limit(self, file: str, field: str, prefix: str) -> None:
        """Prompt for a limit, prefilled with its value now; the write is done in the prompt,
        which stays open with what went wrong (a bad size, or the engine's error)."""
        if self.selected == "/":
            self.notify(f"the root cgroup has no {file}", severity="warning")
            return
        path = f"{self.selected}/{file}"
        row = self._cgroup(self.selected)
        now = size_text(row[field]) if row is not None else ""

        def write(text: str) -> str | None:
            error = size_error(text, limit=True)
            if error:
                return error
            value = "max" if text == "max" else str(parse_size(text))
            return self._request("write", path, prefix + value) or None

        self.push_screen(PromptScreen(f"{path} (now {now or '?'})", value=now, hint=LIMIT_WORDS, check=write))

    def _cgroup(self, path: str) -> Any:
        """The snapshot's row of cgroup ``path``, or None."""
        cgroups = self.feed.snapshot["cgroups"] if self.feed is not None else []
        return next((cg for cg in cgroups if cg["path"] == path), None)

    def action_spawn(self, kind: str) -> None:
        cgroup = self.selected

        def spawn(request: SpawnRequest | None) -> None:
            if request is None:
                return  # the form checked every field: what comes back is valid
            duration_ns = None if request.hold_s is None else round(request.hold_s * 1e9)
            spec = WorkloadSpec(
                "", cgroup, request.kind, request.size_bytes, request.pattern, request.passes, duration_ns
            )
            for _ in range(request.count):
                process = self.hub.spawn(workload_main, spec.to_argv(self.endpoint), name=request.kind)
                self.children_spawned.append(process)

        self.push_screen(SpawnScreen(cgroup, kind), spawn)

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

    def action_lru(self) -> None:
        client = self.engine_client()
        if client is not None:
            self.push_screen(LruScreen(client, self.selected))
        else:
            self.notify("no engine", severity="error")

    def action_frame_map(self) -> None:
        client = self.engine_client()
        if client is not None and self.feed is not None:
            self.push_screen(FrameMapScreen(client, int(self.feed.snapshot["capacity"])))
        else:
            self.notify("no engine", severity="error")

    def action_freeze(self) -> None:
        """Freeze the engine (step mode), or thaw it when this TUI froze it."""
        state, error = self._ask("thaw" if self.frozen else "freeze")
        if error:
            self.notify(error, severity="error")
        elif self.frozen:
            self.frozen = False
            self.notify("thawed: the engine runs by itself again")
        else:
            self.frozen = True
            self.notify(f"frozen. Waiting: {waiting(state)}.  . steps a request, , a reclaim batch", timeout=8)

    def action_step(self, what: str) -> None:
        if not self.frozen:
            self.notify("not frozen: z freezes the engine, then . and , step it", severity="warning")
            return
        result, error = self._ask("step", what)
        if error:
            self.notify(error, severity="error")
        else:
            self.notify(step_note(result), title=f"step {what}", timeout=8)

    def action_filter(self) -> None:
        self.event_log.open_filter()

    @property
    def event_filter(self) -> str:
        return self.event_log.filter

    def action_find(self) -> None:
        def find(text: str) -> str | None:
            if not text:
                return "type a part of a path, or Esc"
            self.search = text
            return self.find_cgroup(text)

        question = "Find the cgroup whose path contains (any case; f, Enter: the next one)"
        self.push_screen(PromptScreen(question, value=self.search, placeholder="db", check=find))

    def find_cgroup(self, text: str) -> str | None:
        """Move to the next cgroup after the selected one whose path contains ``text`` (wrapping);
        None, or what to say when none does."""
        cgroups = self.feed.snapshot["cgroups"] if self.feed is not None else []
        tree = self.cgroup_tree
        paths = [c["path"] for c in cgroups if c["path"] in tree.nodes]  # the engine's pre-order
        start = paths.index(self.selected) + 1 if self.selected in paths else 0
        for path in paths[start:] + paths[:start]:
            if text.lower() in path.lower():
                tree.select_path(path)
                return None
        return f"no cgroup path contains {shown(text)}"

    def action_run_scenario(self) -> None:
        from playground.scenario.load import ScenarioError, load_scenario
        from playground.scenario.model import Mkdir
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

        def start(name: str) -> str | None:
            """Load and start it; what is wrong with the file stays in the open chooser."""
            try:
                scenario = load_scenario(resolve(name))
            except ScenarioError as e:
                return str(e)
            self.last_scenario = name
            self.scenario_before = {cg["path"] for cg in self.feed.snapshot["cgroups"]} if self.feed else set()
            self.scenario_made = {step.path for step in scenario.steps if isinstance(step, Mkdir)}
            self.scenario_stop = threading.Event()
            run = functools.partial(run_scenario_thread, self, self.endpoint, scenario, self.scenario_stop)
            self.run_worker(run, thread=True)
            self.refresh_bindings()  # S in the footer
            return None

        self.push_screen(ScenarioScreen(listed, check=start))

    def scenario_line(self, line: str) -> None:
        self.event_log.add_line("ktap", line)

    def scenario_progress(self, text: str) -> None:
        self.scenario_status = text

    def scenario_note(self, text: str) -> None:
        """A remark of the run (its capacity is not the engine's, what it killed at the end): a
        notification, which wraps, besides its KTAP line."""
        if not text.startswith("cancelled at step"):  # the stop is said when the run ends
            self.notify(text, title="scenario", severity="warning", timeout=15)

    def scenario_done(self, name: str, summary: str, severity: Any) -> None:
        self.scenario_stop = None
        self.scenario_status = ""
        self.scenario_left = self._scenario_leftovers()
        if self.scenario_left:
            summary += (
                f"; its cgroups stay for you to read their files ({', '.join(self.scenario_left)}): X removes them"
            )
        self.notify(f"scenario {name}: {summary}", severity=severity, timeout=15)
        self.refresh_bindings()

    def _scenario_leftovers(self) -> list[str]:
        """The cgroups the scenario made (its mkdir steps and their parents) that are still there
        and were not before it ran, parents first."""
        made = {"/".join(path.split("/")[:n]) for path in self.scenario_made for n in range(2, path.count("/") + 2)}
        now: list[str] = []
        with contextlib.suppress(EngineError, NoEngine):  # the engine's tree now: the feed's may lag the last steps
            if isinstance(self.feed, EngineFeed):
                now = [cg["path"] for cg in self.feed.client.snapshot()["cgroups"]]
        return [path for path in now if path in made and path not in self.scenario_before]

    def action_clean_scenario(self) -> None:
        """Remove the cgroups the last scenario left, deepest first; say what could not go."""
        if self.scenario_stop is not None:
            self.notify("a scenario is running: S stops it", severity="warning")
            return
        if not self.scenario_left:
            self.notify("no cgroups of a scenario to remove", severity="warning")
            return
        errors = [error for path in reversed(self.scenario_left) if (error := self._request("rmdir", path))]
        errors = [error for error in errors if not error.endswith("(ENOENT)")]  # gone already: fine
        removed = len(self.scenario_left) - len(errors)
        self.scenario_left = []
        self.refresh_bindings()
        if errors:
            self.notify(f"{removed} cgroups removed; " + "; ".join(errors), severity="error", timeout=15)
        else:
            self.notify(f"{removed} cgroups of the scenario removed")

    def action_sweep(self) -> None:
        """The sweep form for the selected cgroup, then the sweep's screen (in process: no engine needed)."""
        from playground.tui.screens.sweep import SweepFormScreen, SweepScreen
        from playground.tui.sweep_text import DEFAULT_SCENARIO

        def run(request: Any) -> None:
            if request is not None:  # the form checked every field
                self.push_screen(SweepScreen(request, self.sweep_jobs))

        self.push_screen(SweepFormScreen(self.selected, self.last_scenario or DEFAULT_SCENARIO), run)

    def action_stop_scenario(self) -> None:
        if self.scenario_stop is None:
            self.notify("no scenario is running: o runs one", severity="warning")
            return
        self.scenario_stop.set()
        self.notify("stopping the scenario: its workloads are killed")

    def action_help(self) -> None:
        """The help, the focused panel's keys and meaning first."""
        self.push_screen(HelpScreen(help_sections(self, self.focused)))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Esc hides the Keys panel only while it is shown; S is there while a scenario runs, X once
        one left cgroups (False: neither in the footer nor bound)."""
        if action == "hide_help_panel":
            return bool(self.screen.query(HelpPanel))
        if action == "stop_scenario":
            return self.scenario_stop is not None
        if action == "clean_scenario":
            return bool(self.scenario_left)
        return True

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for title, text, action in self.PALETTE:
            yield SystemCommand(title, text, functools.partial(self.run_action, action))

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
            argv = ["--capacity", self.capacity, *self.knob_argv, *self.profile_argv]
            engine, endpoint = start_engine_process(argv, dict(os.environ))
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
        for screen in self.screen_stack:  # a sweep running: its pool's workers go too
            stop = getattr(screen, "stop", None)
            if isinstance(stop, threading.Event):
                stop.set()
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
        self.lines: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record)

    def take(self) -> list[logging.LogRecord]:
        out, self.lines = self.lines, []
        return out

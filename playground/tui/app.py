"""The Textual playground: the cgroup tree with usage bars, details, workloads and events.

A client of the engine through the protocol only (EngineFeed for what it shows,
EngineClient for what it does).  The screen refreshes on a 4 Hz timer from the feed,
which keeps recording while the display is paused.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import Any

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Footer, Header, Log, Sparkline, Static, Tree
from textual.widgets.tree import TreeNode

from engine.units import format_size, parse_size
from playground.feed import EngineFeed
from playground.launch import LogHub
from playground.tui.screens import PromptScreen, SpawnRequest, SpawnScreen
from workloads.client import EngineError, NoEngine

U64_MAX = (1 << 64) - 1
DISCONNECTED = "engine disconnected: r starts a new one"
BAR = 16


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


def effective_limits(snapshot: dict[str, Any]) -> dict[str, int]:
    """Each cgroup's smallest misc.max up to the root, or the capacity."""
    capacity = int(snapshot["capacity"])
    limits: dict[str, int] = {}
    for cg in snapshot["cgroups"]:  # pre-order: parents first
        path = cg["path"]
        parent = path.rsplit("/", 1)[0] or "/"
        own = cg["misc_max"] if cg["misc_max"] is not None else U64_MAX
        limits[path] = min(own, limits.get(parent, capacity)) if path != "/" else capacity
    return limits


class EpcApp(App[None]):
    """Watch and steer an emulated SGX host."""

    TITLE = "epc-playground"
    CSS_PATH = "app.tcss"
    BINDINGS = [
        Binding("n", "new_cgroup", "New cgroup"),
        Binding("x", "remove_cgroup", "Remove"),
        Binding("m", "set_misc_max", "misc.max"),
        Binding("M", "set_memory_max", "memory.max"),
        Binding("e", "spawn('enclave')", "Spawn enclave"),
        Binding("v", "spawn('vm')", "Spawn VM"),
        Binding("k", "kill('TERM')", "Kill"),
        Binding("K", "kill('KILL')", "Kill -9", show=False),
        Binding("p", "pause", "Pause"),
        Binding("slash", "filter", "Filter events"),
        Binding("r", "restart_engine", "New engine", show=False),
        Binding("question_mark", "show_help_panel", "Keys"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, endpoint: str, *, owns_engine: Any = None, feed: EngineFeed | None = None) -> None:
        super().__init__()
        self.endpoint = endpoint
        self.owns_engine = owns_engine  # the engine process this app started, stopped on quit
        self.feed: EngineFeed | None = feed  # given: tests and snapshots draw from a fixed one
        self.paused = False
        self.selected = "/"
        self.nodes: dict[str, TreeNode[str]] = {}
        self.labels: dict[str, str] = {}  # what each tree node shows now
        self.rows: dict[str, tuple[Any, ...]] = {}  # what each workload row shows now
        self.logs = _Lines()
        self.hub = LogHub(self.logs)
        self.children_spawned: list[Any] = []
        self._events_shown = 0
        self.event_filter = ""  # only event lines containing this (a cgroup, a kind, a pid)
        self.capacity = "128MiB"  # of an engine started with `r`

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal():
            tree: Tree[str] = Tree("/ (all EPC)", data="/", id="cgroups")
            tree.root.expand()
            yield tree
            with Vertical(id="right"):
                yield Static(id="details")
                usage = Sparkline([], id="usage-history")
                usage.border_title = "misc.current, last minute"
                yield usage
                reclaimed = Sparkline([], id="reclaim-history")
                reclaimed.border_title = "pages reclaimed, per tick"
                yield reclaimed
                yield DataTable(id="workloads", cursor_type="row")
                yield Log(id="events", max_lines=500)
        yield Footer()

    def on_mount(self) -> None:
        self.nodes["/"] = self.query_one("#cgroups", Tree).root
        table = self.query_one("#workloads", DataTable)
        table.add_columns("pid", "cgroup", "kind", "name", "resident", "swapped", "faults", "state")
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
        free = format_size(int(snap["free"]))
        self.title = (
            f"epc-playground  EPC {format_size(int(snap['capacity']))}, {free} free, "
            f"ksgxd {'running' if snap['ksgxd'] else 'idle'}"
        )
        self._refresh_tree(snap)
        self._refresh_details(snap)
        self._refresh_workloads(snap)
        self._refresh_events()

    def _refresh_tree(self, snap: dict[str, Any]) -> None:
        limits = effective_limits(snap)
        seen = set()
        for cg in snap["cgroups"]:
            path = cg["path"]
            seen.add(path)
            text = self._label(cg, limits[path])
            node = self.nodes.get(path)
            if node is None:
                parent = self.nodes.get(path.rsplit("/", 1)[0] or "/")
                if parent is None:
                    continue
                node = parent.add(Text(text), data=path, expand=True)
                self.nodes[path] = node
            elif self.labels.get(path) != text:  # redraw only what changed
                node.set_label(Text(text))
            self.labels[path] = text
        for path in [p for p in self.nodes if p not in seen]:
            self.nodes.pop(path).remove()
            self.labels.pop(path, None)

    @staticmethod
    def _label(cg: dict[str, Any], limit: int) -> str:
        name = "/ (all EPC)" if cg["path"] == "/" else cg["path"].rsplit("/", 1)[-1]
        current, peak = int(cg["misc_current"]), int(cg["misc_peak"])
        shown = "max" if limit >= U64_MAX else format_size(limit)
        return f"{name:<14} {usage_bar(current, limit, peak)} {format_size(current)} / {shown}"

    def _refresh_details(self, snap: dict[str, Any]) -> None:
        assert self.feed is not None
        cg = next((c for c in snap["cgroups"] if c["path"] == self.selected), None)
        if cg is None:
            self.selected = "/"
            return
        misc_max = "-" if cg["misc_max"] is None else "max" if cg["misc_max"] >= U64_MAX else str(cg["misc_max"])
        memory_max = "max" if cg["memory_max"] is None else str(cg["memory_max"])
        events = cg["memory_events"]
        lines = [
            f"[b]{cg['path']}[/b]",
            f"misc.current  sgx_epc {cg['misc_current']}    misc.peak  sgx_epc {cg['misc_peak']}",
            f"misc.max      sgx_epc {misc_max}    misc.events  sgx_epc.max {cg['misc_events']}"
            f" (local {cg['misc_events_local']})",
            f"memory.current {cg['memory_current']}    memory.max {memory_max}"
            f"    oom {events[3]}  oom_kill {events[4]}",
            f"reclaimable pages {cg['reclaimable']}    tasks {len(cg['procs'])}",
        ]
        self.query_one("#details", Static).update("\n".join(lines))
        self.query_one("#usage-history", Sparkline).data = list(self.feed.usage.get(self.selected, [])) or [0]
        self.query_one("#reclaim-history", Sparkline).data = list(self.feed.reclaim.get(self.selected, [])) or [0]

    def _refresh_workloads(self, snap: dict[str, Any]) -> None:
        table = self.query_one("#workloads", DataTable)
        rows = {str(w["pid"]): w for w in snap["workloads"]}
        for key in [k for k in list(table.rows) if k.value not in rows]:
            table.remove_row(key)
            self.rows.pop(str(key.value), None)
        for pid, w in rows.items():
            state = w["state"] if w["state"] == "running" else f"exited: {w['reason'] or '?'}"
            cells = (pid, w["cgroup"], w["role"], w["name"], w["resident"], w["swapped"], w["faults"], state)
            shown = self.rows.get(pid)
            if shown is None:
                table.add_row(*cells, key=pid)
            elif shown != cells:  # redraw only the cells that changed
                for column, old, new in zip(table.columns, shown, cells, strict=True):
                    if old != new:
                        table.update_cell(pid, column, new)
            self.rows[pid] = cells

    def _refresh_events(self) -> None:
        assert self.feed is not None
        log = self.query_one("#events", Log)
        events = list(self.feed.events)
        fresh = events[self._events_shown :] if self._events_shown <= len(events) else events
        self._events_shown = len(events)
        lines = [_describe(e) for e in _coalesce(fresh)] + self.logs.take()
        if self.event_filter:
            lines = [line for line in lines if self.event_filter in line]
        if lines:
            log.write_lines(lines)

    # -- actions --------------------------------------------------------------

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted[str]) -> None:
        self.selected = event.node.data or "/"
        if self.feed is not None:
            self._refresh_details(self.feed.snapshot)

    def _engine(self, action: str, *args: Any) -> bool:
        """One request to the engine; an error becomes a one-line notification."""
        if self.feed is None:
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
                parse_size(request.size)
                count, passes = int(request.count), int(request.passes)
            except ValueError:
                self.notify("size like 16MiB; count and passes whole numbers", severity="error")
                return
            for _ in range(max(1, min(count, 64))):
                argv = [request.kind, "--size", request.size, "--cgroup", self.selected, "--connect", self.endpoint]
                if request.kind == "enclave":
                    argv += ["--pattern", request.pattern, "--passes", str(max(1, passes))]
                else:
                    argv += ["--duration", "30"]
                self.children_spawned.append(self.hub.spawn(argv, name=request.kind))

        self.push_screen(SpawnScreen(self.selected, kind), spawn)

    def action_kill(self, signame: str) -> None:
        table = self.query_one("#workloads", DataTable)
        if not table.row_count:
            self.notify("no workload selected", severity="warning")
            return
        pid = int(table.get_row_at(table.cursor_row)[0])
        try:
            os.kill(pid, getattr(signal, f"SIG{signame}"))
        except ProcessLookupError:
            self.notify(f"pid {pid} is already gone", severity="warning")

    def action_filter(self) -> None:
        def set_filter(text: str | None) -> None:
            if text is None:
                return
            self.event_filter = text
            self.query_one("#events", Log).border_title = f"events matching {text!r}" if text else ""

        self.push_screen(PromptScreen("Show events containing (empty: all)", "/pods/db, reclaim, 1234"), set_filter)

    def action_restart_engine(self) -> None:
        """Start a new engine of our own after the old one went away, and follow it."""
        if self.feed is not None and self.feed.connected:
            self.notify("the engine is still there", severity="warning")
            return
        from playground.launch import start_engine_process

        try:
            engine, endpoint = start_engine_process(["--capacity", self.capacity], dict(os.environ))
        except RuntimeError as e:
            self.notify(str(e), severity="error")
            return
        if self.feed is not None:
            self.feed.close()
        self.owns_engine, self.endpoint = engine, endpoint
        for path in [p for p in self.nodes if p != "/"]:
            self.nodes.pop(path).remove()
        self.labels.clear()
        self.feed = EngineFeed(endpoint)
        self._events_shown = 0
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


def _coalesce(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs of the same kind on the same cgroup become one entry with a count."""
    out: list[dict[str, Any]] = []
    for event in events:
        key = (event.get("kind"), event.get("cgroup"))
        if out and (out[-1].get("kind"), out[-1].get("cgroup")) == key and key[0] in ("limit_hit", "reclaim"):
            out[-1]["times"] = out[-1].get("times", 1) + 1
            if key[0] == "reclaim":
                out[-1]["written"] = out[-1].get("written", 0) + event.get("written", 0)
            continue
        out.append(dict(event))
    return out


def _describe(event: dict[str, Any]) -> str:
    kind = str(event.get("kind"))
    times = f" x{event['times']}" if event.get("times", 1) > 1 else ""
    details = {
        "limit_hit": lambda e: f"{e['cgroup']} at its limit (asked by {e['requester']})",
        "reclaim": lambda e: f"{e['cgroup']} {e['context']}: {e['written']} pages written out",
        "enomem": lambda e: f"pid {e['pid']} in {e['cgroup']}: {e['op']} ENOMEM",
        "sigbus": lambda e: f"pid {e['pid']} in {e['cgroup']}: SIGBUS ({e['errno']})",
        "oom_kill": lambda e: f"{e['cgroup']}: OOM killer picked pid {e['pid']}",
        "workload_start": lambda e: f"{e['role']} {e['name']} (pid {e['pid']}) starts in {e['cgroup']}",
        "workload_exit": lambda e: f"{e['name']} (pid {e['pid']}) exited: {e['reason']}",
        "write": lambda e: f"{e['path']} <- {e['value']}",
        "mkdir": lambda e: f"mkdir {e['cgroup']}",
        "work_queued": lambda e: f"{e['cgroup']}: async reclaim queued",
        "work_run": lambda e: f"{e['cgroup']}: worker ran {e['batches']} batches, {e['written']} pages out",
        "ksgxd_wake": lambda e: f"ksgxd woken, {e['free_pages']} pages free",
        "secs_writeback": lambda e: f"enclave {e['enclave']}: SECS written out",
        "ecreate": lambda e: f"enclave {e['enclave']} created by pid {e['pid']}",
        "release": lambda e: f"enclave {e['enclave']} released: {e['pages_freed']} pages",
        "memory_max": lambda e: f"{e['cgroup']}: memory.max hit",
        "rmdir": lambda e: f"rmdir {e['cgroup']}{' (dying)' if e['dying'] else ''}",
    }.get(kind)
    text = details(event) if details else ", ".join(f"{k}={v}" for k, v in event.items() if k not in ("kind", "seq"))
    return f"{kind:<15}{times:<5} {text}"

"""The workloads table: one row per workload the engine knows, alive or exited.

Sorted by any column (``<`` and ``>`` move the sort column, ``s`` reverses it, a click on a
header sorts by that column and a second click reverses), the cursor staying on its
workload (by pid) when rows move; filtered to the selected cgroup's subtree (``c``) and to
the workloads still running (``h``); the cgroup column shortened to the room left, so that
name, state, resident and swapped stay in view.  Enter opens a workload's detail.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.widgets import DataTable
from textual.widgets.data_table import CellKey, ColumnKey, RowKey

from common.costs import format_ns, slowdown
from common.units import format_size
from playground.tui.workload_screen import WorkloadScreen
from playground.tui.workload_text import abbreviate, failed, in_subtree, relative, state_text
from wire.snapshot import Snapshot, WorkloadRow

STATE_ORDER = {"running": 0, "stopped": 1, "stalled": 2, "exited": 3}
CGROUP_WIDTH = (12, 40)  # the cgroup column's narrowest and widest, in cells
SQUEEZED = ("cgroup", "kind")  # the columns the table's width is not kept for
ARROWS = {False: "▲", True: "▼"}  # the sort column's label: ascending, descending


@dataclass(frozen=True, slots=True)
class Column:
    """A column: its label and its sort value, from the row and its faults per second."""

    name: str
    sort_key: Callable[[WorkloadRow, float], Any]
    number: bool = False  # right-aligned


def _state_key(w: WorkloadRow, rate: float) -> tuple[int, str]:
    return STATE_ORDER.get(w["state"], len(STATE_ORDER)), state_text(w, 0)


def _slowdown(w: WorkloadRow) -> float:
    return slowdown(w.get("runtime_ns", 0), w.get("paging_ns", 0))


COLUMNS = (  # what must stay in view first: the cgroup column gives way to every other
    Column("pid", lambda w, rate: w["pid"], number=True),
    Column("name", lambda w, rate: w["name"].lower()),
    Column("state", _state_key),
    Column("resident", lambda w, rate: w["resident"], number=True),
    Column("swapped", lambda w, rate: w["swapped"], number=True),
    Column("cgroup", lambda w, rate: w["cgroup"]),
    Column("faults/s", lambda w, rate: rate, number=True),
    Column("size", lambda w, rate: w.get("size", 0), number=True),  # asked for: the heap, the guest's EPC
    Column("elrange", lambda w, rate: w.get("elrange", 0), number=True),  # what ECREATE (and vepc_open) got
    Column("kind", lambda w, rate: w["role"]),
    Column("runtime", lambda w, rate: w.get("runtime_ns", 0), number=True),  # its emulated clock (docs/costs.md)
    Column("slowdown", lambda w, rate: _slowdown(w), number=True),  # against the same run with no limit
)
NAMES = tuple(column.name for column in COLUMNS)


def state_style(w: WorkloadRow) -> str:
    """The state cell's colour: red (bold while stalled) for a failure, yellow while stopped, none
    otherwise; its words say the same without colour."""
    if failed(w):
        return "bold red" if w["state"] == "stalled" else "red"
    return "yellow" if w["state"] == "stopped" else ""


class WorkloadTable(DataTable[Any]):
    """Rows keyed by pid; ``show`` redraws only the cells that changed, and moves rows only when
    the order changed."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("less_than_sign", "sort_column(-1)", "Sort ←", show=False),
        Binding("greater_than_sign", "sort_column(1)", "Sort →", show=False),
        Binding("s", "reverse_sort", "Reverse sort", show=False),
        Binding("c", "toggle_subtree", "Subtree", show=False),
        Binding("h", "toggle_exited", "Hide exited", show=False),
    ]
    HELP = """\
## Workloads

Every workload the engine knows, running or ended: the size it **asked for** (its heap,
or a guest's EPC) and, apart, its **elrange** (what ECREATE got: the heap, a TCS and 4
code pages, rounded up to a power of two; a guest's vEPC), its resident and swapped pages,
its faults per second and its state: `running`, `stopped` (SIGSTOP, in yellow),
`stalled Ns` (a fault no reclaim can help, in red), or how it ended: `exited: ok`,
`killed: SIGTERM` (the signal, as the kernel told the engine), `exited: code 3`, and in
red the failures, `exited: SIGBUS`, `exited: OOM`, `exited: ENOMEM`.

| key | does |
|---|---|
| `<` / `>` | sort by the column to the left / right (the sorted one shows `▲` or `▼`) |
| `s` | reverse the sort |
| click on a header | sort by that column; again: reverse |
| `c` | only the workloads in the selected cgroup's subtree (their cgroup relative to it) |
| `h` | hide the workloads that have exited |
| `enter` | the workload's detail: its plan, its pages, its own log lines and its events |
| `k` / `K` | send a signal to it / `SIGKILL` it (never to one that has exited) |
"""

    def __init__(self, columns: tuple[str, ...] = NAMES) -> None:
        super().__init__(id="workloads", cursor_type="row")
        # the config's columns, in this table's order; pid always (rows are kept in order by it)
        self.drawn_columns = [i for i, name in enumerate(NAMES) if name in columns or name == "pid"]
        self.cells: dict[str, tuple[Any, ...]] = {}  # what each row's cells say now (_texts)
        self.workloads: dict[int, WorkloadRow] = {}  # every workload of the snapshot, by pid (shown or not)
        self.sort_by = "pid"
        self.descending = False
        self.subtree = False  # only the workloads in self.cgroup's subtree
        self.hide_exited = False
        self.cgroup = "/"  # the cgroup selected in the tree
        self._snapshot: Snapshot | None = None
        self._rates: dict[int, float] = {}
        self._cgroup_width = CGROUP_WIDTH[1]

    def on_mount(self) -> None:
        self._add_columns()
        self._show_title(0)
        self.border_subtitle = "< > sort  s reverse  c subtree  h exited  ⏎ detail"

    def _add_columns(self) -> None:
        for column in (COLUMNS[i] for i in self.drawn_columns):
            arrow = f" {ARROWS[self.descending]}" if column.name == self.sort_by else ""
            self.add_column(Text(column.name + arrow, justify="right" if column.number else "left"), key=column.name)

    # -- drawing --------------------------------------------------------------

    def show(self, snap: Snapshot, rates: dict[int, float], cgroup: str | None = None) -> None:
        """Draw ``snap``'s workloads (``rates``: faults per second by pid); ``cgroup``: the one
        selected in the tree, which the subtree filter follows."""
        at = self._cursor_pid()  # first: a refit of the cgroup column draws every row again
        self._snapshot, self._rates = snap, rates
        if cgroup is not None:
            self.cgroup = cgroup
        self.workloads = {int(w["pid"]): w for w in snap["workloads"]}
        shown = [w for w in snap["workloads"] if self._wanted(w)]
        column = COLUMNS[NAMES.index(self.sort_by)]
        shown.sort(key=lambda w: (column.sort_key(w, rates.get(w["pid"], 0.0)), w["pid"]), reverse=self.descending)
        self._fit_cgroup_column()
        self._draw(shown, int(snap["t_ns"]), at)
        self._show_title(len(shown))

    def on_resize(self) -> None:
        """The cgroup column is fitted to the table's width: fit it again now, not at the next
        snapshot (which never comes while the TUI is paused)."""
        self._redraw(self._cursor_pid())

    def select_cgroup(self, cgroup: str) -> None:
        """The tree's selection moved: the subtree filter (when on) follows it now."""
        if cgroup != self.cgroup:
            self.cgroup = cgroup
            if self.subtree:
                self._redraw(self._cursor_pid())

    def _redraw(self, at: str | None = None) -> None:
        """Draw the last snapshot again (a key changed the sort or a filter); the cursor on ``at``."""
        if self._snapshot is None:
            return
        self.show(self._snapshot, self._rates)
        if at is not None and at in self.rows:
            self.move_cursor(row=self.get_row_index(at), animate=False)

    def _wanted(self, w: WorkloadRow) -> bool:
        if self.hide_exited and w["state"] == "exited":
            return False
        return not self.subtree or in_subtree(w["cgroup"], self.cgroup)

    def _texts(self, w: WorkloadRow, now_ns: int) -> tuple[Any, ...]:
        """What its cells say, in the order of COLUMNS, as plain values (cheap to compare)."""
        size, elrange, runtime = w.get("size", 0), w.get("elrange", 0), w.get("runtime_ns", 0)
        cgroup = relative(w["cgroup"], self.cgroup) if self.subtree else w["cgroup"]
        texts = {
            "pid": str(w["pid"]),
            "name": w["name"],
            "state": (state_text(w, now_ns), state_style(w)),
            "resident": str(w["resident"]),
            "swapped": str(w["swapped"]),
            "cgroup": abbreviate(cgroup, self._cgroup_width),
            "faults/s": f"{self._rates.get(w['pid'], 0.0):,.0f}",
            "size": format_size(size) if size else "-",
            "elrange": format_size(elrange) if elrange else "-",
            "kind": w["role"],
            "runtime": format_ns(runtime) if runtime else "-",
            "slowdown": f"{_slowdown(w):.2f}x" if runtime else "-",
        }
        return tuple(texts[name] for name in NAMES)

    @staticmethod
    def _cell(column: Column, text: Any) -> Any:
        """A cell from what it says: numbers right-aligned, the state in its colour."""
        if column.name == "state":
            state, style = text
            return Text(state, style=style) if style else state
        return Text(text, justify="right") if column.number else text

    def _draw(self, shown: list[WorkloadRow], now_ns: int, at: str | None) -> None:
        """Rows for ``shown``, in its order; the cursor back on the workload ``at`` (a pid) if shown."""
        keys = [str(w["pid"]) for w in shown]
        wanted = set(keys)
        for row_key in [k for k in list(self.rows) if k.value not in wanted]:
            self.remove_row(row_key)
            self.cells.pop(str(row_key.value), None)
        changed: list[tuple[str, int, Any, bool]] = []
        for key, w in zip(keys, shown, strict=True):
            texts, drawn = self._texts(w, now_ns), self.cells.get(key)
            if drawn is None:
                self.add_row(*(self._cell(COLUMNS[i], texts[i]) for i in self.drawn_columns), key=key)
            elif drawn != texts:  # only the cells that changed
                for i, (old, new) in enumerate(zip(drawn, texts, strict=True)):
                    if old != new and i in self.drawn_columns:
                        changed.append((key, i, self._cell(COLUMNS[i], new), len(str(new)) > len(str(old))))
            self.cells[key] = texts
        self._write_cells(changed)
        if [row.key.value for row in self.ordered_rows] != keys:
            rank = {key: i for i, key in enumerate(keys)}
            self.sort("pid", key=lambda pid: rank[str(pid)])  # the pid cell, a Text: str() is its text
        if at is not None and at in wanted and self.get_row_index(at) != self.cursor_row:
            self.move_cursor(row=self.get_row_index(at), animate=False)

    def _write_cells(self, changed: list[tuple[str, int, Any, bool]]) -> None:
        """``update_cell`` for many cells, with one refresh: update_cell refreshes the table for each
        cell, and 200 workloads change some 400 cells a tick (their rates, their pages).  It writes
        what Textual 8's update_cell writes: the cell, the cells whose column may widen, the count
        that its render caches are keyed on."""
        if not changed:
            return
        for row, index, value, wider in changed:
            row_key, column_key = RowKey(row), ColumnKey(NAMES[index])
            self._data[row_key][column_key] = value
            if wider:
                self._updated_cells.add(CellKey(row_key, column_key))
                self._require_update_dimensions = True
        self._update_count += 1
        self.refresh()

    def _cursor_pid(self) -> str | None:
        if not self.row_count:
            return None
        return str(self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value)

    def _fit_cgroup_column(self) -> None:
        """The cgroup column takes what the other columns but the last (kind, which the name and the
        detail say too) leave of the table's width; at least CGROUP_WIDTH[0]: those after it scroll."""
        width = self.scrollable_content_region.width
        if width <= 0:
            return
        columns = {str(key.value): column for key, column in self.columns.items()}
        if "cgroup" not in columns:
            return  # the config left it out
        others = sum(column.get_render_width(self) for name, column in columns.items() if name not in SQUEEZED)
        room = width - others - 2 * self.cell_padding
        fitted = max(CGROUP_WIDTH[0], min(CGROUP_WIDTH[1], room))
        if fitted != self._cgroup_width:
            self._cgroup_width = fitted
            self.cells.clear()  # every row's cgroup cell is drawn again
            self.clear()
            # the column's width is its widest cell: start it again from its label
            cgroup = columns["cgroup"]
            cgroup.content_width = len(cgroup.label)

    def _show_title(self, shown: int) -> None:
        where = f" in {self.cgroup}" if self.subtree else ""
        count = f"{shown} of {len(self.workloads)}" if shown != len(self.workloads) else str(shown)
        hidden = " · exited hidden" if self.hide_exited else ""
        title = f"workloads{where}: {count}{hidden} · sort {self.sort_by} {ARROWS[self.descending]}"
        if title != self.border_title:  # setting it repaints the whole table
            self.border_title = title

    def selected(self) -> WorkloadRow | None:
        """The workload under the cursor, or None when the table is empty."""
        pid = self._cursor_pid()
        return None if pid is None else self.workloads.get(int(pid))

    # -- keys and clicks --------------------------------------------------------

    def sort_on(self, name: str, descending: bool) -> None:
        """Sort by column ``name`` (one of NAMES); the cursor stays on its workload."""
        self.sort_by, self.descending = name, descending
        at = self._cursor_pid()
        self.clear(columns=True)
        self.cells.clear()
        self._add_columns()
        self._redraw(at)

    def action_sort_column(self, step: int) -> None:
        self.sort_on(NAMES[(NAMES.index(self.sort_by) + step) % len(NAMES)], self.descending)

    def action_reverse_sort(self) -> None:
        self.sort_on(self.sort_by, not self.descending)

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        name = str(event.column_key.value)
        if name == self.sort_by:
            self.sort_on(name, not self.descending)
        else:  # numbers biggest first, as htop does; pid and the words from the start
            self.sort_on(name, COLUMNS[NAMES.index(name)].number and name != "pid")

    def action_toggle_subtree(self) -> None:
        self.subtree = not self.subtree
        at = self._cursor_pid()
        self.cells.clear()
        self.clear()  # every cgroup cell changes
        self._redraw(at)

    def action_toggle_exited(self) -> None:
        self.hide_exited = not self.hide_exited
        self._redraw(self._cursor_pid())

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter (or a click on the row under the cursor): the workload's detail."""
        event.stop()
        self.app.push_screen(WorkloadScreen(int(str(event.row_key.value))))

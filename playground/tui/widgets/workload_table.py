"""The workloads table: one row per workload the engine knows, alive or exited."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import DataTable

from common.units import format_size
from wire.protocol import Outcome
from wire.snapshot import Snapshot, WorkloadRow

COLUMNS = ("pid", "cgroup", "kind", "name", "size", "resident", "swapped", "faults/s", "state")
FINE_ENDINGS = (Outcome.OK, Outcome.KILLED)  # how a workload may end without it being a failure


def workload_state(workload: WorkloadRow, now_ns: int) -> str | Text:
    """The state cell: running; stalled and for how long, in red; how it exited, in red when
    that was a failure (SIGBUS, ENOMEM or another errno, OOM, failed)."""
    state = workload["state"]
    if state == "running":
        return "running"
    if state == "stalled":
        seconds = max(0, now_ns - int(workload.get("stalled_ns") or now_ns)) // 10**9
        return Text(f"stalled {seconds}s", style="bold red")
    reason = workload["reason"] or "?"
    return f"exited: {reason}" if reason in FINE_ENDINGS else Text(f"exited: {reason}", style="red")


class WorkloadTable(DataTable[Any]):
    """Rows keyed by pid; ``show`` redraws only the cells that changed."""

    def __init__(self, columns: tuple[str, ...] = COLUMNS) -> None:
        super().__init__(id="workloads", cursor_type="row")
        self.shown = [COLUMNS.index(name) for name in columns]  # the config's columns (all by default)
        self.cells: dict[str, tuple[Any, ...]] = {}  # what each row shows now
        self.workloads: dict[int, WorkloadRow] = {}  # the rows' workloads, by pid

    def on_mount(self) -> None:
        self.add_columns(*(COLUMNS[i] for i in self.shown))

    def show(self, snap: Snapshot, rates: dict[int, float]) -> None:
        self.workloads = {int(w["pid"]): w for w in snap["workloads"]}
        rows = {str(pid): w for pid, w in self.workloads.items()}
        for key in [k for k in list(self.rows) if k.value not in rows]:
            self.remove_row(key)
            self.cells.pop(str(key.value), None)
        for pid, w in rows.items():
            shown = self.cells.get(pid)
            state = workload_state(w, int(snap["t_ns"]))
            # An exited workload's enclaves are gone: it keeps the size it had.
            size = format_size(int(w["size"])) if w.get("size") else shown[4] if shown else "-"
            rate = f"{rates.get(w['pid'], 0.0):,.0f}"
            cells = (pid, w["cgroup"], w["role"], w["name"], size, w["resident"], w["swapped"], rate, state)
            if shown is None:
                self.add_row(*(cells[i] for i in self.shown), key=pid)
            elif shown != cells:  # redraw only the cells that changed
                before, after = (shown[i] for i in self.shown), (cells[i] for i in self.shown)
                for column, old, new in zip(self.columns, before, after, strict=True):
                    if old != new:
                        self.update_cell(pid, column, new, update_width=len(str(new)) > len(str(old)))
            self.cells[pid] = cells

    def selected(self) -> WorkloadRow | None:
        """The workload under the cursor, or None when the table is empty."""
        if not self.row_count:
            return None
        row_key, _column = self.coordinate_to_cell_key(self.cursor_coordinate)
        return self.workloads.get(int(str(row_key.value)))

"""The selected cgroup's files and a minute of its usage and reclaim."""

from __future__ import annotations

from collections.abc import Iterable

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Sparkline, Static

from common.limits import U64_MAX
from common.units import format_size
from wire.snapshot import CgroupRow, Snapshot


def details_text(cg: CgroupRow, capacity: int) -> str:
    """The misc and memory files of one cgroup, as the kernel writes them."""
    memory_max = "max" if cg["memory_max"] is None else str(cg["memory_max"])
    events = cg["memory_events"]
    if cg["misc_max"] is None:  # the root: no limit, no events file, the capacity instead
        limit = f"misc.capacity sgx_epc {capacity}    (the root has no misc.max)"
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
        f"memory.current {cg['memory_current']}    memory.max {memory_max}    oom {events[3]}  oom_kill {events[4]}",
        f"own pages: reclaimable {cg['reclaimable']}  unreclaimable {cg['unreclaimable']}"
        f"    swapped out {cg['swapped']}    tasks {len(cg['procs'])}",
    ]
    return "\n".join(lines)


class Details(Vertical):
    """The files of the selected cgroup, then two graphs: misc.current and pages reclaimed."""

    def __init__(self) -> None:
        super().__init__(id="details-panel")
        self.shown = ""

    def compose(self) -> ComposeResult:
        yield Static(id="details")
        yield Sparkline([], id="usage-history")
        yield Sparkline([], id="reclaim-history")

    def show(self, snap: Snapshot, path: str, usage: Iterable[int], reclaimed: Iterable[int]) -> bool:
        """Draw cgroup ``path``; False when the snapshot has no such cgroup (nothing drawn)."""
        cg = next((c for c in snap["cgroups"] if c["path"] == path), None)
        if cg is None:
            return False
        text = details_text(cg, int(snap["capacity"]))
        if text != self.shown:  # a fixed-size Static: no layout pass needed
            self.shown = text
            self.query_one("#details", Static).update(text, layout=False)
        # Sparklines scale from their smallest value to their largest: a leading 0 makes it 0 to the largest.
        usage, reclaimed = list(usage), list(reclaimed)
        usage_line = self.query_one("#usage-history", Sparkline)
        usage_line.data = [0, *usage]
        usage_line.border_title = f"misc.current, last minute: 0 to {format_size(max(usage, default=0))}"
        reclaim_line = self.query_one("#reclaim-history", Sparkline)
        reclaim_line.data = [0, *reclaimed]
        reclaim_line.border_title = f"pages reclaimed per tick, last minute: 0 to {max(reclaimed, default=0)}"
        return True

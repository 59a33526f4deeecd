"""The selected cgroup's files, in human units or as the kernel writes them (u), and graphs of
its usage and of the pages reclaimed in its subtree."""

from __future__ import annotations

from collections.abc import Iterable

from rich.markup import escape
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Sparkline, Static

from common.limits import PAGE_SIZE, U64_MAX
from common.units import format_size
from playground.feed import FeedState
from playground.tui.workload_text import time_text
from wire.snapshot import CgroupRow, Snapshot

STATS_HZ = 4  # stats messages a second: one sample each

HELP = """\
## Details

The files of the selected cgroup. Sizes read in human units with their pages
(`misc.current 8 MiB (2048 pages)`); `u` shows the kernel's own text instead
(`misc.current  sgx_epc 8388608`), and back. `memory.current` is the backing RAM that holds its
swapped-out EPC pages (the cost of reclaim), limited by `memory.max`.

- **misc.current (subtree)**: the EPC charged to the cgroup and its descendants, as the
  kernel's misc controller counts it.
- **pages reclaimed per tick (own LRU)**, for a cgroup without children: from its own LRU;
  **(subtree)**, for one with children, the root included: from the LRUs of its whole subtree,
  its own and its descendants'. A tick is a stats message, four a second.
"""


def _size(nbytes: int) -> str:
    """``8 MiB (2048 pages)``."""
    return f"{format_size(nbytes)} ({nbytes // PAGE_SIZE} pages)"


def details_text(cg: CgroupRow, capacity: int, raw: bool = False) -> str:
    """The misc and memory files of one cgroup: in human units, or as the kernel writes them (``raw``)."""
    events = cg["memory_events"]
    if raw:
        memory_max = "max" if cg["memory_max"] is None else str(cg["memory_max"])
        if cg["misc_max"] is None:  # the root: no limit, no events file, the capacity instead
            limit = f"misc.capacity sgx_epc {capacity}    (the root has no misc.max)"
        else:
            misc_max = "max" if cg["misc_max"] >= U64_MAX else str(cg["misc_max"])
            limit = (
                f"misc.max      sgx_epc {misc_max}    misc.events  sgx_epc.max {cg['misc_events']}"
                f" (local {cg['misc_events_local']})"
            )
        lines = [
            f"misc.current  sgx_epc {cg['misc_current']}    misc.peak  sgx_epc {cg['misc_peak']}",
            limit,
            f"memory.current {cg['memory_current']}    memory.max {memory_max}"
            f"    oom {events[3]}  oom_kill {events[4]}",
            f"own pages: reclaimable {cg['reclaimable']}  unreclaimable {cg['unreclaimable']}"
            f"    swapped out {cg['swapped']}    tasks {len(cg['procs'])}",
        ]
    else:
        memory_max = "max" if cg["memory_max"] is None else format_size(cg["memory_max"])
        if cg["misc_max"] is None:
            limit = f"capacity {_size(capacity)}: the root has no misc.max"
        else:
            misc_max = "max" if cg["misc_max"] >= U64_MAX else _size(cg["misc_max"])
            limit = f"misc.max {misc_max}, limit hits {cg['misc_events']} (own {cg['misc_events_local']})"
        lines = [
            f"misc.current {_size(cg['misc_current'])}, peak {format_size(cg['misc_peak'])}",
            limit,
            f"memory.current {format_size(cg['memory_current'])} of memory.max {memory_max} (backing RAM)",
            f"own LRU {cg['reclaimable']}, unreclaimable {cg['unreclaimable']},"
            f" swapped out {cg['swapped']} ({format_size(cg['swapped'] * PAGE_SIZE)})",
            f"tasks {len(cg['procs'])}, oom {events[3]}, oom_kill {events[4]}",
        ]
        if cg.get("runtime_ns"):  # its subtree's workloads' emulated time (docs/costs.md)
            lines.append(f"workloads' time: {time_text(cg.get('runtime_ns', 0), cg.get('paging_ns', 0))}")
    return "\n".join([f"[b]{escape(cg['path'])}[/b]", *lines])


def span(samples: int) -> str:
    """How long ``samples`` stats messages last: ``last 45 s``, ``last minute``, ``last 10 min``."""
    seconds = samples // STATS_HZ
    if seconds < 60:
        return f"last {samples / STATS_HZ:g} s"
    return "last minute" if seconds < 120 else f"last {seconds // 60} min"


def has_children(snap: Snapshot, path: str) -> bool:
    prefix = path.rstrip("/") + "/"
    return any(cg["path"].startswith(prefix) for cg in snap["cgroups"] if cg["path"] != path)


class Details(Vertical):
    """The files of the selected cgroup, then two graphs: misc.current and pages reclaimed."""

    HELP = HELP

    def __init__(self) -> None:
        super().__init__(id="details-panel")
        self.shown = ""
        self.raw = False  # the kernel's text instead of human units

    def compose(self) -> ComposeResult:
        yield Static(id="details")
        yield Sparkline([], id="usage-history")
        yield Sparkline([], id="reclaim-history")

    def on_mount(self) -> None:
        self._title()

    def _title(self) -> None:
        self.query_one("#details", Static).border_title = (
            "the kernel's text (u: human units)" if self.raw else "human units (u: the kernel's text)"
        )

    def toggle_units(self) -> None:
        self.raw = not self.raw
        self._title()

    def show(self, feed: FeedState, path: str) -> bool:
        """Draw cgroup ``path``; False when the snapshot has no such cgroup (nothing drawn)."""
        snap = feed.snapshot
        cg = next((c for c in snap["cgroups"] if c["path"] == path), None)
        if cg is None:
            return False
        text = details_text(cg, int(snap["capacity"]), self.raw)
        if text != self.shown:  # a fixed-size Static: no layout pass needed
            self.shown = text
            self.query_one("#details", Static).update(text, layout=False)
        subtree = has_children(snap, path)
        usage = list(feed.usage.get(path, ()))
        reclaimed: Iterable[int] = (feed.reclaim_subtree if subtree else feed.reclaim).get(path, ())
        reclaimed = list(reclaimed)
        # Sparklines scale from their smallest value to their largest: a leading 0 makes it 0 to the largest.
        usage_line = self.query_one("#usage-history", Sparkline)
        usage_line.data = [0, *usage]
        usage_line.border_title = (
            f"misc.current (subtree), {span(len(usage))}: 0 to {format_size(max(usage, default=0))}"
        )
        reclaim_line = self.query_one("#reclaim-history", Sparkline)
        reclaim_line.data = [0, *reclaimed]
        where = "subtree" if subtree else "own LRU"
        reclaim_line.border_title = (
            f"pages reclaimed per tick ({where}), {span(len(reclaimed))}: 0 to {max(reclaimed, default=0)}"
        )
        return True

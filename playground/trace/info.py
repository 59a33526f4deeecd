"""`trace info`: a trace's size, accesses, pages, working set over windows and reuse distances.

The reuse distance of an access is its LRU stack distance in pages: how many other
pages were touched since the last access to its page, plus one for the page itself.
An LRU of that many pages (an EPC limit that size, as the reclaimer's LRU approximates
one) holds the re-access; a smaller one faults on it.  It is computed in one pass, in
O(log pages) per access: a Fenwick tree over access times holds a 1 at the last access
of every page, so the distance is the count of 1s since this page's last access; the
times are renumbered whenever they fill the tree (which doubles when half of it is live
pages), so it stays at most four times the pages in size however long the trace is.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from pathlib import Path

from common.units import format_size
from workloads.trace import TraceHeader, records, verify

PAGE_SIZE = 4096
PERCENTILES = (50, 90, 99)


@dataclass(slots=True)
class Summary:
    header: TraceHeader
    window: int  # accesses per working-set window
    distinct: int = 0
    windows: list[int] = field(default_factory=list)  # distinct pages in each whole window
    reuses: array[int] = field(default_factory=lambda: array("q"))  # reuses[d]: re-accesses needing d pages

    @property
    def reaccesses(self) -> int:
        return sum(self.reuses)

    def percentile(self, p: int) -> int:
        """The LRU pages that hold ``p`` percent of the re-accesses (0 when there are none)."""
        total = self.reaccesses
        want = -(-total * p // 100)
        seen = 0
        for pages, n in enumerate(self.reuses):
            seen += n
            if n and seen >= want:
                return pages
        return 0

    def held(self, pages: int) -> int:
        """Re-accesses an LRU of ``pages`` pages holds."""
        return sum(self.reuses[: pages + 1])


class _Fenwick:
    """Counts of 1s over positions 0..size-1: add and prefix sums in O(log size)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.tree = array("q", bytes(8 * (size + 1)))

    def add(self, i: int, delta: int) -> None:
        tree, size = self.tree, self.size
        i += 1
        while i <= size:
            tree[i] += delta
            i += i & -i

    def prefix(self, i: int) -> int:
        """The count at positions 0..i-1."""
        tree = self.tree
        total = 0
        while i > 0:
            total += tree[i]
            i -= i & -i
        return total


def summarize(path: str | Path, window: int = 10_000) -> Summary:
    """Read the whole trace once (streaming); TraceError when it is not one."""
    header = verify(path)
    summary = Summary(header, window)
    reuses = array("q", bytes(8 * 1024))  # grown as distances come (a header's counts are not trusted)
    capacity = 4096
    tree = _Fenwick(capacity)
    last: dict[int, int] = {}  # page -> the time of its last access (its 1 in the tree)
    now = 0
    in_window: set[int] = set()  # the pages of the current working-set window
    filled = 0
    for pages, _writes, _times in records(path):
        for page in pages:
            if now == capacity:  # renumber the live marks 0..len-1, in time order (twice as many slots when half full)
                order = sorted(last, key=last.__getitem__)
                if 2 * len(order) > capacity:
                    capacity *= 2
                tree = _Fenwick(capacity)
                for new_time, p in enumerate(order):
                    last[p] = new_time
                    tree.add(new_time, 1)
                now = len(order)
            before = last.get(page)
            if before is not None:
                distance = tree.prefix(now) - tree.prefix(before + 1) + 1
                if distance >= len(reuses):
                    reuses.extend(array("q", bytes(8 * max(len(reuses), distance + 1 - len(reuses)))))
                reuses[distance] += 1
                tree.add(before, -1)
            last[page] = now
            tree.add(now, 1)
            now += 1
            in_window.add(page)
            filled += 1
            if filled == window:
                summary.windows.append(len(in_window))
                in_window.clear()
                filled = 0
    if not summary.windows and filled:  # shorter than one window: the whole trace is one
        summary.windows.append(len(in_window))
    summary.distinct = len(last)
    summary.reuses = reuses
    return summary


def _pages(n: int) -> str:
    return f"{n:,} pages ({format_size(n * PAGE_SIZE)})"


def report(path: str | Path, summary: Summary) -> list[str]:
    """The summary as `trace info` prints it."""
    h = summary.header
    lines = [f"{path}: epc-playground trace v{h.version}, {h.file_bytes:,} bytes ({format_size(h.file_bytes)})"]
    command = h.meta.get("command")
    if isinstance(command, list):
        lines.append(f"  command      {' '.join(str(c) for c in command)}")
    reads = h.accesses - h.writes
    share = (100 * h.writes // h.accesses) if h.accesses else 0
    lines.append(f"  accesses     {h.accesses:,} ({reads:,} reads, {h.writes:,} writes: {share}% writes)")
    regions = ", ".join(f"{name} {count:,}" for name, _, count in h.regions)
    lines.append(f"  pages        {summary.distinct:,} distinct; the enclave's heap: {_pages(h.pages)}")
    if regions:
        lines.append(f"  layout       {regions} (pages)")
    if h.has_compute:
        insns = h.meta.get("instructions")
        per = h.meta.get("ns_per_instruction")
        said = f" ({insns:,} instructions at {per} ns)" if isinstance(insns, int) and per is not None else ""
        lines.append(f"  compute      {h.compute_ns / 1e6:.3f} ms{said}")
    if summary.windows:
        w = sorted(summary.windows)
        lines.append(
            f"  working set  distinct pages per {summary.window:,} accesses ({len(w)} windows): "
            f"min {w[0]:,}, median {w[len(w) // 2]:,}, max {w[-1]:,}"
        )
    total = summary.reaccesses
    lines.append(f"  reuse        {total:,} re-accesses, {summary.distinct:,} first touches")
    if total:
        cuts = ", ".join(f"p{p} {summary.percentile(p):,}" for p in PERCENTILES)
        top = max(d for d, n in enumerate(summary.reuses) if n)
        lines.append(f"  LRU pages    that hold a re-access: {cuts}, max {top:,}")
        lines.append("  EPC size     that holds this share of the re-accesses (an LRU of so many pages)")
        size = 4
        while True:
            size = min(size, summary.distinct)
            held = summary.held(size)
            held_share = (1000 * held // total) / 10  # rounded down: 100.0% only when every re-access is held
            lines.append(f"  {size:>11,} pages {format_size(size * PAGE_SIZE):>10}  {held_share:5.1f}%")
            if size >= summary.distinct or held == total:
                break
            size *= 4
    return lines

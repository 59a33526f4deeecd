"""The reference the core's page rate is measured against: a minimal dict-based LRU engine.

Per page added it does what the core does per EADD under a limit, the plainest way
Python offers, and nothing more:

- charge: walk the cgroup chain from the leaf up to and including root (/a/b/c + root:
  4 levels by default, as the core charges), checking each level's limit and the EPC
  capacity, bumping its usage and its peak; on a refusal undo the levels charged;
- on a refusal, reclaim one batch: isolate up to 16 (SGX_NR_TO_SCAN) pages from the
  head of the charging cgroup's LRU, age each (an accessed bit in a dict: young pages
  are cleared and go back to the tail), and for the others: charge a backing page (and
  a PCMD page per 32) up the same chain's memory counters, take a VA slot (a counter),
  write the page to a dict "backing store", and uncharge it up the chain; retry;
- insert the new page at the tail of the leaf's LRU (an ``OrderedDict``).

The core does more than this per page (a frame table, the enclave's page arrays, VA
pages that really fill and move, events, the OOM path); the baseline is the floor a
Python implementation of the same algorithm stands on.

``.venv/bin/python bench/baseline.py [--quick] [--json FILE]`` prints its own rates.
"""

from __future__ import annotations

import errno
import sys
from collections import OrderedDict
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _common

NR_TO_SCAN = 16  # SGX_NR_TO_SCAN
PCMD_PER_PAGE = 32
UNLIMITED = 1 << 62


class BaselineCgroup:
    """One level: usage, peak and limit in pages, memory usage for backing, and an LRU (head = oldest)."""

    __slots__ = ("parent", "usage", "peak", "limit_pages", "mem_usage", "mem_limit", "lru")

    def __init__(self, parent: BaselineCgroup | None) -> None:
        self.parent = parent
        self.usage = 0
        self.peak = 0
        self.limit_pages = UNLIMITED
        self.mem_usage = 0
        self.mem_limit = UNLIMITED
        self.lru: OrderedDict[int, None] = OrderedDict()


class BaselineEngine:
    """A chain of ``levels`` cgroups from root down; the limit on the one below root, pages charged to the leaf."""

    __slots__ = ("chain", "top", "leaf", "capacity", "accessed", "backing", "pcmd", "next_slot", "next_page")
    __slots__ += ("reclaimed",)

    def __init__(self, levels: int = 4, limit_pages: int | None = None, capacity: int = UNLIMITED) -> None:
        if levels < 1:
            raise ValueError("a hierarchy needs at least one level")
        chain: list[BaselineCgroup] = []
        parent: BaselineCgroup | None = None
        for _ in range(levels):
            parent = BaselineCgroup(parent)
            chain.append(parent)
        self.chain = chain
        self.top = chain[1] if levels > 1 else chain[0]
        self.leaf = chain[-1]
        self.capacity = capacity
        self.set_limit(limit_pages)
        self.accessed: dict[int, bool] = {}  # page -> accessed bit (absent: clear)
        self.backing: dict[int, int] = {}  # page -> the VA slot of its written-out contents
        self.pcmd: dict[int, int] = {}  # PCMD page -> entries in use
        self.next_slot = 0
        self.next_page = 0
        self.reclaimed = 0

    def set_limit(self, limit_pages: int | None) -> None:
        """The limited level's limit in pages (None: no limit)."""
        self.top.limit_pages = UNLIMITED if limit_pages is None else limit_pages

    @property
    def resident(self) -> int:
        return self.leaf.usage

    def add_pages(self, count: int) -> None:
        """Add ``count`` pages at the leaf, reclaiming a batch whenever the charge is refused.

        OSError(ENOMEM) when the limit is hit with nothing on the LRU.
        """
        leaf = self.leaf
        lru = leaf.lru
        charge = self._charge
        reclaim = self._reclaim
        first = self.next_page
        for page in range(first, first + count):
            while not charge(leaf):
                reclaim(leaf)
            lru[page] = None
        self.next_page = first + count

    def access(self, first: int, count: int) -> None:
        """Set the accessed bit of resident pages ``first..first+count-1``."""
        lru = self.leaf.lru
        for page in range(first, first + count):
            if page in lru:
                self.accessed[page] = True

    def _charge(self, cg: BaselineCgroup) -> bool:
        """Charge one page up the chain; False (every level undone) when a limit or the capacity refuses."""
        capacity = self.capacity
        level: BaselineCgroup | None = cg
        while level is not None:
            new = level.usage + 1
            if new > level.limit_pages or new > capacity:
                undo: BaselineCgroup = cg
                while undo is not level:
                    undo.usage -= 1
                    undo = undo.parent  # type: ignore[assignment]
                return False
            level.usage = new
            if new > level.peak:
                level.peak = new
            level = level.parent
        return True

    def _reclaim(self, cg: BaselineCgroup) -> None:
        """One batch from the head of ``cg``'s LRU: isolate, age, write out old pages with backing, uncharge."""
        lru = cg.lru
        if not lru:
            raise OSError(errno.ENOMEM, "at the limit with nothing left to reclaim")
        popitem = lru.popitem
        isolated = [popitem(last=False)[0] for _ in range(min(NR_TO_SCAN, len(lru)))]
        accessed, backing, pcmd = self.accessed, self.backing, self.pcmd
        for page in isolated:
            if accessed.pop(page, False):
                lru[page] = None  # young: the bit is cleared, back to the tail
                continue
            group = page // PCMD_PER_PAGE
            need = 1 if group in pcmd else 2
            level: BaselineCgroup | None = cg
            while level is not None:  # backing charged up the memory counters
                if level.mem_usage + need > level.mem_limit:
                    raise OSError(errno.ENOMEM, "memory limit")
                level.mem_usage += need
                level = level.parent
            pcmd[group] = pcmd.get(group, 0) + 1
            backing[page] = self.next_slot
            self.next_slot += 1
            level = cg
            while level is not None:
                level.usage -= 1
                level = level.parent
            self.reclaimed += 1

    def check(self) -> None:
        """Every level's usage = the pages on the LRUs below it; added = resident + written out."""
        below = 0
        for cg in reversed(self.chain):
            below += len(cg.lru)
            assert cg.usage == below, f"usage {cg.usage} != {below} pages below"
            assert cg.usage <= cg.limit_pages or cg is not self.top, "over the limit"
            assert cg.mem_usage == len(self.backing) + len(self.pcmd), "backing accounting"
        assert self.next_page == self.leaf.usage + len(self.backing), "pages lost"


def prefilled(limit_pages: int, levels: int = 4) -> BaselineEngine:
    """An engine with its limit set and its LRU filled up to it, so every later add reclaims."""
    engine = BaselineEngine(levels, limit_pages)
    engine.add_pages(limit_pages)
    return engine


def time_adds(engine: BaselineEngine, count: int) -> float:
    """Seconds for ``count`` page additions on ``engine``."""
    return _common.timed(lambda: engine.add_pages(count))


def rate_under_reclaim(n_pages: int, limit_pages: int, levels: int = 4) -> float:
    """Pages/s for ``n_pages`` additions at a full limit of ``limit_pages`` (a fresh engine, prefill untimed)."""
    engine = prefilled(limit_pages, levels)
    return n_pages / time_adds(engine, n_pages)


def main() -> None:
    p = _common.parser("The dict-based LRU baseline on its own: its page rate with and without reclaim.")
    p.add_argument("--levels", type=int, default=4, help="cgroup levels charged per page, root included (default 4)")
    args = p.parse_args()
    n_pages, limit_pages, runs = (50_000, 16_384, 3) if args.quick else (1_000_000, 65_536, 3)
    info = _common.machine()
    title = f"baseline: dict LRU, {args.levels}-level charge, {n_pages:,} pages, limit {limit_pages:,}"
    _common.print_header(title, info)
    free_rates, reclaim_rates = [], []
    for _ in range(runs):
        free_rates.append(n_pages / time_adds(BaselineEngine(args.levels), n_pages))
        engine = prefilled(limit_pages, args.levels)
        reclaim_rates.append(n_pages / time_adds(engine, n_pages))
        engine.check()
    free, reclaim = _common.median(free_rates), _common.median(reclaim_rates)
    _common.print_table(
        [f"run (median of {runs})", "pages/s", "ns/page"],
        [["no limit (charge + insert)", free, 1e9 / free], ["at the limit (+ reclaim)", reclaim, 1e9 / reclaim]],
    )
    print(f"  reclaim costs {free / reclaim:.2f}x the no-limit rate")
    _common.write_json(
        args.json,
        {
            "benchmark": "baseline",
            "machine": info,
            "levels": args.levels,
            "pages": n_pages,
            "limit_pages": limit_pages,
            "no_limit_pages_per_s": free,
            "reclaim_pages_per_s": reclaim,
            "runs_no_limit": free_rates,
            "runs_reclaim": reclaim_rates,
        },
    )


if __name__ == "__main__":
    main()

"""The engine's bounded history: what a display that attaches late reads first (the ``history`` op).

Whatever clients do, the engine keeps, four times a second (its stats tick), a sample per
live cgroup: misc.current and the pages reclaimed from its LRU since the sample before, the
last SAMPLES of them (10 minutes); beside them the last EVENTS events of the ``event/other``
topic and the last PRESSURE pressure sums (a cgroup's limit hits and pages reclaimed in one
sample, where there were any), as a display's event log shows them.

Memory is bounded and flat: a cgroup's samples are two arrays of 4-byte counts that grow
to 2,400 each (2 x 4 x 2,400 = 19,200 bytes, and a few percent of slack) and then turn
into rings; at most MAX_CGROUPS cgroups have them (live cgroups beyond that have none, and
``untracked`` says how many), and a removed cgroup's go at the next sample.  For 1,000
cgroups that is 19.2 MB after 10 minutes, with about 1 MB of events.  A sample costs
O(cgroups) (no page is walked); the replies are paged, each at most about 400 KiB.
"""

from __future__ import annotations

from array import array
from collections import deque
from collections.abc import Iterable
from itertools import islice
from typing import Any

from engine.cgroup import Cgroup
from engine.host import Host
from wire.messages import CgroupHistory, HistoryLog, HistorySamples

INTERVAL_NS = 250_000_000  # a sample a stats tick
SAMPLES = 2400  # per cgroup: 10 minutes at 4 Hz
EVENTS = 2000  # the last events of event/other
PRESSURE = 2000  # the last pressure sums
MAX_CGROUPS = 1024  # cgroups with samples (the others have none until some are removed)
PAGE_CGROUPS = 16  # cgroups in a page of samples: at most 16 x 2 x 2,400 counts, ~400 KiB
PAGE_ENTRIES = 512  # events or pressure sums in a page...
PAGE_BYTES = 256 << 10  # ...and about this many bytes of them at most
COUNT_MAX = 0xFFFFFFFF  # a 4-byte count


class Series:
    """One cgroup's samples: a ring of SAMPLES each, the newest at ``taken - 1``."""

    __slots__ = ("cg", "taken", "usage", "reclaimed", "last_reclaimed", "last_hits")

    def __init__(self, cg: Cgroup) -> None:
        self.cg = cg  # ids are reused: the series is this cgroup's only while by_id holds it
        self.taken = 0
        self.usage = array("I")  # misc.current, pages (grows to SAMPLES, then a ring)
        self.reclaimed = array("I")  # pages reclaimed since the sample before
        self.last_reclaimed = cg.reclaimed
        self.last_hits = cg.misc_events_local

    def ordered(self, values: array[int]) -> list[int]:
        """``values`` oldest first."""
        size = len(values)
        if self.taken <= size:
            return values[: self.taken].tolist()
        start = self.taken % size
        return values[start:].tolist() + values[:start].tolist()


class History:
    """Samples per cgroup, the last events and pressure sums; see the module docstring."""

    def __init__(
        self, samples: int = SAMPLES, events: int = EVENTS, pressure: int = PRESSURE, max_cgroups: int = MAX_CGROUPS
    ) -> None:
        self.size = samples
        self.max_cgroups = max_cgroups
        self.tick = 0  # samples taken
        self.times = array("q", bytes(8 * samples))  # a ring: the clock of each sample
        self.series: dict[int, Series] = {}  # by cgroup id
        self.untracked = 0  # live cgroups at the last sample that have no series (over the cap)
        self.events: deque[dict[str, Any]] = deque(maxlen=events)
        self.events_total = 0
        self.pressure: deque[dict[str, Any]] = deque(maxlen=pressure)
        self.pressure_total = 0

    # -- recording --------------------------------------------------------------

    def event(self, message: dict[str, Any]) -> None:
        """One published event of event/other (read-only from here on)."""
        self.events.append(message)
        self.events_total += 1

    def sample(self, host: Host) -> None:
        """A sample of every live cgroup now: O(cgroups); a removed cgroup's samples go."""
        now = host.clock.now_ns()
        size, series, tracked = self.size, self.series, 0
        self.times[self.tick % size] = now
        self.tick += 1
        untracked = 0
        for cg in host.tree.by_id:
            if cg is None or cg.dying:
                continue
            s = series.get(cg.id)
            if s is None or s.cg is not cg:
                if s is None and len(series) >= self.max_cgroups:
                    untracked += 1
                    continue
                s = series[cg.id] = Series(cg)
            tracked += 1
            reclaimed = cg.reclaimed - s.last_reclaimed
            hits = cg.misc_events_local - s.last_hits
            if s.taken < size:
                s.usage.append(cg.misc_usage)
                s.reclaimed.append(min(max(reclaimed, 0), COUNT_MAX))
            else:
                at = s.taken % size
                s.usage[at] = cg.misc_usage
                s.reclaimed[at] = min(max(reclaimed, 0), COUNT_MAX)
            s.taken += 1
            if reclaimed > 0 or hits > 0:
                s.last_reclaimed, s.last_hits = cg.reclaimed, cg.misc_events_local
                self.pressure.append(
                    {"kind": "pressure", "t_ns": now, "cgroup": cg.path, "hits": max(hits, 0), "reclaimed": reclaimed}
                )
                self.pressure_total += 1
        self.untracked = untracked
        if tracked != len(series):  # some were removed (or freed and their ids reused)
            live = host.tree.by_id
            for cg_id in [i for i, s in series.items() if i >= len(live) or live[i] is not s.cg or s.cg.dying]:
                del series[cg_id]

    # -- reading ----------------------------------------------------------------

    def samples_page(self, after: int) -> HistorySamples:
        """The samples of the tracked cgroups from id ``after`` on, PAGE_CGROUPS of them, by id."""
        ids = sorted(i for i in self.series if i >= after)
        rows: list[CgroupHistory] = []
        for cg_id in ids[:PAGE_CGROUPS]:
            s = self.series[cg_id]
            rows.append(
                {
                    "path": s.cg.path,
                    "id": cg_id,
                    "usage_pages": s.ordered(s.usage),
                    "reclaimed_pages": s.ordered(s.reclaimed),
                }
            )
        times = self.times
        if self.tick <= self.size:
            t_ns = times[: self.tick].tolist()
        else:
            start = self.tick % self.size
            t_ns = times[start:].tolist() + times[:start].tolist()
        return {
            "tick": self.tick,
            "interval_ns": INTERVAL_NS,
            "t_ns": t_ns,
            "cgroups": rows,
            "untracked": self.untracked,
            "next": ids[PAGE_CGROUPS] if len(ids) > PAGE_CGROUPS else None,
        }

    def events_page(self, after: int) -> HistoryLog:
        return _log_page(self.events, self.events_total, after)

    def pressure_page(self, after: int) -> HistoryLog:
        return _log_page(self.pressure, self.pressure_total, after)


def _log_page(ring: deque[dict[str, Any]], total: int, after: int) -> HistoryLog:
    """Entries from absolute number ``after`` on (or the oldest kept), up to PAGE_ENTRIES and
    about PAGE_BYTES; ``next`` numbers the first one not sent (None: none is left)."""
    oldest = total - len(ring)
    start = max(after, oldest)
    entries: list[dict[str, Any]] = []
    budget = PAGE_BYTES
    for entry in islice(ring, start - oldest, None):
        budget -= _estimate(entry.values())
        if (budget < 0 and entries) or len(entries) >= PAGE_ENTRIES:
            break
        entries.append(entry)
    end = start + len(entries)
    return {"entries": entries, "total": total, "next": end if end < total else None}


def _estimate(values: Iterable[Any]) -> int:
    """An upper bound of a flat map's MessagePack size: 4 bytes a character, 9 a number, 32 a key."""
    return sum(32 + (4 * len(v) if isinstance(v, str) else 9) for v in values)

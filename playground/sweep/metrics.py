"""What one point of a sweep measured: every number of its row, read in ONE place (``point_metrics``).

Everything is read from the run's final snapshot and its events, nothing from the wall
clock, so the same point gives the same row wherever it runs:

- ``faults``: the workloads' faults (their snapshot rows: pages an access found absent,
  loaded back by ELDU or added by EAUG);
- ``ewb``: pages written out to backing store: every ``reclaim`` event's ``written``
  plus one for each ``secs_writeback`` (EWB of a SECS);
- ``eldu``: pages loaded back: every page written out is either loaded back (ELDU) or
  still out when its enclave is released, so ``ewb`` less the pages the ``release``
  events freed from backing (``backing_bytes``, the SECS's included);
- ``limit_hits``: ``misc.events`` (``sgx_epc.max``) of the sweep's cgroup at the end:
  how often a charge in its subtree hit its limit or an ancestor's;
- ``peak``: that cgroup's ``misc.peak``, bytes;
- ``runtime_ns`` and ``slowdown``: from the workloads' emulated time (``runtime_ns`` and
  ``paging_ns``, the cost model's: docs/costs.md), the longest workload's runtime and the
  worst workload's slowdown, ``runtime / (runtime - paging)``.  A snapshot without them (an
  engine older than the cost model) leaves the two columns out: nothing is made up.

``cost_column(rows)`` says which column a budget and a plot weigh: ``slowdown`` when the
rows have it, else ``faults``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from common.costs import slowdown
from common.limits import PAGE_SIZE

Metrics = dict[str, Any]

COUNTERS = ("faults", "ewb", "eldu", "limit_hits", "peak")
TIMED = ("runtime_ns", "slowdown")  # present only when the snapshot has emulated time
HEADERS = {
    "faults": "faults",
    "ewb": "EWB",
    "eldu": "ELDU",
    "limit_hits": "misc.events",
    "peak": "peak",
    "runtime_ns": "runtime",
    "slowdown": "slowdown",
}


def point_metrics(
    snapshot: Mapping[str, Any],
    events: Iterable[Mapping[str, Any]],
    outcomes: Mapping[str, Sequence[str | None]],
    cgroup: str,
) -> Metrics:
    """The row of one point: outcomes per spawn (``outcome:NAME``), the counters, and the timed
    columns when the snapshot has them.  ``cgroup``: the one whose misc files the row shows."""
    written = secs = freed_bytes = 0
    for event in events:
        kind = event.get("kind")
        if kind == "reclaim":
            written += int(event["written"])
        elif kind == "secs_writeback":
            secs += 1
        elif kind == "release":
            freed_bytes += int(event["backing_bytes"])
    workloads = list(snapshot.get("workloads", ()))
    row = next((cg for cg in snapshot.get("cgroups", ()) if cg["path"] == cgroup), None)
    out: Metrics = {f"outcome:{name}": summarize(list(each)) for name, each in outcomes.items()}
    ewb = written + secs
    out |= {
        "faults": sum(int(w.get("faults", 0)) for w in workloads),
        "ewb": ewb,
        "eldu": ewb - freed_bytes // PAGE_SIZE,
        "limit_hits": None if row is None else int(row["misc_events"]),
        "peak": None if row is None else int(row["misc_peak"]),
    }
    timed = [w for w in workloads if "runtime_ns" in w and "paging_ns" in w]
    if workloads and len(timed) == len(workloads):
        out["runtime_ns"] = max(int(w["runtime_ns"]) for w in timed)
        out["slowdown"] = max(round(slowdown(int(w["runtime_ns"]), int(w["paging_ns"])), 6) for w in timed)
    return out


def summarize(outcomes: list[str | None]) -> str:
    """``ok`` when every instance ended so; else ``3 ok, 1 SIGBUS`` (most first, then by name)."""
    counts: dict[str, int] = {}
    for outcome in outcomes:
        key = outcome or "running"
        counts[key] = counts.get(key, 0) + 1
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{n} {name}" for name, n in sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def cost_column(rows: Sequence[Metrics]) -> str:
    """The column a budget and the plot weigh: ``slowdown`` when every row has it, else ``faults``."""
    return "slowdown" if rows and all("slowdown" in row for row in rows) else "faults"

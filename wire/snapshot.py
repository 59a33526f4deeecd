"""The snapshot and stats schema: what the ``snapshot`` op answers and the 4 Hz ``stats`` on PUB carry.

The engine builds these maps (``engined/stats.py``); the TUI, ``cg tree``, the cgroupfs
mount and the scenario runner read them.  A ``Snapshot`` is the whole state; a
``StatsDelta`` is what changed since the last tick, applied with ``merge_stats``.
Sizes are bytes, counts are pages, times are the engine clock's nanoseconds (``t_ns``).
"""

from __future__ import annotations

from typing import Any, TypedDict, cast

from common.costs import format_ns, slowdown
from common.knobs import Knobs
from common.limits import U64_MAX
from common.units import format_size


class Header(TypedDict):
    """The EPC and the engine, at the head of every snapshot and stats message."""

    stats_seq: int  # number of the last stats message this state includes
    seq: int  # number of the last event published
    t_ns: int  # the engine's clock
    capacity: int  # EPC bytes
    memory: int | None  # host RAM for backing store (None: unlimited)
    free: int  # free EPC bytes
    ksgxd: bool  # global reclaim is running
    frozen: bool  # step mode: the engine runs nothing by itself (docs/protocol.md, "Step mode")
    frozen_ns: int  # since when, on t_ns's clock (0: not frozen)
    pub: str  # the engine's PUB endpoint
    engine_pid: int
    knobs: dict[str, int | bool]  # the series' knobs not at V17's values (common.knobs; {}: the kernel's)
    profile: str  # the cost profile's name (docs/costs.md)
    kworker_ns: int  # emulated CPU time of the cgroup work items (async reclaim), all together
    ksgxd_ns: int  # ...and of ksgxd


class CgroupRow(TypedDict):
    """One live cgroup: its misc (sgx_epc) and memory files in bytes, its own pages, its tasks."""

    path: str
    misc_current: int
    misc_max: int | None  # None at the root (no misc.max); U64_MAX reads as max
    misc_peak: int
    misc_events: int
    misc_events_local: int
    memory_current: int
    memory_max: int | None  # None: max
    memory_events: list[int]  # low, high, max, oom, oom_kill, oom_group_kill
    reclaimable: int  # its own pages on its LRU
    unreclaimable: int  # its own VA, SECS and guest pages (and any isolated)
    swapped: int  # pages of its tasks' enclaves written out
    reclaimed: int  # pages written out from its LRU, ever
    procs: list[int]  # all of them in a snapshot; the first 64 in a delta
    nr_procs: int
    runtime_ns: int  # emulated runtime of the workloads (running and exited records) in its subtree
    paging_ns: int  # ...the part of it spent paging


class WorkloadRow(TypedDict):
    """One registered process, running or exited."""

    pid: int
    role: str  # enclave | vm | client
    name: str
    cgroup: str
    state: str  # running | stopped (SIGSTOP) | stalled | exited
    stalled_ns: int  # since when, on t_ns's clock (0: not stalled)
    reason: str  # how it exited: an Outcome or an errno name ("" while it runs)
    exit_signal: str  # the signal that killed it ("SIGTERM"); "" if none did or the engine could not learn it
    exit_code: int | None  # its exit code when it exited by itself; None otherwise, or when unknown
    faults: int
    resident: int  # pages
    swapped: int  # pages
    size: int  # bytes it asked for (an enclave's heap, a guest's EPC); 0: its hello did not say
    elrange: int  # bytes: the most ELRANGE and virtual EPC it held at once (what ECREATE got), kept after it exits
    pattern: str  # its plan as its hello said it ("" and None: not said)
    passes: int | None
    duration_ms: int | None
    runtime_ns: int  # its emulated clock: compute, SGX operations, paging (docs/costs.md)
    paging_ns: int  # the part spent paging: ELDU and its faults, the EWB of the reclaim it ran
    compute_ns: int  # its compute per page accessed (a mean over its access calls when they gave it)
    compute_from: str  # where that comes from: "calls" (its access calls: a trace's), "hello" or "profile"


class Snapshot(Header):
    """The whole state: every live cgroup in pre-order (siblings by name), every workload record."""

    cgroups: list[CgroupRow]
    workloads: list[WorkloadRow]


class StatsDelta(Header):
    """One stats message: the rows that changed and what went away since the last; ``last`` ends a tick."""

    cgroups: list[CgroupRow]
    removed: list[str]
    workloads: list[WorkloadRow]
    workloads_removed: list[int]
    last: bool


_DELTA_KEYS = frozenset({"cgroups", "removed", "workloads", "workloads_removed", "last"})


def merge_stats(snapshot: Snapshot, delta: StatsDelta) -> Snapshot:
    """The snapshot after one stats message (a delta: changed rows, removed paths and pids).

    Cgroups stay in pre-order (siblings by name), workloads in registration order.  The
    caller checks ``stats_seq``: a delta whose number is not the next one means messages
    were lost, and the snapshot should be asked for again.
    """
    out: dict[str, Any] = {key: value for key, value in delta.items() if key not in _DELTA_KEYS}
    rows = {row["path"]: row for row in snapshot.get("cgroups", ())}
    added = False
    for row in delta.get("cgroups", ()):
        added = added or row["path"] not in rows
        rows[row["path"]] = row
    for path in delta.get("removed", ()):
        rows.pop(path, None)
    cgroups = list(rows.values())
    if added:
        cgroups.sort(key=lambda row: [name for name in row["path"].split("/") if name])
    out["cgroups"] = cgroups
    workloads = {row["pid"]: row for row in snapshot.get("workloads", ())}
    for workload in delta.get("workloads", ()):
        workloads[workload["pid"]] = workload
    for pid in delta.get("workloads_removed", ()):
        workloads.pop(pid, None)
    out["workloads"] = list(workloads.values())
    return cast(Snapshot, out)


NAME_COLUMN = 48  # characters of ``cg tree``'s name column, indentation included, before names are cut


def cut_middle(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters: its start and its end with ``…`` between, when longer.

    The end stays because that is where cgroup names differ (``...-pod<uid>.slice``)."""
    if len(text) <= width:
        return text
    head = width // 2
    return f"{text[:head]}…{text[len(text) - (width - 1 - head) :]}"


def format_tree(snapshot: Snapshot, name_column: int | None = NAME_COLUMN) -> str:
    """The cgroup tree with sgx_epc usage, limit and events, and backing memory; then the workloads
    whose call stalls (a fault that no reclaim can help), one line each (``epc-playground cg tree``).
    Above the table, a line naming the knobs that are not V17's, when some are not.

    Names longer than ``name_column`` with their indentation are cut in the middle (None:
    never), so one long name does not pad every row (a cgroup name may have 255 bytes)."""
    timed = any(cg.get("runtime_ns") for cg in snapshot["cgroups"])  # the time columns once a workload ran
    rows: list[tuple[str, ...]] = [("cgroup", "misc.current", "misc.max", "peak", "events", "memory", "tasks")]
    if timed:
        rows[0] += ("runtime", "paging", "slowdown")
    for cg in snapshot["cgroups"]:
        path, misc_max = cg["path"], cg["misc_max"]
        depth = path.count("/") if path != "/" else 0
        indent = "  " * (depth - 1)
        name = path.rsplit("/", 1)[-1]
        if name_column is not None:
            name = cut_middle(name, max(8, name_column - len(indent)))
        name = "/ (all EPC)" if path == "/" else indent + name
        limit = "-" if misc_max is None else "max" if misc_max >= U64_MAX else format_size(misc_max)
        rows.append(
            (
                name,
                format_size(cg["misc_current"]),
                limit,
                format_size(cg["misc_peak"]),
                str(cg["misc_events"]) if path != "/" else "-",
                format_size(cg["memory_current"]),
                str(len(cg["procs"])),
            )
        )
        if timed:
            rows[-1] += _times(cg.get("runtime_ns", 0), cg.get("paging_ns", 0))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    capacity, free = snapshot["capacity"], snapshot["free"]
    lines.append(
        f"EPC {format_size(capacity)}, {format_size(free)} free, ksgxd {'running' if snapshot['ksgxd'] else 'idle'}"
    )
    if snapshot.get("profile"):
        lines.append(
            f"costs: {snapshot['profile']} profile; async reclaim {format_ns(snapshot.get('kworker_ns', 0))},"
            f" ksgxd {format_ns(snapshot.get('ksgxd_ns', 0))} of CPU"
        )
    now = snapshot.get("t_ns", 0)
    for w in snapshot.get("workloads", []):
        if w.get("state") == "stalled":
            seconds = max(0, now - int(w.get("stalled_ns") or now)) / 1e9
            lines.append(
                f"stalled: {w['name']} (pid {w['pid']}) in {w['cgroup']} for {seconds:.1f} s:"
                " a fault that no reclaim can help, retried until something frees its limiting cgroup"
            )
    mark = knobs_mark(snapshot)
    if mark:
        lines.insert(0, mark)
    return "\n".join(line.rstrip() for line in lines) + "\n"


def knobs_short(info: Any) -> str:
    """The engine's knobs that are not V17's in a few words (``nr_to_scan=4 async_reclaim=off``), ""
    when all are the kernel's; see knobs_mark()."""
    knobs = info.get("knobs") if isinstance(info, dict) else None
    if not knobs:
        return ""
    try:
        return Knobs.from_mapping(knobs).short()
    except (TypeError, ValueError):
        return " ".join(f"{name}={value}" for name, value in knobs.items())


def knobs_mark(info: Any) -> str:
    """The line naming the engine's knobs that are not V17's (a snapshot's, stats' or hello's
    ``knobs``), "" when all are the kernel's or it does not say.  A value this client cannot
    read is shown as it came."""
    knobs = info.get("knobs") if isinstance(info, dict) else None
    if not knobs:
        return ""
    try:
        return Knobs.from_mapping(knobs).mark()
    except (TypeError, ValueError):
        return "knobs (not the kernel's): " + ", ".join(f"{name}={value}" for name, value in knobs.items())


def _times(runtime_ns: int, paging_ns: int) -> tuple[str, str, str]:
    """``cg tree``'s runtime, paging and slowdown cells ("-" where nothing ran)."""
    if not runtime_ns:
        return "-", "-", "-"
    return format_ns(runtime_ns), format_ns(paging_ns), f"{slowdown(runtime_ns, paging_ns):.2f}x"

"""What a display draws from: a snapshot of the host's cgroups and workloads, and its deltas.

``full()`` is the whole state (the ``snapshot`` op); ``tick()`` is what changed since the
last tick, cut into messages of at most ``rows`` rows (the 4 Hz stats on PUB), so a tick
costs O(cgroups) cheap comparisons and its messages are small however big the tree is.
A subscriber applies them with ``wire.snapshot.merge_stats``.  Rows that did not change are
re-sent a few at a time in turn, so a subscriber that missed a transient state heals.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from engine.cgroup import Cgroup
from engine.host import Host
from engine.sgx import PAGE_COUNTER_MAX, PAGE_SIZE

_NO_TIME = (0, 0)
REFRESH_ROWS = 32  # unchanged cgroup rows re-sent per tick, in turn
STOPPED_CHECKS = 32  # running workloads a tick asks whether they are stopped, in turn (a /proc read, ~10 us, each)
PROCS_IN_DELTA = 64  # pids listed in a delta's cgroup row (nr_procs counts them all; the snapshot lists all)


@dataclass(slots=True)
class Workload:
    """A registered process, alive or gone (kept for the TUI and scenario runner)."""

    pid: int
    role: str
    name: str
    cgroup: str
    started_ns: int
    uid: int = -1  # from the socket's peer credentials
    state: str = "running"  # running | exited (a running one shows as stopped or stalled: _state)
    reason: str = ""  # ok | ENOMEM | SIGBUS | OOM | killed | failed | <errno name>
    faults: int = 0
    exited_ns: int = 0
    stalled_ns: int = 0  # the host clock when its call began to stall (0: none does)
    stalled_calls: int = 0
    eids: set[int] = field(default_factory=set)
    vids: set[int] = field(default_factory=set)
    # its plan, as its hello said it (0, "" or None: not said)
    size_bytes: int = 0  # what it asked for: an enclave's heap, a guest's EPC
    pattern: str = ""
    passes: int | None = None
    duration_ms: int | None = None
    elrange_bytes: int = 0  # the most ELRANGE and vEPC it held at once: what ECREATE and vepc_open got
    # how it ended, as the kernel tells (liveness.exit_status): the signal that killed it, or its exit code
    exit_signal: str = ""  # "SIGTERM"; "" when no signal killed it or it cannot be known
    exit_code: int | None = None  # None while it runs, when a signal killed it, or when it cannot be known
    stopped: bool = False  # stopped (SIGSTOP) when last looked at
    # emulated time (docs/costs.md): its compute per page accessed (None: the profile's), its clock,
    # and the part of it spent paging (ELDU and its faults, the EWB of the reclaim it ran)
    compute_ns: int | None = None
    runtime_ns: int = 0
    paging_ns: int = 0
    # what its access calls that gave their own compute (a trace's batches) gave, and the pages they touched
    call_compute_ns: int = 0
    call_compute_pages: int = 0
    call_compute: bool = False

    def compute_used(self, default_ns: int) -> tuple[int, str]:
        """Its compute per page accessed and where it comes from: ``calls`` (the mean of what its access
        calls gave, a trace's), ``hello`` (declared) or ``profile`` (``default_ns``)."""
        if self.call_compute:
            return self.call_compute_ns // max(1, self.call_compute_pages), "calls"
        if self.compute_ns is not None:
            return self.compute_ns, "hello"
        return default_ns, "profile"

    def opened(self, host: Host) -> None:
        """It created an enclave or opened a vEPC: ``elrange_bytes`` is at least what it holds now."""
        held = sum(host.enclaves[eid].size_pages for eid in self.eids if eid in host.enclaves)
        held += sum(host.vepcs[vid].size_pages for vid in self.vids if vid in host.vepcs)
        self.elrange_bytes = max(self.elrange_bytes, held * PAGE_SIZE)


def memory_bytes(max_pages: int) -> int | None:
    """A memory.max in bytes, None for max."""
    return None if max_pages >= PAGE_COUNTER_MAX else max_pages * PAGE_SIZE


def _signature(cg: Cgroup, swapped: int) -> tuple[int, ...]:
    return (
        cg.misc_usage, cg.misc_max_bytes, cg.misc_peak, cg.misc_events, cg.misc_events_local,
        cg.mem_usage, cg.mem_max_pages, *cg.mem_events, cg.lru.size, swapped, cg.reclaimed, len(cg.procs),
    )  # fmt: skip


class Stats:
    """The rows last sent, to send only what changed."""

    def __init__(
        self,
        host: Host,
        workloads: dict[int, Workload],
        stopped: Callable[[int], bool] = lambda pid: False,
        clocks: Callable[[], tuple[str, int, int]] = lambda: ("", 0, 0),
        default_compute_ns: int = 0,
    ) -> None:
        self.host = host
        self.default_compute_ns = default_compute_ns  # the cost profile's compute per page accessed
        self.knobs = host.knobs.changed()  # the same in every header: {} for V17's
        self.clocks = clocks  # the cost profile's name, the kworkers' and ksgxd's emulated time
        self.workloads = workloads
        self.stopped = stopped  # whether a process is stopped (SIGSTOP): Processes.stopped
        self._stopped_at = 0  # where the next tick's stopped checks start
        self.stats_seq = 0
        self._sent: dict[str, tuple[tuple[int, ...], frozenset[int]]] = {}  # path -> signature, procs
        self._sent_workloads: dict[int, dict[str, Any]] = {}
        self._shown: set[str] = set()  # paths and pids a full snapshot showed since the last tick:
        self._shown_pids: set[int] = set()  # their removal must be said even if no tick sent them
        self._refresh_at = 0
        self.frozen = False  # step mode, as the Session sets it...
        self.frozen_ns = 0  # ...and since when (0 when not frozen)

    def header(self, pub: str, engine_pid: int, seq: int) -> dict[str, Any]:
        host = self.host
        profile, kworker_ns, ksgxd_ns = self.clocks()
        return {
            "stats_seq": self.stats_seq,
            "seq": seq,
            "t_ns": host.clock.now_ns(),
            "capacity": host.capacity_bytes,
            "memory": memory_bytes(host.tree.root.mem_max_pages),  # host RAM for backing (None: unlimited)
            "free": host.epc.nr_free * PAGE_SIZE,
            "ksgxd": host.ksgxd_woken,
            "frozen": self.frozen,
            "frozen_ns": self.frozen_ns,
            "pub": pub,
            "engine_pid": engine_pid,
            "knobs": self.knobs,
            "profile": profile,
            "kworker_ns": kworker_ns,
            "ksgxd_ns": ksgxd_ns,
        }

    def full(self, pub: str, engine_pid: int, seq: int) -> dict[str, Any]:
        """The whole state: every live cgroup in pre-order (siblings by name), every workload record."""
        swapped = self._swapped_by()
        times = self._times_by()
        out = self.header(pub, engine_pid, seq)
        live = sorted(self.host.tree.live(), key=lambda cg: [name for name in cg.path.split("/") if name])
        out["cgroups"] = [self._cgroup_row(cg, swapped.get(cg.path, 0), times.get(cg.path, _NO_TIME)) for cg in live]
        running = [w for w in self.workloads.values() if w.state == "running"]
        self._look_for_stopped(running, len(running))
        out["workloads"] = [self._workload_row(w) for w in self.workloads.values()]
        self._shown.update(cg.path for cg in live)
        self._shown_pids.update(self.workloads)
        return out

    def tick(self, pub: str, engine_pid: int, seq: int, rows: int, max_bytes: int) -> Iterator[dict[str, Any]]:
        """The delta since the last tick, as messages of at most ``rows`` rows and about ``max_bytes``
        encoded (rows are estimated generously); the last one says ``last``."""
        swapped = self._swapped_by()
        times = self._times_by()
        changed: list[dict[str, Any]] = []
        live = self.host.tree.live()
        paths = set()
        nr_live = len(live)
        for i, cg in enumerate(live):
            path = cg.path
            paths.add(path)
            nr_swapped = swapped.get(path, 0)
            time = times.get(path, _NO_TIME)
            sig = (*_signature(cg, nr_swapped), *time)
            sent = self._sent.get(path)
            refresh = (i - self._refresh_at) % nr_live < REFRESH_ROWS
            if sent is None or sent[0] != sig or sent[1] != cg.procs or refresh:
                self._sent[path] = (sig, frozenset(cg.procs))
                row = self._cgroup_row(cg, nr_swapped, time)
                if len(row["procs"]) > PROCS_IN_DELTA:
                    row["procs"] = row["procs"][:PROCS_IN_DELTA]
                changed.append(row)
        self._refresh_at = (self._refresh_at + REFRESH_ROWS) % nr_live
        removed = sorted((self._sent.keys() | self._shown) - paths)
        for path in removed:
            self._sent.pop(path, None)
        self._shown.clear()
        self._look_for_stopped([w for w in self.workloads.values() if w.state == "running"], STOPPED_CHECKS)
        workloads = []
        for w in self.workloads.values():
            last = self._sent_workloads.get(w.pid)
            if w.state == "exited" and last is not None and last["state"] == "exited":
                continue  # an exited record does not change
            row = self._workload_row(w)
            if last != row:
                self._sent_workloads[w.pid] = row
                workloads.append(row)
        gone = sorted((self._sent_workloads.keys() | self._shown_pids) - self.workloads.keys())
        for pid in gone:
            self._sent_workloads.pop(pid, None)
        self._shown_pids.clear()
        yield from self._messages(pub, engine_pid, seq, rows, max_bytes, changed, removed, workloads, gone)

    def _messages(
        self, pub: str, engine_pid: int, seq: int, rows: int, max_bytes: int, cgroups: list[dict[str, Any]],
        removed: list[str], workloads: list[dict[str, Any]], gone: list[int],
    ) -> Iterator[dict[str, Any]]:  # fmt: skip
        items: list[tuple[str, Any]] = [
            *(("cgroups", r) for r in cgroups), *(("removed", p) for p in removed),
            *(("workloads", r) for r in workloads), *(("workloads_removed", p) for p in gone),
        ]  # fmt: skip
        start = 0
        while True:
            self.stats_seq += 1
            message = self.header(pub, engine_pid, seq)
            for key in ("cgroups", "removed", "workloads", "workloads_removed"):
                message[key] = []
            budget = max_bytes - 1024 - 2 * len(pub)  # the header
            end = start
            while end < len(items) and end - start < rows:
                key, item = items[end]
                budget -= _estimate(item)
                if budget < 0 and end > start:
                    break
                message[key].append(item)
                end += 1
            start = end
            message["last"] = start >= len(items)
            yield message
            if message["last"]:
                return

    def _look_for_stopped(self, running: list[Workload], checks: int) -> None:
        """Ask whether ``checks`` of the running workloads are stopped, in turn from where the last
        look ended: a tick costs at most STOPPED_CHECKS /proc reads however many workloads run."""
        if not running:
            return
        start = self._stopped_at % len(running)
        for i in range(min(checks, len(running))):
            workload = running[(start + i) % len(running)]
            workload.stopped = self.stopped(workload.pid)
        self._stopped_at = start + min(checks, len(running))

    def _swapped_by(self) -> dict[str, int]:
        """EPC pages swapped out, by the cgroup of the enclave's creator."""
        host = self.host
        out: dict[str, int] = {}
        for enclave in host.enclaves.values():
            if enclave.nr_swapped:
                path = host.task_cgroup(enclave.pid)
                out[path] = out.get(path, 0) + enclave.nr_swapped
        return out

    def _times_by(self) -> dict[str, tuple[int, int]]:
        """Emulated runtime and paging time summed over the workloads (running and exited records)
        in each cgroup's subtree, as the other cgroup figures are hierarchical: O(workloads x depth)."""
        host = self.host
        out: dict[str, tuple[int, int]] = {}
        for w in self.workloads.values():
            if not w.runtime_ns:
                continue
            path = host.task_cgroup(w.pid) if w.state == "running" else w.cgroup
            while True:
                runtime, paging = out.get(path, _NO_TIME)
                out[path] = (runtime + w.runtime_ns, paging + w.paging_ns)
                if path == "/":
                    break
                path = path.rsplit("/", 1)[0] or "/"
        return out

    def _cgroup_row(self, cg: Cgroup, swapped: int, time: tuple[int, int] = (0, 0)) -> dict[str, Any]:
        own = cg.misc_usage - sum(child.misc_usage for child in cg.children)
        return {
            "path": cg.path,
            "misc_current": cg.misc_usage * PAGE_SIZE,
            "misc_max": cg.misc_max_bytes if cg.parent is not None else None,
            "misc_peak": cg.misc_peak * PAGE_SIZE,
            "misc_events": cg.misc_events,
            "misc_events_local": cg.misc_events_local,
            "memory_current": cg.mem_usage * PAGE_SIZE,
            "memory_max": memory_bytes(cg.mem_max_pages),
            "memory_events": list(cg.mem_events),
            "reclaimable": cg.lru.size,  # its own pages on its LRU
            "unreclaimable": own - cg.lru.size,  # its own VA, SECS and guest pages (and any isolated)
            "swapped": swapped,
            "reclaimed": cg.reclaimed,  # pages written out from its LRU, ever
            "procs": sorted(cg.procs),
            "nr_procs": len(cg.procs),
            "runtime_ns": time[0],  # emulated runtime of the workloads in its subtree (docs/costs.md)
            "paging_ns": time[1],  # ...and their time in paging
        }

    def _workload_row(self, w: Workload) -> dict[str, Any]:
        host = self.host
        resident = swapped = 0
        for eid in w.eids:
            encl = host.enclaves.get(eid)
            if encl is not None:
                resident += encl.secs_child_cnt
                swapped += encl.nr_swapped
        for vid in w.vids:
            vepc = host.vepcs.get(vid)
            if vepc is not None:
                resident += vepc.nr_present
        compute_ns, compute_from = w.compute_used(self.default_compute_ns)
        return {
            "pid": w.pid,
            "role": w.role,
            "name": w.name,
            "cgroup": host.task_cgroup(w.pid) if w.state == "running" else w.cgroup,
            "state": _state(w),
            "stalled_ns": w.stalled_ns,  # since when, on the header's t_ns clock (0: not stalled)
            "reason": w.reason,
            "exit_signal": w.exit_signal,
            "exit_code": w.exit_code,
            "faults": w.faults,
            "resident": resident,
            "swapped": swapped,
            "size": w.size_bytes,  # what it asked for (0: its hello did not say)
            "elrange": w.elrange_bytes,  # the most ELRANGE and vEPC it held at once, kept after it exits
            "pattern": w.pattern,
            "passes": w.passes,
            "duration_ms": w.duration_ms,
            "runtime_ns": w.runtime_ns,  # its emulated clock (docs/costs.md)
            "paging_ns": w.paging_ns,  # the part of it spent paging
            "compute_ns": compute_ns,  # its compute per page accessed...
            "compute_from": compute_from,  # ...as its access calls (a trace), its hello or the profile said it
        }


def _state(w: Workload) -> str:
    """running, stopped (SIGSTOP: it makes no calls), stalled (a call of it waits on a fault that
    no reclaim can help), or exited."""
    if w.state != "running":
        return w.state
    return "stopped" if w.stopped else "stalled" if w.stalled_ns else "running"


def _estimate(item: Any) -> int:
    """An upper bound of an item's MessagePack size: 4 bytes a character (UTF-8), 9 a pid."""
    if isinstance(item, dict):
        strings = sum(len(v) for v in item.values() if isinstance(v, str))
        return 512 + 4 * strings + 9 * len(item.get("procs", ()))
    return 16 + 4 * len(item) if isinstance(item, str) else 16

"""Typed records of what the core did, stamped by its clock, ready to publish.

Every event has ``kind`` (a short stable name used on the wire and in JSON Lines),
``t_ns`` (the core clock) and fields of plain ints and strings.  Treat them as
read-only: they are not frozen dataclasses only because those cost six times as much
to build (0.8 against 0.13 us), and two are made per reclaim batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(slots=True)
class Event:
    kind: ClassVar[str] = "event"
    t_ns: int

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        for f in dataclasses.fields(self):
            out[f.name] = getattr(self, f.name)
        return out


@dataclass(slots=True)
class LimitHit(Event):
    """A misc charge failed at ``cgroup`` (its misc.max or the EPC capacity); ``requester`` asked."""

    kind: ClassVar[str] = "limit_hit"
    cgroup: str
    requester: str


@dataclass(slots=True)
class ReclaimBatch(Event):
    """One sgx_reclaim_pages() call on ``cgroup``'s LRU, one turn of a reclaim walk.

    ``scanned`` pages were isolated, ``rotated`` were young and went back to the tail,
    ``backing_failed`` could not get backing RAM, ``written`` were EWB'd and freed.
    ``context`` is sync, async, direct, global or ksgxd.  The walk
    (sgx_cgroup_reclaim_pages()) is rooted at ``walk_root``: the cgroup whose charge, work
    item or direct reclaim started it, "/" for ksgxd and global reclaim.  ``next_cg`` is
    the walk root's cursor after this batch: where its next walk, or this one's next
    batch, starts.  ``stop`` says why the walk ends after this batch: ``nr_to_scan`` (it
    scanned what it was asked to), ``lru_empty`` (its subtree's LRUs are empty, so
    sgx_cgroup_lru_empty()), or "" (it goes on with the cgroup at ``next_cg``).
    """

    kind: ClassVar[str] = "reclaim"
    cgroup: str
    context: str
    scanned: int
    rotated: int
    backing_failed: int
    written: int
    walk_root: str
    next_cg: str
    stop: str


@dataclass(slots=True)
class Enomem(Event):
    """An allocation for ``pid`` failed with ENOMEM: nothing reclaimable was left."""

    kind: ClassVar[str] = "enomem"
    pid: int
    cgroup: str
    op: str


@dataclass(slots=True)
class SigBusRaised(Event):
    """A fault of ``pid`` could not be served; the task gets SIGBUS."""

    kind: ClassVar[str] = "sigbus"
    pid: int
    cgroup: str
    op: str
    errno: str


# How often a driver (the engine, the in-process scenario backend) tries a stalled call
# again while nothing changes: each try is one more failed charge, one more misc.events.
# The kernel's task re-faults as fast as its CPU goes; the drivers also try at once after a
# task's exit, a release or a cgroup file write.
STALL_RETRY_HZ = 10


@dataclass(slots=True)
class Stalled(Event):
    """A call of ``pid`` stalls: a fault whose charge gets EBUSY that no reclaim can help.

    The kernel's task faults again (VM_FAULT_NOPAGE), one failed charge each time, for as
    long as nothing frees the limiting cgroup; it is not SIGBUS.  Sent once when the
    stall starts; StallEnded follows when the call goes on or the task is gone.
    """

    kind: ClassVar[str] = "stall"
    pid: int
    name: str
    cgroup: str
    op: str


@dataclass(slots=True)
class StallEnded(Event):
    """The stalled call of ``pid`` went on after ``stalled_ns`` and ``retries`` more failed attempts.

    ``how``: ``resumed`` (its fault was served), ``exited`` (the task is gone), or the
    errno name the call then failed with (say ENOMEM once nothing is left to reclaim).
    """

    kind: ClassVar[str] = "stall_end"
    pid: int
    name: str
    cgroup: str
    op: str
    stalled_ns: int
    retries: int
    how: str


@dataclass(slots=True)
class WorkloadStarted(Event):
    """A workload process registered (said hello): it runs in ``cgroup`` from now on."""

    kind: ClassVar[str] = "workload_start"
    pid: int
    role: str  # enclave | vm
    name: str
    cgroup: str


@dataclass(slots=True)
class WorkloadExited(Event):
    """A workload process is gone; what it held is released.  ``reason``: ok, an errno name,
    SIGBUS, OOM, killed or failed.  ``runtime_ns``, ``paging_ns``: its emulated time and the
    part of it spent paging (docs/costs.md); ``compute_ns``, ``compute_from``: its compute per page
    accessed and who said it (``calls``: its access calls, a trace's; ``hello``; ``profile``)."""

    kind: ClassVar[str] = "workload_exit"
    pid: int
    name: str
    reason: str
    runtime_ns: int = 0
    paging_ns: int = 0
    compute_ns: int = 0
    compute_from: str = ""


@dataclass(slots=True)
class OomKill(Event):
    """The memory-cgroup OOM killer of ``cgroup`` picked ``pid`` (SIGKILL)."""

    kind: ClassVar[str] = "oom_kill"
    cgroup: str
    pid: int
    memory_bytes: int


@dataclass(slots=True)
class SecsWriteBack(Event):
    """An enclave's SECS was written out: its last resident child page was reclaimed."""

    kind: ClassVar[str] = "secs_writeback"
    enclave: int
    cgroup: str


@dataclass(slots=True)
class WorkQueued(Event):
    """A NO_RECLAIM charge failed with EBUSY and queued ``cgroup``'s reclaim work item."""

    kind: ClassVar[str] = "work_queued"
    cgroup: str


@dataclass(slots=True)
class WorkRun(Event):
    """A cgroup work item (or ksgxd, cgroup "ksgxd") ran ``batches`` batches, freeing ``written``."""

    kind: ClassVar[str] = "work_run"
    cgroup: str
    batches: int
    written: int


@dataclass(slots=True)
class KsgxdWake(Event):
    """Free EPC fell below SGX_NR_LOW_PAGES and ksgxd was woken."""

    kind: ClassVar[str] = "ksgxd_wake"
    free_pages: int


@dataclass(slots=True)
class FileWritten(Event):
    """A cgroup file was written successfully (limits, controllers, task moves)."""

    kind: ClassVar[str] = "write"
    path: str
    value: str


@dataclass(slots=True)
class CgroupCreated(Event):
    kind: ClassVar[str] = "mkdir"
    cgroup: str


@dataclass(slots=True)
class CgroupRemoved(Event):
    """rmdir succeeded; ``dying`` when charged pages keep the cgroup alive, offline."""

    kind: ClassVar[str] = "rmdir"
    cgroup: str
    dying: bool


@dataclass(slots=True)
class CgroupFreed(Event):
    """A dying cgroup lost its last charge and is gone."""

    kind: ClassVar[str] = "cgroup_freed"
    cgroup: str


@dataclass(slots=True)
class EnclaveCreated(Event):
    kind: ClassVar[str] = "ecreate"
    enclave: int
    pid: int
    size_bytes: int


@dataclass(slots=True)
class EnclaveReleased(Event):
    """The last reference went: ``pages_freed`` EPC pages and ``backing_bytes`` of RAM freed."""

    kind: ClassVar[str] = "release"
    enclave: int
    pid: int
    pages_freed: int
    backing_bytes: int


# -- step mode: the engine's Session freezes, steps and thaws its driving of the host ----------


@dataclass(slots=True)
class Frozen(Event):
    """The engine froze (step mode): nothing runs by itself until it thaws; ``pid`` holds it."""

    kind: ClassVar[str] = "freeze"
    pid: int


@dataclass(slots=True)
class Stepped(Event):
    """One step of a frozen engine, ``what`` = ``request`` (``op`` of ``pid``, ending ``status``)
    or ``reclaim`` (a round of ``worker``'s work, ``written`` pages); it caused ``events``."""

    kind: ClassVar[str] = "step"
    what: str
    op: str
    pid: int
    status: str
    worker: str
    written: int
    events: int


@dataclass(slots=True)
class Thawed(Event):
    """The engine thawed after ``frozen_ns`` and ``steps`` steps.  ``how``: ``asked`` (its holder
    thawed it), ``disconnected`` (the holder's connection went) or ``exited`` (its process did)."""

    kind: ClassVar[str] = "thaw"
    pid: int
    how: str
    frozen_ns: int
    steps: int


EventSink = Callable[[Event], None]

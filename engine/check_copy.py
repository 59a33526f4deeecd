"""The copy check() works on: everything an invariant needs, taken at once.

``snapshot(host)`` copies the host's state (array slices, dict copies, a small record per
cgroup, enclave and vEPC: C speed, so the copy is consistent) for engine.check and
engine.check_enclaves to check at leisure, a slice at a time.
"""

from __future__ import annotations

import gc
from array import array
from dataclasses import dataclass

from engine.cgroup import Cgroup
from engine.enclave import Enclave
from engine.state import HostState

STEP = 4096  # items (pages, frames) checked between two yields: about a millisecond
_NONE: frozenset[int] = frozenset()


class InvariantError(AssertionError):
    """An accounting invariant of the host is broken: a bug of the core, never the caller's."""


def require(ok: bool, message: str) -> None:
    if not ok:
        raise InvariantError(message)


# -- the copy -------------------------------------------------------------------------


@dataclass(slots=True)
class CgroupCopy:
    """A cgroup's counters and links, as they were."""

    id: int
    path: str
    parent: int  # -1 at root
    children: list[int]
    dying: bool
    misc: tuple[int, int, int, int, int]  # usage, peak, events, events_local, events_freed
    mem: tuple[int, int]  # usage, peak
    mem_events: tuple[list[int], list[int], list[int]]  # hierarchical, local, freed
    work_queued: bool
    cursor: int  # -1: the cursor is not the cgroup registered under its id
    procs: frozenset[int]
    nonempty_lrus: int
    lru: tuple[int, int, int]  # head, tail, size


@dataclass(slots=True)
class EnclaveCopy:
    """An enclave's page table, VA pages and backing, as they were."""

    id: int
    size_pages: int
    pages: array[int]
    types: bytes
    sparse: dict[int, int]
    sparse_keys: frozenset[int]
    secs_frame: int
    secs_child_cnt: int
    page_cnt: int
    initialized: bool
    dying: bool
    nr_swapped: int
    pcmd: dict[int, int]
    va_frames: list[int]
    va_fresh: list[int]
    va_freed: list[list[int]]
    va_used: list[int]
    va_head: int
    va_next: list[int]
    mms: list[int]
    mm_slot: dict[int, int]


@dataclass(slots=True)
class Snapshot:
    capacity_pages: int
    nr_free: int
    owner: array[int]
    index: array[int]
    cg: array[int]
    flags: bytes
    prev: array[int]
    next: array[int]
    free: array[int]
    young_more: dict[int, int]
    enclaves: list[EnclaveCopy]
    vepcs: list[tuple[int, dict[int, int], int, dict[int, int]]]  # id, page index -> frame, nr_present, charged
    cgroups: list[CgroupCopy]  # by id order: a parent before its children
    live: bytearray  # 1 for every cgroup id still registered
    nr_cgroups: int
    tasks: dict[int, int]  # pid -> cgroup id
    moved: frozenset[int]  # the tasks a cgroup.procs write placed
    work: frozenset[int]
    task_mem: dict[int, int]
    backing_owners: list[tuple[int, int]]  # (memory cgroup id, payer)
    backing_refs: list[int]
    owner_ids: dict[tuple[int, int], int]  # the registered backing owners
    free_owner_ids: list[int]


def snapshot(host: HostState) -> Snapshot:
    """The copy, with the cyclic collector paused: it would walk every new record, many times."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _copy_host(host)
    finally:
        if enabled:
            gc.enable()


def _copy_host(host: HostState) -> Snapshot:
    epc, tree = host.epc, host.tree
    live = bytearray(len(tree.by_id))
    for cg in tree.by_id:
        if cg is not None:
            live[cg.id] = 1
    return Snapshot(
        epc.capacity_pages, epc.nr_free, epc.owner[:], epc.index[:], epc.cg[:], bytes(epc.flags),
        epc.prev[:], epc.next[:], epc._free[:], dict(epc.young_more),
        [_copy_enclave(e) for e in host.enclaves.values()],
        [(v.id, dict(v.pages), v.nr_present, dict(v.charged)) for v in host.vepcs.values()],
        [_copy_cgroup(cg, tree.by_id[cg.next_cg.id] is cg.next_cg) for cg in tree.all()],
        live, tree.nr_cgroups, {pid: cg.id for pid, cg in tree.tasks.items()}, frozenset(tree.moved),
        frozenset(host.work),
        dict(host.task_mem), [(cg.id, payer) for cg, payer in host.backing_owners], host.backing_refs[:],
        {(cg.id, payer): owner_id for (cg, payer), owner_id in host.backing_owner_ids.items()},
        host.free_owner_ids[:],
    )  # fmt: skip


def _copy_enclave(e: Enclave) -> EnclaveCopy:
    return EnclaveCopy(
        e.id, e.size_pages, e.pages[:], bytes(e.types), dict(e.sparse), frozenset(e.sparse_keys), e.secs_frame,
        e.secs_child_cnt, e.page_cnt, e.initialized, e.dying, e.nr_swapped, dict(e.pcmd), e.va_frames[:],
        e.va_fresh[:], [freed[:] for freed in e.va_freed], e.va_used[:], e.va_head, e.va_next[:], e.mms[:],
        dict(e.mm_slot),
    )  # fmt: skip


def _copy_cgroup(cg: Cgroup, cursor_registered: bool) -> CgroupCopy:
    parent, lru = cg.parent, cg.lru
    return CgroupCopy(
        cg.id, cg.path, -1 if parent is None else parent.id, [c.id for c in cg.children], cg.dying,
        (cg.misc_usage, cg.misc_peak, cg.misc_events, cg.misc_events_local, cg.misc_events_freed),
        (cg.mem_usage, cg.mem_peak), (cg.mem_events[:], cg.mem_events_local[:], cg.mem_events_freed[:]),
        cg.work_queued, cg.next_cg.id if cursor_registered else -1, frozenset(cg.procs) if cg.procs else _NONE,
        cg.nonempty_lrus, (lru.head, lru.tail, lru.size),
    )  # fmt: skip


class Tally:
    """What the page walks count, for the cgroup and frame totals."""

    __slots__ = ("own", "owner_pages", "referenced")

    def __init__(self, nr_cgroup_ids: int, nr_owners: int) -> None:
        self.own = [0] * nr_cgroup_ids  # frames charged to each cgroup id
        self.owner_pages = [0] * nr_owners  # backing pages charged to each backing owner
        self.referenced = 0  # frames named by a page, SECS, VA page or guest page

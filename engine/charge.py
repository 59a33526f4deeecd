"""EPC charging and allocation (mirrors sgx_alloc_epc_page() of sgx/main.c and the charge of the
V17 epc_cgroup.c).

The kernel's split: one attempt (``__try_charge``, as __sgx_cgroup_try_charge()) returns
0 or an errno, and the loop around it (``try_charge``, as sgx_cgroup_try_charge()) holds
the policy: under NO_RECLAIM it queues the cgroup's work item and returns -EBUSY, under
DO_RECLAIM it reclaims a round from the cgroup's subtree and tries again.  Allocation
(``alloc_epc_page``) charges, then takes a free frame and wakes ksgxd when few are left;
freeing is HostState.free_epc_page().
"""

from __future__ import annotations

import errno

from engine import misc
from engine.cgroup import Cgroup
from engine.events import Enomem, KsgxdWake, LimitHit, WorkQueued
from engine.reclaim import begin_reclaim_epoch, cgroup_reclaim_pages, reclaim_stuck
from engine.sgx import DO_RECLAIM, ERESTARTSYS, Blocked, PageKind, SgxReclaim
from engine.state import HostState

EBUSY = -errno.EBUSY


def __try_charge(state: HostState, cg: Cgroup, pid: int, op: str) -> int:
    """One attempt to charge a page to ``cg``: 0 when charged; -ENOMEM when a limit (or the
    capacity) refused it and ``cg``'s subtree has nothing on its LRUs; -ERESTARTSYS when
    ``pid`` has a signal pending; else -EBUSY (reclaim may make room).  Every refused
    attempt counts a misc event and a LimitHit.  Mirrors __sgx_cgroup_try_charge().
    """
    hit = misc.try_charge(cg, state.capacity_pages)
    if hit is None:
        return 0
    state.emit(LimitHit(state.clock.now_ns(), hit.path, cg.path))
    if not cg.nonempty_lrus:
        state.emit(Enomem(state.clock.now_ns(), pid, cg.path, op))
        return -errno.ENOMEM
    if pid in state.signals:
        return -ERESTARTSYS
    return EBUSY


def try_charge(state: HostState, cg: Cgroup, mode: SgxReclaim, pid: int, op: str) -> int:
    """Charge one page to ``cg``, reclaiming from its subtree as the mode allows; returns 0,
    or -EBUSY under NO_RECLAIM (``cg``'s work item was queued, unless the host's
    ``async_reclaim`` knob is off: the caller waits for it, or for reclaim elsewhere).

    Under DO_RECLAIM a refused attempt is followed by one reclaim round of ``cg``'s
    subtree, backing paid by ``pid``, then the next attempt; so a signal is seen only by
    the attempt after a round, which counts its event first.  Raises OSError(ENOMEM)
    (nothing left on the subtree's LRUs), OSError(ERESTARTSYS), OSError(EINVAL) on a host
    without EPC, and Blocked where the kernel's loop would spin: the rounds since a page
    last moved have put back every page on the subtree's LRUs for a failed backing charge
    (reclaim_stuck()).  Mirrors sgx_cgroup_try_charge().
    """
    if not state.capacity_pages:
        raise OSError(errno.EINVAL, "this host has no EPC")  # misc_cg_try_charge(): no capacity, no event
    ret = __try_charge(state, cg, pid, op)
    if ret == EBUSY and mode == DO_RECLAIM:
        begin_reclaim_epoch(state)
        while ret == EBUSY:
            cgroup_reclaim_pages(state, cg, pid, 1, "sync")
            ret = __try_charge(state, cg, pid, op)
            if ret == EBUSY and reclaim_stuck(state, cg):
                raise Blocked(0, f"reclaim in {cg.path} cannot progress until another task exits")
    if ret == EBUSY:
        if state.async_reclaim:  # the knob off: no worker; the task re-faults until reclaim elsewhere makes room
            queue_work(state, cg)
        return EBUSY
    if ret == -errno.ENOMEM:
        raise OSError(errno.ENOMEM, _enomem_reason(state, cg))
    if ret:
        raise OSError(-ret, "interrupted by a signal")
    return 0


def _enomem_reason(state: HostState, cg: Cgroup) -> str:
    """Why a charge to ``cg`` is ENOMEM: what refused it (a limit, or the EPC's size), and that
    ``cg``'s subtree has nothing on its LRUs."""
    capacity = state.capacity_pages
    hit = misc.refused_by(cg, capacity)
    full = "the EPC is full" if hit.misc_usage >= capacity else f"{hit.path} is at its limit"
    if hit is cg:
        return f"{full} with nothing left to reclaim"
    return f"{full} and {cg.path} has nothing on its LRUs to reclaim"


def alloc_epc_page(
    state: HostState, cg: Cgroup, kind: PageKind, owner: int, index: int, mode: SgxReclaim, pid: int, op: str
) -> int:
    """Charge ``cg`` (the task's misc cgroup) and take a free frame.

    Returns the frame, or -EBUSY under NO_RECLAIM when the charge must wait for reclaim
    (never under DO_RECLAIM).  The charge at root bounds usage by the capacity, and every
    used frame is charged, so a successful charge always finds a free frame: the kernel's
    global-reclaim loop here only covers races that this model has none of.  Wakes ksgxd
    when fewer than SGX_NR_LOW_PAGES (the host's ``low_pages``) frames are left.  Raises as
    try_charge().  Mirrors
    sgx_alloc_epc_page().
    """
    ret = try_charge(state, cg, mode, pid, op)
    if ret:
        return ret
    epc = state.epc
    try:
        frame = epc.take(kind, owner, index, cg.id)
    except BaseException:
        misc.uncharge(cg)  # charged, no frame: nothing may stay charged
        raise
    if epc.nr_free < state.low_pages and not state.ksgxd_woken and state.tree.root.nonempty_lrus:
        wake_ksgxd(state, epc.nr_free)
    return frame


def alloc_epc_run(state: HostState, cg: Cgroup, kind: PageKind, owner: int, first_index: int, count: int) -> list[int]:
    """Up to ``count`` pages allocated at once, as many as ``cg`` has room for without reclaim.

    No kernel counterpart: N of sgx_alloc_epc_page() that misc.room() said fit, with the
    same charges, watermarks and ksgxd wake-up as that many calls whose pages each go on
    the LRU before the next is allocated; nothing at all when there is no room (or the
    host's fast paths are off: the caller then takes the one-page path, which reclaims).
    An error taking the frames leaves nothing charged.
    """
    if not state.fast_paths:
        return []
    count = min(count, misc.room(cg, state.capacity_pages))
    if count <= 0:
        return []
    misc.charge(cg, count)
    epc = state.epc
    free_before = epc.nr_free
    lru_had_pages = bool(state.tree.root.nonempty_lrus)
    try:
        frames = epc.take_run(kind, owner, first_index, cg.id, count)
    except BaseException:
        misc.uncharge(cg, count)
        raise
    if epc.nr_free < state.low_pages and not state.ksgxd_woken:
        # page j leaves free_before - j - 1 frames; it wakes ksgxd if that is below the
        # watermark and something was reclaimable (the run's own earlier pages count)
        j = max(free_before - state.low_pages, 0 if lru_had_pages else 1)
        if j < count:
            wake_ksgxd(state, free_before - j - 1)
    return frames


def wake_ksgxd(state: HostState, free_pages: int) -> None:
    """ksgxd is woken with ``free_pages`` frames left.  Mirrors wake_up(&ksgxd_waitq) in sgx_alloc_epc_page()."""
    state.ksgxd_woken = True
    state.emit(KsgxdWake(state.clock.now_ns(), free_pages))


def queue_work(state: HostState, cg: Cgroup) -> None:
    """Queue ``cg``'s reclaim work item on sgx_cg_wq; re-queueing a pending item does nothing.

    Mirrors queue_work(sgx_cg_wq, &sgx_cg->reclaim_work).
    """
    if not cg.work_queued:
        cg.work_queued = True
        state.work[cg.id] = None
        state.emit(WorkQueued(state.clock.now_ns(), cg.path))

"""The async reclaim work: the cgroup work items of sgx_cg_wq and ksgxd (mirrors ksgxd() of
sgx/main.c and sgx_cgroup_reclaim_work_func() of the V17 epc_cgroup.c).

Nothing here runs by itself: the driver calls run_work_step() when it lets the workers
run (the engine, a slice at a time; the in-process core, inline after a fault's EBUSY).
The work item in flight is HostState.work_in_flight (a WorkState).
"""

from __future__ import annotations

from engine.events import WorkRun
from engine.reclaim import (
    begin_reclaim_epoch,
    cgroup_reclaim_pages,
    reclaim_stuck,
    should_reclaim,
    should_reclaim_global,
)
from engine.state import HostState, WorkState


def run_work_step(state: HostState) -> bool:
    """Run the async work in flight until one reclaim round moves a page; returns False when idle.

    Work items run in queue order, each ``while should_reclaim(cg)`` (the cgroup worker,
    Mirrors sgx_cgroup_reclaim_work_func()), then ksgxd while free frames are below
    SGX_NR_HIGH_PAGES (Mirrors ksgxd()); a round is sgx_cgroup_reclaim_pages() of
    SGX_NR_TO_SCAN, backing paid by each enclave's first live mm (each constant is the
    host's knob: HostState's ``high_pages``, ``nr_to_scan``...).  A round whose pages all
    failed their backing charge is followed by the next one in the same step, so later
    rounds reach other pages (of enclaves whose backing another memory cgroup pays for).
    The worker stops when its condition no longer holds, or where the kernel's would spin:
    the rounds since a page last moved have put back every page on the LRUs of its subtree
    for a failed backing charge, each LRU tried through (reclaim_stuck()).  The next EBUSY
    queues a stopped work item again; the next allocation below SGX_NR_LOW_PAGES wakes ksgxd.
    """
    work = state.work_in_flight
    if work is None:
        if state.work:
            cg_id = next(iter(state.work))
            del state.work[cg_id]
            queued = state.tree.by_id[cg_id]
            if queued is None:
                return True
            queued.work_queued = False
            work = state.work_in_flight = WorkState(queued)
        elif state.ksgxd_woken:
            work = state.work_in_flight = WorkState(None)
        else:
            return False
    cg = work.cg
    root = state.tree.root if cg is None else cg
    context = "ksgxd" if cg is None else "async"
    if cg is None:
        due = should_reclaim_global(state, state.high_pages)
    else:
        due = should_reclaim(cg, state.cg_margin, state.cg_low_limit)
    stuck = False
    if due:
        progress, written = state.progress, state.pages_reclaimed
        begin_reclaim_epoch(state)
        while True:
            cgroup_reclaim_pages(state, root, None, state.nr_to_scan, context)
            work.batches += 1
            if state.progress != progress:
                break
            if reclaim_stuck(state, root):
                stuck = True
                break
        work.written += state.pages_reclaimed - written
    if not due or stuck:
        state.work_in_flight = None
        if cg is None:
            state.ksgxd_woken = False
        state.emit(WorkRun(state.clock.now_ns(), "ksgxd" if cg is None else cg.path, work.batches, work.written))
    return True


def run_pending_work(state: HostState) -> int:
    """Run queued cgroup work items and ksgxd until idle; returns the batches run.

    No kernel counterpart: the in-process driver's way of letting the workers run.
    """
    steps = 0
    while run_work_step(state):
        steps += 1
    return steps

"""EPC allocation, charging and reclaim (mirrors sgx/main.c and the V17 epc_cgroup.c).

The layering is the kernel's: a misc charge (sgx_cgroup_try_charge) before every
allocation (sgx_alloc_epc_page); when the charge fails, synchronous reclaim of the
requesting cgroup's subtree (DO_RECLAIM), or a queued async work item (NO_RECLAIM);
one reclaim batch (sgx_reclaim_pages) isolates up to 16 pages from one LRU head, ages
them, allocates backing and writes them out; ksgxd keeps the whole EPC above its
watermarks.  Functions take the Host whose state they work on.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from typing import TYPE_CHECKING

from engine import memcg, misc
from engine.cgroup import MEMCG_OOM, MEMCG_OOM_KILL, Cgroup, next_get
from engine.enclave import (
    OWNER_BITS,
    OWNER_MASK,
    PCMD_SHIFT,
    PCMD_USERS_BITS,
    PCMD_USERS_MASK,
    SWAPPED,
    Enclave,
    swap_entry,
)
from engine.epc import ONE_MM_YOUNG, YOUNG, reclaimer_age
from engine.events import Enomem, KsgxdWake, LimitHit, OomKill, ReclaimBatch, SecsWriteBack, WorkQueued, WorkRun
from engine.sgx import (
    ERESTARTSYS,
    NO_RECLAIM,
    SGX_CG_LOW_LIMIT,
    SGX_CG_MIN_FREE_PAGE,
    SGX_NR_HIGH_PAGES,
    SGX_NR_LOW_PAGES,
    SGX_NR_TO_SCAN,
    Blocked,
    PageKind,
    SgxReclaim,
)

if TYPE_CHECKING:
    from engine.host import Host


# -- charge and allocation ----------------------------------------------------


def charge_once(host: Host, cg: Cgroup, pid: int, op: str) -> bool:
    """One attempt to charge a page to ``cg``: True when charged, False when a limit (or the
    capacity) refused it and ``cg``'s subtree has pages on its LRUs (the kernel's -EBUSY).

    Raises OSError(ENOMEM) when that subtree has nothing on its LRUs, OSError(ERESTARTSYS)
    when ``pid`` has a signal pending.  Every refused attempt counts a misc event.
    Mirrors __sgx_cgroup_try_charge().
    """
    hit = misc.try_charge(cg, host.capacity_pages)
    if hit is None:
        return True
    _refused(host, hit, cg, pid, op)
    return False


def _refused(host: Host, hit: Cgroup, cg: Cgroup, pid: int, op: str) -> None:
    """The rest of charge_once() once ``hit``'s limit refused the charge: ENOMEM, ERESTARTSYS or nothing (EBUSY)."""
    host.emit(LimitHit(host.clock.now_ns(), hit.path, cg.path))
    if not cg.nonempty_lrus:
        host.emit(Enomem(host.clock.now_ns(), pid, cg.path, op))
        raise OSError(errno.ENOMEM, _enomem_reason(hit, cg, host.capacity_pages))
    if pid in host.signals:
        raise OSError(ERESTARTSYS, "interrupted by a signal")


def try_charge(host: Host, cg: Cgroup, mode: SgxReclaim, pid: int, op: str) -> None:
    """Charge one page to ``cg``, reclaiming from its subtree as the mode allows.

    The kernel's loop: an attempt (charge_once()); under NO_RECLAIM a refused one queues
    ``cg``'s work item and raises OSError(EBUSY); under DO_RECLAIM one reclaim round of
    ``cg``'s subtree, backing paid by ``pid``, then the next attempt.  So a signal is seen
    only by the attempt after a round, which counts its event first.  Raises as
    charge_once() (ENOMEM, ERESTARTSYS), OSError(EINVAL) on a host without EPC, and Blocked
    where the kernel's loop would spin: the rounds since a page last moved have put back
    every page on the subtree's LRUs for a failed backing charge (reclaim_stuck()).
    Mirrors sgx_cgroup_try_charge().
    """
    capacity = host.capacity_pages
    if not capacity:
        raise OSError(errno.EINVAL, "this host has no EPC")  # misc_cg_try_charge(): no capacity, no event
    hit = misc.try_charge(cg, capacity)  # the first charge_once(), its common case inline
    if hit is None:
        return
    _refused(host, hit, cg, pid, op)
    if mode == NO_RECLAIM:
        queue_work(host, cg)
        raise OSError(errno.EBUSY, f"{cg.path} is at its limit; reclaim queued")
    begin_reclaim_epoch(host)
    while True:
        cgroup_reclaim_pages(host, cg, pid, 1, "sync")
        if charge_once(host, cg, pid, op):
            return
        if reclaim_stuck(host, cg):
            raise Blocked(0, f"reclaim in {cg.path} cannot progress until another task exits")


def _enomem_reason(hit: Cgroup, cg: Cgroup, capacity: int) -> str:
    """Why a charge to ``cg`` is ENOMEM: what refused it (``hit``'s limit, or the EPC's size), and that
    ``cg``'s subtree has nothing on its LRUs."""
    full = "the EPC is full" if hit.misc_usage >= capacity else f"{hit.path} is at its limit"
    if hit is cg:
        return f"{full} with nothing left to reclaim"
    return f"{full} and {cg.path} has nothing on its LRUs to reclaim"


def alloc_epc_page(
    host: Host, cg: Cgroup, kind: PageKind, owner: int, index: int, mode: SgxReclaim, pid: int, op: str
) -> int:
    """Charge ``cg`` (the task's misc cgroup) and take a free frame; returns the frame.

    The charge at root bounds usage by the capacity, and every used frame is charged,
    so a successful charge always finds a free frame: the kernel's global-reclaim loop
    here only covers races that this model has none of.  Wakes ksgxd when fewer than
    SGX_NR_LOW_PAGES frames are left.  Errors as try_charge().  Mirrors sgx_alloc_epc_page().
    """
    try_charge(host, cg, mode, pid, op)
    epc = host.epc
    try:
        frame = epc.take(kind, owner, index, cg.id)
    except BaseException:
        misc.uncharge(cg)  # charged, no frame: nothing may stay charged
        raise
    if epc.nr_free < SGX_NR_LOW_PAGES and not host.ksgxd_woken and host.tree.root.nonempty_lrus:
        wake_ksgxd(host, epc.nr_free)
    return frame


def alloc_epc_run(host: Host, cg: Cgroup, kind: PageKind, owner: int, first_index: int, count: int) -> list[int]:
    """Up to ``count`` pages allocated at once, as many as ``cg`` has room for without reclaim.

    The same charges, watermarks and ksgxd wake-up as that many alloc_epc_page() calls
    whose pages each go on the LRU before the next is allocated; nothing at all when
    there is no room (the caller then takes the one-page path, which reclaims).  An error
    taking the frames leaves nothing charged.
    """
    count = min(count, misc.room(cg, host.capacity_pages))
    if count <= 0:
        return []
    misc.charge(cg, count)
    epc = host.epc
    free_before = epc.nr_free
    lru_had_pages = bool(host.tree.root.nonempty_lrus)
    try:
        frames = epc.take_run(kind, owner, first_index, cg.id, count)
    except BaseException:
        misc.uncharge(cg, count)
        raise
    if epc.nr_free < SGX_NR_LOW_PAGES and not host.ksgxd_woken:
        # page j leaves free_before - j - 1 frames; it wakes ksgxd if that is below the
        # watermark and something was reclaimable (the run's own earlier pages count)
        j = max(free_before - SGX_NR_LOW_PAGES, 0 if lru_had_pages else 1)
        if j < count:
            wake_ksgxd(host, free_before - j - 1)
    return frames


def wake_ksgxd(host: Host, free_pages: int) -> None:
    """ksgxd is woken with ``free_pages`` frames left.  Mirrors wake_up(&ksgxd_waitq) in sgx_alloc_epc_page()."""
    host.ksgxd_woken = True
    host.emit(KsgxdWake(host.clock.now_ns(), free_pages))


def free_epc_page(host: Host, frame: int) -> None:
    """Uncharge the frame's cgroup and free the frame (off any LRU already).  Mirrors sgx_free_epc_page()."""
    cg = host.tree.by_id[host.epc.cg[frame]]
    assert cg is not None
    misc.uncharge(cg)
    host.epc.put(frame)
    if cg.dying:
        host.release_dying(cg)


def free_epc_run(host: Host, cg: Cgroup, frames: list[int]) -> None:
    """free_epc_page() for frames (off every LRU) that alloc_epc_run() took for ``cg``."""
    host.epc.put_many(frames)
    misc.uncharge(cg, len(frames))
    if cg.dying:
        host.release_dying(cg)


def should_reclaim(cg: Cgroup) -> bool:
    """Whether ``cg``'s usage is within SGX_CG_MIN_FREE_PAGE of its effective limit.

    Mirrors sgx_cgroup_should_reclaim().
    """
    if not cg.nonempty_lrus:
        return False
    limit = cg.misc_max_pages
    level = cg.parent
    while level is not None:
        if level.misc_max_pages < limit:
            limit = level.misc_max_pages
        level = level.parent
    if limit > SGX_CG_LOW_LIMIT:
        limit -= SGX_CG_MIN_FREE_PAGE
    return cg.misc_usage >= limit


def queue_work(host: Host, cg: Cgroup) -> None:
    """Queue ``cg``'s reclaim work item on sgx_cg_wq; re-queueing a pending item does nothing.

    Mirrors queue_work(sgx_cg_wq, &sgx_cg->reclaim_work).
    """
    if not cg.work_queued:
        cg.work_queued = True
        host.work[cg.id] = None
        host.emit(WorkQueued(host.clock.now_ns(), cg.path))


# -- reclaim ------------------------------------------------------------------


def cgroup_reclaim_pages(host: Host, root: Cgroup, charge_pid: int | None, nr_to_scan: int, context: str) -> int:
    """Reclaim batches from ``root``'s subtree, one LRU per turn of its fair cursor.

    Returns the pages scanned, at least ``nr_to_scan`` unless the subtree's LRUs run
    dry.  Mirrors sgx_cgroup_reclaim_pages().
    """
    scanned = 0
    while root.nonempty_lrus and scanned < nr_to_scan:
        scanned += reclaim_pages(host, next_get(root), charge_pid, context)
    return scanned


def reclaim_pages(host: Host, cg: Cgroup, charge_pid: int | None, context: str) -> int:
    """One reclaim batch on ``cg``'s LRU; returns the pages isolated (not counting dropped ones).

    Isolate up to SGX_NR_TO_SCAN from the head (pages of dying enclaves are dropped),
    rotate young pages to the tail clearing their accessed bit, allocate backing (a
    page that gets none goes back to the tail), then EWB the rest into VA slots and
    free them.  ``charge_pid`` picks the memory cgroup that pays for backing; None
    means the enclave's first live mm.  Mirrors sgx_reclaim_pages().

    Backing is charged page by page as the kernel does, but a run of pages that fits
    under every memory.max is charged at once (the same counters, no events).
    """
    epc = host.epc
    flags, owner, page_index = epc.flags, epc.owner, epc.index
    enclaves = host.enclaves
    scanned = epc.lru_isolate(cg.lru, SGX_NR_TO_SCAN)
    if not scanned:
        return 0
    dropped = young = backing_failed = 0
    skipped: list[int] = []  # back to the LRU tail, in scan order
    writes: list[int] = []  # frames to write out, and who pays for each one's backing
    owners: list[int] = []
    backing = _BackingRun(host)
    encl_id = -1
    for frame in scanned:
        if owner[frame] != encl_id:  # a batch mostly holds one enclave's pages
            encl_id = owner[frame]
            encl = enclaves[encl_id]
            payer = charge_pid if charge_pid is not None else (encl.mms[0] if encl.mms else 0)
            pcmds = encl.pcmd
        if encl.dying:
            dropped += 1  # the owner is freeing it: off the list, not counted
            continue
        young_bits = flags[frame] & YOUNG
        if young_bits:  # young in some mm: sgx_reclaimer_age() clears the first one's bit
            if young_bits in ONE_MM_YOUNG:
                flags[frame] ^= young_bits  # in one mm only: the walk stops at it
            else:
                reclaimer_age(epc, frame, encl.mm_slots())
            skipped.append(frame)
            young += 1
            continue
        index = page_index[frame]
        if payer == backing.payer and backing.room >= 2 and index >> PCMD_SHIFT in pcmds:  # the common case
            backing.room -= 1
            backing.pending += 1
            writes.append(frame)
            owners.append(backing.owner_id)
            continue
        owner_id = backing.alloc(encl, index, payer)
        if owner_id < 0:
            skipped.append(frame)
            backing_failed += 1
            continue
        writes.append(frame)
        owners.append(owner_id)
    backing.flush()
    epc.lru_add_tail_many(cg.lru, skipped)
    written = len(writes)
    start = 0
    while start < written:  # EWB each into a VA slot (sgx_reclaimer_write()), a run of one enclave at once
        encl_id = owner[writes[start]]
        end = start + 1
        while end < written and owner[writes[end]] == encl_id:
            end += 1
        encl = enclaves[encl_id]
        pages, pcmd = encl if encl.sparse else encl.pages, encl.pcmd  # the prefix alone, mostly
        run = writes[start:end]
        for frame, owner_id, slot_id in zip(run, owners[start:end], encl.va_alloc_slots(end - start), strict=True):
            index = page_index[frame]
            pages[index] = SWAPPED - (slot_id << OWNER_BITS | owner_id)
            pcmd[index >> PCMD_SHIFT] += 1
        encl.nr_swapped += end - start
        encl.secs_child_cnt -= end - start
        if encl.secs_child_cnt == 0 and encl.initialized:  # only the run's last page can leave it at 0
            write_back_secs(host, encl, owners[end - 1])
        start = end
    if written:
        epc.put_many(writes)
        misc.uncharge(cg, written)  # every page on cg's LRU is charged to cg
        if cg.dying:
            host.release_dying(cg)
    backing.put()
    isolated = len(scanned) - dropped
    moved = written + young + dropped
    if moved:
        host.progress += moved
        begin_reclaim_epoch(host)
    else:  # every page isolated went back for a failed backing charge
        _note_failed(host, cg, backing_failed)
    host.pages_reclaimed += written
    host.emit(ReclaimBatch(host.clock.now_ns(), cg.path, context, isolated, young, backing_failed, written))
    return isolated


def begin_reclaim_epoch(host: Host) -> None:
    """Forget which LRUs were tried through: a reclaim loop starts, or a batch moved a page."""
    tree = host.tree
    tree.reclaim_epoch += 1
    tree.stuck_lrus = 0


def _note_failed(host: Host, cg: Cgroup, pages: int) -> None:
    """A batch on ``cg``'s LRU moved nothing: its ``pages`` went back to the tail, backing refused."""
    tree = host.tree
    before = cg.failed_pages if cg.failed_epoch == tree.reclaim_epoch else 0
    cg.failed_epoch = tree.reclaim_epoch
    cg.failed_pages = before + pages
    if before < cg.lru.size <= before + pages:
        tree.stuck_lrus += 1


def reclaim_stuck(host: Host, root: Cgroup) -> bool:
    """Whether reclaim of ``root``'s subtree can move nothing more: since the reclaim epoch
    began, every LRU of the subtree that holds pages (dying cgroups' included) has had as
    many pages put back for a failed backing charge as it holds, so each of its pages was
    tried once and failed (a failed page goes back to the tail, and nothing else changed
    the LRUs or the memory cgroups since).  The kernel's loop would spin from here on.

    Only the reclaim loop that began the epoch may ask: it visits nothing outside the subtree.
    """
    return host.tree.stuck_lrus >= root.nonempty_lrus


class _BackingRun:
    """Backing charges of one batch: pages that fit are charged together when the payer changes."""

    __slots__ = ("host", "memcg_cg", "payer", "owner_id", "room", "pending")

    def __init__(self, host: Host) -> None:
        self.host = host
        self.memcg_cg = host.tree.root
        self.payer = -1
        self.owner_id = -1
        self.room = 0
        self.pending = 0

    def alloc(self, encl: Enclave, index: int, payer: int) -> int:
        """Charge page ``index``'s backing (and a new PCMD page) for ``payer``.

        Returns the backing owner id, or -1 when memory.max refused (or no owner id is left).
        """
        if payer != self.payer:
            self.put()
            tree = self.host.tree
            self.memcg_cg = tree.task_cgroup(payer).memory_css() if payer else tree.root
            self.payer = payer
            self.owner_id = self.host.backing_owner_id(self.memcg_cg, payer)
            self.room = memcg.room(self.memcg_cg) if self.owner_id >= 0 else 0
        if self.owner_id < 0:
            return -1
        pcmd_no = index >> PCMD_SHIFT
        new_pcmd = pcmd_no not in encl.pcmd
        need = 2 if new_pcmd else 1
        if need <= self.room:
            self.room -= need
            self.pending += need
            if new_pcmd:
                encl.pcmd[pcmd_no] = self.owner_id << PCMD_USERS_BITS
            return self.owner_id
        self.flush()
        ok = alloc_backing(self.host, encl, index, self.owner_id)
        self.room = memcg.room(self.memcg_cg)
        return self.owner_id if ok else -1

    def put(self) -> None:
        """Charge what is pending, and let go of the owner id if nothing is charged under it."""
        self.flush()
        self.host.backing_owner_put(self.owner_id)

    def flush(self) -> None:
        pending = self.pending
        if pending:
            self.host.backing_refs[self.owner_id] += pending
            memcg.charge(self.memcg_cg, pending)
            if self.payer:
                task_mem = self.host.task_mem
                task_mem[self.payer] = task_mem.get(self.payer, 0) + pending
            self.pending = 0


def write_back_secs(host: Host, encl: Enclave, owner_id: int) -> None:
    """The last resident child of an initialised enclave was written out: EWB the SECS too,
    its backing charged like the child's, and free it (it stays if it gets no backing).
    Mirrors the SECS branch of sgx_reclaimer_write().
    """
    index = encl.secs_index
    if not alloc_backing(host, encl, index, owner_id):
        return
    secs = encl.secs_frame
    encl.secs_frame = swap_entry(encl.va_alloc_slot(), owner_id)
    encl.pcmd[index >> PCMD_SHIFT] += 1
    encl.nr_swapped += 1
    host.emit(SecsWriteBack(host.clock.now_ns(), encl.id, host.backing_owners[owner_id][0].path))
    free_epc_page(host, secs)


def alloc_backing(host: Host, encl: Enclave, index: int, owner_id: int) -> bool:
    """Charge the backing page of ``index`` (and its PCMD page, if new) to backing owner ``owner_id``.

    False when memory.max refused (the OOM killer ran).  Mirrors sgx_encl_alloc_backing()
    with the V17 memcg choice made by the caller.
    """
    memcg_cg, payer = host.backing_owners[owner_id]
    pcmd_no = index >> PCMD_SHIFT
    new_pcmd = pcmd_no not in encl.pcmd
    pages = 2 if new_pcmd else 1
    over = memcg.try_charge(memcg_cg, pages)
    if over is not None:
        oom(host, over)
        return False
    if new_pcmd:
        encl.pcmd[pcmd_no] = owner_id << PCMD_USERS_BITS
    host.backing_refs[owner_id] += pages
    if payer:
        task_mem = host.task_mem
        task_mem[payer] = task_mem.get(payer, 0) + pages
    return True


def free_backing_page(host: Host, encl: Enclave, index: int, entry: int) -> int:
    """Drop the backing of page ``index`` (swap ``entry``), and its PCMD page when that
    empties; returns the VA slot id the page held.  Used by ELDU (truncate after the
    load) and by release.  Mirrors sgx_encl_truncate_backing_page() and the PCMD
    truncation of __sgx_encl_eldu().
    """
    return free_backing_run(host, encl, index, [entry])[0]


def free_backing_run(host: Host, encl: Enclave, first_index: int, entries: Sequence[int]) -> list[int]:
    """free_backing_page() for pages first_index.. at once; returns their VA slot ids.

    The memory cgroup uncharges are summed per backing owner first: the same counts.
    """
    slot_ids: list[int] = []
    uncharges: dict[int, int] = {}
    pcmd = encl.pcmd
    for index, entry in enumerate(entries, first_index):
        payload = SWAPPED - entry
        slot_ids.append(payload >> OWNER_BITS)
        owner_id = payload & OWNER_MASK
        uncharges[owner_id] = uncharges.get(owner_id, 0) + 1
        pcmd_no = index >> PCMD_SHIFT
        value = pcmd[pcmd_no] - 1
        if value & PCMD_USERS_MASK:
            pcmd[pcmd_no] = value
        else:  # its last entry: the PCMD page goes too
            del pcmd[pcmd_no]
            owner_id = value >> PCMD_USERS_BITS
            uncharges[owner_id] = uncharges.get(owner_id, 0) + 1
    encl.nr_swapped -= len(entries)
    for owner_id, pages in uncharges.items():
        _uncharge_backing(host, owner_id, pages)
    return slot_ids


def _uncharge_backing(host: Host, owner_id: int, pages: int) -> None:
    cg, payer = host.backing_owners[owner_id]
    memcg.uncharge(cg, pages)
    host.backing_refs[owner_id] -= pages
    if not host.backing_refs[owner_id]:
        host.backing_owner_put(owner_id)
    task_mem = host.task_mem
    if payer in task_mem:
        left = task_mem[payer] - pages
        if left:
            task_mem[payer] = left
        else:
            del task_mem[payer]
    if cg.dying:
        host.release_dying(cg)


def oom(host: Host, memcg_cg: Cgroup) -> None:
    """The memory cgroup is full: kill the task in its subtree holding the most backing
    (the highest pid among equals).

    No new victim while an earlier one in the subtree is still exiting.  The victim
    gets a fatal signal (SIGKILL) that the driver must deliver.  Mirrors
    mem_cgroup_out_of_memory() as far as this host's memory goes.
    """
    memcg.memory_event(memcg_cg, MEMCG_OOM)
    placed = host.tree.tasks
    for pid in host.oom_victims:  # few, and asked first: a reclaim that spins asks for every page
        cg = placed.get(pid)
        while cg is not None and cg is not memcg_cg:
            cg = cg.parent
        if cg is not None:
            return
    tasks = [pid for cg in memcg_cg.walk() for pid in cg.procs]
    if not tasks:
        return  # "Out of memory and no killable processes": the charge just fails
    pages, victim = max((host.task_mem.get(pid, 0), pid) for pid in tasks)
    host.signals.add(victim)
    host.oom_victims.add(victim)
    memcg.memory_event(host.tree.task_cgroup(victim).memory_css(), MEMCG_OOM_KILL)
    host.emit(OomKill(host.clock.now_ns(), memcg_cg.path, victim, pages * 4096))


def reclaim_direct(host: Host, pid: int) -> None:
    """Make room before an EDMM page step, charging backing to ``pid``.  Mirrors sgx_reclaim_direct()."""
    cg = host.tree.task_cgroup(pid).misc_css()
    if should_reclaim(cg):
        cgroup_reclaim_pages(host, cg, pid, SGX_NR_TO_SCAN, "direct")
    if should_reclaim_global(host, SGX_NR_LOW_PAGES):
        cgroup_reclaim_pages(host, host.tree.root, pid, SGX_NR_TO_SCAN, "global")


def should_reclaim_global(host: Host, nr_free: int) -> bool:
    """Mirrors sgx_should_reclaim_global(): few free frames and something reclaimable."""
    return host.epc.nr_free < nr_free and bool(host.tree.root.nonempty_lrus)


# -- async work and ksgxd -----------------------------------------------------


class WorkState:
    """Progress of the work item (or ksgxd run) in flight, for its WorkRun event."""

    __slots__ = ("cg", "batches", "written")

    def __init__(self, cg: Cgroup | None) -> None:
        self.cg = cg
        self.batches = 0
        self.written = 0


def run_work_step(host: Host) -> bool:
    """Run the async work in flight until one reclaim round moves a page; returns False when idle.

    Work items run in queue order, each ``while should_reclaim(cg)`` (the cgroup worker,
    Mirrors sgx_cgroup_reclaim_work_func()), then ksgxd while free frames are below
    SGX_NR_HIGH_PAGES (Mirrors ksgxd()); a round is sgx_cgroup_reclaim_pages() of
    SGX_NR_TO_SCAN, backing paid by each enclave's first live mm.  A round whose pages all
    failed their backing charge is followed by the next one in the same step, so later
    rounds reach other pages (of enclaves whose backing another memory cgroup pays for).
    The worker stops when its condition no longer holds, or where the kernel's would spin:
    the rounds since a page last moved have put back every page on the LRUs of its subtree
    for a failed backing charge, each LRU tried through (reclaim_stuck()).  The next EBUSY
    queues a stopped work item again; the next allocation below SGX_NR_LOW_PAGES wakes ksgxd.
    """
    state = host.work_in_flight
    if state is None:
        if host.work:
            cg_id = next(iter(host.work))
            del host.work[cg_id]
            cg = host.tree.by_id[cg_id]
            if cg is None:
                return True
            cg.work_queued = False
            state = host.work_in_flight = WorkState(cg)
        elif host.ksgxd_woken:
            state = host.work_in_flight = WorkState(None)
        else:
            return False
    cg = state.cg
    root = host.tree.root if cg is None else cg
    context = "ksgxd" if cg is None else "async"
    due = should_reclaim_global(host, SGX_NR_HIGH_PAGES) if cg is None else should_reclaim(cg)
    stuck = False
    if due:
        progress, written = host.progress, host.pages_reclaimed
        begin_reclaim_epoch(host)
        while True:
            cgroup_reclaim_pages(host, root, None, SGX_NR_TO_SCAN, context)
            state.batches += 1
            if host.progress != progress:
                break
            if reclaim_stuck(host, root):
                stuck = True
                break
        state.written += host.pages_reclaimed - written
    if not due or stuck:
        host.work_in_flight = None
        if cg is None:
            host.ksgxd_woken = False
        host.emit(WorkRun(host.clock.now_ns(), "ksgxd" if cg is None else cg.path, state.batches, state.written))
    return True

"""EPC reclaim (mirrors sgx_reclaim_pages() of sgx/main.c and the reclaim walk of the V17 epc_cgroup.c).

One batch takes up to SGX_NR_TO_SCAN pages from the head of one cgroup's LRU and goes
through the kernel's phases: isolate them; age each (a young page goes back to the tail)
and get its backing (a page that gets none goes back too); EBLOCK (nothing to emulate);
write the rest out with EWB into VA slots and free their frames.  A reclaim walk visits
a subtree's LRUs one batch at a time with its fair cursor.  Functions take the HostState
they work on.
"""

from __future__ import annotations

from common.costs import OP_BATCH, OP_ETRACK, OP_EWB
from engine.backing import OWNER_BITS, PCMD_SHIFT, BackingRun, alloc_backing, swap_entry
from engine.cgroup import Cgroup, next_get
from engine.enclave import SWAPPED, Enclave
from engine.epc import ONE_MM_YOUNG, YOUNG, reclaimer_age
from engine.events import ReclaimBatch, SecsWriteBack
from engine.sgx import SGX_CG_LOW_LIMIT, SGX_CG_MIN_FREE_PAGE
from engine.state import HostState


def cgroup_reclaim_pages(state: HostState, root: Cgroup, charge_pid: int | None, nr_to_scan: int, context: str) -> int:
    """Reclaim batches from ``root``'s subtree, one LRU per turn of its fair cursor.

    Returns the pages scanned, at least ``nr_to_scan`` unless the subtree's LRUs run
    dry.  Mirrors sgx_cgroup_reclaim_pages().
    """
    scanned = 0
    while root.nonempty_lrus and scanned < nr_to_scan:
        scanned += reclaim_pages(state, next_get(root), charge_pid, context, root, nr_to_scan - scanned)
    return scanned


class _Batch:
    """What one reclaim batch decided for the pages it isolated."""

    __slots__ = ("dropped", "young", "backing_failed", "skipped", "writes", "owners")

    def __init__(self) -> None:
        self.dropped = 0  # pages of dying enclaves: off the list, not counted
        self.young = 0
        self.backing_failed = 0
        self.skipped: list[int] = []  # back to the LRU tail, in scan order
        self.writes: list[int] = []  # frames to write out, and who pays for each one's backing
        self.owners: list[int] = []


def reclaim_pages(
    state: HostState,
    cg: Cgroup,
    charge_pid: int | None,
    context: str,
    root: Cgroup | None = None,
    to_scan: int | None = None,
) -> int:
    """One reclaim batch on ``cg``'s LRU; returns the pages isolated (not counting dropped ones).

    Isolate up to SGX_NR_TO_SCAN (the host's ``nr_to_scan``) from the head; age them and
    get backing for the old ones (_age_and_get_backing()); write those out (_write_pages()).  ``charge_pid`` picks the
    memory cgroup that pays for backing; None means the enclave's first live mm.  ``root``
    (``cg`` itself when None) and ``to_scan``, the pages its walk still has to scan, only
    go into the ReclaimBatch event (None: one batch's worth).  Mirrors sgx_reclaim_pages().
    """
    scanned = state.epc.lru_isolate(cg.lru, state.nr_to_scan)
    if not scanned:
        return 0
    state.ops[OP_BATCH] += 1
    batch = _age_and_get_backing(state, scanned, charge_pid)
    state.epc.lru_add_tail_many(cg.lru, batch.skipped)
    written = _write_pages(state, cg, batch.writes, batch.owners)
    isolated = len(scanned) - batch.dropped
    moved = written + batch.young + batch.dropped
    if moved:
        state.progress += moved
        begin_reclaim_epoch(state)
    else:  # every page isolated went back for a failed backing charge
        _note_failed(state, cg, batch.backing_failed)
    state.pages_reclaimed += written
    cg.reclaimed += written
    walk = cg if root is None else root
    if to_scan is None:
        to_scan = state.nr_to_scan
    stop = "lru_empty" if not walk.nonempty_lrus else "nr_to_scan" if isolated >= to_scan else ""
    now, young, failed, cursor = state.clock.now_ns(), batch.young, batch.backing_failed, walk.next_cg.path
    state.emit(ReclaimBatch(now, cg.path, context, isolated, young, failed, written, walk.path, cursor, stop))
    return isolated


def _age_and_get_backing(state: HostState, scanned: list[int], charge_pid: int | None) -> _Batch:
    """Mirrors the second loop of sgx_reclaim_pages(): a page of a dying enclave is dropped; a young one
    loses the accessed bit of the first mm it is young in (sgx_reclaimer_age()) and goes back
    to the tail; an old one gets its backing charged (sgx_encl_alloc_backing()), or goes back
    to the tail when that fails.

    Backing is charged page by page as the kernel does, but a run that fits under every
    memory.max is charged at once (BackingRun; its common case inlined here for speed).
    """
    epc, enclaves = state.epc, state.enclaves
    flags, owner, page_index = epc.flags, epc.owner, epc.index
    batch = _Batch()
    skipped, writes, owners = batch.skipped, batch.writes, batch.owners
    backing = BackingRun(state)
    encl_id = -1
    for frame in scanned:
        if owner[frame] != encl_id:  # a batch mostly holds one enclave's pages
            encl_id = owner[frame]
            encl = enclaves[encl_id]
            payer = charge_pid if charge_pid is not None else (encl.mms[0] if encl.mms else 0)
            pcmds = encl.pcmd
        if encl.dying:
            batch.dropped += 1
            continue
        young_bits = flags[frame] & YOUNG
        if young_bits:  # young in some mm: sgx_reclaimer_age() clears the first one's bit
            if young_bits in ONE_MM_YOUNG:
                flags[frame] ^= young_bits  # in one mm only: the walk stops at it
            else:
                reclaimer_age(epc, frame, encl.mm_slots())
            skipped.append(frame)
            batch.young += 1
            continue
        index = page_index[frame]
        if payer == backing.payer and backing.room >= 2 and index >> PCMD_SHIFT in pcmds:  # BackingRun.alloc()
            backing.room -= 1
            backing.pending += 1
            writes.append(frame)
            owners.append(backing.owner)
            continue
        owner_id = backing.alloc(encl, index, payer)
        if owner_id < 0:
            skipped.append(frame)
            batch.backing_failed += 1
            continue
        writes.append(frame)
        owners.append(owner_id)
    backing.put()
    return batch


def _write_pages(state: HostState, cg: Cgroup, writes: list[int], owners: list[int]) -> int:
    """Mirrors the last loop of sgx_reclaim_pages(): EWB each page into a VA slot (sgx_reclaimer_write()),
    a run of one enclave's pages at once, the SECS too once its last child is out; then free
    the frames, all charged to ``cg``.  Returns the pages written."""
    epc, enclaves = state.epc, state.enclaves
    owner, page_index = epc.owner, epc.index
    fast = state.fast_paths
    ops = state.ops
    written = len(writes)
    start = 0
    while start < written:
        encl_id = owner[writes[start]]
        end = start + 1
        while end < written and owner[writes[end]] == encl_id:
            end += 1
        encl = enclaves[encl_id]
        pages, pcmd = encl if encl.sparse else encl.pages, encl.pcmd  # the prefix alone, mostly
        count = end - start
        slot_ids = encl.va_alloc_slots(count) if fast else [encl.va_alloc_slot() for _ in range(count)]
        for frame, owner_id, slot_id in zip(writes[start:end], owners[start:end], slot_ids, strict=True):
            index = page_index[frame]
            pages[index] = SWAPPED - (slot_id << OWNER_BITS | owner_id)  # swap_entry(), inlined for speed
            pcmd[index >> PCMD_SHIFT] += 1
        encl.nr_swapped += count
        encl.secs_child_cnt -= count
        ops[OP_ETRACK] += 1  # the first EWB of the enclave in this batch needs ETRACK and the IPI round
        ops[OP_EWB] += count
        if encl.secs_child_cnt == 0 and encl.initialized:  # only the run's last page can leave it at 0
            write_back_secs(state, encl, owners[end - 1])
        start = end
    if written:
        state.free_epc_run(cg, writes)  # every page on cg's LRU is charged to cg
    return written


def write_back_secs(state: HostState, encl: Enclave, owner_id: int) -> None:
    """The last resident child of an initialised enclave was written out: EWB the SECS too,
    its backing charged like the child's, and free it (it stays if it gets no backing).
    Mirrors the SECS branch of sgx_reclaimer_write().
    """
    index = encl.secs_index
    if not alloc_backing(state, encl, index, owner_id):
        return
    secs = encl.secs_frame
    encl.secs_frame = swap_entry(encl.va_alloc_slot(), owner_id)
    encl.pcmd[index >> PCMD_SHIFT] += 1
    encl.nr_swapped += 1
    state.ops[OP_EWB] += 1
    state.emit(SecsWriteBack(state.clock.now_ns(), encl.id, state.backing_owners[owner_id][0].path))
    state.free_epc_page(secs)


# -- when reclaim can move nothing more -------------------------------------------------


def begin_reclaim_epoch(state: HostState) -> None:
    """Forget which LRUs were tried through: a reclaim loop starts, or a batch moved a page.

    No kernel counterpart (nor for _note_failed() and reclaim_stuck()): the kernel's loops
    spin where this host must stop and say so.
    """
    tree = state.tree
    tree.reclaim_epoch += 1
    tree.stuck_lrus = 0


def _note_failed(state: HostState, cg: Cgroup, pages: int) -> None:
    """A batch on ``cg``'s LRU moved nothing: its ``pages`` went back to the tail, backing refused."""
    tree = state.tree
    before = cg.failed_pages if cg.failed_epoch == tree.reclaim_epoch else 0
    cg.failed_epoch = tree.reclaim_epoch
    cg.failed_pages = before + pages
    if before < cg.lru.size <= before + pages:
        tree.stuck_lrus += 1


def reclaim_stuck(state: HostState, root: Cgroup) -> bool:
    """Whether reclaim of ``root``'s subtree can move nothing more: since the reclaim epoch
    began, every LRU of the subtree that holds pages (dying cgroups' included) has had as
    many pages put back for a failed backing charge as it holds, so each of its pages was
    tried once and failed (a failed page goes back to the tail, and nothing else changed
    the LRUs or the memory cgroups since).  The kernel's loop would spin from here on.

    Only the reclaim loop that began the epoch may ask: it visits nothing outside the subtree.
    """
    return state.tree.stuck_lrus >= root.nonempty_lrus


# -- when to reclaim ----------------------------------------------------------------------


def should_reclaim(cg: Cgroup, margin: int = SGX_CG_MIN_FREE_PAGE, low_limit: int = SGX_CG_LOW_LIMIT) -> bool:
    """Whether ``cg``'s usage is within ``margin`` (SGX_CG_MIN_FREE_PAGE) of its effective limit,
    or at it for a limit of at most ``low_limit`` (SGX_CG_LOW_LIMIT) pages.

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
    if limit > low_limit:
        limit -= margin
    return cg.misc_usage >= limit


def should_reclaim_global(state: HostState, nr_free: int) -> bool:
    """Mirrors sgx_should_reclaim_global(): few free frames and something reclaimable."""
    return state.epc.nr_free < nr_free and bool(state.tree.root.nonempty_lrus)


def reclaim_direct(state: HostState, pid: int) -> None:
    """Make room before an EDMM page step, charging backing to ``pid``.  Mirrors sgx_reclaim_direct()."""
    cg = state.tree.task_cgroup(pid).misc_css()
    if should_reclaim(cg, state.cg_margin, state.cg_low_limit):
        cgroup_reclaim_pages(state, cg, pid, state.nr_to_scan, "direct")
    if should_reclaim_global(state, state.low_pages):
        cgroup_reclaim_pages(state, state.tree.root, pid, state.nr_to_scan, "global")

"""Enclave faults: access, ELDU, EAUG and the EACCEPT of MODIFIED pages (mirrors sgx_vma_fault(),
sgx_encl_load_page(), sgx_encl_eldu() and sgx_encl_eaug_page() of sgx/encl.c).

A fault allocates NO_RECLAIM: when the charge gets EBUSY the cgroup's work item is queued
and the fault must wait for it, as the kernel's returns VM_FAULT_NOPAGE and the task
faults again.  Waiting is a value here, not an exception: touch() says how many pages of
its ranges it served and whether it stopped to wait (Touched); only errors raise (SigBus
for a fault that cannot be served, OSError for a bad call).  With ``inline_work`` the
queued work runs at once and the fault is retried; it waits only when that moved nothing.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Sequence
from typing import NamedTuple

from common.costs import OP_ACCESS, OP_EAUG, OP_ELDU
from engine import misc
from engine.backing import free_backing_page, free_backing_run
from engine.cgroup import Cgroup
from engine.charge import alloc_epc_page, alloc_epc_run
from engine.enclave import ABSENT, SWAPPED, Enclave
from engine.epc import NR_FLAG_SLOTS, YOUNG_BITS, YOUNG_MORE
from engine.events import SigBusRaised
from engine.sgx import NO_RECLAIM, SGX_VA_SLOT_COUNT, Blocked, PageKind, SgxReclaim, SigBus, errno_name
from engine.state import HostState
from engine.work import run_pending_work

Ranges = Sequence[tuple[int, int]]  # (first page, count) pairs


class Touched(NamedTuple):
    """What a touch() served: ``pages`` of its ranges in order (the caller resumes from there),
    ``faults`` among them, and whether it stopped because a fault must wait (``waiting``).
    (A NamedTuple: one is made per request, and a frozen dataclass costs a microsecond more.)"""

    pages: int
    faults: int
    waiting: bool


def check_ranges(size_pages: int, ranges: Ranges) -> None:
    """OSError(EFAULT) unless every range's pages first..first+count-1 lie in 0..size_pages-1
    (sizes are at most MAX_PAGES): a bad range is refused before any page is touched.  Mirrors
    the VMA bounds: an address outside the enclave's mapping never reaches sgx_vma_fault()."""
    for first, count in ranges:
        if first < 0 or count < 0 or first + count > size_pages:
            raise OSError(errno.EFAULT, f"pages {first}..{first + count - 1} lie outside 0..{size_pages - 1}")


def cut(ranges: Ranges, limit: int | None) -> Ranges:
    """The ranges in order, cut to ``limit`` pages in all (None: as they are).  No kernel
    counterpart: how a driver cuts a long touch into steps."""
    if limit is None:
        return ranges
    out = []
    for first, count in ranges:
        if limit <= 0:
            break
        count = min(count, limit)
        out.append((first, count))
        limit -= count
    return out


def map_mm(state: HostState, encl: Enclave, pid: int) -> int:
    """``pid``'s mm maps the enclave: newest first on its mm list, the task known to its cgroup.

    Returns the mm's slot for its accessed bits.  Mirrors sgx_encl_mm_add().
    """
    slot = encl.mm_slot.get(pid)
    if slot is None:
        state.tree.register_task(pid)
        slot = encl.mm_add(pid)
    return slot


def touch(state: HostState, pid: int, eid: int, ranges: Ranges, limit: int | None = None) -> tuple[int, int, bool]:
    """Touch the pages of ``ranges`` in order, at most ``limit`` of them (None: all).

    A resident page gets its accessed bit in ``pid``'s mm (only there: each mm has its own
    PTE); a swapped one is loaded back (its SECS first), charged to ``pid``'s cgroup now,
    NO_RECLAIM; an absent one in an initialised enclave is EAUG'd (SGX2); a MODIFIED one is
    EACCEPTed.  The enclave, the ranges, the mm and the task's cgroup are looked up once.
    Raises SigBus when a fault cannot be served (ENOMEM: nothing on the requesting cgroup's
    LRUs), OSError(EINVAL) for no such enclave, OSError(EFAULT) for a range outside it
    (before any page).  Returns the fields of a Touched (a tuple: access() of one page makes
    one call per page).  Mirrors sgx_vma_fault().
    """
    encl = state.enclave(eid)
    check_ranges(encl.size_pages, ranges)
    slot = map_mm(state, encl, pid)
    cg = state.get_current_cg(pid)
    pages = faults = 0
    for first, count in ranges if limit is None else cut(ranges, limit):
        if encl.modified is not None and count:
            done, served = _eaccept(state, encl, pid, cg, slot, first, count)
        else:
            done, served = _touch_range(state, encl, pid, cg, slot, first, count)
        pages += done
        faults += served
        if done < count:
            state.ops[OP_ACCESS] += pages
            return pages, faults, True
    state.ops[OP_ACCESS] += pages
    return pages, faults, False


def _touch_range(
    state: HostState, encl: Enclave, pid: int, cg: Cgroup, slot: int, first: int, count: int
) -> tuple[int, int]:
    """Pages first..first+count-1 (checked): (pages served, faults among them); fewer pages than
    ``count`` when a fault must wait.  Mirrors sgx_vma_fault() page by page (a resident page
    only gets the accessed bit, as the hardware sets it)."""
    more = slot >= NR_FLAG_SLOTS  # the mm's bits are kept beside the flags
    bit = YOUNG_MORE if more else YOUNG_BITS[slot]
    pages = encl.pages
    epc = state.epc
    flags = epc.flags
    nr_pages = len(pages)
    faults = 0
    end = first + count
    index = first
    while index < end:
        frame = pages[index] if index < nr_pages else encl.page(index)
        if frame >= 0:
            if more:
                epc.make_young(frame, slot)
            else:
                flags[frame] |= bit
            index += 1
            continue
        loaded = _eldu_run(state, encl, index, end, cg, slot) if frame <= SWAPPED else 0
        if not loaded:
            if not _fault(state, encl, index, pid, cg, slot):
                return index - first, faults
            loaded = 1
        faults += loaded
        index += loaded
        pages = encl.pages
        nr_pages = len(pages)
    return count, faults


def _eaccept(
    state: HostState, encl: Enclave, pid: int, cg: Cgroup, slot: int, first: int, count: int
) -> tuple[int, int]:
    """_touch_range() while some page of the enclave is MODIFIED: the enclave's access of such a
    page is its EACCEPT, so each is unmarked once the access has reached it.

    The range goes in runs: a run with no MODIFIED page, a run of resident pages (no fault,
    so nothing can stop it halfway), or one page that may fault, so a SigBus or a wait
    leaves exactly the pages before it accepted.  Same result otherwise.  No kernel
    counterpart: EACCEPT is the enclave's own instruction.
    """
    modified = encl.modified
    assert modified is not None
    end = first + count
    at = first
    faults = 0
    while at < end:
        stop = modified.next(at, end)
        marked = stop == at
        if marked:
            stop = at + 1
            if encl.page(at) >= 0:
                while stop < end and encl.page(stop) >= 0:
                    stop += 1
        done, served = _touch_range(state, encl, pid, cg, slot, at, stop - at)
        faults += served
        if done < stop - at:
            return at - first + done, faults
        if marked:
            encl.accept(at, stop)
        at = stop
    return count, faults


def _eldu_run(state: HostState, encl: Enclave, index: int, end: int, cg: Cgroup, slot: int) -> int:
    """Fault back a run of swapped pages from ``index`` that fits without reclaim; returns how many
    (0: take _fault()).  Each page is young in the faulting mm alone (reclaim zapped every
    other mm's PTE).  No kernel counterpart: N of sgx_vma_fault() that misc.room() said fit.
    """
    if encl.secs_frame < 0 or not state.fast_paths:
        return 0
    pages = encl.pages
    run = index
    while run < end and run < len(pages) and pages[run] <= SWAPPED:
        run += 1
    if run - index < 2 or misc.room(cg, state.capacity_pages) < 2:
        return 0
    frames = alloc_epc_run(state, cg, PageKind.REG, encl.id, index, run - index)
    slot_ids = free_backing_run(state, encl, index, pages[index : index + len(frames)])
    epc, types = state.epc, encl.types
    flags = epc.flags
    bit = YOUNG_BITS[slot] if slot < NR_FLAG_SLOTS else 0
    for i, (frame, slot_id) in enumerate(zip(frames, slot_ids, strict=True), index):
        encl.va_free_slot(slot_id)
        pages[i] = frame
        flags[frame] = types[i] | bit
        if not bit:
            epc.make_young(frame, slot)
    encl.secs_child_cnt += len(frames)
    epc.lru_add_tail_many(cg.lru, frames)
    state.ops[OP_ELDU] += len(frames)
    return len(frames)


def augment(state: HostState, pid: int, eid: int, count: int) -> int:
    """Grow an initialised enclave by ``count`` pages through EAUG faults (SGX2); returns ``count``.

    Each page: the SECS back if needed, the page, a VA page if due, all NO_RECLAIM.  SigBus
    as touch(), Blocked with the pages done when a fault must wait; OSError(EFAULT) past
    the enclave's size.  Mirrors sgx_encl_eaug_page().
    """
    encl = state.enclave(eid)
    check_ranges(encl.size_pages, [(encl.next_index, count)])
    slot = map_mm(state, encl, pid)
    cg = state.get_current_cg(pid)
    for done in range(count):
        if not _fault(state, encl, encl.next_index, pid, cg, slot):
            raise blocked(state, done)
    return count


def _fault(state: HostState, encl: Enclave, index: int, pid: int, cg: Cgroup, slot: int) -> bool:
    """Serve one enclave fault: ELDU a swapped page, EAUG an absent one; False when it must wait.
    Mirrors sgx_vma_fault()."""
    if encl.page(index) <= SWAPPED:
        return serve_fault(state, lambda: load(state, encl, index, pid, cg, slot), pid, "fault") >= 0
    return serve_fault(state, lambda: eaug(state, encl, index, pid, cg, slot), pid, "fault") >= 0


def serve_fault(state: HostState, attempt: Callable[[], int], pid: int, op: str) -> int:
    """Run one fault's allocation, again after EBUSY as VM_FAULT_NOPAGE would; returns what it
    returned (>= 0), or -EBUSY when the fault must wait (wait_for_reclaim()).

    EBUSY never means SIGBUS; any error it raises (ENOMEM: nothing on the requesting cgroup's
    LRUs) raises SigBus.  Mirrors the error handling of sgx_vma_fault() and sgx_vepc_fault().
    """
    while True:
        try:
            ret = attempt()
        except OSError as e:
            raise sigbus(state, pid, e.errno or errno.EIO, op, str(e.strerror)) from None
        if ret >= 0 or not wait_for_reclaim(state):
            return ret


def wait_for_reclaim(state: HostState) -> bool:
    """After EBUSY: whether to retry the fault now.  With inline work, run the queued work and
    retry if it moved anything; without (the engine), never: the caller lets its async
    workers run first.  When the work moved nothing the retry would fail the same way, and
    the kernel's task would re-fault until something outside the fault (a task's exit, a
    release, a limit raised, an OOM victim freeing its backing) makes room.  Mirrors the
    retry after VM_FAULT_NOPAGE.
    """
    if not state.inline_work:
        return False
    progress = state.progress
    run_pending_work(state)
    return state.progress != progress


def blocked(state: HostState, done: int, faults: int = 0) -> Blocked:
    """The Blocked a call raises when a fault must wait, after ``done`` pages and ``faults`` faults."""
    if not state.inline_work:
        return Blocked(done, "waiting for async reclaim", faults)
    waiting_for = "an OOM victim to exit" if state.oom_victims else "something to free the limiting cgroup"
    return Blocked(done, f"stalled: no reclaim can help this fault; waiting for {waiting_for}", faults)


def sigbus(state: HostState, pid: int, code: int, op: str, message: str) -> SigBus:
    """A fault of ``pid`` cannot be served: the SigBusRaised event, and the SigBus to raise."""
    state.emit(SigBusRaised(state.clock.now_ns(), pid, state.tree.task_cgroup(pid).path, op, errno_name(code)))
    return SigBus(pid, code, message)


# -- loading and adding pages -------------------------------------------------------------


def load(state: HostState, encl: Enclave, index: int, pid: int, cg: Cgroup, slot: int) -> int:
    """ELDU the SECS if it is out, then the page; 0, or -EBUSY when a charge must wait.

    ``slot``: the faulting mm, in which the page is then young; -1 for an EDMM ioctl's
    load, which maps nothing.  Mirrors sgx_encl_load_page().
    """
    if encl.secs_frame <= SWAPPED:
        ret = eldu(state, encl, encl.secs_index, pid, cg, -1)
        if ret:
            return ret
    return eldu(state, encl, index, pid, cg, slot)


def eldu(state: HostState, encl: Enclave, index: int, pid: int, cg: Cgroup, slot: int) -> int:
    """Load one page back, NO_RECLAIM, charged to ``cg``; free its VA slot and backing.  Returns 0,
    or -EBUSY when the charge must wait (nothing changed).

    ``slot`` >= 0: a fault through that mm, whose access then makes the page young there
    alone (sgx_vma_fault() clears the bit of the PTE it inserts; the retried access sets
    it); -1: nothing maps it.  Mirrors sgx_encl_eldu().
    """
    secs = index == encl.secs_index
    kind = PageKind.SECS if secs else PageKind(encl.kind(index))
    frame = alloc_epc_page(state, cg, kind, encl.id, -1 if secs else index, NO_RECLAIM, pid, "ELDU")
    if frame < 0:
        return frame
    entry = encl.secs_frame if secs else encl.page(index)
    encl.va_free_slot(free_backing_page(state, encl, index, entry))
    state.ops[OP_ELDU] += 1
    if secs:
        encl.secs_frame = frame
        return 0
    encl.set_entry(index, frame)
    encl.secs_child_cnt += 1
    if slot >= 0:
        state.epc.make_young(frame, slot)
    state.epc.lru_add_tail(cg.lru, frame)
    return 0


def eaug(state: HostState, encl: Enclave, index: int, pid: int, cg: Cgroup, slot: int) -> int:
    """EAUG a page on a fault at an absent address; 0, or -EBUSY when a charge must wait.

    The page is young in the faulting mm alone (the PTE the fault inserts).  OSError(EFAULT)
    before EINIT.  A wait or an error leaves nothing charged and the page absent (the SECS
    may stay loaded).  Mirrors sgx_encl_eaug_page().
    """
    if not encl.initialized:
        raise OSError(errno.EFAULT, "fault on a page that was never added, before EINIT")
    if encl.secs_frame <= SWAPPED:
        ret = eldu(state, encl, encl.secs_index, pid, cg, -1)
        if ret:
            return ret
    encl.reserve(index)
    frame = ABSENT
    try:
        frame = alloc_epc_page(state, cg, PageKind.REG, encl.id, index, NO_RECLAIM, pid, "EAUG")
        ret = encl_grow(state, encl, cg, pid, NO_RECLAIM, "EAUG") if frame >= 0 else frame
    except BaseException:
        if frame >= 0:
            state.free_epc_page(frame)
        encl.unreserve(index)
        raise
    if ret:
        if frame >= 0:
            state.free_epc_page(frame)
        encl.unreserve(index)
        return ret
    encl.place(index, frame, PageKind.REG)
    encl.next_index = max(encl.next_index, index + 1)
    encl.secs_child_cnt += 1
    state.epc.make_young(frame, slot)
    state.epc.lru_add_tail(cg.lru, frame)
    state.ops[OP_EAUG] += 1
    return 0


def encl_grow(state: HostState, encl: Enclave, cg: Cgroup, pid: int, mode: SgxReclaim, op: str) -> int:
    """A new VA page when page_cnt reaches a multiple of 512, then page_cnt + 1.  Returns 0, or
    -EBUSY (NO_RECLAIM) when the VA page's charge must wait; any error or wait leaves nothing
    charged.  Mirrors sgx_encl_grow().
    """
    if encl.page_cnt % SGX_VA_SLOT_COUNT == 0:
        frame = alloc_epc_page(state, cg, PageKind.VA, encl.id, len(encl.va_frames), mode, pid, op)
        if frame < 0:
            return frame
        try:
            encl.va_add(frame)
        except BaseException:
            state.free_epc_page(frame)
            raise
    encl.page_cnt += 1
    return 0

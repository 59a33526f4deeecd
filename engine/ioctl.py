"""The enclave ioctls: ECREATE, ADD_PAGES, INIT, the EDMM ioctls and the release of the last
reference (mirrors sgx/ioctl.c and sgx_encl_release() of sgx/encl.c).

ECREATE and EADD allocate DO_RECLAIM: a charge over the limit reclaims from the caller's
subtree synchronously (engine.charge).  The EDMM ioctls (MODIFY_TYPES,
RESTRICT_PERMISSIONS, REMOVE_PAGES) run direct reclaim before each page and load a
written-out page back NO_RECLAIM, failing with EAGAIN when that load must wait.
"""

from __future__ import annotations

import errno

from common.costs import OP_EADD, OP_ECREATE, OP_EINIT, OP_EREMOVE
from common.units import parse_size
from engine.backing import free_backing_page
from engine.cgroup import Cgroup
from engine.charge import alloc_epc_page, alloc_epc_run
from engine.enclave import ABSENT, SWAPPED, Enclave
from engine.epc import KIND_MASK, ON_LRU
from engine.events import EnclaveCreated, EnclaveReleased
from engine.fault import encl_grow, load
from engine.reclaim import reclaim_direct
from engine.sgx import DO_RECLAIM, ERESTARTSYS, MAX_SIZE, PAGE_SIZE, SGX_VA_SLOT_COUNT, Blocked, IoctlError, PageKind
from engine.state import HostState


def ecreate(state: HostState, pid: int, size: int | str) -> int:
    """ECREATE: a VA page, then the SECS, both DO_RECLAIM; returns the enclave id.

    The driver checks no size itself: ENCLS[ECREATE] refuses a SECS whose size is not a
    power of two of at least two pages, after both pages were charged, and the ioctl then
    frees them and fails with OSError(EIO) (misc.peak saw the two pages, and misc.events
    any charge that hit a limit).  Sizes over MAX_SIZE (8 TiB), more than this host holds,
    are EINVAL before anything is charged.  Allocation errors as add_pages().  Mirrors
    sgx_encl_create().
    """
    size_bytes = parse_size(size)
    if size_bytes > MAX_SIZE:
        raise OSError(errno.EINVAL, f"enclave size {size_bytes} is over the {MAX_SIZE} bytes (8 TiB) a host takes")
    encl = Enclave(state.new_id(), pid, size_bytes // PAGE_SIZE)
    state.enclaves[encl.id] = encl
    cg = state.get_current_cg(pid)
    try:
        encl_grow(state, encl, cg, pid, DO_RECLAIM, "ECREATE")
        encl.secs_frame = alloc_epc_page(state, cg, PageKind.SECS, encl.id, -1, DO_RECLAIM, pid, "ECREATE")
        if size_bytes < 2 * PAGE_SIZE or size_bytes & (size_bytes - 1):  # ENCLS[ECREATE] faults: -EIO
            raise OSError(
                errno.EIO,
                f"ECREATE refused the SECS: enclave size {size_bytes} is not a power of two of at least "
                "8 KiB (its VA page and SECS were charged, then freed)",
            )
    except BaseException:
        free_enclave_frames(state, encl)
        del state.enclaves[encl.id]
        raise
    state.ops[OP_ECREATE] += 1
    state.emit(EnclaveCreated(state.clock.now_ns(), encl.id, pid, size_bytes))
    return encl.id


def add_pages(state: HostState, pid: int, eid: int, count: int, kind: str = "REG") -> int:
    """EADD ``count`` pages (REG or TCS) after the last one added; returns how many.

    Each page is allocated DO_RECLAIM, then a VA page when one is due; it goes on its
    cgroup's LRU with its accessed bit clear.  IoctlError(ENOMEM) when the cgroup is full
    of unreclaimable pages, (ERESTARTSYS) for a signal before the first page (a later
    signal stops early and returns the count), EINVAL after EINIT or past the enclave's
    size; Blocked while reclaim cannot progress.  Mirrors sgx_ioc_enclave_add_pages().
    """
    encl = state.enclave(eid)
    page_kind = PageKind.TCS if kind == "TCS" else PageKind.REG
    if kind not in ("REG", "TCS"):
        raise OSError(errno.EINVAL, f"EADD page type must be REG or TCS, not {kind!r}")
    if encl.initialized:
        raise OSError(errno.EINVAL, f"enclave {eid} is initialised: EADD is over, use augment")
    if count <= 0 or encl.next_index + count > encl.size_pages:
        raise OSError(errno.EINVAL, f"{count} pages: give at least one that fits in enclave {eid}")
    cg = state.get_current_cg(pid)
    done = 0
    try:
        while done < count:
            if pid in state.signals:  # only reclaim (the OOM killer) raises one mid-call
                if done == 0:
                    raise OSError(ERESTARTSYS, "interrupted by a signal")
                return done
            done += _eadd_run(state, encl, page_kind, cg, count - done) or _eadd(state, encl, page_kind, cg, pid)
    except Blocked as e:
        raise Blocked(done, str(e)) from None
    except OSError as e:
        raise IoctlError(e.errno or errno.EIO, e.strerror or "", done) from None
    return count


def _eadd_run(state: HostState, encl: Enclave, kind: PageKind, cg: Cgroup, count: int) -> int:
    """EADD as many of ``count`` pages as fit without reclaim and before a VA page is due;
    returns how many (0: take _eadd()).  No kernel counterpart: N of sgx_encl_add_page()
    that misc.room() said fit, the same result.
    """
    due = encl.page_cnt % SGX_VA_SLOT_COUNT
    if due == 0:
        return 0
    index = encl.next_index
    frames = alloc_epc_run(state, cg, kind, encl.id, index, min(count, SGX_VA_SLOT_COUNT - due))
    run = len(frames)
    if run:
        assert index == len(encl.pages), "EADD appends: no holes before EINIT"
        try:
            encl.pages.extend(frames)
            encl.types.extend(bytes([kind]) * run)
        except BaseException:
            del encl.pages[index:]
            del encl.types[index:]
            state.free_epc_run(cg, frames)
            raise
        encl.next_index = index + run
        encl.page_cnt += run
        encl.secs_child_cnt += run
        state.epc.lru_add_tail_many(cg.lru, frames)
        state.ops[OP_EADD] += run
    return run


def _eadd(state: HostState, encl: Enclave, kind: PageKind, cg: Cgroup, pid: int) -> int:
    """Mirrors sgx_encl_add_page(): the data page, then the VA page if due.  Returns 1.

    Any error leaves nothing charged and the page absent.
    """
    index = encl.next_index
    encl.reserve(index)
    frame = ABSENT
    try:
        frame = alloc_epc_page(state, cg, kind, encl.id, index, DO_RECLAIM, pid, "EADD")
        encl_grow(state, encl, cg, pid, DO_RECLAIM, "EADD")
    except BaseException:
        if frame != ABSENT:
            state.free_epc_page(frame)
        encl.unreserve(index)
        raise
    encl.place(index, frame, kind)
    encl.next_index = index + 1
    encl.secs_child_cnt += 1
    state.epc.lru_add_tail(cg.lru, frame)
    state.ops[OP_EADD] += 1
    return 1


def einit(state: HostState, eid: int) -> None:
    """EINIT: the enclave is initialised; from now on its SECS can be written out.

    OSError(EINVAL) for no such enclave or one already initialised.  Mirrors
    sgx_ioc_enclave_init().
    """
    encl = state.enclave(eid)
    if encl.initialized:
        raise OSError(errno.EINVAL, f"enclave {eid} is already initialised")
    encl.initialized = True
    state.ops[OP_EINIT] += 1


# -- EDMM ---------------------------------------------------------------------------------


def validate_edmm(state: HostState, eid: int, first: int, count: int) -> Enclave:
    """The enclave of an EDMM ioctl over pages first..first+count-1, which must lie in it.

    OSError(EINVAL) for no such enclave, one not initialised, or a range that is empty or
    reaches outside the enclave.  Mirrors sgx_ioc_sgx2_ready() and
    sgx_validate_offset_length().
    """
    encl = state.enclave(eid)
    if not encl.initialized:
        raise OSError(errno.EINVAL, f"enclave {eid} is not initialised: EDMM comes after EINIT")
    if first < 0 or count <= 0 or first + count > encl.size_pages:
        raise OSError(
            errno.EINVAL,
            f"pages {first}..{first + count - 1} are not a range of at least one page inside enclave "
            f"{eid} (0..{encl.size_pages - 1})",
        )
    return encl


def _edmm_load(state: HostState, encl: Enclave, index: int, pid: int, done: int) -> int:
    """sgx_reclaim_direct(), then the page resident for an EDMM step; returns its frame.

    IoctlError(EAGAIN) at once when the load must wait (the caller may retry), EFAULT for
    any other load error or a page never added.  Mirrors sgx_encl_load_page().
    """
    reclaim_direct(state, pid)
    page = encl.page(index)
    if page == ABSENT:
        raise IoctlError(errno.EFAULT, f"page {index} of enclave {encl.id} was never added", done)
    if page >= 0:
        return page
    cg = state.get_current_cg(pid)
    try:
        ret = load(state, encl, index, pid, cg, -1)
    except OSError as e:
        raise IoctlError(errno.EFAULT, str(e.strerror), done) from None
    if ret:
        raise IoctlError(errno.EAGAIN, f"{cg.path} is at its limit; reclaim queued", done)
    return encl.page(index)


def modify_types(state: HostState, pid: int, eid: int, first: int, count: int, kind: str) -> None:
    """SGX_IOC_ENCLAVE_MODIFY_TYPES of pages first..first+count-1 to ``kind``, TCS or TRIM.

    Each page in turn: direct reclaim, the page loaded back if it was written out
    (NO_RECLAIM), then EMODT: REG becomes TCS (the page leaves its LRU and goes back at the
    tail, its PTEs zapped) or TRIM, TCS becomes TRIM.  The page is then MODIFIED until the
    enclave EACCEPTs it (an access).  OSError(EINVAL) before EINIT, for a range that is
    empty or reaches outside the enclave, or a kind other than TCS or TRIM; IoctlError with
    the pages done: EFAULT for a page never added or one still MODIFIED (EMODT's
    SGX_PAGE_NOT_MODIFIABLE), EAGAIN when a load must wait, EINVAL for any change but
    REG->TCS, REG->TRIM and TCS->TRIM (a TRIM page again).  Mirrors
    sgx_ioc_enclave_modify_types() and sgx_enclave_modify_types().
    """
    encl = validate_edmm(state, eid, first, count)
    if kind not in ("TCS", "TRIM"):
        raise OSError(errno.EINVAL, f"MODIFY_TYPES makes pages TCS or TRIM, not {kind!r}")
    new = PageKind.TCS if kind == "TCS" else PageKind.TRIM
    epc = state.epc
    flags = epc.flags
    for done, index in enumerate(range(first, first + count)):
        frame = _edmm_load(state, encl, index, pid, done)
        old = encl.kind(index)
        if not (old == PageKind.REG or (old == PageKind.TCS and new == PageKind.TRIM)):
            raise IoctlError(
                errno.EINVAL,
                f"page {index} of enclave {eid} is {PageKind(old).name}: MODIFY_TYPES changes REG to TCS "
                f"or TRIM and TCS to TRIM, not to {kind}",
                done,
            )
        if old == PageKind.REG and new == PageKind.TCS and flags[frame] & ON_LRU:
            # sgx_unmark_page_reclaimable(), sgx_zap_enclave_ptes(), sgx_mark_page_reclaimable()
            lru = state.lru_cgroup(frame).lru
            epc.lru_del(lru, frame)
            epc.clear_young(frame)
            epc.lru_add_tail(lru, frame)
        if encl.is_modified(index):
            raise IoctlError(
                errno.EFAULT,
                f"page {index} of enclave {eid} is not modifiable: the enclave has not EACCEPTed its "
                "last type change (EMODT: SGX_PAGE_NOT_MODIFIABLE)",
                done,
            )
        encl.mark_modified(index)
        encl.set_kind(index, new)
        flags[frame] = flags[frame] & ~KIND_MASK | new


def restrict_permissions(state: HostState, pid: int, eid: int, first: int, count: int) -> None:
    """SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS of pages first..first+count-1 (EMODPR).

    Each page in turn: direct reclaim, the page loaded back if it was written out
    (NO_RECLAIM), then EMODPR, which only REG pages take.  The core keeps no page
    permissions, so what shows is the reclaim and the loads.  OSError(EINVAL) before EINIT
    or for a range that is empty or reaches outside the enclave; IoctlError with the pages
    done: EFAULT for a page never added, EAGAIN when a load must wait, EINVAL for a page
    that is not REG.  (EMODPR would fail on a MODIFIED or PENDING page, but a REG page is
    neither here: EMODT makes TCS or TRIM, and an EAUG'd page is accepted by the access that
    added it.)  Mirrors sgx_ioc_enclave_restrict_permissions() and
    sgx_enclave_restrict_permissions().
    """
    encl = validate_edmm(state, eid, first, count)
    for done, index in enumerate(range(first, first + count)):
        _edmm_load(state, encl, index, pid, done)
        kind = encl.kind(index)
        if kind != PageKind.REG:
            raise IoctlError(
                errno.EINVAL,
                f"page {index} of enclave {eid} is {PageKind(kind).name}: only REG pages have permissions to restrict",
                done,
            )


def remove_trimmed(state: HostState, pid: int, eid: int, first: int, count: int) -> int:
    """SGX_IOC_ENCLAVE_REMOVE_PAGES of trimmed pages the enclave has EACCEPTed; returns ``count``.

    Each page in turn: direct reclaim, the page loaded back if it was written out
    (NO_RECLAIM: charged, its backing truncated), then it must be TRIM and accepted (the
    driver's EMODPR probe faults): it leaves its LRU, is freed and uncharged; VA pages stay.
    OSError(EINVAL) before EINIT or for a range that is empty or reaches outside the
    enclave; IoctlError with the pages done: EFAULT for a page never added, EAGAIN when a
    load must wait, EPERM for a page that is not TRIM or that the enclave has not
    EACCEPTed.  Mirrors sgx_ioc_enclave_remove_pages() and sgx_encl_remove_pages().
    """
    encl = validate_edmm(state, eid, first, count)
    for done, index in enumerate(range(first, first + count)):
        frame = _edmm_load(state, encl, index, pid, done)
        if encl.kind(index) != PageKind.TRIM:
            raise IoctlError(errno.EPERM, f"page {index} of enclave {eid} is not trimmed", done)
        if encl.is_modified(index):
            raise IoctlError(errno.EPERM, f"page {index} of enclave {eid} is trimmed but not EACCEPTed", done)
        if state.epc.flags[frame] & ON_LRU:
            state.epc.lru_del(state.lru_cgroup(frame).lru, frame)
        state.free_epc_page(frame)
        encl.clear(index)
        encl.secs_child_cnt -= 1
        encl.page_cnt -= 1
        state.ops[OP_EREMOVE] += 1
    return count


# -- the last reference -------------------------------------------------------------------


def release(state: HostState, eid: int) -> None:
    """The enclave's last reference is gone: free and uncharge every page, VA and SECS
    included, then drop its backing.  OSError(EINVAL) for no such enclave.  Mirrors
    sgx_encl_release().
    """
    encl = state.enclave(eid)
    encl.dying = True
    freed = free_enclave_frames(state, encl)
    backing = encl.nr_swapped
    for index in encl.swapped_indexes():
        free_backing_page(state, encl, index, encl.page(index))
        encl.clear(index)
    if encl.secs_frame <= SWAPPED:
        free_backing_page(state, encl, encl.secs_index, encl.secs_frame)
        encl.secs_frame = ABSENT
    del state.enclaves[eid]
    state.emit(EnclaveReleased(state.clock.now_ns(), eid, encl.pid, freed, backing * PAGE_SIZE))


def free_enclave_frames(state: HostState, encl: Enclave) -> int:
    """Free and uncharge every EPC frame of the enclave (pages, SECS, VA pages); returns how many.

    Mirrors the page, SECS and VA loops of sgx_encl_release().
    """
    epc = state.epc
    freed = 0
    for index in encl.resident_indexes():
        frame = encl.page(index)
        if epc.flags[frame] & ON_LRU:
            epc.lru_del(state.lru_cgroup(frame).lru, frame)
        state.free_epc_page(frame)
        encl.clear(index)
        freed += 1
    if encl.secs_frame >= 0:
        state.free_epc_page(encl.secs_frame)
        encl.secs_frame = ABSENT
        freed += 1
    for ordinal, frame in enumerate(encl.va_frames):
        if frame >= 0:
            state.free_epc_page(frame)
            encl.va_frames[ordinal] = ABSENT
            freed += 1
    state.ops[OP_EREMOVE] += freed
    return freed

"""Guest virtual EPC (mirrors sgx/virt.c): /dev/sgx_vepc mappings whose pages are charged on
first touch, NO_RECLAIM, and never reclaimed (the guest owns them until it closes the file).
"""

from __future__ import annotations

import errno

from common.costs import OP_ACCESS, OP_EREMOVE, OP_VEPC_FAULT
from common.units import parse_size
from engine.charge import alloc_epc_page
from engine.enclave import Vepc
from engine.fault import Ranges, check_ranges, cut, serve_fault
from engine.sgx import MAX_SIZE, NO_RECLAIM, PAGE_SIZE, PageKind
from engine.state import HostState


def vepc_open(state: HostState, pid: int, size: int | str) -> int:
    """Open a guest's virtual EPC of ``size`` bytes (a page multiple up to MAX_SIZE); returns its id.

    OSError(EINVAL) for any other size.  Mirrors sgx_vepc_open() and the mmap() that sizes it.
    """
    size_bytes = parse_size(size)
    if size_bytes <= 0 or size_bytes % PAGE_SIZE:
        raise OSError(errno.EINVAL, f"vEPC size {size_bytes} is not a positive multiple of 4 KiB")
    if size_bytes > MAX_SIZE:
        raise OSError(errno.EINVAL, f"vEPC size {size_bytes} is over the {MAX_SIZE} bytes (8 TiB) a host takes")
    state.get_current_cg(pid)
    vepc = Vepc(state.new_id(), pid, size_bytes // PAGE_SIZE)
    state.vepcs[vepc.id] = vepc
    return vepc.id


def vepc_touch(state: HostState, pid: int, vid: int, ranges: Ranges, limit: int | None = None) -> tuple[int, int, bool]:
    """Touch the guest pages of ``ranges`` in order, at most ``limit`` of them (None: all); a first
    touch allocates NO_RECLAIM.

    Stops to wait (Touched.waiting) when a fault's charge gets EBUSY that the work cannot
    help (or is not run inline); SigBus for any other charge error (ENOMEM: nothing
    reclaimable); OSError(EINVAL) for no such vEPC, OSError(EFAULT) for a range outside it
    (before any page).  Returns the fields of a Touched.  Mirrors sgx_vepc_fault().
    """
    vepc = state.vepc(vid)
    check_ranges(vepc.size_pages, ranges)
    cg = state.get_current_cg(pid)
    present = vepc.pages
    pages = faults = 0
    try:
        for first, count in ranges if limit is None else cut(ranges, limit):
            for index in range(first, first + count):
                if index in present:
                    continue

                def alloc(index: int = index) -> int:
                    return alloc_epc_page(state, cg, PageKind.VEPC, vid, index, NO_RECLAIM, pid, "vEPC fault")

                frame = serve_fault(state, alloc, pid, "vEPC fault")
                if frame < 0:
                    return pages + index - first, faults, True
                try:
                    present[index] = frame
                except BaseException:
                    state.free_epc_page(frame)
                    raise
                vepc.nr_present += 1
                faults += 1
            pages += count
        return pages, faults, False
    finally:
        state.ops[OP_VEPC_FAULT] += faults
        state.ops[OP_ACCESS] += pages
        if faults:  # every page this call faulted in is charged to cg, also when a later one got SIGBUS
            vepc.charged[cg.id] = vepc.charged.get(cg.id, 0) + faults


def vepc_release(state: HostState, vid: int) -> None:
    """The guest's vEPC file is released: every page freed and uncharged.  OSError(EINVAL) for no
    such vEPC.  Mirrors sgx_vepc_release()."""
    vepc = state.vepc(vid)
    for frame in vepc.pages.values():
        state.free_epc_page(frame)
    state.ops[OP_EREMOVE] += len(vepc.pages)
    del state.vepcs[vid]

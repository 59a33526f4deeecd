"""Aging: the accessed bit is per mm (reference 5, step 2; main.c sgx_reclaimer_age()).

Each process that maps an enclave has its own PTE, so its own accessed bit, for each
page.  A reclaim scan walks the enclave's mm list (newest first), test-and-clears each
mm's bit and stops at the first young one: a page touched through two mms survives two
scans.  An access, a fault (ELDU) and an EAUG make the page young in the accessing mm
alone; an mm that exits takes its bits with it.
"""

from __future__ import annotations

import pytest

from engine import Host
from engine.check import InvariantError
from engine.enclave import SWAPPED
from engine.epc import YOUNG_BITS
from engine.events import ReclaimBatch
from engine.reclaim import reclaim_pages

from .helpers import enclave


def scan(host: Host) -> ReclaimBatch:
    """One reclaim batch on root's LRU (every test page sits there); returns its event."""
    host.take_events()
    reclaim_pages(host, host.tree.root, None, "test")
    host.check()
    return [e for e in host.take_events() if isinstance(e, ReclaimBatch)][-1]


def swapped(host: Host, eid: int, index: int) -> bool:
    return host.enclaves[eid].page(index) <= SWAPPED


def young_in(host: Host, eid: int, index: int) -> list[int]:
    """The pids through whose mm page ``index`` is young, in mm-list order (newest first)."""
    encl = host.enclaves[eid]
    frame = encl.page(index)
    assert frame >= 0
    slots = host.epc.young_slots(frame)
    return [pid for pid in encl.mms if encl.mm_slot[pid] in slots]


def scans_survived(host: Host, eid: int, index: int) -> int:
    """Scan until page ``index`` is written out; the scans it survived."""
    survived = 0
    while not swapped(host, eid, index):
        scan(host)
        survived += not swapped(host, eid, index)
        assert survived < 20
    return survived


def test_a_page_touched_through_two_mms_survives_two_scans_and_is_written_on_the_third() -> None:
    host = Host("1MiB")
    eid = enclave(host, 10, 1)
    host.access(10, eid, 0, 1)
    host.access(11, eid, 0, 1)
    batch = scan(host)
    assert not swapped(host, eid, 0) and batch.rotated == 1
    batch = scan(host)
    assert not swapped(host, eid, 0) and batch.rotated == 1
    batch = scan(host)
    assert swapped(host, eid, 0) and (batch.rotated, batch.written) == (0, 1)


def test_a_page_touched_through_one_of_two_mms_survives_one_scan() -> None:
    host = Host("1MiB")
    eid = enclave(host, 10, 2)
    host.access(11, eid, 1, 1)  # 11 maps the enclave too
    host.access(10, eid, 0, 1)
    scan(host)
    assert not swapped(host, eid, 0) and not swapped(host, eid, 1)
    scan(host)
    assert swapped(host, eid, 0) and swapped(host, eid, 1)


def test_the_age_walk_goes_newest_mm_first_and_stops_at_the_first_young_one() -> None:
    host = Host("1MiB")
    eid = enclave(host, 10, 1)
    for pid in (10, 11, 12):
        host.access(pid, eid, 0, 1)
    assert host.enclaves[eid].mms == [12, 11, 10]  # sgx_encl_mm_add(): list_add, newest first
    assert young_in(host, eid, 0) == [12, 11, 10]
    scan(host)
    assert young_in(host, eid, 0) == [11, 10]  # the walk stopped at 12: later mms keep their bits
    host.access(12, eid, 0, 1)
    scan(host)
    assert young_in(host, eid, 0) == [11, 10]  # 12 is young again and first: only its bit went
    assert scans_survived(host, eid, 0) == 2


def test_an_mm_that_exits_no_longer_keeps_a_page_young() -> None:
    host = Host("1MiB")
    eid = enclave(host, 10, 2)
    host.access(11, eid, 0, 2)  # young through 11 alone
    host.access(10, eid, 1, 1)  # ... and page 1 through 10 too
    host.exit_task(11)
    assert host.enclaves[eid].mms == [10]
    host.check()
    scan(host)
    assert swapped(host, eid, 0), "the bit of an exited mm kept the page young"
    assert not swapped(host, eid, 1)  # 10's bit is its own
    scan(host)
    assert swapped(host, eid, 1)


def test_one_mm_touching_a_page_twice_keeps_it_young_for_one_scan() -> None:
    host = Host("1MiB")
    eid = enclave(host, 10, 1)
    host.access(10, eid, 0, 1)
    host.access(10, eid, 0, 1)
    assert scans_survived(host, eid, 0) == 1


def test_a_fault_makes_the_page_young_in_the_faulting_mm_alone() -> None:
    host = Host("1MiB")
    eid = enclave(host, 10, 2)
    host.access(10, eid, 0, 2)
    host.access(11, eid, 0, 2)
    assert scans_survived(host, eid, 0) == 2  # both pages written out: every PTE zapped
    assert host.access(11, eid, 0, 1) == 1  # ELDU through 11, one page
    assert host.access(11, eid, 1, 1) == 1  # and again (the SECS came back with page 0)
    assert young_in(host, eid, 0) == [11] and young_in(host, eid, 1) == [11]
    assert scans_survived(host, eid, 0) == 1


def test_a_run_of_faults_makes_each_page_young_in_the_faulting_mm_alone() -> None:
    host = Host("1MiB")
    eid = enclave(host, 10, 8)
    host.access(11, eid, 0, 1)
    for _ in range(2):
        scan(host)
    assert all(swapped(host, eid, i) for i in range(8))
    assert host.access(11, eid, 0, 8) == 8  # one run of ELDUs
    assert all(young_in(host, eid, i) == [11] for i in range(8))
    assert scans_survived(host, eid, 7) == 1


def test_eaug_makes_the_page_young_in_the_faulting_mm_alone() -> None:
    host = Host("1MiB")
    eid = enclave(host, 10, 1, size_pages=4)
    host.access(11, eid, 0, 1)
    host.augment(11, eid, 1)
    host.access(12, eid, 2, 1)  # EAUG through 12
    assert young_in(host, eid, 1) == [11] and young_in(host, eid, 2) == [12]
    assert scans_survived(host, eid, 1) == 1


def test_an_access_leaves_the_other_mms_bits_as_they_are() -> None:
    host = Host("1MiB")
    eid = enclave(host, 10, 1)
    host.access(11, eid, 0, 1)
    host.access(10, eid, 0, 1)
    scan(host)  # clears 11's bit only (newest first)
    assert young_in(host, eid, 0) == [10]
    host.access(11, eid, 0, 1)
    assert young_in(host, eid, 0) == [11, 10]
    assert scans_survived(host, eid, 0) == 2


@pytest.mark.parametrize("nr_mms", [4, 6])
def test_a_page_touched_through_n_mms_survives_n_scans_past_the_flag_bits(nr_mms: int) -> None:
    """Slots past the three that fit in the flags byte keep their bits beside it."""
    host = Host("1MiB")
    eid = enclave(host, 10, 2)
    pids = list(range(10, 10 + nr_mms))
    for pid in pids:
        host.access(pid, eid, 0, 1)
    host.access(pids[-1], eid, 1, 1)
    assert young_in(host, eid, 0) == pids[::-1]
    assert young_in(host, eid, 1) == [pids[-1]]
    assert scans_survived(host, eid, 0) == nr_mms
    assert not host.epc.young_more
    host.check()


def test_an_mm_past_the_flag_bits_takes_its_bits_when_it_exits() -> None:
    host = Host("1MiB")
    eid = enclave(host, 10, 3)
    for pid in (10, 11, 12, 13, 14):
        host.access(pid, eid, 0, 1)
    host.access(14, eid, 1, 1)
    host.access(13, eid, 2, 1)
    host.exit_task(14)
    host.exit_task(13)
    host.check()
    assert not host.epc.young_more
    assert young_in(host, eid, 0) == [12, 11, 10]
    scan(host)
    assert swapped(host, eid, 1) and swapped(host, eid, 2)
    assert young_in(host, eid, 0) == [11, 10]
    assert scans_survived(host, eid, 0) == 2


def test_a_freed_page_takes_the_bits_of_every_mm_with_it() -> None:
    host = Host("1MiB")
    eid = enclave(host, 10, 2)
    for pid in range(10, 16):
        host.access(pid, eid, 0, 2)
    assert len(host.epc.young_more) == 2
    host.release(eid)
    assert not host.epc.young_more
    host.check()
    eid = enclave(host, 20, 2)  # the same frames again: no bit of the old enclave's mms
    assert all(not host.epc.young_slots(host.enclaves[eid].page(i)) for i in range(2))


def test_a_new_mm_in_a_freed_slot_inherits_no_bits() -> None:
    host = Host("1MiB")
    eid = enclave(host, 10, 2)
    host.access(11, eid, 0, 1)  # slot 1
    host.exit_task(11)
    host.access(12, eid, 1, 1)  # 12 takes slot 1 again
    encl = host.enclaves[eid]
    assert encl.mm_slot == {10: 0, 12: 1}
    assert young_in(host, eid, 0) == []
    scan(host)
    assert swapped(host, eid, 0) and not swapped(host, eid, 1)


def test_check_finds_a_young_bit_of_an_mm_that_does_not_map_the_enclave() -> None:
    host = Host("1MiB")
    eid = enclave(host, 10, 1)
    frame = host.enclaves[eid].page(0)
    host.epc.flags[frame] |= YOUNG_BITS[2]  # slot 2: no mm of the enclave has it
    with pytest.raises(InvariantError, match="young in an mm"):
        host.check()
    host.epc.flags[frame] &= ~YOUNG_BITS[2]
    host.epc.make_young(frame, 5)
    with pytest.raises(InvariantError, match="young in an mm"):
        host.check()

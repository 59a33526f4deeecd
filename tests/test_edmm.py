"""SGX2 EDMM ioctls as ioctl.c has them: MODIFY_TYPES, RESTRICT_PERMISSIONS, REMOVE_PAGES, their
order of checks, errnos and counts, and EACCEPT (an access) of modified pages (reference 3)."""

from __future__ import annotations

import errno
from collections.abc import Callable

import pytest

from engine import Blocked, Host, IoctlError
from engine.epc import ACCESSED, KIND_MASK
from engine.events import ReclaimBatch
from engine.reclaim import cgroup_reclaim_pages
from engine.sgx import PageKind

from .helpers import enclave, limit, pages, place


def _host(capacity: str = "1MiB", inline_work: bool = True) -> Host:
    host = Host(capacity, inline_work=inline_work)
    host.mkdir("/a")
    place(host, 10, "/a")
    return host


def _ioctl_error(call: Callable[[], object]) -> IoctlError:
    with pytest.raises(IoctlError) as e:
        call()
    return e.value


def _swap_out(host: Host, eid: int, indexes: range) -> None:
    """Write the enclave's pages out until every one of ``indexes`` is swapped (two passes age them)."""
    for _ in range(3):
        cgroup_reclaim_pages(host, host.cgroup("/a"), None, 1024, "test")
    encl = host.enclaves[eid]
    assert all(encl.page(i) < -1 for i in indexes)


def _kind(host: Host, eid: int, index: int) -> str:
    encl = host.enclaves[eid]
    frame = encl.page(index)
    assert frame >= 0 and host.epc.flags[frame] & KIND_MASK == encl.kind(index)
    return PageKind(encl.kind(index)).name


# -- ranges and readiness: sgx_ioc_sgx2_ready(), sgx_validate_offset_length() --------------


def _edmm_range_errors(host: Host, eid: int, calls: list[Callable[[int, int], object]]) -> None:
    for call in calls:
        with pytest.raises(OSError) as e:
            call(0, 1)
        assert e.value.errno == errno.EINVAL  # not initialised
    host.einit(10, eid)
    used = pages(host, "/a/misc.current")
    for call in calls:
        for first, count in ((15, 2), (16, 1), (0, 0), (0, 17), (1 << 31, 1)):
            with pytest.raises(OSError) as e:
                call(first, count)
            assert e.value.errno == errno.EINVAL and not isinstance(e.value, IoctlError), (first, count)
    assert pages(host, "/a/misc.current") == used
    assert all(host.enclaves[eid].kind(i) == PageKind.REG for i in range(8))
    host.check()


def test_edmm_ranges_outside_the_enclave_or_empty_are_einval_and_so_is_an_enclave_before_einit() -> None:
    host = _host()
    eid = enclave(host, 10, 8, init=False)  # 16 pages of ELRANGE
    _edmm_range_errors(
        host,
        eid,
        [
            lambda first, count: host.trim_pages(10, eid, first, count),
            lambda first, count: host.remove_trimmed(10, eid, first, count),
            lambda first, count: host.remove_pages(10, eid, first, count),
        ],
    )


def test_modify_types_and_restrict_permissions_check_readiness_and_range_first_einval() -> None:
    host = _host()
    eid = enclave(host, 10, 8, init=False)
    _edmm_range_errors(
        host,
        eid,
        [
            lambda first, count: host.modify_types(10, eid, first, count, "TCS"),
            lambda first, count: host.restrict_permissions(10, eid, first, count),
        ],
    )


# -- MODIFY_TYPES: sgx_enclave_modify_types() ------------------------------------------------------


def test_modify_types_allows_reg_to_tcs_reg_to_trim_and_tcs_to_trim_only_and_trim_again_is_einval() -> None:
    host = _host()
    eid = enclave(host, 10, 8)
    with pytest.raises(OSError) as e:
        host.modify_types(10, eid, 0, 1, "REG")  # the only new types are TCS and TRIM
    assert e.value.errno == errno.EINVAL and not isinstance(e.value, IoctlError)
    host.modify_types(10, eid, 0, 2, "TCS")
    host.modify_types(10, eid, 2, 1, "TRIM")
    host.access(10, eid, 0, 3)  # EACCEPT
    assert [_kind(host, eid, i) for i in range(4)] == ["TCS", "TCS", "TRIM", "REG"]
    e2 = _ioctl_error(lambda: host.modify_types(10, eid, 0, 1, "TCS"))  # TCS -> TCS
    assert (e2.errno, e2.done) == (errno.EINVAL, 0)
    e2 = _ioctl_error(lambda: host.modify_types(10, eid, 1, 3, "TRIM"))  # TCS -> TRIM, then TRIM again
    assert (e2.errno, e2.done) == (errno.EINVAL, 1)
    assert [_kind(host, eid, i) for i in range(4)] == ["TCS", "TRIM", "TRIM", "REG"]
    e2 = _ioctl_error(lambda: host.modify_types(10, eid, 2, 1, "TCS"))  # TRIM -> TCS
    assert (e2.errno, e2.done) == (errno.EINVAL, 0)
    host.check()


def test_modify_types_counts_the_pages_done_before_the_one_that_failed() -> None:
    host = _host()
    eid = enclave(host, 10, 6, size_pages=16)
    host.modify_types(10, eid, 3, 1, "TRIM")
    e = _ioctl_error(lambda: host.modify_types(10, eid, 0, 6, "TCS"))
    assert (e.errno, e.done) == (errno.EINVAL, 3)
    host.access(10, eid, 0, 6)
    assert [_kind(host, eid, i) for i in range(6)] == ["TCS", "TCS", "TCS", "TRIM", "REG", "REG"]
    e = _ioctl_error(lambda: host.modify_types(10, eid, 4, 4, "TRIM"))  # pages 6, 7 were never added
    assert (e.errno, e.done) == (errno.EFAULT, 2)
    host.check()


def test_reg_to_tcs_takes_the_page_off_its_lru_and_back_at_the_tail_with_its_ptes_zapped() -> None:
    """sgx_unmark_page_reclaimable(), sgx_zap_enclave_ptes(), sgx_mark_page_reclaimable():
    the page goes to its LRU's tail and no mm's PTE is young any more."""
    host = _host()
    eid = enclave(host, 10, 8)
    host.access(10, eid, 0, 8)
    frame = host.enclaves[eid].page(0)
    lru = host.cgroup("/a").lru
    assert lru.head == frame and host.epc.flags[frame] & ACCESSED
    host.modify_types(10, eid, 0, 1, "TCS")
    assert lru.tail == frame and lru.size == 8
    assert not host.epc.flags[frame] & ACCESSED
    assert host.epc.flags[frame] & KIND_MASK == PageKind.TCS
    trimmed = host.enclaves[eid].page(1)
    host.modify_types(10, eid, 1, 1, "TRIM")  # no PTE zap and no LRU move for TRIM
    assert lru.tail == frame and host.epc.flags[trimmed] & ACCESSED
    host.check()


def test_reg_to_tcs_zaps_the_ptes_of_every_mm() -> None:
    """sgx_zap_enclave_ptes() unmaps the page from every mm on the enclave's list: no mm keeps it young."""
    host = _host()
    eid = enclave(host, 10, 8)
    for pid in range(11, 16):  # six mms: three young bits in the flags, three beyond
        place(host, pid, "/a")
        host.access(pid, eid, 0, 1)
    host.access(10, eid, 0, 1)
    frame = host.enclaves[eid].page(0)
    assert len(host.epc.young_slots(frame)) == 6
    host.modify_types(10, eid, 0, 1, "TCS")
    assert host.epc.young_slots(frame) == [] and frame not in host.epc.young_more
    host.check()


def test_a_tcs_page_the_enclave_has_not_eaccepted_cannot_be_trimmed_emodt_is_not_modifiable_efault() -> None:
    """EMODT fails with SGX_PAGE_NOT_MODIFIABLE on a page still MODIFIED; the ioctl says EFAULT."""
    host = _host()
    eid = enclave(host, 10, 8)
    host.modify_types(10, eid, 0, 2, "TCS")
    host.access(10, eid, 1, 1)  # page 1 is EACCEPTed, page 0 is not
    host.modify_types(10, eid, 1, 1, "TRIM")
    e = _ioctl_error(lambda: host.modify_types(10, eid, 0, 1, "TRIM"))
    assert (e.errno, e.done) == (errno.EFAULT, 0)
    assert _kind(host, eid, 0) == "TCS"
    host.access(10, eid, 0, 1)
    host.modify_types(10, eid, 0, 1, "TRIM")
    assert _kind(host, eid, 0) == "TRIM"
    host.check()


def test_modify_types_runs_direct_reclaim_per_page_and_loads_swapped_pages_no_reclaim() -> None:
    host = _host()
    limit(host, "/a", 150)
    eid = enclave(host, 10, 200, size_pages=256)  # the first pages were written out to make room
    assert all(host.enclaves[eid].page(i) < -1 for i in range(20))
    host.take_events()
    host.modify_types(10, eid, 0, 20, "TRIM")
    assert all(host.enclaves[eid].kind(i) == PageKind.TRIM for i in range(20))
    assert all(host.enclaves[eid].page(i) >= 0 for i in range(20))  # loaded back, charged to /a
    contexts = {e.context for e in host.take_events() if isinstance(e, ReclaimBatch)}
    assert "direct" in contexts
    host.check()


# -- RESTRICT_PERMISSIONS: sgx_enclave_restrict_permissions() ----------------------------------


def test_restrict_permissions_loads_each_page_after_direct_reclaim_and_takes_reg_pages_only() -> None:
    host = _host()
    limit(host, "/a", 150)
    eid = enclave(host, 10, 200, size_pages=256)  # the first pages were written out to make room
    assert all(host.enclaves[eid].page(i) < -1 for i in range(10))
    host.take_events()
    host.restrict_permissions(10, eid, 0, 10)
    assert all(host.enclaves[eid].page(i) >= 0 for i in range(10))  # loaded: charged to /a again
    assert "direct" in {e.context for e in host.take_events() if isinstance(e, ReclaimBatch)}
    host.modify_types(10, eid, 12, 1, "TCS")
    e = _ioctl_error(lambda: host.restrict_permissions(10, eid, 10, 5))
    assert (e.errno, e.done) == (errno.EINVAL, 2)  # a TCS page has no permissions to restrict
    host.check()


def test_restrict_permissions_load_that_gets_ebusy_is_eagain_with_the_count() -> None:
    """Direct reclaim frees 16 pages a step, far from enough: the load of page 4 gets EBUSY."""
    host = _host("4MiB")
    limit(host, "/a", 600)
    eid = enclave(host, 10, 590, size_pages=1024)
    host.access(10, eid, 0, 4)  # young: direct reclaim passes them over
    limit(host, "/a", 100)
    e = _ioctl_error(lambda: host.restrict_permissions(10, eid, 0, 8))
    assert (e.errno, e.done) == (errno.EAGAIN, 4)
    assert host.work  # the EBUSY queued the cgroup's work item
    host.check()


# -- REMOVE_PAGES: sgx_encl_remove_pages() ------------------------------------------------------


def test_remove_pages_loads_a_swapped_page_before_it_checks_that_it_is_trimmed() -> None:
    """The load comes first: a swapped REG page is ELDU'd (charged, backing truncated), then EPERM."""
    host = _host()
    eid = enclave(host, 10, 40, size_pages=64)
    _swap_out(host, eid, range(0, 40))
    current, backing = pages(host, "/a/misc.current"), pages(host, "/a/memory.current")
    e = _ioctl_error(lambda: host.remove_trimmed(10, eid, 5, 3))
    assert (e.errno, e.done) == (errno.EPERM, 0)
    assert host.enclaves[eid].page(5) >= 0 and host.enclaves[eid].page(6) < -1
    assert pages(host, "/a/misc.current") == current + 2  # the page, and its SECS first
    assert pages(host, "/a/memory.current") < backing
    host.check()


def test_a_trimmed_page_the_enclave_has_not_eaccepted_is_eperm() -> None:
    """The EMODPR probe: no fault means the enclave has not EACCEPTed the trimmed page."""
    host = _host()
    eid = enclave(host, 10, 8)
    host.trim_pages(10, eid, 0, 4)
    host.access(10, eid, 0, 2)  # EACCEPT of pages 0 and 1
    e = _ioctl_error(lambda: host.remove_trimmed(10, eid, 0, 4))
    assert (e.errno, e.done) == (errno.EPERM, 2)
    assert host.enclaves[eid].page(0) == -1 and host.enclaves[eid].page(2) >= 0
    host.access(10, eid, 2, 2)
    assert host.remove_trimmed(10, eid, 2, 2) == 2
    assert pages(host, "/a/misc.current") == 4 + 2  # REG pages 4..7, SECS, VA
    host.check()


def test_eaccept_of_a_swapped_trimmed_page_loads_it_and_an_accepted_page_stays_accepted_when_written_out() -> None:
    host = _host()
    eid = enclave(host, 10, 40, size_pages=64)
    host.trim_pages(10, eid, 0, 40)
    _swap_out(host, eid, range(0, 40))
    assert host.access(10, eid, 0, 20) == 20  # faults: ELDU, and each is its EACCEPT
    _swap_out(host, eid, range(0, 40))
    assert host.remove_trimmed(10, eid, 0, 20) == 20  # the loads first, then the pages go
    e = _ioctl_error(lambda: host.remove_trimmed(10, eid, 20, 1))
    assert (e.errno, e.done) == (errno.EPERM, 0)
    assert host.read("/a/memory.current") != "0\n"
    host.release(eid)
    assert pages(host, "/a/misc.current") == 0 and host.read("/a/memory.current") == "0\n"
    host.check()


def test_the_access_that_blocks_has_eaccepted_exactly_the_pages_before_it() -> None:
    """A fault that waits (Blocked, done) has run EACCEPT for the pages before it, not after."""
    host = _host(inline_work=False)
    eid = enclave(host, 10, 60, size_pages=128)
    host.trim_pages(10, eid, 0, 60)
    _swap_out(host, eid, range(0, 60))
    for index in range(30):  # loaded (REMOVE_PAGES loads first), still not EACCEPTed: EPERM
        assert _ioctl_error(lambda index=index: host.remove_trimmed(10, eid, index, 1)).errno == errno.EPERM
    limit(host, "/a", pages(host, "/a/misc.current"))  # no room for one more load
    with pytest.raises(Blocked) as e:
        host.access(10, eid, 0, 60)  # pages 0..29 resident, 30 faults and waits
    assert e.value.done == 30
    encl = host.enclaves[eid]
    assert [encl.is_modified(i) for i in (0, 29, 30, 59)] == [False, False, True, True]
    limit(host, "/a", 200)
    assert host.remove_trimmed(10, eid, 0, 30) == 30
    e2 = _ioctl_error(lambda: host.remove_trimmed(10, eid, 30, 1))
    assert (e2.errno, e2.done) == (errno.EPERM, 0)
    assert host.access(10, eid, 30, 30) == 29  # page 30 was loaded by that REMOVE_PAGES
    assert host.remove_trimmed(10, eid, 30, 30) == 30
    assert encl.modified is None
    host.check()


def test_remove_pages_is_trim_eaccept_remove_and_a_page_trimmed_already_is_einval() -> None:
    host = _host()
    eid = enclave(host, 10, 16)
    assert host.remove_pages(10, eid, 0, 4) == 4
    host.trim_pages(10, eid, 6, 1)
    e = _ioctl_error(lambda: host.remove_pages(10, eid, 4, 4))  # MODIFY_TYPES meets TRIM at page 6
    assert (e.errno, e.done) == (errno.EINVAL, 2)
    assert pages(host, "/a/misc.current") == 12 + 2
    host.check()


def test_a_removed_page_comes_back_by_eaug_as_reg_and_not_modified() -> None:
    host = _host()
    eid = enclave(host, 10, 8)
    assert host.remove_pages(10, eid, 0, 1) == 1
    assert host.access(10, eid, 0, 1) == 1  # EAUG
    assert _kind(host, eid, 0) == "REG" and not host.enclaves[eid].is_modified(0)
    assert host.enclaves[eid].modified is None  # nothing MODIFIED: nothing kept
    host.check()

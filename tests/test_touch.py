"""Host.touch() and Host.vepc_touch(): page ranges in one call, and waiting as a value (review Z1, Z3).

A touch serves its ranges in order, at most ``limit`` pages, and says how many pages it
served, how many faulted and whether it stopped because a fault must wait; only errors
raise.  access() and vepc_access() are the same code for one range, raising Blocked where
touch() says it waits.
"""

from __future__ import annotations

import errno

import pytest

from engine import PAGE_SIZE, Blocked, Host, SigBus, Touched

from .helpers import cgroups, enclave, limit, pages
from .test_stall import full_parent

PID = 10
RANGES = [(0, 40), (100, 3), (60, 30), (5, 2), (200, 1)]


def _swapped_host(inline_work: bool = True) -> tuple[Host, int]:
    """/a limited to 96 pages, task 10 in it with an initialised 256-page enclave of 250 pages,
    most of them written out; the events so far taken."""
    host = Host("4MiB", inline_work=inline_work)
    cgroups(host, {"/a": 96}, {PID: "/a"})
    eid = enclave(host, PID, 250, size_pages=256)
    host.run_pending_work()
    host.take_events()
    return host, eid


def _files(host: Host) -> dict[str, str]:
    """Every file of every cgroup and its text."""
    paths = [f"{cg.rstrip('/')}/{name}" for cg in host.cgroups() for name in host.listdir(cg) if "." in name]
    return {path: host.read(path) for path in paths}


def test_a_touch_of_ranges_is_the_same_as_one_access_per_range() -> None:
    one, eid = _swapped_host()
    other, _ = _swapped_host()
    touched = one.touch(PID, eid, RANGES)
    faults = sum(other.access(PID, eid, first, count) for first, count in RANGES)
    assert touched == Touched(sum(count for _, count in RANGES), faults, False)
    assert faults > 0
    assert [e.to_dict() for e in one.take_events()] == [e.to_dict() for e in other.take_events()]
    assert _files(one) == _files(other)
    one.check()


def test_a_touch_stops_after_limit_pages_and_resumes_from_where_it_stopped() -> None:
    one, eid = _swapped_host()
    other, _ = _swapped_host()
    whole = other.touch(PID, eid, RANGES)
    served = faults = 0
    rest = list(RANGES)
    while rest:
        part = one.touch(PID, eid, rest, limit=17)
        assert part.pages == min(17, sum(count for _, count in rest)) and not part.waiting
        served += part.pages
        faults += part.faults
        rest = _after(rest, part.pages)
    assert (served, faults) == (whole.pages, whole.faults)
    assert [e.to_dict() for e in one.take_events()] == [e.to_dict() for e in other.take_events()]
    assert one.touch(PID, eid, RANGES, limit=0) == Touched(0, 0, False)
    assert one.touch(PID, eid, [(0, 0), (5, 3), (9, 4)], limit=5).pages == 5  # an empty range uses no budget
    one.check()


def _after(ranges: list[tuple[int, int]], pages: int) -> list[tuple[int, int]]:
    """The ranges left once their first ``pages`` pages are served."""
    out = []
    for first, count in ranges:
        skip = min(pages, count)
        pages -= skip
        if count > skip:
            out.append((first + skip, count - skip))
    return out


def test_a_fault_that_must_wait_is_a_value_not_an_exception() -> None:
    host, eid = _swapped_host(inline_work=False)
    resident = next(i for i in range(250) if host.enclaves[eid].page(i) >= 0)
    swapped = [i for i in range(250) if host.enclaves[eid].page(i) < 0]
    limit(host, "/a", pages(host, "/a/misc.current"))  # full: the next fault's charge gets EBUSY
    touched = host.touch(PID, eid, [(resident, 1), (swapped[0], 1), (swapped[1], 1)])
    assert touched == Touched(1, 0, True)  # the resident page, then a wait at the first fault
    assert host.cgroup("/a").work_queued
    with pytest.raises(Blocked) as e:
        host.access(PID, eid, swapped[0], 2)
    assert (e.value.done, e.value.faults) == (0, 0)
    host.run_pending_work()  # the worker makes room: the caller resumes where it stopped
    assert host.touch(PID, eid, [(swapped[0], 1), (swapped[1], 1)]) == Touched(2, 2, False)
    host.check()


def test_a_stalled_fault_in_the_in_process_core_waits_too() -> None:
    host, _held, small = full_parent()  # /p is full; /p/b's worker finds nothing to do
    assert host.touch(2, small, [(0, 2), (2, 1)]) == Touched(2, 0, True)  # EAUG of page 2 stalls
    host.check()


def test_a_bad_range_anywhere_is_refused_before_any_page() -> None:
    host, eid = _swapped_host()
    before = _files(host)
    young = host.epc.flags[:]
    for bad in [(250, 7), (-1, 2), (3, -1)]:
        with pytest.raises(OSError) as e:
            host.touch(PID, eid, [(0, 40), bad])
        assert e.value.errno == errno.EFAULT
    assert _files(host) == before and host.epc.flags == young and not host.take_events()
    with pytest.raises(OSError) as e:
        host.touch(PID, 999, [(0, 1)])
    assert e.value.errno == errno.EINVAL


def test_errors_still_raise_sigbus() -> None:
    host = Host("1MiB")
    vid = host.vepc_open(20, 64 * PAGE_SIZE)
    cgroups(host, {"/v": 4}, {20: "/v"})
    with pytest.raises(SigBus):  # /v full of guest pages, nothing reclaimable: ENOMEM
        host.vepc_touch(20, vid, [(0, 2), (10, 8)])
    assert pages(host, "/v/misc.current") == 4
    host.check()


def test_a_vepc_touch_serves_ranges_waits_and_resumes() -> None:
    host = Host("1MiB", inline_work=False)
    cgroups(host, {"/v": 20}, {20: "/v"})
    eid = enclave(host, 20, 8, size_pages=16)  # VA + SECS + 8 reclaimable pages
    vid = host.vepc_open(20, 64 * PAGE_SIZE)
    # 4 pages, 4 more of which 2 are new, then 1 of the last range: the limit
    assert host.vepc_touch(20, vid, [(0, 4), (2, 4), (30, 2)], limit=9) == Touched(9, 7, False)
    assert host.vepc_touch(20, vid, [(40, 4)]) == Touched(3, 3, True)  # /v full: wait for its worker
    host.run_pending_work()
    assert host.vepc_touch(20, vid, [(43, 1)]) == Touched(1, 1, False)
    assert host.enclaves[eid].nr_swapped > 0
    with pytest.raises(OSError) as e:
        host.vepc_touch(20, vid, [(0, 1), (63, 2)])
    assert e.value.errno == errno.EFAULT
    host.check()

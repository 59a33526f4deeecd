"""Enclave page lifecycle: allocation order, signals during ADD_PAGES, events on the clock (reference 3)."""

from __future__ import annotations

import errno

import pytest

from engine import PAGE_SIZE, Host, VirtualClock
from engine.events import EnclaveCreated, ReclaimBatch
from engine.reclaim import cgroup_reclaim_pages
from engine.sgx import PageKind

from .helpers import enclave, limit, pages, place


def kinds_by_frame(host: Host) -> list[str]:
    return [PageKind(host.epc.flags[f] & 7).name for f in range(len(host.epc.flags))]


def test_allocation_order_ecreate_va_then_secs_eadd_data_then_va() -> None:
    host = Host("4MiB")
    eid = host.ecreate(10, 1024 * PAGE_SIZE)
    assert kinds_by_frame(host) == ["VA", "SECS"]  # frames are handed out in order on a fresh host
    host.add_pages(10, eid, 511)  # page_cnt reaches 512
    host.add_pages(10, eid, 1)
    assert kinds_by_frame(host)[-2:] == ["REG", "VA"]  # the data page first, then the VA page


def test_allocation_order_eaug_secs_then_data_then_va() -> None:
    host = Host("4MiB")
    host.mkdir("/a")
    place(host, 10, "/a")
    eid = enclave(host, 10, 510, size_pages=1024)
    assert host.augment(10, eid, 1) == 1  # page_cnt 512: the next EAUG needs a VA page
    cgroup_reclaim_pages(host, host.cgroup("/a"), None, 1024, "test")  # every page out, the SECS too
    assert host.enclaves[eid].secs_frame < 0
    stack = host.epc.free_frames()  # allocations pop from the top, in order
    assert host.augment(10, eid, 1) == 1
    assert [PageKind(host.epc.flags[f] & 7).name for f in stack[:3]] == ["SECS", "REG", "VA"]
    host.check()


def test_signal_after_the_first_page_stops_add_pages_with_a_partial_count() -> None:
    host = Host("1MiB")
    host.mkdir("/a")
    limit(host, "/a", 10)
    place(host, 10, "/a")
    eid = enclave(host, 10, 4, init=False, size_pages=64)
    host.emit = lambda event: host.signals.add(10) if isinstance(event, ReclaimBatch) else None
    done = host.add_pages(10, eid, 20)  # the first reclaim batch "delivers" the signal
    assert 0 < done < 20
    host.check()


def test_events_are_stamped_by_the_injected_clock() -> None:
    clock = VirtualClock(1_000)
    host = Host("1MiB", clock=clock)
    host.ecreate(10, 8192)
    clock.advance(500)
    host.mkdir("/a")
    events = host.take_events()
    assert isinstance(events[0], EnclaveCreated) and events[0].t_ns == 1_000
    assert events[1].to_dict() == {"kind": "mkdir", "t_ns": 1_500, "cgroup": "/a"}
    assert host.take_events() == []


@pytest.mark.parametrize("size", [0, 1, PAGE_SIZE, 3 * PAGE_SIZE, 5000, 6 * PAGE_SIZE, (1 << 20) + PAGE_SIZE])
def test_ecreate_validates_nothing_the_cpu_refuses_a_bad_secs_after_both_charges_and_the_ioctl_frees_them_eio(
    size: int,
) -> None:
    """sgx_encl_create() grows the VA page and allocates the SECS before ENCLS[ECREATE] checks
    the SECS (size a power of two of at least two pages); a failure is -EIO with both pages
    freed, so misc.peak has risen by two pages and nothing stays charged."""
    host = Host("1MiB")
    host.mkdir("/a")
    place(host, 10, "/a")
    with pytest.raises(OSError) as e:
        host.ecreate(10, size)
    assert e.value.errno == errno.EIO
    assert "ECREATE refused the SECS" in str(e.value) and "power of two" in str(e.value)
    assert pages(host, "/a/misc.current") == 0 and pages(host, "/misc.current") == 0
    assert pages(host, "/a/misc.peak") == 2
    assert not host.enclaves
    host.check()


def test_ecreate_of_a_bad_size_at_a_full_limit_fails_as_its_charge_does_and_counts_the_events() -> None:
    """The charges come first: with room for the VA page only, the SECS's charge fails (ENOMEM:
    nothing reclaimable) and misc.events counts it; with room for both, EIO after them."""
    host = Host("1MiB")
    host.mkdir("/a")
    place(host, 10, "/a")
    limit(host, "/a", 1)
    with pytest.raises(OSError) as e:
        host.ecreate(10, 3 * PAGE_SIZE)
    assert e.value.errno == errno.ENOMEM
    assert host.read("/a/misc.events") == "sgx_epc.max 1\n"
    limit(host, "/a", 2)
    with pytest.raises(OSError) as e:
        host.ecreate(10, 3 * PAGE_SIZE)
    assert e.value.errno == errno.EIO
    assert host.read("/a/misc.events") == "sgx_epc.max 1\n" and pages(host, "/a/misc.peak") == 2
    assert pages(host, "/a/misc.current") == 0
    host.check()

"""Guest vEPC (never reclaimable, SIGBUS at the limit) and SGX2 EDMM growth and removal (reference 3, 4, 7.8)."""

from __future__ import annotations

import errno

import pytest

from engine import PAGE_SIZE, Host, IoctlError, SigBus
from engine.events import ReclaimBatch

from .helpers import enclave, limit, pages, place, resident


def test_vepc_pages_are_charged_on_first_touch_and_never_on_an_lru() -> None:
    host = Host("1MiB")
    host.mkdir("/vm")
    place(host, 20, "/vm")
    vid = host.vepc_open(20, 64 * PAGE_SIZE)
    assert pages(host, "/vm/misc.current") == 0
    assert host.vepc_access(20, vid, 0, 10) == 10
    assert host.vepc_access(20, vid, 0, 10) == 0  # already present
    assert pages(host, "/vm/misc.current") == 10
    assert host.cgroup("/vm").lru.size == 0
    host.vepc_release(vid)
    assert pages(host, "/vm/misc.current") == 0
    host.check()


def test_vm_over_its_limit_gets_sigbus_while_an_enclave_beside_it_finishes() -> None:
    host = Host("1MiB")
    host.mkdir("/vm")
    host.mkdir("/enc")
    limit(host, "/vm", 16)
    limit(host, "/enc", 16)
    place(host, 20, "/vm")
    place(host, 21, "/enc")
    vid = host.vepc_open(20, 64 * PAGE_SIZE)
    eid = enclave(host, 21, 50)
    host.vepc_access(20, vid, 0, 16)
    with pytest.raises(SigBus) as e:
        host.vepc_access(20, vid, 16, 1)
    assert e.value.pid == 20 and e.value.reason == errno.ENOMEM
    assert [ev.kind for ev in host.take_events()][-1] == "sigbus"
    host.access(21, eid, 0, 50)  # the enclave keeps running, reclaiming its own pages
    host.release(eid)
    host.vepc_release(vid)
    assert pages(host, "/misc.current") == 0
    host.check()


def test_a_vm_under_its_limit_gets_sigbus_when_the_epc_is_full_of_another_cgroups_pages() -> None:
    """misc_cg_try_charge() fails at root (the capacity); /v's subtree has no LRU page, so ENOMEM and
    SIGBUS with no reclaim elsewhere (reference 7.4), and the message names the full EPC, not /v (L11)."""
    host = Host("256KiB")  # 64 pages
    host.mkdir("/v")
    host.mkdir("/e")
    limit(host, "/v", 64)
    place(host, 20, "/v")
    place(host, 21, "/e")
    eid = enclave(host, 21, 62)  # 62 pages, a VA page and the SECS: the EPC is full
    vid = host.vepc_open(20, 16 * PAGE_SIZE)
    with pytest.raises(SigBus) as e:
        host.vepc_access(20, vid, 0, 1)
    assert e.value.reason == errno.ENOMEM
    assert str(e.value) == "SIGBUS to pid 20: the EPC is full and /v has nothing on its LRUs to reclaim (ENOMEM)"
    assert host.read("/v/misc.events") == "sgx_epc.max 0\n"  # root refused: no event below it
    assert len(resident(host, eid)) == 62  # no reclaim of /e's pages
    host.check()


def test_vepc_beside_an_enclave_in_the_same_cgroup_gets_its_pages_by_reclaim() -> None:
    host = Host("1MiB")
    host.mkdir("/mix")
    limit(host, "/mix", 40)
    place(host, 20, "/mix")
    eid = enclave(host, 20, 38)
    vid = host.vepc_open(20, 64 * PAGE_SIZE)
    assert host.vepc_access(20, vid, 0, 30) == 30  # EBUSY, the worker reclaims the enclave, retry
    assert len(resident(host, eid)) <= 8
    assert pages(host, "/mix/misc.current") <= 40
    host.check()


def test_augment_needs_einit_and_grows_by_eaug() -> None:
    host = Host("4MiB")
    eid = enclave(host, 10, 4, init=False, size_pages=1024)
    with pytest.raises(SigBus):
        host.augment(10, eid, 1)  # a fault on an absent page before EINIT
    host.einit(10, eid)
    assert host.augment(10, eid, 600) == 600
    encl = host.enclaves[eid]
    assert encl.next_index == 604 and len(encl.va_frames) == 2  # page_cnt 605: a second VA page
    assert pages(host, "/misc.current") == 604 + 1 + 2
    with pytest.raises(OSError) as e:
        host.augment(10, eid, 1000)
    assert e.value.errno == errno.EFAULT
    host.check()


def test_eaug_is_no_reclaim_so_it_waits_for_the_worker() -> None:
    host = Host("1MiB", inline_work=False)
    host.mkdir("/a")
    limit(host, "/a", 20)
    place(host, 10, "/a")
    eid = enclave(host, 10, 18, size_pages=64)
    with pytest.raises(Exception, match="async reclaim"):
        host.augment(10, eid, 5)
    assert host.work
    host.run_pending_work()
    assert host.augment(10, eid, 5) == 5
    host.check()


def test_remove_pages_returns_usage_and_keeps_va_pages() -> None:
    host = Host("4MiB")
    host.mkdir("/a")
    place(host, 10, "/a")
    eid = enclave(host, 10, 600, size_pages=1024)
    before = pages(host, "/a/misc.current")
    assert host.remove_pages(10, eid, 100, 500) == 500
    assert pages(host, "/a/misc.current") == before - 500
    encl = host.enclaves[eid]
    assert len(encl.va_frames) == 2 and encl.page_cnt == 1 + 100
    assert host.access(10, eid, 100, 1) == 1  # a removed page comes back by EAUG on a fault
    host.check()


def test_remove_pages_of_swapped_pages_loads_them_first_and_reclaims_directly() -> None:
    host = Host("1MiB")
    host.mkdir("/a")
    limit(host, "/a", 150)
    place(host, 10, "/a")
    eid = enclave(host, 10, 200, size_pages=256)
    host.take_events()
    assert host.remove_pages(10, eid, 0, 200) == 200
    contexts = {e.context for e in host.take_events() if isinstance(e, ReclaimBatch)}
    assert "direct" in contexts  # sgx_reclaim_direct() ran before page steps near the limit
    assert pages(host, "/a/misc.current") <= 3  # SECS + VA (+ nothing else)
    assert host.read("/a/memory.current") == "0\n"
    host.check()


def test_remove_pages_errors() -> None:
    host = Host("1MiB")
    eid = enclave(host, 10, 8, init=False)
    with pytest.raises(OSError) as e:
        host.remove_pages(10, eid, 0, 1)
    assert e.value.errno == errno.EINVAL  # before EINIT
    host.einit(10, eid)
    with pytest.raises(IoctlError) as e:
        host.remove_pages(10, eid, 6, 4)  # pages 8, 9 were never added
    assert e.value.errno == errno.EFAULT
    host.check()


def test_edmm_load_that_gets_ebusy_fails_with_eagain_at_once() -> None:
    """EDMM ioctls map -EBUSY to EAGAIN; they do not wait for the worker."""
    host = Host("4MiB")
    host.mkdir("/a")
    limit(host, "/a", 400)
    place(host, 1, "/a")
    eid = enclave(host, 1, 600, size_pages=1024)
    limit(host, "/a", 100)  # far below usage; direct reclaim frees only 16 per step
    with pytest.raises(IoctlError) as e:
        host.remove_pages(1, eid, 0, 1)
    assert e.value.errno == errno.EAGAIN and e.value.done == 0
    assert host.work  # the EBUSY queued the cgroup's work item
    host.check()


def test_add_and_remove_of_zero_pages_is_einval() -> None:
    host = Host("1MiB")
    eid = enclave(host, 1, 4, init=False)
    for call in (lambda: host.add_pages(1, eid, 0), lambda: host.remove_pages(1, eid, 0, 0)):
        with pytest.raises(OSError) as e:
            call()
        assert e.value.errno == errno.EINVAL

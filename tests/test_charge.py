"""Charging: hierarchy, events, ENOMEM / EBUSY / ERESTARTSYS and limit semantics (reference 2, 4, 7)."""

from __future__ import annotations

import errno

import pytest

from engine import PAGE_SIZE, Blocked, Host, IoctlError, SigBus
from engine.charge import try_charge
from engine.misc import uncharge as misc_uncharge
from engine.sgx import ERESTARTSYS, NO_RECLAIM

from .helpers import enclave, limit, pages, place, resident, value


def test_events_land_on_the_limiting_parent_not_the_requesting_child() -> None:
    host = Host("1MiB")
    host.mkdir("/p")
    host.mkdir("/p/c")
    limit(host, "/p", 40)
    place(host, 10, "/p/c")
    enclave(host, 10, 100)
    assert value(host, "/p/misc.events.local") > 0
    assert value(host, "/p/misc.events") == value(host, "/p/misc.events.local")
    assert host.read("/p/c/misc.events") == "sgx_epc.max 0\n"
    assert host.read("/p/c/misc.events.local") == "sgx_epc.max 0\n"
    host.check()


def test_events_count_on_every_ancestor_except_root() -> None:
    host = Host("1MiB")
    for path in ("/g", "/g/p", "/g/p/c"):
        host.mkdir(path)
    limit(host, "/g/p/c", 20)
    place(host, 10, "/g/p/c")
    enclave(host, 10, 50)
    hits = value(host, "/g/p/c/misc.events.local")
    assert hits > 0
    assert value(host, "/g/p/c/misc.events") == hits
    assert value(host, "/g/p/misc.events") == hits and value(host, "/g/p/misc.events.local") == 0
    assert value(host, "/g/misc.events") == hits
    assert host.tree.root.misc_events == 0  # misc_cg_event() stops below root, which has no misc.events


def test_a_charge_refused_at_root_counts_only_roots_local_event() -> None:
    """misc_cg_event(root): events_local + 1, and the hierarchical loop runs for no level."""
    host = Host(64 * PAGE_SIZE)
    vid = host.vepc_open(10, 128 * PAGE_SIZE)  # pid 10 in root
    host.vepc_access(10, vid, 0, 64)
    with pytest.raises(SigBus):
        host.vepc_access(10, vid, 64, 1)
    root = host.tree.root
    assert (root.misc_events_local, root.misc_events) == (1, 0)
    host.check()


def test_every_failed_attempt_counts_an_event() -> None:
    """Sync reclaim re-charges after each batch: young pages make one EADD fail twice."""
    host = Host("1MiB")
    host.mkdir("/a")
    limit(host, "/a", 22)
    place(host, 10, "/a")
    eid = enclave(host, 10, 20, init=False, size_pages=64)  # 20 REG + SECS + VA = 22: full
    host.access(10, eid, 0, 20)  # every page young
    host.take_events()
    host.add_pages(10, eid, 1)
    hits = [e for e in host.take_events() if e.kind == "limit_hit"]
    assert len(hits) == 2  # batch 1 only rotated young pages; batch 2 freed some
    assert value(host, "/a/misc.events") == value(host, "/a/misc.events.local") == 2
    host.check()


def test_capacity_is_checked_at_every_level_root_included() -> None:
    host = Host(64 * PAGE_SIZE)
    host.mkdir("/a")
    place(host, 10, "/a")
    vid = host.vepc_open(10, 128 * PAGE_SIZE)
    host.vepc_access(10, vid, 0, 64)
    with pytest.raises(SigBus) as e:
        host.vepc_access(10, vid, 64, 1)
    assert e.value.reason == errno.ENOMEM
    assert value(host, "/a/misc.events.local") == 1  # /a's level refused: capacity, not its max
    assert pages(host, "/misc.current") == 64
    host.check()


def test_enomem_when_the_requesting_subtree_has_nothing_to_reclaim() -> None:
    """VA and SECS fill the limit: the EADD that needs a second VA page gets ENOMEM."""
    host = Host("1MiB")
    host.mkdir("/a")
    limit(host, "/a", 3)
    place(host, 10, "/a")
    eid = host.ecreate(10, 2048 * PAGE_SIZE)  # VA + SECS
    assert host.add_pages(10, eid, 511) == 511  # page_cnt 512: the next EADD needs a second VA page
    with pytest.raises(IoctlError) as e:
        host.add_pages(10, eid, 2)
    assert e.value.errno == errno.ENOMEM and e.value.done == 0
    assert [ev.kind for ev in host.take_events()][-1] == "enomem"
    assert pages(host, "/a/misc.current") == 2  # VA + SECS: the failed EADD's data page was uncharged
    host.check()


def test_nested_limit_enomem_looks_only_at_the_requesting_subtree() -> None:
    """A child with an empty LRU gets ENOMEM though its sibling holds reclaimable pages [inference]."""
    host = Host("1MiB")
    for path in ("/p", "/p/full", "/p/empty"):
        host.mkdir(path)
    limit(host, "/p", 30)
    place(host, 10, "/p/full")
    place(host, 11, "/p/empty")
    enclave(host, 10, 100)  # fills /p with reclaimable pages of /p/full
    vid = host.vepc_open(11, 64 * PAGE_SIZE)
    used = pages(host, "/p/misc.current")
    host.vepc_access(11, vid, 0, 30 - used) if used < 30 else None
    with pytest.raises(SigBus) as e:
        host.vepc_access(11, vid, 30 - used, 1)
    assert e.value.reason == errno.ENOMEM
    host.check()


def test_do_reclaim_charges_reclaim_the_requesting_subtree_until_it_fits() -> None:
    host = Host("1MiB")
    host.mkdir("/a")
    limit(host, "/a", 50)
    place(host, 10, "/a")
    eid = enclave(host, 10, 200)
    assert pages(host, "/a/misc.current") <= 50
    assert host.enclaves[eid].nr_swapped == 200 - len(resident(host, eid))
    host.check()


def test_no_reclaim_charge_queues_one_work_item_and_the_fault_waits() -> None:
    host = Host("1MiB", inline_work=False)
    host.mkdir("/a")
    limit(host, "/a", 20)
    place(host, 10, "/a")
    eid = enclave(host, 10, 40)
    cg = host.cgroup("/a")
    vid = host.vepc_open(10, 64 * PAGE_SIZE)
    host.vepc_access(10, vid, 0, 20 - pages(host, "/a/misc.current"))
    host.take_events()
    for _ in range(3):
        with pytest.raises(Blocked):  # EBUSY: the fault would be retried after the worker ran
            host.vepc_access(10, vid, 30, 1)
    assert list(host.work) == [cg.id] and cg.work_queued  # one work item per cgroup
    kinds = [e.kind for e in host.take_events()]
    assert kinds.count("work_queued") == 1 and kinds.count("limit_hit") == 3
    host.run_pending_work()
    assert not host.work and not cg.work_queued
    assert host.vepc_access(10, vid, 30, 1) == 1
    assert host.enclaves[eid].nr_swapped > 0
    host.check()


def test_no_reclaim_charge_returns_ebusy_only_with_something_to_reclaim() -> None:
    host = Host("1MiB")
    host.mkdir("/a")
    limit(host, "/a", 12)
    place(host, 10, "/a")
    enclave(host, 10, 10)
    cg = host.cgroup("/a")
    assert try_charge(host, cg, NO_RECLAIM, 10, "test") == -errno.EBUSY  # its work item queued: wait for it
    assert cg.work_queued
    host.run_pending_work()
    assert try_charge(host, cg, NO_RECLAIM, 10, "test") == 0  # room again
    misc_uncharge(cg)
    host.check()


def test_signal_pending_gives_erestartsys_before_any_page() -> None:
    host = Host("1MiB")
    host.mkdir("/a")
    limit(host, "/a", 10)
    place(host, 10, "/a")
    eid = enclave(host, 10, 5, init=False)
    host.signal(10)
    with pytest.raises(IoctlError) as e:
        host.add_pages(10, eid, 3)
    assert e.value.errno == ERESTARTSYS and e.value.done == 0
    host.check()


def test_signal_during_reclaim_gives_erestartsys() -> None:
    host = Host("1MiB")
    host.mkdir("/a")
    limit(host, "/a", 10)
    place(host, 10, "/a")
    eid = enclave(host, 10, 5, init=False)
    host.add_pages(10, eid, 3)  # 8 REG + SECS + VA: full
    cg = host.cgroup("/a")
    host.signal(10)
    with pytest.raises(OSError) as e:
        try_charge(host, cg, NO_RECLAIM, 10, "test")
    assert e.value.errno == ERESTARTSYS
    host.check()


def test_erestartsys_after_a_reclaim_round_comes_after_one_more_failed_charge() -> None:
    """sgx_cgroup_try_charge() charges again after a DO_RECLAIM round and only that attempt
    sees the signal: the OOM kill the round caused counts one more event first."""
    host = Host("1MiB")
    host.mkdir("/a")
    limit(host, "/a", 10)
    host.write("/a/memory.max", "0")  # no backing: the round's first page OOM-kills task 10
    place(host, 10, "/a")
    eid = host.ecreate(10, 16 * PAGE_SIZE)
    host.add_pages(10, eid, 8)  # 8 REG + SECS + VA: full
    with pytest.raises(IoctlError) as e:
        host.add_pages(10, eid, 1)
    assert e.value.errno == ERESTARTSYS and e.value.done == 0
    assert host.signals == {10}
    assert value(host, "/a/misc.events.local") == 2  # the first attempt, and the one after the round
    host.check()


def test_limit_lowered_below_usage_bites_only_at_the_next_charge() -> None:
    host = Host("1MiB")
    host.mkdir("/a")
    place(host, 10, "/a")
    eid = enclave(host, 10, 60)
    before = pages(host, "/a/misc.current")
    limit(host, "/a", 20)
    assert pages(host, "/a/misc.current") == before  # nothing reclaimed, nobody killed
    assert host.run_pending_work() == 0
    assert pages(host, "/a/misc.current") == before
    host.vepc_access(10, host.vepc_open(10, 4096), 0, 1)  # next charge: EBUSY, worker, retry
    assert pages(host, "/a/misc.current") <= 20
    assert host.enclaves[eid].nr_swapped > 0
    host.check()


def test_limit_lowered_then_do_reclaim_goes_down_to_max() -> None:
    host = Host("1MiB")
    host.mkdir("/a")
    place(host, 10, "/a")
    eid = enclave(host, 10, 60, size_pages=128)
    limit(host, "/a", 20)
    encl = host.enclaves[eid]
    encl.initialized = False  # EADD is only before EINIT: reopen the build phase for this test
    host.add_pages(10, eid, 1)
    assert pages(host, "/a/misc.current") <= 20
    host.check()


def test_limit_zero_refuses_everything_and_empties_the_lru() -> None:
    host = Host("1MiB")
    host.mkdir("/a")
    place(host, 10, "/a")
    eid = enclave(host, 10, 30)
    limit(host, "/a", 0)
    with pytest.raises(SigBus) as e:
        host.vepc_access(10, host.vepc_open(10, 4096), 0, 1)
    assert e.value.reason == errno.ENOMEM
    assert resident(host, eid) == []  # the worker emptied the LRU (m = 0 is not above 128)
    with pytest.raises(SigBus):
        host.access(10, eid, 0, 1)  # a swapped page cannot come back
    host.check()

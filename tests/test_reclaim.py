"""Reclaim: one batch, aging, the fair cursor, async work, ksgxd, SECS and VA (reference 3-5)."""

from __future__ import annotations

import pytest

from engine import PAGE_SIZE, Host
from engine.cgroup import next_get
from engine.enclave import SWAPPED, Enclave
from engine.events import ReclaimBatch
from engine.reclaim import cgroup_reclaim_pages, reclaim_pages, should_reclaim
from engine.sgx import SGX_VA_SLOT_COUNT, PageKind

from .helpers import cgroups, enclave, limit, pages, place, resident


def lru_pages(host: Host, path: str) -> list[int]:
    cg = host.cgroup(path)
    return [host.epc.index[f] for f in host.epc.lru_frames(cg.lru)]


def test_batch_takes_16_from_the_head_and_rotates_young_pages_to_the_tail() -> None:
    host = Host("1MiB")
    host.mkdir("/a")
    place(host, 10, "/a")
    eid = enclave(host, 10, 20)
    assert lru_pages(host, "/a") == list(range(20))  # EADD order, oldest first
    host.access(10, eid, 0, 4)
    scanned = reclaim_pages(host, host.cgroup("/a"), None, "test")
    assert scanned == 16
    assert lru_pages(host, "/a") == [16, 17, 18, 19, 0, 1, 2, 3]
    assert all(not host.epc.flags[host.enclaves[eid].pages[i]] & 0x08 for i in range(4))  # bits cleared
    batch = [e for e in host.take_events() if isinstance(e, ReclaimBatch)][-1]
    assert (batch.scanned, batch.rotated, batch.written) == (16, 4, 12)
    host.check()


def test_eadd_sets_no_accessed_bit_but_a_fault_does() -> None:
    host = Host("1MiB")
    eid = enclave(host, 10, 4)
    flags = host.epc.flags
    assert [flags[host.enclaves[eid].pages[i]] & 0x08 for i in range(4)] == [0, 0, 0, 0]
    host.access(10, eid, 1, 1)
    assert flags[host.enclaves[eid].pages[1]] & 0x08


def test_pages_of_a_dying_enclave_are_dropped_and_not_counted() -> None:
    host = Host("1MiB")
    eid = enclave(host, 10, 20)
    host.enclaves[eid].dying = True  # release in progress: no reference can be taken
    assert reclaim_pages(host, host.tree.root, None, "test") == 0
    assert host.tree.root.lru.size == 4  # 16 dropped from the list, none counted
    host.check()
    host.release(eid)
    host.check()
    assert host.epc.nr_free == host.capacity_pages


def test_fair_cursor_visits_root_then_descendants_in_preorder() -> None:
    host = Host("1MiB")
    for path in ("/p", "/p/a", "/p/b", "/p/b/b1", "/p/c", "/q"):
        host.mkdir(path)
    p = host.cgroup("/p")
    order = [next_get(p).path for _ in range(11)]
    assert order == ["/p", "/p/a", "/p/b", "/p/b/b1", "/p/c"] * 2 + ["/p"]
    root_order = [next_get(host.tree.root).path for _ in range(7)]
    assert root_order == ["/", "/p", "/p/a", "/p/b", "/p/b/b1", "/p/c", "/q"]  # its own cursor


def test_fair_cursor_visits_removed_cgroups_until_freed_then_moves_on() -> None:
    """css_tryget() takes an offline css: a removed cgroup that still holds pages keeps its turns."""
    host = Host("1MiB")
    for path in ("/p", "/p/a", "/p/b", "/p/c"):
        host.mkdir(path)
    place(host, 10, "/p/b")
    eid = enclave(host, 10, 4)
    host.write("/cgroup.procs", "10")  # move the task out; its pages stay charged to /p/b
    p = host.cgroup("/p")
    assert [next_get(p).path for _ in range(2)] == ["/p", "/p/a"]
    host.rmdir("/p/b")  # dying (offline): still charged, still on /p's children list
    assert p.next_cg.path == "/p/b"
    assert [next_get(p).path for _ in range(5)] == ["/p/b", "/p/c", "/p", "/p/a", "/p/b"]
    host.rmdir("/p/c")  # freed at once: nothing charged
    assert [next_get(p).path for _ in range(3)] == ["/p", "/p/a", "/p/b"]
    host.release(eid)  # /p/b's last page: freed, and the cursor that pointed at it moves on
    assert p.next_cg is p
    assert [next_get(p).path for _ in range(3)] == ["/p", "/p/a", "/p"]
    a = host.cgroup("/p/a")
    assert next_get(p) is a and p.next_cg is p
    next_get(p)
    assert p.next_cg is a
    host.rmdir("/p/a")
    assert p.next_cg is p  # moved on to the successor when /p/a was freed
    host.check()


def test_sibling_cgroups_get_equal_reclaim_turns_in_preorder() -> None:
    host = Host("4MiB")
    for path in ("/p", "/p/x", "/p/y", "/p/z"):
        host.mkdir(path)
    for pid, path in ((10, "/p/x"), (11, "/p/y"), (12, "/p/z")):
        place(host, pid, path)
        enclave(host, pid, 100, size_pages=512)
    host.take_events()
    cgroup_reclaim_pages(host, host.cgroup("/p"), None, 16 * 7, "test")
    turns = [e.cgroup for e in host.take_events() if isinstance(e, ReclaimBatch)]
    assert turns == ["/p/x", "/p/y", "/p/z"] * 2 + ["/p/x"]  # /p's own LRU is empty: no batch
    assert [pages(host, f"/p/{c}/misc.current") for c in "xyz"] == [102 - 48, 102 - 32, 102 - 32]
    host.check()


@pytest.mark.parametrize(("limit_pages", "stop_below"), [(200, 200 - 32), (100, 100)])
def test_async_worker_reclaims_to_the_margin_below_the_limit(limit_pages: int, stop_below: int) -> None:
    host = Host("4MiB", inline_work=False)
    host.mkdir("/a")
    place(host, 10, "/a")
    eid = enclave(host, 10, limit_pages - 2, size_pages=512)  # fills the limit exactly
    limit(host, "/a", limit_pages)
    assert pages(host, "/a/misc.current") == limit_pages
    cg = host.cgroup("/a")
    assert should_reclaim(cg)
    with pytest.raises(Exception, match="async reclaim"):
        host.vepc_access(10, host.vepc_open(10, PAGE_SIZE), 0, 1)
    host.run_pending_work()
    usage = pages(host, "/a/misc.current")
    assert stop_below - 16 <= usage < stop_below  # batches of 16 until below the threshold
    assert not should_reclaim(cg)
    assert host.enclaves[eid].nr_swapped == limit_pages - usage
    host.check()


def test_ksgxd_woken_below_32_free_pages_reclaims_to_64() -> None:
    host = Host(256 * PAGE_SIZE)
    eid = host.ecreate(10, 512 * PAGE_SIZE)
    host.add_pages(10, eid, 256 - 2 - 33)  # 33 free: no wake
    assert not host.ksgxd_woken and host.epc.nr_free == 33
    host.add_pages(10, eid, 2)  # 31 free
    assert host.ksgxd_woken
    assert [e.kind for e in host.take_events()].count("ksgxd_wake") == 1
    host.run_pending_work()
    assert 64 <= host.epc.nr_free < 64 + 16
    assert not host.ksgxd_woken
    assert [e.kind for e in host.take_events()][-1] == "work_run"
    host.check()


def test_ksgxd_reclaims_the_pages_of_a_removed_cgroup() -> None:
    """sgx_can_reclaim_global() and ksgxd's walk take offline cgroups too."""
    host = Host(256 * PAGE_SIZE)
    host.mkdir("/a")
    place(host, 10, "/a")
    eid = enclave(host, 10, 200)  # 202 pages in /a
    host.write("/cgroup.procs", "10")
    host.rmdir("/a")
    other = host.ecreate(11, 64 * PAGE_SIZE)
    host.add_pages(11, other, 30)  # 22 free: ksgxd woken
    assert host.ksgxd_woken
    host.run_pending_work()
    assert host.epc.nr_free >= 64
    assert host.enclaves[eid].nr_swapped == 32  # every other turn went to the removed /a
    host.check()


def test_secs_stays_resident_before_einit_even_with_no_child_resident() -> None:
    host = Host("1MiB")
    host.mkdir("/a")
    limit(host, "/a", 20)
    place(host, 10, "/a")
    eid = enclave(host, 10, 30, init=False)
    encl = host.enclaves[eid]
    reclaim_pages(host, host.cgroup("/a"), None, "test")
    assert resident(host, eid) == [] and encl.secs_child_cnt == 0
    assert encl.secs_frame >= 0  # never written out during the build phase
    host.check()


def test_secs_written_back_with_the_last_child_after_einit_and_loaded_first() -> None:
    host = Host("1MiB")
    host.mkdir("/a")
    place(host, 10, "/a")
    eid = enclave(host, 10, 10)
    encl = host.enclaves[eid]
    host.take_events()
    reclaim_pages(host, host.cgroup("/a"), None, "test")
    assert encl.secs_frame <= SWAPPED
    assert [e.kind for e in host.take_events()] == ["secs_writeback", "reclaim"]
    assert pages(host, "/a/misc.current") == 1  # only the VA page
    assert encl.nr_swapped == 11  # 10 children + SECS, each in a VA slot
    host.access(10, eid, 3, 1)
    assert encl.secs_frame >= 0 and resident(host, eid) == [3]
    secs_frame, child_frame = encl.secs_frame, encl.pages[3]
    assert host.epc.flags[secs_frame] & 7 == PageKind.SECS
    assert secs_frame != child_frame and pages(host, "/a/misc.current") == 3
    host.check()


@pytest.mark.parametrize("added", [0, 1, 510, 511, 512, 1023, 1024])
def test_va_pages_are_ceil_of_one_plus_n_over_512(added: int) -> None:
    host = Host("16MiB")
    eid = host.ecreate(10, 2048 * PAGE_SIZE)
    if added:
        host.add_pages(10, eid, added)
    assert len(host.enclaves[eid].va_frames) == -(-(1 + added) // SGX_VA_SLOT_COUNT)
    assert pages(host, "/misc.current") == added + 1 + len(host.enclaves[eid].va_frames)


def test_ewb_fills_the_head_va_page_and_moves_it_to_the_tail_when_full() -> None:
    encl = Enclave(1, 10, 4096)
    for frame in (100, 101, 102):
        encl.va_add(frame)  # each new VA page goes to the head
    assert [encl.va_frames[o] for o in encl.va_order()] == [102, 101, 100]
    slots = [divmod(encl.va_alloc_slot(), SGX_VA_SLOT_COUNT) for _ in range(SGX_VA_SLOT_COUNT)]
    assert slots[0] == (2, 0) and slots[-1] == (2, SGX_VA_SLOT_COUNT - 1)
    assert encl.va_order() == [1, 0, 2]  # the full page moved to the tail
    assert divmod(encl.va_alloc_slot(), SGX_VA_SLOT_COUNT) == (1, 0)
    encl.va_free_slot(2 * SGX_VA_SLOT_COUNT + 9)
    encl.va_free_slot(2 * SGX_VA_SLOT_COUNT + 7)  # ELDU frees a slot and moves its page to the head
    assert encl.va_order() == [2, 1, 0]
    assert divmod(encl.va_alloc_slot(), SGX_VA_SLOT_COUNT) == (2, 7)  # the lowest free slot of the head page
    assert divmod(encl.va_alloc_slot(), SGX_VA_SLOT_COUNT) == (2, 9)


def test_reload_is_charged_to_the_faulting_tasks_cgroup_now() -> None:
    host = Host("1MiB")
    host.mkdir("/old")
    host.mkdir("/new")
    place(host, 10, "/old")
    eid = enclave(host, 10, 10)
    reclaim_pages(host, host.cgroup("/old"), None, "test")
    place(host, 10, "/new")
    host.access(10, eid, 0, 2)
    assert pages(host, "/new/misc.current") == 3  # SECS + 2 pages
    assert pages(host, "/old/misc.current") == 1  # its VA page stays charged where it was made
    host.check()


def test_release_frees_and_uncharges_everything_backing_included() -> None:
    host = Host("1MiB")
    host.mkdir("/a")
    limit(host, "/a", 40)
    place(host, 10, "/a")
    eid = enclave(host, 10, 300, size_pages=512)
    assert pages(host, "/a/memory.current") > 0
    host.release(eid)
    assert host.read("/a/misc.current") == "sgx_epc 0\n"
    assert host.read("/a/memory.current") == "0\n"
    assert host.epc.nr_free == host.capacity_pages
    host.check()


def test_each_cgroup_counts_the_pages_written_out_from_its_lru() -> None:
    """Cgroup.reclaimed is the sum of its ReclaimBatch.written, in every context (sync, async,
    ksgxd), so a snapshot need not add events up."""
    host = Host("1MiB")
    cgroups(host, {"/p": 100, "/p/a": 0, "/p/b": 0}, {10: "/p/a", 11: "/p/b", 12: "/p"})
    own = enclave(host, 12, 2, size_pages=8)
    enclave(host, 10, 80, size_pages=128)
    enclave(host, 11, 60, size_pages=64)  # /p full: /p/b's EADD reclaims its own LRU (sync)
    host.augment(12, own, 4)  # EAUG at /p's limit: /p's work item reclaims its whole subtree (async)
    written: dict[str, int] = {}
    for event in host.take_events():
        if isinstance(event, ReclaimBatch):
            written[event.cgroup] = written.get(event.cgroup, 0) + event.written
    assert written["/p/a"] > 0 and written["/p/b"] > 0
    assert {cg.path: cg.reclaimed for cg in host.tree.all() if cg.reclaimed} == written
    assert sum(written.values()) == host.pages_reclaimed
    host.check()


# -- the reclaim trace: where each walk started, where its cursor moved, why it stopped ------


def batches(host: Host) -> list[ReclaimBatch]:
    return [e for e in host.take_events() if isinstance(e, ReclaimBatch)]


def test_each_batch_names_its_walk_root_and_the_cursor_after_it() -> None:
    """sgx_cgroup_reclaim_pages(/p, 64): /p (empty, no batch), x, y, z, /p (empty), x; root->next_cg moves on."""
    host = Host("4MiB")
    for path in ("/p", "/p/x", "/p/y", "/p/z"):
        host.mkdir(path)
    for pid, path in ((10, "/p/x"), (11, "/p/y"), (12, "/p/z")):
        place(host, pid, path)
        enclave(host, pid, 100, size_pages=512)
    host.take_events()
    cgroup_reclaim_pages(host, host.cgroup("/p"), None, 16 * 4, "test")
    trace = [(e.cgroup, e.walk_root, e.next_cg, e.stop) for e in batches(host)]
    assert trace == [
        ("/p/x", "/p", "/p/y", ""),
        ("/p/y", "/p", "/p/z", ""),
        ("/p/z", "/p", "/p", ""),  # past the subtree's last cgroup: back to the root
        ("/p/x", "/p", "/p/y", "nr_to_scan"),  # 64 pages scanned: the walk is done
    ]
    assert host.cgroup("/p").next_cg.path == "/p/y"


def test_a_walk_that_empties_its_subtree_says_so() -> None:
    host = Host("1MiB")
    host.mkdir("/a")
    place(host, 10, "/a")
    enclave(host, 10, 20)
    host.take_events()
    cgroup_reclaim_pages(host, host.cgroup("/a"), None, 1024, "test")
    assert [(e.written, e.stop) for e in batches(host)] == [(16, ""), (4, "lru_empty")]


def test_the_walk_root_is_the_charging_cgroup_for_sync_and_async_and_slash_for_ksgxd() -> None:
    host = Host(256 * PAGE_SIZE, inline_work=False)
    cgroups(host, {"/p": 40, "/p/c": 0}, {10: "/p/c"})
    eid = enclave(host, 10, 60, size_pages=128)  # ADD_PAGES past /p's limit: sync walks rooted at /p/c
    sync = batches(host)
    assert sync and {(e.context, e.walk_root, e.stop) for e in sync} == {("sync", "/p/c", "nr_to_scan")}
    touched = host.touch(10, eid, [(0, 60)])  # faults: NO_RECLAIM, /p/c's work item queued
    assert touched.waiting
    host.take_events()
    host.run_pending_work()
    work = batches(host)
    assert work and {(e.context, e.walk_root, e.cgroup) for e in work} == {("async", "/p/c", "/p/c")}
    host.write("/p/misc.max", "sgx_epc max")
    host.write("/cgroup.procs", "10")
    other = host.ecreate(11, 256 * PAGE_SIZE)
    host.add_pages(11, other, host.epc.nr_free - 20)  # few free frames: ksgxd woken
    assert host.ksgxd_woken
    host.take_events()
    host.run_pending_work()
    global_walk = batches(host)
    assert global_walk and {(e.context, e.walk_root) for e in global_walk} == {("ksgxd", "/")}
    host.check()

"""Reclaim goes on past pages whose backing charge fails, and stops only where the kernel's
would spin: every page on the LRUs it walks was put back for a failed backing charge
(issue 15; reference 4-5: a skipped page goes to its LRU's tail, ksgxd, the cgroup worker
and the DO_RECLAIM charge loop keep calling sgx_cgroup_reclaim_pages())."""

from __future__ import annotations

import pytest

from engine import PAGE_SIZE, Blocked, Host
from engine.events import ReclaimBatch, WorkRun
from engine.memcg import out_of_memory as oom
from engine.reclaim import reclaim_pages

from .helpers import limit, pages, place, value


def test_ksgxd_goes_on_after_a_batch_whose_backing_charges_failed() -> None:
    """Issue 15's reproduction on a 64-page EPC: the kernel's ksgxd writes 36 pages and
    leaves root at 33; it stops only when the pages left on the LRU (pid 2's, paid by the
    full /a) have all been refused, where the kernel's would spin."""
    h = Host(capacity=262144)
    h.mkdir("/a")
    h.write("/a/memory.max", "111420")  # 27 pages of backing for /a
    e0 = h.ecreate(5, 4 << 20)
    h.add_pages(5, e0, 64)  # pid 5 in /
    e1 = h.ecreate(2, 4 << 20)
    h.add_pages(2, e1, 513)  # pid 2 in /
    h.write("/a/cgroup.procs", "2")  # pid 2's later backing goes to /a
    written = h.pages_reclaimed
    h.take_events()
    h.access(5, e0, 15, 15)
    assert h.pages_reclaimed - written == 36
    assert pages(h, "/misc.current") == 33
    events = h.take_events()
    run = [e for e in events if isinstance(e, WorkRun) and e.cgroup == "ksgxd"]
    assert len(run) == 1 and run[0].written == 36
    batches = [e for e in events if isinstance(e, ReclaimBatch)]
    assert [b.written for b in batches if b.written] == [16, 10, 10]
    tail = batches[-2:]  # the last two: the 23 pages left, all refused (16 + 16 >= 23)
    assert all(b.backing_failed == b.scanned == 16 for b in tail)
    lru = [(h.epc.owner[f], h.epc.index[f]) for f in h.epc.lru_frames(h.tree.root.lru)]
    assert [o for o, _ in lru[:23]] == [e1] * 23
    assert lru[23:] == [(e0, i) for i in range(25, 30)]  # faulted in after ksgxd stopped
    h.check()


def _two_payers(inline_work: bool = True) -> tuple[Host, int, int]:
    """/w at its limit (40 pages): 30 pages of pid 2's enclave at its LRU head, whose
    backing pid 2's memory cgroup /x (memory.max 0) refuses, then 6 of pid 5's."""
    host = Host("1MiB", inline_work=inline_work)
    for path in ("/w", "/x"):
        host.mkdir(path)
    place(host, 2, "/w")
    place(host, 5, "/w")
    e1 = host.ecreate(2, 64 * PAGE_SIZE)
    host.add_pages(2, e1, 30)
    host.access(2, e1, 0, 0)  # pid 2 maps it: its first live mm pays for the backing
    e0 = host.ecreate(5, 64 * PAGE_SIZE)
    host.add_pages(5, e0, 6)
    host.access(5, e0, 0, 0)
    place(host, 2, "/x")
    host.write("/x/memory.max", "0")
    limit(host, "/w", 40)
    assert pages(host, "/w/misc.current") == 40
    return host, e1, e0


def test_the_cgroup_worker_goes_on_after_a_batch_whose_backing_charges_failed() -> None:
    """sgx_cgroup_reclaim_work_func() loops while its cgroup should reclaim: the batch
    after 16 refused pages reaches pid 5's, whose backing root pays."""
    host, e1, e0 = _two_payers()
    vid = host.vepc_open(5, PAGE_SIZE)
    assert host.vepc_access(5, vid, 0, 1) == 1  # EBUSY, the worker runs, the fault retried
    assert host.enclaves[e0].nr_swapped == 2 and host.enclaves[e1].nr_swapped == 0
    batches = [e for e in host.take_events() if isinstance(e, ReclaimBatch)]
    assert [(b.context, b.backing_failed, b.written) for b in batches] == [("async", 16, 0), ("async", 14, 2)]
    host.check()


def test_the_cgroup_worker_stops_where_the_kernels_would_spin() -> None:
    """Every page /w's worker can reach is refused: it stops after trying each one once."""
    host, e1, e0 = _two_payers(inline_work=False)
    host.write("/w/cgroup.procs", "6")
    host.write("/x/cgroup.procs", "5")  # pid 5's backing is refused too now
    host.take_events()
    vid = host.vepc_open(6, PAGE_SIZE)
    with pytest.raises(Blocked):
        host.vepc_access(6, vid, 0, 1)
    assert host.run_pending_work() == 1
    batches = [e for e in host.take_events() if isinstance(e, ReclaimBatch)]
    assert [b.backing_failed for b in batches] == [16, 16, 16]  # 48 >= the 36 pages on /w's LRU
    assert host.enclaves[e0].nr_swapped == host.enclaves[e1].nr_swapped == 0
    assert not host.work and host.work_in_flight is None
    host.check()


def test_sync_reclaim_goes_on_after_a_batch_whose_backing_charges_failed() -> None:
    """The DO_RECLAIM charge loop reclaims again after a round that moved nothing: the
    reclaiming task pays, its memory cgroup has room for one page, so pid 2's pages (each
    needing a new PCMD page too) are refused and a page of pid 5's (whose PCMD page is in
    use) is written."""
    host = Host("1MiB")
    host.mkdir("/w")
    for pid in (5, 6):
        place(host, pid, "/w")
    oom(host, host.cgroup("/w"))  # pid 6 is killed (and still exiting): no second victim
    e0 = host.ecreate(5, 64 * PAGE_SIZE)
    host.add_pages(5, e0, 5)
    reclaim_pages(host, host.cgroup("/w"), None, "test")  # e0's 5 pages out, and PCMD page 0
    assert host.enclaves[e0].nr_swapped == 5
    e1 = host.ecreate(5, 64 * PAGE_SIZE)
    host.add_pages(5, e1, 16)
    host.access(5, e0, 0, 4)  # back in, young; page 4 keeps PCMD page 0 in use
    host.write("/w/memory.max", str(3 * PAGE_SIZE))  # page 4 and PCMD page 0 hold 2: room for one
    assert host.oom_victims == {6}
    limit(host, "/w", pages(host, "/w/misc.current"))
    host.take_events()
    assert host.add_pages(5, e1, 1) == 1
    batches = [e for e in host.take_events() if isinstance(e, ReclaimBatch)]
    assert [(b.rotated, b.backing_failed, b.written) for b in batches] == [(0, 16, 0), (4, 12, 0), (0, 15, 1)]
    assert value(host, "/w/misc.events.local") == 3
    host.check()


def test_sync_reclaim_blocks_only_after_every_page_failed_its_backing() -> None:
    """40 pages on the LRU, each refused: three rounds (16 + 16 + 16 >= 40), a charge
    attempt after each (4 events in all), then Blocked where the kernel's loop would spin."""
    host = Host("1MiB")
    host.mkdir("/w")
    for pid in (5, 6):
        place(host, pid, "/w")
    eid = host.ecreate(5, 64 * PAGE_SIZE)
    host.add_pages(5, eid, 40)
    host.write("/w/memory.max", "0")
    oom(host, host.cgroup("/w"))  # pid 6 is the victim still exiting: pid 5 is not killed
    limit(host, "/w", 42)
    host.take_events()
    with pytest.raises(Blocked):
        host.add_pages(5, eid, 1)
    batches = [e for e in host.take_events() if isinstance(e, ReclaimBatch)]
    assert [(b.backing_failed, b.written) for b in batches] == [(16, 0)] * 3
    assert value(host, "/w/misc.events.local") == 4
    assert host.signals == {6}
    host.check()

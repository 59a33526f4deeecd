"""The series' knobs (issue 14): V17's constants as a host's parameters, each acting where the
kernel's constant acts (epc_cgroup.c, main.c), checked, and V17's by default."""

from __future__ import annotations

import pytest

from common.knobs import V17, Knobs
from engine import Blocked, Host
from engine.events import KsgxdWake, ReclaimBatch

from .helpers import enclave, limit, pages, place


def batches(host: Host, context: str) -> list[int]:
    return [e.scanned for e in host.take_events() if isinstance(e, ReclaimBatch) and e.context == context]


def at_its_limit(knobs: Knobs, npages: int = 200) -> tuple[Host, int]:
    """/a limited to ``npages`` pages, task 1's SGX2 enclave holding all of them (SECS, VA, the rest REG)."""
    host = Host("4MiB", knobs=knobs)
    host.mkdir("/a")
    limit(host, "/a", npages)
    place(host, 1, "/a")
    eid = enclave(host, 1, npages - 2, size_pages=1024)
    assert pages(host, "/a/misc.current") == npages
    host.take_events()
    return host, eid


def test_the_defaults_are_v17_and_mark_nothing() -> None:
    host = Host()
    assert host.knobs == V17 == Knobs()
    assert (host.nr_to_scan, host.low_pages, host.high_pages) == (16, 32, 64)
    assert (host.cg_margin, host.cg_low_limit, host.async_reclaim) == (32, 128, True)
    assert V17.changed() == {} and V17.mark() == ""


def test_nr_to_scan_sets_the_pages_one_async_batch_isolates() -> None:
    for nr_to_scan in (4, 16):
        host, eid = at_its_limit(Knobs(nr_to_scan=nr_to_scan))
        host.access(1, eid, 198, 1)  # an EAUG fault: refused at /a, its work item runs inline
        scanned = batches(host, "async")
        assert scanned and set(scanned) == {nr_to_scan}
        host.check()


def test_low_pages_moves_when_ksgxd_wakes_and_high_pages_where_it_stops() -> None:
    host = Host("1MiB", knobs=Knobs(low_pages=100, high_pages=150))  # 256 frames
    eid = enclave(host, 1, 160, size_pages=512)  # 162 frames: 94 free
    wakes = [e.free_pages for e in host.take_events() if isinstance(e, KsgxdWake)]
    assert wakes == [99]  # the allocation that left 99 free, below 100
    host.run_pending_work()
    assert 150 <= host.epc.nr_free < 150 + 16  # ksgxd ran batches until 150 were free
    assert {e.context for e in host.take_events() if isinstance(e, ReclaimBatch)} == {"ksgxd"}
    del eid

    kernel = Host("1MiB")
    enclave(kernel, 1, 160, size_pages=512)  # 94 free: above V17's 32, ksgxd sleeps
    assert not [e for e in kernel.take_events() if isinstance(e, KsgxdWake)]
    assert kernel.run_pending_work() == 0


def test_cg_margin_0_lets_the_worker_stop_at_the_limit_itself() -> None:
    host, eid = at_its_limit(V17)
    host.access(1, eid, 198, 1)
    assert pages(host, "/a/misc.current") <= 200 - 32 + 1  # V17: the worker keeps 32 pages free
    assert batches(host, "async") == [16, 16, 16]

    host, eid = at_its_limit(Knobs(cg_margin=0))
    host.access(1, eid, 198, 1)
    assert pages(host, "/a/misc.current") == 200 - 16 + 1  # one batch makes room; the fault takes one
    assert batches(host, "async") == [16]
    host.check()


def test_cg_low_limit_decides_which_limits_keep_the_margin() -> None:
    host, eid = at_its_limit(V17, npages=100)  # 100 <= 128: V17 keeps no margin
    host.access(1, eid, 98, 1)
    assert batches(host, "async") == [16]

    host, eid = at_its_limit(Knobs(cg_low_limit=64), npages=100)  # 100 > 64: the margin of 32 applies
    host.access(1, eid, 98, 1)
    assert batches(host, "async") == [16, 16, 16]  # down below 100 - 32
    assert pages(host, "/a/misc.current") <= 100 - 32 + 1
    host.check()


def test_without_async_reclaim_a_fault_queues_no_work_and_sync_reclaim_does_it() -> None:
    host, eid = at_its_limit(V17)
    host.access(1, eid, 198, 1)
    assert "work_queued" in {e.kind for e in host.events}  # V17: the fault queued /a's work item

    host, eid = at_its_limit(Knobs(async_reclaim=False))
    with pytest.raises(Blocked, match="stalled"):  # nothing reclaims for a fault: the task re-faults
        host.access(1, eid, 198, 1)
    kinds = [e.kind for e in host.take_events()]
    assert "work_queued" not in kinds and "work_run" not in kinds and "reclaim" not in kinds
    assert host.run_pending_work() == 0
    other = host.ecreate(1, 4 * 4096)  # an ioctl's allocations reclaim synchronously, in the caller
    host.add_pages(1, other, 2)
    assert batches(host, "sync") == [16]
    assert host.access(1, eid, 198, 1) == 1  # the room sync reclaim made serves the fault
    kinds = [e.kind for e in host.take_events()]
    assert "work_queued" not in kinds and "work_run" not in kinds
    host.check()


def test_without_async_reclaim_direct_reclaim_before_an_edmm_step_makes_the_room() -> None:
    host, eid = at_its_limit(Knobs(async_reclaim=False))
    with pytest.raises(Blocked, match="stalled"):
        host.access(1, eid, 198, 1)
    host.take_events()
    host.restrict_permissions(1, eid, 0, 1)  # sgx_reclaim_direct() first: /a is within its margin
    assert batches(host, "direct") == [16]
    assert host.access(1, eid, 198, 1) == 1
    assert "work_queued" not in {e.kind for e in host.events}
    host.check()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"nr_to_scan": 0}, "knob nr_to_scan: 0 is not a whole number from 1 to 1024"),
        ({"nr_to_scan": 1025}, "knob nr_to_scan: 1025 is not a whole number from 1 to 1024"),
        ({"low_pages": 0}, "knob low_pages: 0 is not a whole number from 1"),
        ({"cg_margin": -1}, "knob cg_margin: -1 is not a whole number from 0"),
        ({"cg_low_limit": "128"}, "knob cg_low_limit: '128' is not a whole number"),
        ({"nr_to_scan": True}, "knob nr_to_scan: True is not a whole number"),
        ({"async_reclaim": 0}, "knob async_reclaim: 0 is not true or false"),
        ({"low_pages": 64}, "low_pages must be below high_pages"),
        ({"low_pages": 90, "high_pages": 80}, "knobs low_pages (90) and high_pages (80)"),
        ({"nr_to_scn": 4}, "unknown knob 'nr_to_scn': the knobs are nr_to_scan, low_pages"),
    ],
)
def test_a_bad_knob_is_refused_in_one_line(values: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as e:
        Knobs.from_mapping(values)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_the_mark_names_each_changed_knob_and_the_kernels_value() -> None:
    knobs = Knobs.from_mapping({"nr_to_scan": 4, "async_reclaim": False})
    assert knobs.changed() == {"nr_to_scan": 4, "async_reclaim": False}
    assert knobs.mark() == "knobs (not the kernel's): nr_to_scan=4 (V17: 16), async_reclaim=off (V17: on)"
    assert Knobs.from_mapping({"nr_to_scan": 16}).mark() == ""  # V17's own value is the kernel's

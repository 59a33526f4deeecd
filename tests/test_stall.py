"""A fault that no reclaim can help stalls; it is not SIGBUS (reference 7.3, issue 11 item 3).

The kernel's fault handler turns -EBUSY from the charge into VM_FAULT_NOPAGE: the task
faults again, one more failed charge (one more misc.events) per attempt, for as long
as nothing frees the limiting cgroup.  SIGBUS comes only from -ENOMEM (the requesting
cgroup's subtree has nothing on its LRUs) or another error.  The in-process core
raises Blocked when its inline reclaim work moved nothing.
"""

from __future__ import annotations

import errno

import pytest

from engine import PAGE_SIZE, Blocked, Host, SigBus
from engine.enclave import SWAPPED

from .helpers import enclave, limit, pages, place, value


def full_parent(inline_work: bool = True) -> tuple[Host, int, int]:
    """/p (64 pages) full: /p/a holds 60 pages (task 1), /p/b 4 with 2 on its own LRU (task 2).

    Returns the host and the two enclave ids.  A charge for /p/b now fails at /p, /p/b's
    LRU is not empty (EBUSY, not ENOMEM), and /p/b's work item finds should_reclaim(/p/b)
    false (4 pages against a limit of 64): nothing frees /p until /p/a lets go.
    """
    host = Host("1MiB", inline_work=inline_work)
    for path in ("/p", "/p/a", "/p/b"):
        host.mkdir(path)
    limit(host, "/p", 64)
    place(host, 1, "/p/a")
    place(host, 2, "/p/b")
    held = enclave(host, 1, 58, size_pages=64)  # VA + SECS + 58
    small = enclave(host, 2, 2, size_pages=64)  # VA + SECS + 2, initialised: SGX2 faults EAUG
    assert pages(host, "/p/misc.current") == 64 and host.cgroup("/p/b").lru.size == 2
    host.take_events()
    return host, held, small


def test_an_eaug_fault_under_a_full_parent_stalls_while_its_own_lru_is_not_empty() -> None:
    host, _held, small = full_parent()
    with pytest.raises(Blocked) as e:
        host.access(2, small, 2, 1)  # an absent page: EAUG
    assert e.value.done == 0 and e.value.faults == 0
    assert "stalled" in str(e.value)
    kinds = [ev.kind for ev in host.take_events()]
    assert "sigbus" not in kinds and "enomem" not in kinds
    assert kinds.count("limit_hit") == 1 and "work_queued" in kinds
    assert host.enclaves[small].page(2) < 0  # nothing was added
    host.check()


def test_each_retry_of_a_stalled_fault_is_one_more_failed_charge() -> None:
    host, _held, small = full_parent()
    events = value(host, "/p/misc.events")
    for attempt in range(1, 6):
        with pytest.raises(Blocked):
            host.augment(2, small, 1)
        assert value(host, "/p/misc.events") == events + attempt  # one event per attempt, at /p
        assert value(host, "/p/misc.events.local") == events + attempt
    assert value(host, "/p/b/misc.events") == 0  # the requesting child below /p counts nothing
    host.check()


def test_a_stalled_fault_goes_on_when_the_sibling_holding_the_pages_exits() -> None:
    host, held, small = full_parent()
    with pytest.raises(Blocked):
        host.access(2, small, 2, 1)
    host.exit_task(1)  # /p/a's task goes: its enclave's last reference
    assert held not in host.enclaves
    assert host.access(2, small, 2, 1) == 1
    assert pages(host, "/p/b/misc.current") == 5
    host.check()


def test_a_stalled_fault_goes_on_when_the_limit_is_raised() -> None:
    host, _held, small = full_parent()
    with pytest.raises(Blocked):
        host.augment(2, small, 1)
    limit(host, "/p", 65)
    assert host.augment(2, small, 1) == 1
    host.check()


def test_an_eldu_fault_under_a_full_parent_stalls_too() -> None:
    """A swapped page of /p/b faulted back: the ELDU charge gets EBUSY and no reclaim helps."""
    host = Host("1MiB")
    for path in ("/p", "/p/a", "/p/b"):
        host.mkdir(path)
    limit(host, "/p", 64)
    limit(host, "/p/b", 22)
    place(host, 1, "/p/a")
    place(host, 2, "/p/b")
    small = enclave(host, 2, 25, size_pages=64)  # its own sync reclaim wrote a batch of its pages out
    host.write("/p/b/misc.max", "sgx_epc max")
    enclave(host, 1, 64 - pages(host, "/p/misc.current") - 2, size_pages=64)  # /p is full
    encl = host.enclaves[small]
    swapped = [i for i in range(25) if encl.page(i) <= SWAPPED]
    assert swapped and pages(host, "/p/misc.current") == 64 and host.cgroup("/p/b").lru.size > 0
    host.take_events()
    with pytest.raises(Blocked):
        host.access(2, small, swapped[0], 1)
    kinds = [ev.kind for ev in host.take_events()]
    assert "sigbus" not in kinds and kinds.count("limit_hit") == 1
    assert encl.page(swapped[0]) <= SWAPPED  # still out
    host.check()


def test_a_vepc_fault_with_retry_allowed_stalls_under_a_full_parent() -> None:
    host, _held, _small = full_parent()
    vid = host.vepc_open(2, 4 * PAGE_SIZE)
    with pytest.raises(Blocked):
        host.vepc_access(2, vid, 0, 1)
    assert [ev.kind for ev in host.take_events() if ev.kind in ("sigbus", "enomem")] == []
    host.exit_task(1)
    assert host.vepc_access(2, vid, 0, 4) == 4
    host.check()


def test_enomem_is_still_sigbus_when_the_requesting_cgroup_has_nothing_on_its_lrus() -> None:
    """The same full parent, but the faulting task's cgroup has no LRU page: ENOMEM, SIGBUS."""
    host, _held, _small = full_parent()
    host.mkdir("/p/c")
    place(host, 3, "/p/c")
    vid = host.vepc_open(3, 4 * PAGE_SIZE)
    with pytest.raises(SigBus) as e:
        host.vepc_access(3, vid, 0, 1)
    assert e.value.reason == errno.ENOMEM
    host.check()


def test_in_the_engines_mode_the_fault_is_blocked_and_the_retry_after_the_work_still_is() -> None:
    """inline_work=False: Blocked at once; after the async work ran (finding nothing), the
    retry is Blocked again, one more failed charge: the engine then shows the task stalled."""
    host, _held, small = full_parent(inline_work=False)
    events = value(host, "/p/misc.events")
    with pytest.raises(Blocked):
        host.augment(2, small, 1)
    progress = host.progress
    host.run_pending_work()
    assert host.progress == progress  # should_reclaim(/p/b) is false: the worker did nothing
    with pytest.raises(Blocked):
        host.augment(2, small, 1)
    assert value(host, "/p/misc.events") == events + 2
    host.check()


def test_a_stalled_vepc_fault_says_how_many_faults_it_served_first() -> None:
    """Blocked carries the faults served before the stall (the engine counts them for the workload)."""
    host, _, _ = full_parent()
    limit(host, "/p", 66)  # room for two guest pages
    vid = host.vepc_open(2, 4 * PAGE_SIZE)
    with pytest.raises(Blocked) as e:
        host.vepc_access(2, vid, 0, 4)
    assert e.value.done == 2 and e.value.faults == 2
    host.check()

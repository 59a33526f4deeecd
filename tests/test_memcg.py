"""Backing store and the memory controller: who pays, memory.events and the OOM killer (reference 5)."""

from __future__ import annotations

import errno

import pytest

from engine import PAGE_SIZE, Blocked, Host, IoctlError
from engine.sgx import ERESTARTSYS

from .helpers import enclave, limit, pages, place, value


def mem_events(host: Host, path: str) -> dict[str, int]:
    return {k: int(v) for k, v in (line.split() for line in host.read(path).splitlines())}


def test_backing_is_one_page_per_swapped_page_plus_a_pcmd_page_per_32() -> None:
    host = Host("1MiB")
    host.mkdir("/a")
    limit(host, "/a", 20)
    place(host, 10, "/a")
    eid = enclave(host, 10, 100)
    swapped = host.enclaves[eid].nr_swapped
    indexes = set(host.enclaves[eid].swapped_indexes())
    pcmd_pages = len({i // 32 for i in indexes})
    assert value(host, "/a/memory.current") == (swapped + pcmd_pages) * PAGE_SIZE
    host.access(10, eid, 0, 32)  # reload a whole PCMD page's worth: its page goes too
    indexes = set(host.enclaves[eid].swapped_indexes())
    assert value(host, "/a/memory.current") == (len(indexes) + len({i // 32 for i in indexes})) * PAGE_SIZE
    host.check()


def test_memory_files_format() -> None:
    host = Host("1MiB")
    host.mkdir("/a")
    assert host.read("/a/memory.max") == "max\n"
    assert host.read("/a/memory.current") == "0\n"
    assert host.read("/a/memory.events") == "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n"
    host.write("/a/memory.max", "1M")
    assert host.read("/a/memory.max") == "1048576\n"
    host.write("/a/memory.max", "10000")  # rounded down to pages
    assert host.read("/a/memory.max") == "8192\n"
    for bad in ("-1", "1X", "max max", "0x"):
        with pytest.raises(OSError) as e:
            host.write("/a/memory.max", bad)
        assert e.value.errno == errno.EINVAL
    assert host.read("/a/memory.max") == "8192\n"
    host.write("/a/memory.max", "\n")  # memparse("") is 0, as "echo > memory.max" finds out
    assert host.read("/a/memory.max") == "0\n"


def test_sync_reclaim_charges_backing_to_the_reclaiming_task() -> None:
    """charge_mm = current->mm: a task reclaiming another's pages pays for them [inference]."""
    host = Host("1MiB")
    for path in ("/p", "/p/x"):
        host.mkdir(path)
    limit(host, "/p", 30)
    place(host, 10, "/p/x")
    place(host, 11, "/p")
    enclave(host, 10, 25)
    assert value(host, "/p/x/memory.current") == 0
    enclave(host, 11, 20)  # fails at /p, reclaims /p's subtree: /p/x's pages, paid by task 11
    assert value(host, "/p/x/memory.current") == 0
    assert value(host, "/p/memory.current") > 0
    assert host.task_mem.get(10, 0) == 0 and host.task_mem[11] > 0
    host.check()


def test_async_and_ksgxd_charge_the_enclaves_first_live_mm() -> None:
    host = Host("1MiB", inline_work=False)
    host.mkdir("/owner")
    host.mkdir("/other")
    place(host, 10, "/owner")
    place(host, 11, "/other")
    limit(host, "/owner", 40)
    enclave(host, 10, 38)
    host.write("/owner/cgroup.procs", "11")  # another task faults in /owner: EBUSY, work queued
    with pytest.raises(Exception, match="async reclaim"):
        host.vepc_access(11, host.vepc_open(11, PAGE_SIZE), 0, 1)
    host.write("/other/cgroup.procs", "11")
    host.run_pending_work()
    assert value(host, "/owner/memory.current") > 0 and host.task_mem[10] > 0
    assert value(host, "/other/memory.current") == 0
    host.exit_task(10)  # no live mm left: root pays (no memory.current at root to show it)
    host.check()


def test_memcg_oom_kills_the_task_with_most_backing_and_counts_events() -> None:
    """The memcg selftest: memory.max below one enclave's backing, every job must fail."""
    host = Host("1MiB")
    host.mkdir("/large")
    limit(host, "/large", 16)
    host.write("/large/memory.max", str(40 * PAGE_SIZE))
    place(host, 10, "/large")
    eid = host.ecreate(10, 256 * PAGE_SIZE)
    done = host.add_pages(10, eid, 200)  # SIGKILL pending: ADD_PAGES stops early
    assert 0 < done < 200
    assert 10 in host.signals and 10 in host.oom_victims
    with pytest.raises(IoctlError) as e:
        host.add_pages(10, eid, 1)
    assert e.value.errno == ERESTARTSYS
    events = mem_events(host, "/large/memory.events")
    assert events["max"] >= 1 and events["oom"] >= 1 and events["oom_kill"] == 1
    assert mem_events(host, "/large/memory.events.local")["oom_kill"] == 1
    assert [ev.kind for ev in host.take_events()].count("oom_kill") == 1
    assert value(host, "/large/memory.current") <= 40 * PAGE_SIZE
    host.exit_task(10)
    assert value(host, "/large/memory.current") == 0 and pages(host, "/large/misc.current") == 0
    host.check()


def test_no_second_victim_while_the_first_is_still_exiting() -> None:
    host = Host("1MiB")
    host.mkdir("/m")
    limit(host, "/m", 16)
    place(host, 10, "/m")
    place(host, 11, "/m")
    host.write("/m/memory.max", str(60 * PAGE_SIZE))
    enclave(host, 10, 50, size_pages=256)  # 34 swapped pages + 2 PCMD pages, paid by 10
    eid = host.ecreate(11, 256 * PAGE_SIZE)
    with pytest.raises(Blocked) as e:  # 11 pushes the memcg over: 10 holds the most, 10 is killed
        host.add_pages(11, eid, 60)
    assert [ev.pid for ev in host.take_events() if ev.kind == "oom_kill"] == [10]
    done = e.value.done
    with pytest.raises(Blocked):  # 11's reclaim cannot progress while 10 is still exiting
        host.add_pages(11, eid, 60 - done)
    assert not [ev for ev in host.take_events() if ev.kind == "oom_kill"]  # and no second victim
    host.exit_task(10)
    assert host.add_pages(11, eid, 60 - done) == 60 - done
    host.check()


def test_memory_max_written_below_usage_runs_the_oom_killer() -> None:
    host = Host("1MiB")
    host.mkdir("/a")
    limit(host, "/a", 16)
    place(host, 10, "/a")
    enclave(host, 10, 60)
    host.write("/a/memory.max", "4096")
    assert 10 in host.oom_victims
    assert mem_events(host, "/a/memory.events")["oom_kill"] == 1
    host.check()


def test_host_memory_limits_backing_globally() -> None:
    host = Host("1MiB", memory=20 * PAGE_SIZE)
    host.mkdir("/a")
    limit(host, "/a", 16)
    place(host, 10, "/a")
    eid = host.ecreate(10, 256 * PAGE_SIZE)
    assert host.add_pages(10, eid, 100) < 100
    assert host.tree.root.mem_usage <= 20
    assert 10 in host.oom_victims
    host.check()


def test_tasks_never_placed_are_in_root_and_can_be_oom_killed() -> None:
    host = Host(capacity="256KiB", memory="64KiB")
    eid = host.ecreate(7, "1MiB")
    assert host.read("/cgroup.procs") == "7\n"
    done = 0
    for _ in range(20):
        try:
            done += host.add_pages(7, eid, 10)
        except IoctlError as e:
            assert e.errno == ERESTARTSYS
            break
    assert 7 in host.oom_victims  # the root memcg's OOM found task 7
    assert 0 < done < 256
    host.check()


def test_oom_kills_the_charging_task_when_nobody_holds_backing_yet() -> None:
    host = Host("1MiB")
    host.mkdir("/a")
    limit(host, "/a", 16)
    host.write("/a/memory.max", "4096")  # not even one backing page plus its PCMD page fits
    place(host, 5, "/a")
    eid = host.ecreate(5, "1MiB")
    with pytest.raises(IoctlError) as e:
        for _ in range(10):
            host.add_pages(5, eid, 10)
    assert e.value.errno == ERESTARTSYS  # never Blocked: the victim is the task itself
    assert host.oom_victims == {5} and mem_events(host, "/a/memory.events")["oom_kill"] == 1
    host.check()


def test_a_fault_waits_while_an_oom_victim_exits() -> None:
    host = Host("1MiB")
    host.mkdir("/a")
    place(host, 1, "/a")
    place(host, 2, "/a")
    limit(host, "/a", 40)
    eid = enclave(host, 1, 60)  # some of it swapped: task 1 pays for backing
    host.write("/a/memory.max", "0")  # no backing at all any more
    assert 1 in host.oom_victims  # the write ran the OOM killer
    vid = host.vepc_open(2, 64 * PAGE_SIZE)
    room = 40 - pages(host, "/a/misc.current")
    host.vepc_access(2, vid, 0, room)
    with pytest.raises(Blocked):  # EBUSY, the worker cannot write anything out: the fault waits
        host.vepc_access(2, vid, room, 1)
    host.exit_task(1)
    assert eid not in host.enclaves
    assert host.vepc_access(2, vid, room, 1) == 1
    host.check()

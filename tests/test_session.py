"""The engine's Session alone: no sockets, no processes, no wall clock (a VirtualClock and a
table of fake processes), as both the engine and the in-process scenario mode drive it."""

from __future__ import annotations

import errno
from collections.abc import Hashable
from typing import Any

from engine import PAGE_SIZE, Host, VirtualClock
from engined.calls import Caller, Reply
from engined.requests import HANDLERS
from engined.session import MAX_EXITED, STALL_RETRY_NS, Session

from .helpers import limit


class FakeProcesses:
    """Processes that live until the test says they exited; every kill is recorded."""

    def __init__(self) -> None:
        self.live: set[int] = set()
        self.watched: set[int] = set()
        self.parents: dict[int, int] = {}
        self.killed: list[int] = []

    def watch(self, pid: int) -> None:
        if pid not in self.live:
            raise OSError(errno.ESRCH, f"no process {pid}")
        self.watched.add(pid)

    def watching(self, pid: int) -> bool:
        return pid in self.watched

    def gone(self, pid: int) -> bool:
        return pid in self.watched and pid not in self.live

    def alive(self, pid: int) -> bool:
        return pid in self.live

    def forget(self, pid: int) -> None:
        self.watched.discard(pid)

    def exit_status(self, pid: int) -> int | None:
        return None

    def stopped(self, pid: int) -> bool:
        return False

    def kill(self, pid: int) -> str | None:
        self.killed.append(pid)
        return None

    def parent(self, pid: int) -> int:
        return self.parents.get(pid, 0)


class Rig:
    """A Session on a 1 MiB host (256 pages) and a virtual clock, with what it answered and published."""

    def __init__(self, capacity: str = "1MiB") -> None:
        self.clock = VirtualClock()
        self.host = Host(capacity, clock=self.clock, inline_work=False)
        self.processes = FakeProcesses()
        self.replies: dict[Hashable, Reply] = {}
        self.events: list[dict[str, Any]] = []
        self.session = Session(
            self.host,
            self.processes,
            HANDLERS,
            answer=self.replies.__setitem__,
            publish=self.events.extend,
            engine_pid=1,
            pub="test",
        )
        self.next_key = 0

    def call(self, caller: int, op: str, **args: Any) -> int:
        """Submit a request as process ``caller``; its key (answered in self.replies, now or after rounds)."""
        self.next_key += 1
        self.session.submit(self.next_key, Caller(caller, 0), self.next_key, op, args)
        return self.next_key

    def ok(self, caller: int, op: str, **args: Any) -> Any:
        reply = self.replies.pop(self.call(caller, op, **args))
        assert not reply.err, reply
        return reply.ok

    def start(self, pid: int, cgroup: str = "/") -> None:
        self.processes.live.add(pid)
        if cgroup != "/":
            self.ok(0, "write", path=f"{cgroup}/cgroup.procs", value=str(pid))
        self.ok(pid, "hello", pid=pid, role="enclave")

    def rounds(self, n: int = 50) -> None:
        for _ in range(n):
            if not self.session.round(lambda: lambda: True):
                break

    def kinds(self) -> list[str]:
        self.session.flush_events()
        return [e["kind"] for e in self.events]


def test_a_guest_page_beyond_the_limit_is_sigbus_not_a_stall() -> None:
    """vEPC pages are never on an LRU: a charge refused at the limit finds nothing to reclaim (ENOMEM)."""
    rig = Rig()
    rig.ok(0, "mkdir", path="/a")
    limit(rig.host, "/a", 8)
    rig.start(10, "/a")
    vid = rig.ok(10, "vepc_open", size=32 * PAGE_SIZE)["vid"]
    assert rig.ok(10, "vepc_access", vid=vid, ranges=[[0, 8]]) == {"faults": 8}
    key = rig.call(10, "vepc_access", vid=vid, ranges=[[8, 1]])
    rig.rounds()
    assert rig.replies[key].err == "SIGBUS" and "stall" not in rig.kinds()
    assert rig.session.workloads[10].reason == "SIGBUS"


def stalled(rig: Rig) -> int:
    """/p (64 pages) full of pid 1's enclave in /p/a; pid 2 in /p/b faults an absent page of its
    initialised enclave (EAUG), refused at /p with 2 pages on its own LRU: EBUSY that no reclaim
    helps, since /p/b's work item finds it under its share.  Returns the stalled call's key."""
    for path in ("/p", "/p/a", "/p/b"):
        rig.ok(0, "mkdir", path=path)
    limit(rig.host, "/p", 64)
    rig.start(1, "/p/a")
    rig.start(2, "/p/b")
    held = rig.ok(1, "ecreate", size=64 * PAGE_SIZE)["eid"]
    rig.ok(1, "add_pages", eid=held, count=58)
    rig.ok(1, "einit", eid=held)
    small = rig.ok(2, "ecreate", size=64 * PAGE_SIZE)["eid"]
    rig.ok(2, "add_pages", eid=small, count=2)
    rig.ok(2, "einit", eid=small)
    key = rig.call(2, "access", eid=small, ranges=[[2, 1]])
    rig.rounds()
    assert key not in rig.replies and "stall" in rig.kinds()
    return key


def test_a_stalled_call_retries_on_the_injected_clock_and_goes_on_when_the_limit_is_raised() -> None:
    rig = Rig()
    rig.clock.advance(5)
    key = stalled(rig)
    assert rig.session.workloads[2].stalled_calls == 1
    assert rig.session.next_retry_ns() == rig.clock.now_ns() + STALL_RETRY_NS  # on the host's clock
    charges = int(rig.host.read("/p/misc.events").split()[-1])
    rig.rounds()
    assert int(rig.host.read("/p/misc.events").split()[-1]) == charges  # not before its time
    rig.clock.advance(STALL_RETRY_NS)
    rig.rounds(1)
    assert int(rig.host.read("/p/misc.events").split()[-1]) == charges + 1  # one more failed charge
    assert key not in rig.replies
    rig.ok(0, "write", path="/p/misc.max", value=f"sgx_epc {128 * PAGE_SIZE}")  # a write wakes it at once
    rig.rounds()
    assert rig.replies[key] == Reply(key, {"faults": 1})
    assert rig.kinds()[-1] == "stall_end" and rig.events[-1]["how"] == "resumed"
    assert rig.events[-1]["retries"] == 1 and rig.session.workloads[2].stalled_calls == 0
    rig.host.check()


def test_a_stall_that_starts_at_time_zero_is_a_stall() -> None:
    rig = Rig()
    stalled(rig)
    assert rig.clock.now_ns() == 0 and rig.session.next_retry_ns() == STALL_RETRY_NS


def test_an_exited_process_loses_its_parked_call_unanswered_and_everything_it_held() -> None:
    rig = Rig()
    key = stalled(rig)
    rig.processes.live.discard(2)
    rig.session.exited(2)
    rig.rounds()
    assert key not in rig.replies
    assert rig.kinds()[-3:] == ["stall_end", "release", "workload_exit"] and rig.events[-3]["how"] == "exited"
    assert rig.host.read("/p/b/misc.current") == "sgx_epc 0\n" and rig.session.workloads[2].reason == "killed"
    rig.host.check()


def test_a_workload_acts_only_on_its_own_enclaves() -> None:
    rig = Rig()
    rig.start(5)
    rig.start(6)
    eid = rig.ok(5, "ecreate", size=16 * PAGE_SIZE)["eid"]
    for op, args in (("add_pages", {"count": 1}), ("einit", {}), ("release", {}), ("access", {"ranges": [[0, 1]]})):
        reply = rig.replies.pop(rig.call(6, op, eid=eid, **args))
        assert reply.err == "EPERM", (op, reply)
    assert rig.replies.pop(rig.call(7, "ecreate", size=PAGE_SIZE * 2)).err == "EPERM"  # 7 never said hello


def test_a_new_process_inherits_its_nearest_placed_ancestors_cgroup() -> None:
    rig = Rig()
    rig.ok(0, "mkdir", path="/a")
    rig.processes.live |= {100, 101, 102}
    rig.processes.parents = {102: 101, 101: 100}
    rig.ok(0, "write", path="/a/cgroup.procs", value="100")
    rig.ok(102, "hello", pid=102, role="vm")
    assert rig.host.task_cgroup(102) == "/a"


def test_exited_records_are_pruned_to_the_newest() -> None:
    rig = Rig()
    for pid in range(1, MAX_EXITED + 11):
        rig.start(pid)
        rig.processes.live.discard(pid)
        rig.session.exited(pid)
    assert len(rig.session.workloads) == MAX_EXITED
    assert min(rig.session.workloads) == 11


def test_a_parent_moved_back_to_root_gives_its_child_root_not_its_grandparents_cgroup() -> None:
    """Review bug B3: "placed in root by a write" is a placement, unlike "known, never placed"."""
    rig = Rig()
    rig.ok(0, "mkdir", path="/a")
    rig.processes.live |= {200, 201, 202}
    rig.processes.parents = {202: 201, 201: 200}
    rig.ok(0, "write", path="/a/cgroup.procs", value="200")
    rig.ok(0, "write", path="/a/cgroup.procs", value="201")
    rig.ok(0, "write", path="/cgroup.procs", value="201")  # back to root, explicitly
    rig.ok(202, "hello", pid=202, role="vm")
    assert rig.host.task_cgroup(202) == "/"


def test_ping_says_which_cgroup_files_are_writable_as_the_core_has_them() -> None:
    """One home for which files take writes: the core's file table; the mount learns it from ping."""
    from engine.files import FILES

    info = Rig().ok(0, "ping")
    assert info["writable"] == sorted(name for name, f in FILES.items() if f.writable)
    assert info["writable"] == ["cgroup.procs", "cgroup.subtree_control", "memory.max", "misc.max"]


def test_a_frame_map_of_a_big_epc_is_built_in_steps_between_other_requests() -> None:
    """4 GiB of EPC is 16 steps of 65,536 frames: a ping sent meanwhile is answered first."""
    rig = Rig("4GiB")
    rig.ok(0, "mkdir", path="/a")
    rig.start(10, "/a")
    eid = rig.ok(10, "ecreate", size=1024 * PAGE_SIZE)["eid"]
    rig.ok(10, "add_pages", eid=eid, count=700)
    key = rig.call(0, "frames", count=4096, group=256)
    assert key not in rig.replies  # its first step only
    assert rig.ok(0, "ping")["engine_pid"] == 1
    steps = 0
    while key not in rig.replies:
        rig.session.round(lambda: lambda: True)
        steps += 1
    cells = rig.replies.pop(key).ok
    assert steps == 15 and cells["count"] == 4096 and cells["frames"] == 1 << 20
    assert cells["cgroups"] == ["/a"] and sum(cells["free"]) == (1 << 20) - 703  # 700 pages, the SECS and 2 VA pages
    assert rig.replies.pop(rig.call(0, "frames", count=3, first=(1 << 20) - 3)).ok["free"] == [1, 1, 1]  # at once

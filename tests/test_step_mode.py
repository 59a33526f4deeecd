"""Step mode in the Session alone (freeze, step, thaw), on a virtual clock with fake processes."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import msgpack
import pytest

from engine import PAGE_SIZE
from engined.calls import Caller, Reply
from engined.session import STALL_RETRY_NS
from wire.protocol import ProtocolError, decode_request, request

from .helpers import limit, pages
from .test_session import Rig, stalled


class Holder:
    """A client of the engine's uid over ipc, pid ``pid``, on one connection (its key)."""

    def __init__(self, rig: Rig, pid: int = 99, key: Hashable = "tui") -> None:
        rig.processes.live.add(pid)
        self.rig, self.pid, self.key = rig, pid, key

    def reply(self, op: str, **args: Any) -> Reply:
        self.rig.session.submit(self.key, Caller(self.pid, 0), 1, op, args)
        return self.rig.replies.pop(self.key)

    def __call__(self, op: str, **args: Any) -> Any:
        reply = self.reply(op, **args)
        assert not reply.err, reply
        return reply.ok


def swapped_enclave(rig: Rig) -> int:
    """Pid 10 in /a (32 pages) with an initialised enclave of 40 pages, some of them swapped out."""
    rig.ok(0, "mkdir", path="/a")
    limit(rig.host, "/a", 32)
    rig.start(10, "/a")
    eid = rig.ok(10, "ecreate", size=64 * PAGE_SIZE)["eid"]
    rig.ok(10, "add_pages", eid=eid, count=40)
    rig.ok(10, "einit", eid=eid)
    rig.rounds()
    return int(eid)


def test_a_frozen_engine_answers_reads_and_queues_what_changes_the_host_until_a_step() -> None:
    rig = Rig()
    tui = Holder(rig)
    state = tui("freeze")
    assert state["frozen"] and state["pid"] == 99
    assert rig.ok(0, "ping")["frozen"] and rig.ok(0, "snapshot")["frozen"]
    key = rig.call(0, "mkdir", path="/late")
    rig.rounds()
    assert key not in rig.replies and "late" not in rig.ok(0, "listdir", path="/")
    check = rig.call(0, "check")
    rig.rounds()
    assert rig.replies.pop(check).ok == "ok"  # a read that is stepped goes on while frozen
    step = tui("step", what="request")
    assert (step["ran"], step["op"], step["status"], step["kinds"]) == (True, "mkdir", "done", {"mkdir": 1})
    assert rig.replies.pop(key) == Reply(key, None) and "late" in rig.ok(0, "listdir", path="/")
    assert tui("step", what="request")["ran"] is False  # nothing else is there
    assert tui("thaw")["frozen"] is False and not rig.ok(0, "ping")["frozen"]
    assert [k for k in rig.kinds() if k in ("freeze", "step", "thaw")] == ["freeze", "step", "thaw"]


def test_a_fault_waits_while_frozen_and_only_steps_move_it_and_the_reclaim() -> None:
    rig = Rig()
    eid = swapped_enclave(rig)
    tui = Holder(rig)
    tui("freeze")
    before = len(rig.kinds())
    usage = pages(rig.host, "/a/misc.current")
    key = rig.call(10, "access", eid=eid, ranges=[[0, 40]])
    rig.rounds()
    rig.clock.advance(10 * STALL_RETRY_NS)
    rig.rounds()
    assert key not in rig.replies and pages(rig.host, "/a/misc.current") == usage
    first = tui("step", what="request")
    assert (first["op"], first["pid"], first["status"]) == ("access", 10, "waiting")
    assert first["kinds"].get("work_queued") == 1 and first["state"]["waiting"] == 1
    rig.rounds()
    assert "reclaim" not in rig.kinds()[before:]  # the work item waits for a step too
    reclaimed, usage = rig.host.tree.lookup("/a").reclaimed, pages(rig.host, "/a/misc.current")
    batch = tui("step", what="reclaim")
    assert batch["worker"] == "/a" and batch["written"] > 0 and batch["kinds"]["reclaim"] >= 1
    assert rig.host.tree.lookup("/a").reclaimed == reclaimed + batch["written"]
    assert pages(rig.host, "/a/misc.current") == usage - batch["written"]
    steps = 2
    while key not in rig.replies:
        what = "request" if tui("step", what="request")["ran"] else "reclaim"
        if what == "reclaim":
            assert tui("step", what="reclaim")["ran"]
        steps += 1
        assert steps < 100
    assert rig.replies[key].ok["faults"] > 0 and "stall" not in rig.kinds()
    rig.host.check()


def test_thaw_resumes_what_waited_and_the_engine_goes_on_by_itself() -> None:
    rig = Rig()
    eid = swapped_enclave(rig)
    tui = Holder(rig)
    tui("freeze")
    key = rig.call(10, "access", eid=eid, ranges=[[0, 40]])
    tui("step", what="request")
    rig.rounds()
    assert key not in rig.replies
    tui("thaw")
    rig.rounds()
    assert rig.replies[key].ok["faults"] > 0


def test_a_stall_while_frozen_is_not_retried_and_its_frozen_time_does_not_count() -> None:
    rig = Rig()
    rig.clock.advance(5)
    key = stalled(rig)
    tui = Holder(rig)
    tui("freeze")
    charges = int(rig.host.read("/p/misc.events").split()[-1])
    since = rig.session.workloads[2].stalled_ns
    rig.clock.advance(50 * STALL_RETRY_NS)
    rig.rounds()
    assert rig.session.next_retry_ns() is None
    assert int(rig.host.read("/p/misc.events").split()[-1]) == charges  # no retry: no failed charge
    retry = tui("step", what="request")  # nothing ready: the stalled call tries again
    assert (retry["op"], retry["status"]) == ("access", "stalled")
    assert int(rig.host.read("/p/misc.events").split()[-1]) == charges + 1
    tui("thaw")
    assert rig.session.workloads[2].stalled_ns == since + 50 * STALL_RETRY_NS  # the frozen time is not a stall's
    rig.ok(0, "write", path="/p/misc.max", value=f"sgx_epc {128 * PAGE_SIZE}")
    rig.rounds()
    assert rig.replies[key].ok == {"faults": 1}
    assert rig.events[-1]["kind"] == "stall_end" and rig.events[-1]["stalled_ns"] == 0


def test_only_the_holder_steps_or_thaws_and_another_freeze_is_ebusy() -> None:
    rig = Rig()
    tui, other = Holder(rig), Holder(rig, 98, "other")
    assert other.reply("step", what="request").err == "EINVAL"  # not frozen
    tui("freeze")
    assert tui("freeze")["frozen"]  # again: it holds it already
    assert other.reply("freeze").err == "EBUSY"
    assert other.reply("step", what="reclaim").err == "EPERM"
    assert other.reply("thaw").err == "EPERM"
    assert rig.ok(0, "ping")["frozen"]


def test_step_mode_needs_an_ipc_client_of_the_engines_uid() -> None:
    rig = Rig()
    assert rig.replies.pop(rig.call(0, "freeze")).err == "EPERM"  # no pid: tcp
    rig.processes.live.add(97)
    rig.session.submit("stranger", Caller(97, 1000), 1, "freeze", {})
    assert rig.replies.pop("stranger").err == "EPERM"
    assert not rig.ok(0, "ping")["frozen"]


def test_the_holders_exit_or_lost_connection_thaws_the_engine() -> None:
    rig = Rig()
    tui = Holder(rig)
    tui("freeze")
    key = rig.call(0, "mkdir", path="/x")
    rig.processes.live.discard(99)
    rig.session.exited(99)
    assert not rig.ok(0, "ping")["frozen"]
    rig.rounds()
    assert rig.replies[key].ok is None
    rig.session.flush_events()
    assert [e["how"] for e in rig.events if e["kind"] == "thaw"] == ["exited"]
    again = Holder(rig, 96, "again")
    again("freeze")
    rig.session.disconnected("someone else")
    assert rig.ok(0, "ping")["frozen"]
    rig.session.disconnected("again")
    assert not rig.ok(0, "ping")["frozen"]


def test_the_holder_drives_a_frozen_engine_its_own_requests_are_not_queued() -> None:
    rig = Rig()
    tui = Holder(rig)
    tui("freeze")
    tui("mkdir", path="/mine")
    tui("write", path="/mine/misc.max", value="sgx_epc 65536")
    assert rig.host.read("/mine/misc.max") == "sgx_epc 65536\n"


def test_reclaim_steps_say_when_there_is_no_work() -> None:
    rig = Rig()
    tui = Holder(rig)
    tui("freeze")
    step = tui("step", what="reclaim")
    assert not step["ran"] and step["note"] == "no reclaim work is queued"
    assert "step" not in rig.kinds()  # a step that ran nothing is no event


@pytest.mark.parametrize(
    ("message", "why"),
    [
        ({"v": 1, "op": "step", "id": 1}, "step: missing what"),
        ({"v": 1, "op": "step", "id": 1, "what": "page"}, "step: what must be one of request, reclaim"),
        ({"v": 1, "op": "freeze", "id": 1, "pid": 5}, "unknown argument 'pid' for freeze"),
        ({"v": 1, "op": "thaw", "id": 1, "force": True}, "unknown argument 'force' for thaw"),
        ({"v": 1, "op": "history", "id": 1}, "history: missing what"),
        ({"v": 1, "op": "history", "id": 1, "what": "all"}, "history: what must be one of samples, events, pressure"),
        ({"v": 1, "op": "history", "id": 1, "what": "events", "after": -1}, "history: after must be an integer"),
        ({"v": 1, "op": "history", "id": 1, "what": "events", "after": "5"}, "history: after must be an integer"),
    ],
)
def test_the_step_mode_and_history_ops_refuse_bad_arguments_with_one_line(message: dict[str, Any], why: str) -> None:
    with pytest.raises(ProtocolError) as refused:
        decode_request(msgpack.packb(message))
    assert refused.value.code == "EPROTO" and refused.value.message.startswith(why)


def test_the_step_mode_and_history_ops_round_trip() -> None:
    assert decode_request(request("step", 3, what="reclaim")) == (3, "step", {"what": "reclaim"})
    assert decode_request(request("history", 4, what="pressure", after=7)) == (
        4, "history", {"what": "pressure", "after": 7}
    )  # fmt: skip
    assert decode_request(request("freeze", 5)) == (5, "freeze", {})


def test_a_freeze_taken_between_the_steps_of_a_round_stops_the_round_there() -> None:
    rig = Rig()
    rig.session.chunk_pages = 4
    rig.start(10)
    rig.start(11)
    for pid in (10, 11):
        eid = rig.ok(pid, "ecreate", size=64 * PAGE_SIZE)["eid"]
        rig.call(pid, "add_pages", eid=eid, count=40)  # 4 pages now, then a step a round
    tui = Holder(rig)
    added = rig.host.epc.nr_used
    rig.session.round(lambda: lambda: True, between=lambda: tui("freeze"))
    assert rig.host.epc.nr_used == added + 4  # one step, then frozen


def test_a_hello_queued_while_frozen_from_a_reused_pid_registers_when_stepped() -> None:
    rig = Rig()
    rig.start(10)
    rig.processes.live.discard(10)
    rig.session.exited(10)  # its record stays, exited
    tui = Holder(rig)
    tui("freeze")
    rig.processes.live.add(10)  # a new process of the same pid
    key = rig.call(10, "hello", pid=10, role="vm")
    step = tui("step", what="request")
    assert (step["op"], step["status"]) == ("hello", "done") and not rig.replies[key].err
    assert rig.session.workloads[10].state == "running" and rig.session.workloads[10].role == "vm"

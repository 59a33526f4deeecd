"""A workload's row in the snapshot says what it asked for and how it ended, from a real engine.

The size the user asked for (hello's ``size``) and the ELRANGE that ECREATE got are two
columns, kept after the workload exits however quickly it went; the signal that killed a
workload is read from the kernel (its pidfd), a stopped one reads ``stopped``.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import msgpack
import pytest

from wire import protocol
from wire.protocol import ProtocolError, decode_request
from workloads.client import EngineClient

from .engine_fixture import RunningEngine, wait_for

pytestmark = pytest.mark.slow
MiB = 1 << 20


def row(client: EngineClient, pid: int) -> dict[str, Any]:
    """The workload row of ``pid`` in a fresh snapshot ({} when there is none)."""
    return next((w for w in client.snapshot()["workloads"] if w["pid"] == pid), {})


def exited_row(client: EngineClient, pid: int) -> dict[str, Any]:
    assert wait_for(lambda: row(client, pid).get("state") == "exited", 30), row(client, pid)
    return row(client, pid)


def finish(process: subprocess.Popen[str]) -> int:
    status = process.wait(60)
    assert process.stderr is not None
    process.stderr.close()
    if process.stdout is not None:
        process.stdout.close()
    return status


def test_requested_size_and_elrange_are_separate_and_outlive_short_workloads(engine: RunningEngine) -> None:
    """A 12 MiB heap is an ELRANGE of 16 MiB (heap, TCS and code, rounded up to a power of two);
    a guest's EPC is what it asked for.  Both workloads are gone before a stats tick could see
    their enclave or vEPC (bug 11: the size read `-` or was the ELRANGE)."""
    enclave = engine.spawn("enclave", "--size", "12MiB", "--pattern", "random", "--passes", "2", "--name", "db")
    vm = engine.spawn("vm", "--size", "3MiB", "--duration", "0.5", "--name", "guest")
    assert finish(enclave) == 0 and finish(vm) == 0
    with engine.client() as client:
        db, guest = exited_row(client, enclave.pid), exited_row(client, vm.pid)
    assert (db["size"], db["elrange"], db["pattern"], db["passes"], db["duration_ms"]) == (
        12 * MiB, 16 * MiB, "random", 2, None,
    ), db  # fmt: skip
    assert (guest["size"], guest["elrange"], guest["pattern"], guest["passes"], guest["duration_ms"]) == (
        3 * MiB, 3 * MiB, "", 1, 500,
    ), guest  # fmt: skip


def test_a_client_whose_hello_says_no_size_still_registers_and_gets_its_elrange(engine: RunningEngine) -> None:
    """Old clients send hello without a plan: the row's size is 0 (unknown), its ELRANGE is ECREATE's."""
    code = (
        "import sys; from workloads.client import EngineClient\n"
        "with EngineClient(sys.argv[1]) as c:\n"
        "    c.call('hello', pid=__import__('os').getpid(), role='enclave', name='old')\n"
        "    eid = c.call('ecreate', size=1 << 20)['eid']\n"
        "    c.call('release', eid=eid)\n"
        "    c.call('bye', reason='ok')\n"
    )
    old = subprocess.run(
        [sys.executable, "-c", code, engine.endpoint], env=engine.env, capture_output=True, text=True, timeout=60
    )
    assert old.returncode == 0, old.stderr
    with engine.client() as client:
        ended = next(w for w in client.snapshot()["workloads"] if w["name"] == "old")
    assert (ended["size"], ended["elrange"], ended["pattern"], ended["passes"]) == (0, MiB, "", None), ended


@pytest.mark.parametrize(
    ("plan", "why"),
    [
        ({"size": 0}, "size must be"),
        ({"size": 1 << 50}, "size must be"),
        ({"pattern": "zigzag"}, "pattern must be"),
        ({"passes": -1}, "passes must be"),
        ({"passes": 1 << 40}, "passes must be"),
        ({"duration_ms": 0}, "duration_ms must be"),
        ({"duration_ms": "5"}, "duration_ms must be"),
    ],
)
def test_a_hello_with_a_bad_plan_is_eproto(plan: dict[str, Any], why: str) -> None:
    frame = msgpack.packb({"v": 1, "op": "hello", "id": 1, "pid": 5, "role": "enclave", **plan})
    with pytest.raises(ProtocolError) as e:
        decode_request(frame)
    assert e.value.code == "EPROTO" and why in e.value.message


def test_the_plan_a_hello_carries_is_clamped_to_what_the_wire_takes() -> None:
    from workloads.program import plan

    assert plan(16 * MiB, "hotcold", 10**20, 1e30) == {
        "size": 16 * MiB, "pattern": "hotcold", "passes": protocol.MAX_PASSES, "duration_ms": protocol.MAX_DURATION_MS,
    }  # fmt: skip
    assert plan(0) == {}
    for said in (plan(16 * MiB, "random", 3, 0.0001), plan(protocol.PAGE_SIZE, passes=0)):
        decode_request(protocol.request("hello", 1, pid=5, role="enclave", **said))  # accepted

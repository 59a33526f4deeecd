"""A workload's row in the snapshot says what it asked for and how it ended, from a real engine.

The size the user asked for (hello's ``size``) and the ELRANGE that ECREATE got are two
columns, kept after the workload exits however quickly it went; the signal that killed a
workload is read from the kernel (its pidfd), a stopped one reads ``stopped``.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
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


# -- how it ended: the kernel's wait status, although the engine is not the parent ----------


def _grandchild(parent_reaps_after_s: float) -> tuple[int, int, int]:
    """(pid of a sleeping grandchild, its pidfd, pid of its parent): the parent reaps it
    ``parent_reaps_after_s`` after our SIGUSR1, as a shell or the TUI would; we are not its
    parent.  The caller blocks SIGUSR1 around this call, for the parent's sigwait."""
    read_end, write_end = os.pipe()
    middle = os.fork()
    if middle == 0:  # pragma: no cover - the child
        child = os.fork()
        if child == 0:
            signal.pause()
            os._exit(0)
        os.write(write_end, str(child).encode())
        signal.sigwait([signal.SIGUSR1])  # the test's go: the grandchild has been killed
        time.sleep(parent_reaps_after_s)
        os.waitpid(child, 0)
        os.read(read_end, 1)  # until the test is done looking
        os._exit(0)
    pid = int(os.read(read_end, 32))
    os.close(write_end)
    return pid, os.pidfd_open(pid), middle


@pytest.mark.parametrize("reaped", [False, True], ids=["still-a-zombie", "reaped-by-its-parent"])
def test_the_engine_reads_the_exit_status_of_a_process_that_is_not_its_child(reaped: bool) -> None:
    from engined.liveness import describe_status, exit_status

    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])  # inherited: sigwait in the parent
    try:
        pid, pidfd, middle = _grandchild(0.0 if reaped else 30.0)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    try:
        os.kill(pid, signal.SIGTERM)
        assert select.select([pidfd], [], [], 10)[0], "the pidfd did not say it exited"
        os.kill(middle, signal.SIGUSR1)
        if reaped:
            assert wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 10), "its parent did not reap it"
        status = exit_status(pid, pidfd)
        assert describe_status(status) == ("SIGTERM", None), status
    finally:
        os.close(pidfd)
        os.kill(middle, signal.SIGKILL)
        os.waitpid(middle, 0)


def test_describe_status_names_the_signal_or_the_exit_code() -> None:
    from engined.liveness import describe_status

    assert describe_status(None) == ("", None)
    assert describe_status(signal.SIGKILL) == ("SIGKILL", None)
    assert describe_status(signal.SIGSEGV | 0x80) == ("SIGSEGV", None)  # with a core dump
    assert describe_status(3 << 8) == ("", 3)
    assert describe_status(0) == ("", 0)


def test_a_workload_row_says_which_signal_killed_it_or_its_exit_code(engine: RunningEngine) -> None:
    """SIGTERM from another process (not the engine's doing, and the engine is not the parent):
    the row says SIGTERM; a workload that exits 3 without a bye says exit code 3.  Its reason
    stays what it was (killed: it went without a word)."""
    victim = engine.spawn("enclave", "--size", "1MiB", "--duration", "60", "--name", "victim")
    code = (
        "import os, sys; from workloads.client import EngineClient\n"
        "c = EngineClient(sys.argv[1]); c.call('hello', pid=os.getpid(), role='vm', name='three')\n"
        "os._exit(3)\n"
    )
    three = subprocess.Popen([sys.executable, "-c", code, engine.endpoint], env=engine.env)
    with engine.client() as client:
        assert wait_for(lambda: row(client, victim.pid).get("resident", 0) > 0, 30)
        victim.send_signal(signal.SIGTERM)  # not reaped until the row says it ended: a zombie meanwhile
        killed = exited_row(client, victim.pid)
        three_row = exited_row(client, three.pid)
    assert finish(victim) == -signal.SIGTERM and three.wait(30) == 3
    assert (killed["reason"], killed["exit_signal"], killed["exit_code"]) == ("killed", "SIGTERM", None), killed
    assert (three_row["reason"], three_row["exit_signal"], three_row["exit_code"]) == ("killed", "", 3), three_row


def test_a_stopped_workload_reads_stopped_in_the_snapshot_and_the_stats_until_sigcont(engine: RunningEngine) -> None:
    from playground.feed import EngineFeed

    job = engine.spawn("enclave", "--size", "1MiB", "--duration", "60", "--name", "job")
    feed = EngineFeed(engine.endpoint)

    def state_in_feed() -> str:
        feed.poll()
        return next((w["state"] for w in feed.snapshot["workloads"] if w["pid"] == job.pid), "")

    try:
        with engine.client() as client:
            assert wait_for(lambda: state_in_feed() == "running", 30)
            job.send_signal(signal.SIGSTOP)
            assert wait_for(lambda: state_in_feed() == "stopped", 10), "the stats never said stopped"
            assert row(client, job.pid)["state"] == "stopped"
            job.send_signal(signal.SIGCONT)
            assert wait_for(lambda: state_in_feed() == "running", 10), "the stats never said running again"
            assert row(client, job.pid)["state"] == "running"
    finally:
        feed.close()
        job.kill()
        finish(job)


def test_a_stats_tick_asks_a_bounded_number_of_workloads_whether_they_are_stopped_in_turn() -> None:
    """200 running workloads: each tick makes at most STOPPED_CHECKS /proc reads, a few ticks look
    at every one, and the one that is stopped goes out as stopped."""
    from engine import Host, VirtualClock
    from engined.stats import STOPPED_CHECKS, Stats, Workload

    asked: list[int] = []

    def stopped(pid: int) -> bool:
        asked.append(pid)
        return pid == 1150

    workloads = {pid: Workload(pid, "enclave", f"w{pid}", "/", 0) for pid in range(1000, 1200)}
    stats = Stats(Host("1MiB", clock=VirtualClock()), workloads, stopped)
    sent: dict[int, str] = {}
    for _ in range(-(-len(workloads) // STOPPED_CHECKS)):
        before = len(asked)
        for message in stats.tick("pub", 1, 0, 128, 1 << 16):
            sent.update((r["pid"], r["state"]) for r in message["workloads"])
        assert len(asked) - before <= STOPPED_CHECKS
    assert set(asked) == set(workloads)
    assert sent[1150] == "stopped" and set(sent.values()) == {"running", "stopped"}


# -- names in ps and htop ------------------------------------------------------------------------


def cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().split(b"\0")[0].decode()


def test_workload_processes_name_themselves_in_ps_however_they_were_started(engine: RunningEngine) -> None:
    """epc-playground enclave, python -m workloads vm, and a child the TUI spawns (LogHub, the
    multiprocessing spawn method) each read ``epc-playground: ROLE NAME`` in /proc/PID/cmdline."""
    import logging

    from playground.launch import LogHub
    from playground.scenario.backends.base import WorkloadSpec
    from workloads.cli import main as workload_main

    cli = engine.spawn("enclave", "--size", "1MiB", "--duration", "60", "--name", "db")
    module = subprocess.Popen(
        [sys.executable, "-m", "workloads", "vm", "--size", "1MiB", "--duration", "60", "--name", "guest"],
        env=engine.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    hub = LogHub(logging.NullHandler())
    spec = WorkloadSpec("", "/", "enclave", 1 << 20, duration_ns=60 * 10**9)
    child = hub.spawn(workload_main, spec.to_argv(engine.endpoint), name="enclave")
    try:
        with engine.client() as client:
            pids = (cli.pid, module.pid, child.pid)
            assert wait_for(lambda: all(row(client, pid).get("state") == "running" for pid in pids), 30)
        assert [cmdline(pid) for pid in pids] == ["epc-playground: enclave db", "epc-playground: vm guest",
                                                  "epc-playground: enclave"]  # fmt: skip
    finally:
        for process in (cli, module):
            process.kill()
            process.wait(30)
        child.kill()
        child.join(30)
        hub.close()
        if cli.stderr is not None:
            cli.stderr.close()
        if cli.stdout is not None:
            cli.stdout.close()

"""The engine with real processes: a fault that no reclaim can help stalls, it is not SIGBUS (reference 7.3).

/p (64 pages) is full: a holder in /p/a keeps 59 pages resident; a staller in /p/b faults
with pages on its own LRU (EBUSY) while its work item has nothing to do.  The engine shows
it stalled (snapshot, events), retries it (each try a failed charge at /p), and lets it
go on when the holder exits; a signal ends it as on a real host.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from playground.scenario.backends.real import EventStream
from workloads.client import EngineClient

from .engine_fixture import RunningEngine, wait_for

pytestmark = pytest.mark.slow
PAGE = 4096


def number(client: EngineClient, path: str) -> int:
    return int(client.read(path).split()[-1])


def row(client: EngineClient, name: str) -> dict[str, Any]:
    return next((w for w in client.snapshot()["workloads"] if w["name"] == name), {})


@pytest.fixture
def stalled(engine: RunningEngine) -> Iterator[tuple[EngineClient, subprocess.Popen[str], subprocess.Popen[str]]]:
    """The holder (59 of /p's 64 pages) and a staller whose fault stalls; both killed afterwards."""
    with engine.client() as client:
        for path in ("/p", "/p/a", "/p/b"):
            client.mkdir(path)
        client.write("/p/misc.max", f"sgx_epc {64 * PAGE}")
        holder = engine.spawn(
            "enclave", "--size", "208KiB", "--duration", "120", "--cgroup", "/p/a", "--name", "holder"
        )
        staller = None
        try:
            assert wait_for(lambda: number(client, "/p/a/misc.current") == 59 * PAGE)
            staller = engine.spawn("enclave", "--size", "32KiB", "--cgroup", "/p/b", "--name", "staller")
            assert wait_for(lambda: row(client, "staller").get("state") == "stalled"), row(client, "staller")
            yield client, holder, staller
        finally:
            for process in (holder, staller):
                if process is not None and process.poll() is None:
                    process.kill()
                    process.wait()


def events_until(stream: EventStream, done: Callable[[list[dict[str, Any]]], bool], timeout: float = 5.0) -> list[Any]:
    """The events the stream brings until ``done`` holds of them (or the timeout)."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not done(seen):
        seen.extend(stream.take())
        time.sleep(0.02)
    return seen


def exited(name: str) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda seen: any(e["kind"] == "workload_exit" and e["name"] == name for e in seen)


FAULT_WAIT_BEFORE_S = 10.5  # the engine used to give up on a parked fault after 10 s, with SIGBUS


def test_a_fault_that_no_reclaim_can_help_stalls_and_goes_on_when_the_sibling_exits(
    engine: RunningEngine, stalled: tuple[EngineClient, subprocess.Popen[str], subprocess.Popen[str]]
) -> None:
    client, holder, staller = stalled
    stream = EventStream(client.pub_endpoint)
    try:
        snapshot = client.snapshot()
        [staller_row] = [w for w in snapshot["workloads"] if w["name"] == "staller"]
        assert staller_row["state"] == "stalled" and 0 < staller_row["stalled_ns"] <= snapshot["t_ns"]
        assert staller_row["cgroup"] == "/p/b"
        time.sleep(FAULT_WAIT_BEFORE_S)
        assert staller.poll() is None and row(client, "staller")["state"] == "stalled"
        holder.send_signal(signal.SIGTERM)
        assert staller.wait(timeout=30) == 0, staller.stderr.read() if staller.stderr else ""
        assert holder.wait(timeout=30) == -signal.SIGTERM
        seen = events_until(stream, exited("staller"))
    finally:
        stream.close()
    assert row(client, "staller")["reason"] == "ok"
    ends = [e for e in seen if e["kind"] == "stall_end" and e["name"] == "staller"]
    assert len(ends) == 1 and ends[0]["how"] == "resumed" and ends[0]["cgroup"] == "/p/b", ends
    assert ends[0]["stalled_ns"] >= FAULT_WAIT_BEFORE_S * 1e9 and ends[0]["retries"] > 0
    assert not [e for e in seen if e["kind"] == "sigbus"]
    engine.check()


def test_a_stalled_fault_keeps_retrying_each_try_a_failed_charge_at_the_full_parent(
    stalled: tuple[EngineClient, subprocess.Popen[str], subprocess.Popen[str]],
) -> None:
    """The kernel's task re-faults as fast as its CPU goes; the engine retries the stalled fault
    (STALL_RETRY_HZ times a second), each try one more failed charge at /p, where the limit is.
    The bounds are generous waits, not a rate: the rate is checked on the virtual clock
    (test_runner.py, retries == stalled seconds x STALL_RETRY_HZ)."""
    client, _, staller = stalled

    def failed() -> int:
        return number(client, "/p/misc.events.local")

    for _ in range(3):  # it retries, and goes on retrying
        before = failed()
        assert wait_for(lambda before=before: failed() > before, 5.0), f"no retry within 5 s ({before} failed charges)"
    assert staller.poll() is None and row(client, "staller")["state"] == "stalled"
    assert number(client, "/p/b/misc.events") == 0  # /p/b's own limit never refused it


def test_a_stalled_task_killed_by_sigkill_releases_everything(
    engine: RunningEngine, stalled: tuple[EngineClient, subprocess.Popen[str], subprocess.Popen[str]]
) -> None:
    client, holder, staller = stalled
    stream = EventStream(client.pub_endpoint)
    try:
        staller.kill()
        assert staller.wait(timeout=10) == -signal.SIGKILL
        assert wait_for(lambda: client.read("/p/b/misc.current") == "sgx_epc 0\n", 2.0)
        assert wait_for(lambda: row(client, "staller").get("reason") == "killed")
        assert holder.poll() is None and number(client, "/p/a/misc.current") == 59 * PAGE
        seen = events_until(stream, exited("staller"))
    finally:
        stream.close()
    kinds = [e["kind"] for e in seen if e.get("name") == "staller"]
    assert kinds == ["stall_end", "workload_exit"], kinds  # the stall ends with its task, before its exit
    assert [e["how"] for e in seen if e["kind"] == "stall_end"] == ["exited"]
    engine.check()


def test_cg_tree_lists_a_stalled_workload_under_the_tree(
    engine: RunningEngine, stalled: tuple[EngineClient, subprocess.Popen[str], subprocess.Popen[str]]
) -> None:
    _, _, staller = stalled
    done = engine.cli("cg", "tree")
    assert done.returncode == 0, done.stderr
    [line] = [line for line in done.stdout.splitlines() if line.startswith("stalled:")]
    assert line.startswith(f"stalled: staller (pid {staller.pid}) in /p/b for "), line
    assert "no reclaim can help" in line

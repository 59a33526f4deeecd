"""Step mode and the history with a real engine and real workload processes.

A frozen engine answers reads and nothing else: a workload's access waits unanswered,
misc.current and the pages reclaimed change only when the holder steps, and thaw lets it
run again.  The holder's death, or its connection's, thaws the engine by itself.  A client
that attaches late reads what happened before it came from the engine's history.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from playground.feed import EngineFeed
from workloads.client import EngineClient, NoEngine

from .engine_fixture import RunningEngine, wait_for

pytestmark = pytest.mark.slow
PAGE = 4096


def cgroup_row(client: EngineClient, path: str) -> dict[str, Any]:
    return next(cg for cg in client.snapshot()["cgroups"] if cg["path"] == path)


def workload_row(client: EngineClient, name: str) -> dict[str, Any]:
    return next((w for w in client.snapshot()["workloads"] if w["name"] == name), {})


def ticks(client: EngineClient) -> int:
    return int(client.call("history", what="samples")["tick"])


def a_second_passes(client: EngineClient) -> None:
    """Wait for four more of the engine's 4 Hz samples: its clock went on a second."""
    start = ticks(client)
    assert wait_for(lambda: ticks(client) >= start + 4, timeout=10)


@pytest.fixture
def pressed(engine: RunningEngine) -> Iterator[EngineClient]:
    """An enclave of 128 pages in /pod (64 pages), faulting through it for a minute: busy reclaim."""
    with engine.client() as client:
        client.mkdir("/pod")
        client.write("/pod/misc.max", f"sgx_epc {64 * PAGE}")
        worker = engine.spawn("enclave", "--size", "512KiB", "--duration", "60", "--cgroup", "/pod", "--name", "w")
        try:
            assert wait_for(lambda: cgroup_row(client, "/pod")["reclaimed"] > 256), cgroup_row(client, "/pod")
            yield client
        finally:
            if client.call("ping")["frozen"]:
                client.thaw()
            worker.kill()
            worker.wait()


def test_a_frozen_engine_moves_a_workload_only_by_steps_and_thaw_lets_it_run(pressed: EngineClient) -> None:
    client = pressed
    assert client.freeze()["frozen"] and client.call("ping")["frozen"]
    state = client.step("request")["state"]  # whatever it had in hand goes a step: the rest is still
    before, faults = cgroup_row(client, "/pod"), workload_row(client, "w")["faults"]
    a_second_passes(client)
    after = cgroup_row(client, "/pod")
    assert (after["misc_current"], after["reclaimed"]) == (before["misc_current"], before["reclaimed"])
    assert workload_row(client, "w")["faults"] == faults  # its access has no answer
    moved = reclaims = 0
    for _ in range(200):
        usage = cgroup_row(client, "/pod")["misc_current"]
        step = client.step("request")
        if not step["ran"]:
            step = client.step("reclaim")
            assert step["ran"] and step["worker"] == "/pod", step
            reclaims += 1
            assert cgroup_row(client, "/pod")["misc_current"] == usage - step["written"] * PAGE
        moved += cgroup_row(client, "/pod")["misc_current"] != usage
        if workload_row(client, "w")["faults"] > faults and moved > 2 and reclaims:
            break
    assert workload_row(client, "w")["faults"] > faults and reclaims, state  # steps served its faults
    before = cgroup_row(client, "/pod")
    a_second_passes(client)
    assert cgroup_row(client, "/pod")["reclaimed"] == before["reclaimed"]  # reclaim only on a step
    faults = workload_row(client, "w")["faults"]
    assert not client.thaw()["frozen"]
    assert wait_for(lambda: workload_row(client, "w")["faults"] > faults + 1000)
    kinds = [e["kind"] for e in client.history_log("events")]
    assert kinds.count("freeze") == 1 and kinds.count("thaw") == 1 and kinds.count("step") > 2


HOLDER = """
import sys, time
from workloads.client import EngineClient, NoEngine
client = EngineClient(sys.argv[1])
client.freeze()
print("frozen", flush=True)
time.sleep(600)
"""


def test_a_holder_killed_while_frozen_thaws_the_engine(engine: RunningEngine) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, engine.endpoint], env=engine.env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "frozen\n"
        with engine.client() as client:
            assert client.call("ping")["frozen"]
            mkdir = engine.spawn("cg", "mkdir", "/waited")
            a_second_passes(client)
            assert mkdir.poll() is None and "waited" not in client.listdir("/")  # queued
            holder.kill()
            holder.wait()
            assert wait_for(lambda: not client.call("ping")["frozen"], timeout=5)
            assert mkdir.wait(timeout=30) == 0 and "waited" in client.listdir("/")
            [thaw] = [e for e in client.history_log("events") if e["kind"] == "thaw"]
            assert thaw["how"] == "exited" and thaw["pid"] == holder.pid
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_a_holder_that_disconnects_while_frozen_thaws_the_engine(engine: RunningEngine) -> None:
    with engine.client() as client:
        holder = engine.client()
        holder.freeze()
        assert client.call("ping")["frozen"]
        holder.close()  # the process lives on: its connection is gone
        assert wait_for(lambda: not client.call("ping")["frozen"], timeout=5)
        [thaw] = [e for e in client.history_log("events") if e["kind"] == "thaw"]
        assert thaw["how"] == "disconnected"


def test_a_client_attaching_after_three_seconds_starts_with_what_happened_before(pressed: EngineClient) -> None:
    client = pressed
    for n in range(40):
        client.mkdir(f"/pod-{n:02}")
    start = ticks(client)
    assert wait_for(lambda: ticks(client) >= start + 12, timeout=15)  # 3 s more of activity
    page = client.call("history", what="samples")
    assert len(page["cgroups"]) == 16 and page["next"] is not None  # paged: the reply is bounded
    first_seq = client.snapshot()["seq"]
    feed = EngineFeed(client.endpoint)
    try:
        assert len(feed.usage["/pod"]) >= 12 and max(feed.usage["/pod"]) > 0
        assert sum(feed.reclaim["/pod"]) > 0 and len(feed.usage) == 42
        seqs = [e["seq"] for e in feed.events if "seq" in e]
        kinds = {e["kind"] for e in feed.events}
        assert {"mkdir", "workload_start", "ecreate", "pressure"} <= kinds
        assert min(seqs) < first_seq and seqs == sorted(seqs)
        client.mkdir("/later")
        assert wait_for(lambda: feed.poll() or any(e.get("cgroup") == "/later" for e in feed.events))
        seqs = [e["seq"] for e in feed.events if "seq" in e]
        assert len(seqs) == len(set(seqs))  # what the history gave is not taken again from PUB
    finally:
        feed.close()


def test_a_client_that_gives_up_on_a_frozen_engine_is_told_it_is_frozen(engine: RunningEngine) -> None:
    with engine.client() as holder, EngineClient(engine.endpoint, timeout_s=1) as client:
        holder.freeze()
        with pytest.raises(NoEngine) as gave_up:
            client.mkdir("/queued")
        assert "is frozen (step mode)" in str(gave_up.value) and "mkdir waits" in str(gave_up.value)
        assert client.read("/misc.capacity")  # reads are answered

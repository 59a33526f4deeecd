"""The engine process with real workload processes and real sockets (DESIGN.md sections 2, 3, 5)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import pytest
import zmq

from engined import runtime
from wire import protocol
from workloads.client import EngineClient, EngineError, NoEngine

from .engine_fixture import RunningEngine, free_port_pair, start_engine, stop_engine, wait_for
from .puppet import Puppet

pytestmark = pytest.mark.slow
MiB = 1 << 20


def misc_current(client: EngineClient, path: str) -> int:
    return int(client.read(f"{path.rstrip('/')}/misc.current").split()[1])


def test_eight_enclaves_oversubscribe_a_cgroup_two_killed_nothing_leaks(engine: RunningEngine) -> None:
    with engine.client() as client:
        client.mkdir("/jobs")
        client.write("/jobs/misc.max", f"sgx_epc {6 * MiB}")
        client.write("/jobs/cgroup.procs", str(os.getpid()))  # what this test starts lands in /jobs
    jobs = [
        engine.spawn("enclave", "--size", "2MiB", "--pattern", "random", "--duration", "3", "--seed", str(i))
        for i in range(8)
    ]
    with engine.client() as client:
        assert wait_for(lambda: len(client.snapshot()["workloads"]) == 8, 20)
        time.sleep(0.5)
        for job in jobs[:2]:
            job.send_signal(signal.SIGKILL)
        codes = [job.wait(timeout=120) for job in jobs]
        assert codes[:2] == [-signal.SIGKILL] * 2
        assert codes[2:] == [0] * 6, [job.stderr.read() if job.stderr else "" for job in jobs]
        assert {w["cgroup"] for w in client.snapshot()["workloads"]} == {"/jobs"}
        assert wait_for(lambda: client.read("/jobs/misc.current") == "sgx_epc 0\n", 1.0)
        assert int(client.read("/jobs/misc.events").split()[1]) > 0  # the limit really bit
        assert client.read("/jobs/memory.current") == "0\n"
        assert client.call("check") == "ok"
        reasons = sorted(w["reason"] for w in client.snapshot()["workloads"])
        assert reasons == ["killed", "killed"] + ["ok"] * 6


def test_a_vm_over_its_limit_dies_by_sigbus_while_an_enclave_beside_it_finishes(engine: RunningEngine) -> None:
    with engine.client() as client:
        for path in ("/vm", "/enc"):
            client.mkdir(path)
            client.write(f"{path}/misc.max", f"sgx_epc {2 * MiB}")
    vm = engine.spawn("vm", "--size", "4MiB")
    encl = engine.spawn("enclave", "--size", "6MiB", "--passes", "3")
    with engine.client() as client:
        client.write("/vm/cgroup.procs", str(vm.pid))
        client.write("/enc/cgroup.procs", str(encl.pid))
    assert vm.wait(timeout=60) == -signal.SIGBUS
    assert "SIGBUS" in (vm.stderr.read() if vm.stderr else "")
    assert encl.wait(timeout=120) == 0
    engine.check()


def test_a_shell_moved_into_a_cgroup_starts_an_enclave_charged_there(engine: RunningEngine) -> None:
    with engine.client() as client:
        client.mkdir("/x")
    script = (
        "python -m playground.cli cg write /x/cgroup.procs $$ && "
        "python -m playground.cli enclave --size 1MiB --name from-shell && "
        "python -m playground.cli cg read /x/misc.peak"
    )
    env = {**engine.env, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    done = subprocess.run(
        ["sh", "-c", script], env=env, capture_output=True, text=True, timeout=120, cwd=engine.env["PYTHONPATH"]
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.split()[1]) >= MiB  # the enclave's pages were charged to /x
    with engine.client() as client:
        snapshot = client.snapshot()
    [workload] = [w for w in snapshot["workloads"] if w["name"] == "from-shell"]
    assert workload["cgroup"] == "/x" and workload["reason"] == "ok"


def test_a_killed_workload_is_released_within_a_second(engine: RunningEngine) -> None:
    job = engine.spawn("enclave", "--size", "8MiB", "--duration", "30")
    with engine.client() as client:
        assert wait_for(lambda: misc_current(client, "/") > 4 * MiB, 20)
        job.send_signal(signal.SIGKILL)
        job.wait()
        t0 = time.monotonic()
        assert wait_for(lambda: misc_current(client, "/") == 0, 1.0)
        assert time.monotonic() - t0 < 1.0
        assert client.call("check") == "ok"


def test_a_signal_during_a_long_add_pages_stops_it_and_leaks_nothing(engine: RunningEngine) -> None:
    with engine.client() as client:
        client.mkdir("/slow")
        client.write("/slow/misc.max", f"sgx_epc {MiB}")
    job = engine.spawn("enclave", "--size", "512MiB")  # 131072 pages through a 256-page limit
    with engine.client() as client:
        client.write("/slow/cgroup.procs", str(job.pid))
        assert wait_for(lambda: int(client.read("/slow/misc.events").split()[1]) > 100, 20)
        job.send_signal(signal.SIGTERM)
        assert job.wait(timeout=10) == -signal.SIGTERM
        assert wait_for(lambda: client.read("/slow/misc.current") == "sgx_epc 0\n", 2.0)
        assert client.call("check") == "ok"


def test_ten_thousand_bad_frames_are_answered_and_change_nothing(engine: RunningEngine) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(engine.endpoint)
    rng = random.Random(7)
    seeds = [
        protocol.request("write", 1, path="/misc.max", value="sgx_epc 0"),
        protocol.request("access", 2, eid=1, ranges=[[0, 4]]),
        protocol.request("ecreate", 3, size=8192),
        protocol.request("rmdir", 4, path="/"),
    ]
    answered = 0
    try:
        for i in range(10_000):
            frame = bytearray(rng.choice(seeds))
            for _ in range(rng.randint(1, 3)):
                pos = rng.randrange(len(frame))
                frame[pos] = rng.randrange(256)
            sock.send(bytes(frame))
            if i % 100 == 99:
                while sock.poll(2000):
                    sock.recv()
                    answered += 1
                    if answered == i + 1:
                        break
        while answered < 10_000 and sock.poll(5000):
            sock.recv()
            answered += 1
    finally:
        sock.close()
        ctx.term()
    assert answered == 10_000
    with engine.client() as client:
        assert client.call("check") == "ok"
        assert client.read("/misc.current") == "sgx_epc 0\n"
        assert client.listdir("/") and client.snapshot()["cgroups"][0]["path"] == "/"


def test_every_client_exits_with_one_line_when_the_engine_is_killed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    running = start_engine(tmp_path, "--capacity", "4MiB")
    jobs = [running.spawn("enclave", "--size", "16MiB", "--duration", "30") for _ in range(3)]
    with running.client() as client:
        assert wait_for(lambda: len(client.snapshot()["workloads"]) == 3, 20)
    running.process.kill()
    running.process.wait()
    for job in jobs:
        assert job.wait(timeout=15) == 2
        err = job.stderr.read() if job.stderr else ""
        assert len(err.strip().splitlines()) == 1 and "gone" in err, err
    missing = running.cli("cg", "read", "/misc.current")
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1


def test_no_engine_is_one_clear_line_and_exit_2(tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)}
    env.pop(runtime.ENDPOINT_ENV, None)
    for args in (["enclave", "--size", "1MiB"], ["cg", "tree"], ["vm", "--size", "1MiB"]):
        done = subprocess.run([sys.executable, "-m", "playground.cli", *args], env=env, capture_output=True, text=True)
        assert done.returncode == 2
        assert done.stderr.count("\n") == 1 and "no engine is running" in done.stderr


def test_errors_come_back_as_errno_names_and_ownership_is_checked(engine: RunningEngine) -> None:
    with engine.client() as client:
        with pytest.raises(EngineError) as e:
            client.write("/misc.max", "sgx_epc 1")
        assert e.value.code == "ENOENT"
        client.mkdir("/a")
        with pytest.raises(EngineError) as e:
            client.write("/a/misc.max", "sgx_epc -1")
        assert e.value.code == "EINVAL"
        with pytest.raises(EngineError) as e:
            client.call("ecreate", size=8192)
        assert e.value.code == "EPERM"  # no hello: no pid to charge
        client.hello("client")
        with pytest.raises(EngineError) as e:
            client.write("/a/cgroup.procs", str(2**30 - 7))
        assert e.value.code == "ESRCH"
    with Puppet(engine.endpoint) as owner, Puppet(engine.endpoint) as other:
        owner.ok("hello", pid=owner.pid, role="enclave")
        eid = owner.ok("ecreate", size=8192)["eid"]
        other.ok("hello", pid=other.pid, role="enclave")
        assert other.send("release", eid=eid)["err"] == "EPERM"
        assert owner.ok("release", eid=eid) is None


def test_the_engine_refuses_a_second_default_instance(engine: RunningEngine) -> None:
    second = subprocess.run(
        [sys.executable, "-m", "playground.cli", "engine"],
        env=engine.env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert second.returncode == 2 and "already running" in second.stderr


def test_engine_on_tcp_loopback(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    port = free_port_pair()
    running = start_engine(tmp_path, "--bind", f"tcp://127.0.0.1:{port}", "--capacity", "1MiB")
    monkeypatch.setenv("EPC_PLAYGROUND_KEYS", str(running.runtime_dir / "keys"))  # tcp is CURVE
    try:
        assert running.endpoint == f"tcp://127.0.0.1:{port}"
        with running.client() as client:
            assert client.read("/misc.capacity") == "sgx_epc 1048576\n"
    finally:
        stop_engine(running)
    with pytest.raises(NoEngine):
        EngineClient(f"ipc://{tmp_path}/nothing-here")


def test_cg_commands_read_write_mkdir_rmdir_tree_as_a_shell_would(engine: RunningEngine) -> None:
    assert engine.cli("cg", "mkdir", "/pod").returncode == 0
    assert engine.cli("cg", "write", "/pod/misc.max", "sgx_epc 1048576").returncode == 0
    assert engine.cli("cg", "read", "/pod/misc.max").stdout == "sgx_epc 1048576\n"
    bad = engine.cli("cg", "write", "/pod/misc.max", "bogus")
    assert bad.returncode == 1 and bad.stderr == (
        "epc-playground cg write /pod/misc.max: Invalid argument (EINVAL): "
        "expected '<resource> <value>', e.g. 'sgx_epc 1048576' or 'sgx_epc max'\n"
    )
    suffix = engine.cli("cg", "write", "/pod/misc.max", "sgx_epc 8M")  # the kernel takes no units: say so
    assert suffix.returncode == 1 and suffix.stderr == (
        "epc-playground cg write /pod/misc.max: Invalid argument (EINVAL): "
        "'8M' is not a number: misc.max takes bytes or max, e.g. 'sgx_epc 8388608'\n"
    )
    tree = engine.cli("cg", "tree").stdout
    assert "pod" in tree and "1 MiB" in tree and "EPC 16 MiB" in tree
    assert engine.cli("cg", "mkdir", "/pod").returncode == 1
    assert engine.cli("cg", "rmdir", "/pod").returncode == 0
    gone = engine.cli("cg", "read", "/pod/misc.max")
    assert gone.returncode == 1 and "(ENOENT)" in gone.stderr


def test_the_engine_stops_cleanly_on_sigint(tmp_path) -> None:  # type: ignore[no-untyped-def]
    running = start_engine(tmp_path, "--capacity", "1MiB")
    running.process.send_signal(signal.SIGINT)
    assert running.process.wait(timeout=10) == 0
    assert not any(running.runtime_dir.iterdir())


def test_enclave_exits_1_with_enomem_when_its_cgroup_is_full_of_unreclaimable_pages(engine: RunningEngine) -> None:
    """The selftest's small case: the VA pages of a big enclave alone exceed the limit."""
    with engine.client() as client:
        client.mkdir("/small")
        client.write("/small/misc.max", f"sgx_epc {16 * 4096}")
        client.write("/small/cgroup.procs", str(os.getpid()))
    done = engine.cli("enclave", "--size", "64MiB")  # 16384 pages: 33 VA pages
    assert done.returncode == 1
    assert done.stderr.startswith("epc-playground enclave: ENOMEM:") and done.stderr.count("\n") == 1
    with engine.client() as client:
        assert client.read("/small/misc.current") == "sgx_epc 0\n"


def test_enclave_killed_by_the_oom_killer_dies_by_sigkill(engine: RunningEngine) -> None:
    with engine.client() as client:
        client.mkdir("/mem")
        client.write("/mem/misc.max", f"sgx_epc {MiB}")
        client.write("/mem/memory.max", str(MiB))  # far less than its backing needs
        client.write("/mem/cgroup.procs", str(os.getpid()))
    job = engine.spawn("enclave", "--size", "8MiB")
    assert job.wait(timeout=60) == -signal.SIGKILL
    with engine.client() as client:
        events = dict(line.split() for line in client.read("/mem/memory.events").splitlines())
        assert int(events["oom_kill"]) == 1
        assert wait_for(lambda: client.read("/mem/memory.current") == "0\n", 2.0)
        [workload] = client.snapshot()["workloads"]
        assert workload["reason"] == "OOM"
        assert client.call("check") == "ok"


def test_enclave_grows_by_eaug_and_trims_its_heap(engine: RunningEngine) -> None:
    with engine.client() as client:
        client.mkdir("/sgx2")
        client.write("/sgx2/cgroup.procs", str(os.getpid()))
    done = engine.cli("enclave", "--size", "1MiB", "--grow", "256KiB", "--trim", "512KiB", "--pattern", "hotcold")
    assert done.returncode == 0, done.stderr
    with engine.client() as client:
        peak = int(client.read("/sgx2/misc.peak").split()[1])
        assert peak >= MiB + 256 * 1024  # the heap and the EAUG'd pages were resident together
        assert client.read("/sgx2/misc.current") == "sgx_epc 0\n"


def test_events_and_stats_are_published_in_sequence(engine: RunningEngine) -> None:
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.linger = 0
    with engine.client() as client:
        sub.connect(client.pub_endpoint)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        time.sleep(0.3)  # the slow joiner: let the subscription reach the engine
        client.mkdir("/ev")
        client.write("/ev/misc.max", f"sgx_epc {MiB}")
        client.write("/ev/cgroup.procs", str(os.getpid()))
    assert engine.cli("enclave", "--size", "4MiB", "--passes", "2").returncode == 0
    kinds: list[str] = []
    seqs: list[int] = []
    stats = 0
    paths: set[str] = set()
    deadline = time.monotonic() + 5
    try:
        while time.monotonic() < deadline and (stats < 2 or "workload_exit" not in kinds):
            if not sub.poll(200):
                continue
            topic, payload = sub.recv_multipart()
            message = msgpack.unpackb(payload)
            if topic == protocol.TOPIC_STATS:
                stats += 1
                paths = {c["path"] for c in message["cgroups"]}
            else:
                kinds.extend(event["kind"] for event in message)
                seqs.extend(event["seq"] for event in message)
                pressure = {event["kind"] in protocol.PRESSURE_KINDS for event in message}
                assert pressure == {topic == protocol.TOPIC_EVENT_PRESSURE}, (topic, message)
    finally:
        sub.close()
        ctx.term()
    assert stats >= 2 and paths == {"/", "/ev"}
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    for kind in ("mkdir", "write", "workload_start", "ecreate", "limit_hit", "reclaim", "work_queued", "workload_exit"):
        assert kind in kinds, (kind, sorted(set(kinds)))


def test_a_workload_can_move_itself_into_a_cgroup_first(engine: RunningEngine) -> None:
    with engine.client() as client:
        client.mkdir("/z")
    assert engine.cli("enclave", "--size", "1MiB", "--cgroup", "/z", "--name", "self-placed").returncode == 0
    with engine.client() as client:
        assert int(client.read("/z/misc.peak").split()[1]) >= MiB
        [workload] = client.snapshot()["workloads"]
        assert workload["cgroup"] == "/z"


@pytest.mark.parametrize("round_", range(3))
def test_the_engine_stops_within_seconds_of_sigterm_under_load(tmp_path, round_: int) -> None:  # type: ignore[no-untyped-def]
    running = start_engine(tmp_path, "--capacity", "8MiB")
    with running.client() as client:
        client.mkdir("/busy")
        client.write("/busy/misc.max", f"sgx_epc {MiB}")
        client.write("/busy/cgroup.procs", str(os.getpid()))
    jobs = [running.spawn("enclave", "--size", "4MiB", "--duration", "30", "--pattern", "random") for _ in range(2)]
    time.sleep(1.0 + round_ * 0.3)  # the scheduler, the reclaim work and the stats timer all busy
    running.process.send_signal(signal.SIGTERM)
    assert running.process.wait(timeout=8) == 0
    for job in jobs:
        assert job.wait(timeout=15) in (1, 2)  # ESHUTDOWN, or the engine gone: one line either way


def test_snapshot_splits_each_cgroups_own_pages_and_counts_swapped_ones(engine: RunningEngine) -> None:
    """What the TUI shows for a cgroup: its own reclaimable and unreclaimable pages, pages swapped out."""
    with EngineClient(engine.endpoint) as client:
        client.mkdir("/s")
        client.mkdir("/s/child")
        client.write("/s/misc.max", f"sgx_epc {64 * 4096}")
        client.write("/s/cgroup.procs", str(os.getpid()))
        client.hello("enclave", "splitter")
        eid = client.call("ecreate", size=512 * 4096)["eid"]
        client.call("add_pages", eid=eid, count=200)
        cgroups = {cg["path"]: cg for cg in client.snapshot()["cgroups"]}
        s, child = cgroups["/s"], cgroups["/s/child"]
        assert s["reclaimable"] + s["unreclaimable"] == s["misc_current"] // 4096 <= 64
        assert s["unreclaimable"] >= 2  # the SECS and a VA page at least
        assert s["swapped"] == 200 - s["reclaimable"] > 0  # every added page is on the LRU or in backing
        assert child["reclaimable"] == child["unreclaimable"] == child["swapped"] == 0
        client.call("release", eid=eid)
        assert {cg["path"]: cg["swapped"] for cg in client.snapshot()["cgroups"]}["/s"] == 0
        client.write("/cgroup.procs", str(os.getpid()))


def test_the_snapshot_says_how_much_host_ram_backs_the_epc(engine: RunningEngine, tmp_path: Path) -> None:
    with engine.client() as client:
        assert client.snapshot()["memory"] is None  # unlimited
    (tmp_path / "other").mkdir()
    limited = start_engine(tmp_path / "other", "--capacity", "4MiB", "--memory", "64MiB")
    try:
        with limited.client() as client:
            assert client.snapshot()["memory"] == 64 << 20
    finally:
        stop_engine(limited)

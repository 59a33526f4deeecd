"""The engine acts only for the process at the other end of the socket (issue 10: H1-H3, M1-M4, M8, L7, L8).

Every client here is a real process of its own (tests.puppet), since the engine learns
who a client is from the kernel's peer credentials, not from what the client says.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgpack
import pytest
import zmq

from wire import protocol

from .engine_fixture import RunningEngine, running_engine
from .puppet import Puppet

MiB = 1 << 20
pytestmark = pytest.mark.slow


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_hello_registers_only_the_sending_process(engine: RunningEngine) -> None:
    victim = subprocess.Popen(["sleep", "60"])
    try:
        with Puppet(engine.endpoint) as attacker, engine.client() as client:
            client.mkdir("/m")
            client.write("/m/memory.max", "1048576")
            engine_pid = client.call("ping")["engine_pid"]
            for pid in (victim.pid, engine_pid, 1):
                reply = attacker.send("hello", pid=pid, role="enclave")
                assert reply["err"] == "EPERM" and "connection is pid" in reply["msg"], reply
            assert attacker.send("ecreate", size=1 << 26)["err"] == "EPERM"  # no one to charge
            assert client.read("/misc.current") == "sgx_epc 0\n"
        assert victim.poll() is None and engine.process.poll() is None
    finally:
        victim.kill()
        victim.wait()


def test_a_client_cannot_release_another_process_s_enclave(engine: RunningEngine) -> None:
    with Puppet(engine.endpoint) as owner, Puppet(engine.endpoint) as attacker:
        owner.ok("hello", pid=owner.pid, role="enclave")
        eid = owner.ok("ecreate", size=1 << 20)["eid"]
        assert attacker.send("hello", pid=owner.pid, role="enclave")["err"] == "EPERM"
        assert attacker.send("release", eid=eid)["err"] == "EPERM"
        attacker.ok("hello", pid=attacker.pid, role="enclave")
        assert attacker.send("release", eid=eid)["err"] == "EPERM"
        assert owner.ok("add_pages", eid=eid, count=8) == {"added": 8}  # still the owner's


def test_a_client_that_is_not_a_workload_creates_nothing(engine: RunningEngine) -> None:
    with Puppet(engine.endpoint) as client:
        client.ok("hello", pid=client.pid, role="client")
        for _ in range(50):
            assert client.send("ecreate", size=8192)["err"] == "EPERM"
            assert client.send("vepc_open", size=8192)["err"] == "EPERM"
        assert client.ok("read", path="/misc.current") == "sgx_epc 0\n"  # while its process lives
        assert client.ok("check") == "ok"


def test_ecreate_waiting_for_an_oom_victim_is_parked_not_eio(engine: RunningEngine) -> None:
    """d3: ECREATE that must reclaim while the OOM victim it caused is still exiting waits, then succeeds."""
    with engine.client() as c:
        c.mkdir("/m")
        c.write("/m/misc.max", f"sgx_epc {4 * MiB}")
        c.write("/m/memory.max", str(MiB))
    with Puppet(engine.endpoint) as a, Puppet(engine.endpoint) as b:
        for p, name in ((a, "A"), (b, "B")):
            p.ok("write", path="/m/cgroup.procs", value="0")
            p.ok("hello", pid=p.pid, role="enclave", name=name)
        eid = a.ok("ecreate", size=1 << 26)["eid"]
        while int(a.ok("read", path="/m/memory.current")) < 900 * 1024:
            a.ok("add_pages", eid=eid, count=16)  # A pays for the backing of its own pages
        replies = [b.send("ecreate", size=8192) for _ in range(20)]
        assert all("ok" in r for r in replies), [r for r in replies if "ok" not in r][:3]
        assert a.process.wait(10) == -signal.SIGKILL  # the OOM killer's victim
    with engine.client() as c:
        assert c.call("check") == "ok"


def test_a_failed_cgroup_procs_write_follows_no_process(engine: RunningEngine) -> None:
    sleepers = [subprocess.Popen(["sleep", "30"]) for _ in range(20)]
    try:
        with Puppet(engine.endpoint) as client:
            client.ok("ping")
            before = _fds(engine.process.pid)
            for s in sleepers:
                assert client.send("write", path="/no/such/cgroup.procs", value=str(s.pid))["err"] == "ENOENT"
                assert client.send("write", path="/cgroup.procs", value=f"{s.pid}²")["err"] == "EINVAL"
            assert _fds(engine.process.pid) == before
            client.ok("write", path="/cgroup.procs", value=hex(sleepers[0].pid))  # kstrtou64, as the kernel
            assert _fds(engine.process.pid) == before + 1  # that one is followed
            sleepers[0].kill()
            sleepers[0].wait()
            deadline = time.monotonic() + 10
            while str(sleepers[0].pid) in client.ok("read", path="/cgroup.procs").split():
                assert time.monotonic() < deadline, "the exited process stayed in cgroup.procs"
                time.sleep(0.05)
    finally:
        for s in sleepers:
            s.kill()
            s.wait()


def test_the_version_must_be_the_integer_1(engine: RunningEngine) -> None:
    with Puppet(engine.endpoint) as client:
        for v in (True, 1.0, "1", 2):
            reply = client.send_raw(msgpack.packb({"v": v, "op": "ping", "id": 3}))
            assert reply["err"] == "EPROTO", (v, reply)
        assert "ok" in client.send_raw(msgpack.packb({"v": 1, "op": "ping", "id": 3}))


def test_a_frame_over_the_limit_is_refused_before_it_is_buffered(engine: RunningEngine) -> None:
    with Puppet(engine.endpoint) as big, Puppet(engine.endpoint) as other:
        reply = big.send_raw(b"\x00" * (protocol.MAX_FRAME + 1), timeout_ms=1000)
        assert reply == {"timeout": True}  # libzmq dropped the connection: no reply, nothing buffered
        assert "ok" in other.send("ping")


def test_check_runs_in_slices_between_other_requests(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """d11: while a check walks 200k swapped pages, a ping from another client is answered first."""
    with running_engine(tmp_path, "--capacity", "64MiB") as engine, Puppet(engine.endpoint) as owner:
        owner.ok("hello", pid=owner.pid, role="enclave")
        eid = owner.ok("ecreate", size=1 << 30)["eid"]
        owner.ok("add_pages", eid=eid, count=200_000)
        ctx = zmq.Context()
        checker, pinger = ctx.socket(zmq.DEALER), ctx.socket(zmq.DEALER)
        try:
            for sock in (checker, pinger):
                sock.linger = 0
                sock.connect(engine.endpoint)
            checker.send(protocol.request("check", 1))
            time.sleep(0.01)
            pinger.send(protocol.request("ping", 2))
            assert pinger.poll(10_000), "no answer to ping"
            pinger.recv()
            assert not checker.poll(0), "the check was over before the ping: nothing shows it was sliced"
            assert checker.poll(60_000)
            assert protocol.decode_reply(checker.recv())["ok"] == "ok"
        finally:
            checker.close()
            pinger.close()
            ctx.term()


def test_the_oom_killer_never_signals_a_process_of_another_uid() -> None:
    """d8/H2: a non-root engine whose OOM victim is root's process logs it and keeps serving."""
    if os.getuid() != 0:
        pytest.skip("needs root to run the engine as nobody")
    import pwd

    nobody = pwd.getpwnam("nobody")
    directory = Path(tempfile.mkdtemp(prefix="epc-nobody."))  # pytest's tmp_path is in root's 0700 dir
    os.chown(directory, nobody.pw_uid, nobody.pw_gid)
    endpoint = f"ipc://{directory}/e.sock"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    site = next((Path(root) / ".venv" / "lib").glob("python3*/site-packages"))
    python = "/usr/bin/python3"  # the venv's interpreter may live in root's 0700 home
    if not os.path.exists(python) or not os.access(site, os.R_OK):
        pytest.skip("no system python3 for user nobody")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{root}:{site}", "HOME": str(directory)}
    engine = subprocess.Popen(
        ["/usr/sbin/runuser", "-u", "nobody", "--", python, "-m", "playground.cli",
         "engine", "--bind", endpoint, "--capacity", "64MiB"],
        env=env, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert engine.stdout is not None
        assert "ipc://" in engine.stdout.readline()
        with Puppet(endpoint) as victim, Puppet(endpoint) as later:
            victim.ok("mkdir", path="/m")
            victim.ok("write", path="/m/misc.max", value=f"sgx_epc {4 * MiB}")
            victim.ok("write", path="/m/memory.max", value=str(MiB))
            victim.ok("write", path="/m/cgroup.procs", value="0")
            victim.ok("hello", pid=victim.pid, role="enclave")
            eid = victim.ok("ecreate", size=1 << 26)["eid"]
            reply = victim.send("add_pages", eid=eid, count=4096)  # its backing overflows memory.max
            assert "timeout" not in reply, reply
            assert victim.process.poll() is None  # root's process: not the engine's to kill
            later.ok("hello", pid=later.pid, role="enclave")
            eid2 = later.ok("ecreate", size=1 << 26)["eid"]
            assert later.ok("add_pages", eid=eid2, count=8192) == {"added": 8192}  # the scheduler lives
            assert later.ok("check") == "ok"
    finally:
        engine.terminate()
        _, err = engine.communicate(timeout=10)
        shutil.rmtree(directory, ignore_errors=True)
    assert "not the engine's" in err and "Traceback" not in err, err[-2000:]


def test_a_reused_pid_starts_a_new_workload_record() -> None:
    """M8: a process that gets an exited workload's pid is a workload of its own (a private pid namespace)."""
    if os.getuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare for a private pid namespace")
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, str(root / "tests" / "pidreuse_inner.py")],
        capture_output=True, text=True, timeout=60, cwd=root,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["reused"], result
    assert [(w["name"], w["state"]) for w in result["records"]] == [("second", "running")], result


def test_exited_workload_records_are_pruned(engine: RunningEngine) -> None:
    """M8: the records of exited workloads stay bounded however many come and go."""
    from bench import standins
    from engined.session import MAX_EXITED

    with engine.client() as client:
        for _ in range(2):
            group = standins.start(engine.endpoint, ["/"] * 160, pages=1)
            standins.stop(group)
        deadline = time.monotonic() + 20
        while any(w["state"] == "running" for w in client.snapshot()["workloads"]):
            assert time.monotonic() < deadline, "stand-ins still running"
            time.sleep(0.1)
        records = client.snapshot()["workloads"]
        assert len(records) == MAX_EXITED, len(records)
        assert client.read("/misc.current") == "sgx_epc 0\n"

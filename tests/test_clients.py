"""Every client and the engine going away (M7, L9), and the command line's bad input (L4, L6, L10).

An engine that goes away, killed or stopped with SIGTERM, is noticed within about a
second by every client attached to it, over ipc and tcp: each says one line,
``epc-playground CMD: the engine (pid N) is gone``, and exits 2.  The waits below are
generous bounds (10 s), never measurements.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.units import format_size
from engined.curve import KEYS_ENV
from wire.protocol import MAX_SIZE

from .engine_fixture import CLI, ROOT, RunningEngine, free_port_pair, private_env, start_engine, stop_engine

pytestmark = pytest.mark.slow

BOUND_S = 10.0  # how long a client may take to notice (it should take well under a second)
WAIT_SCENARIO = """
name = "long wait"
capacity = "16MiB"
[[step]]
spawn = { name = "s", size = "1MiB", duration = "60s" }
[[step]]
wait = { name = "s", timeout = "40s" }
"""
SLEEP_SCENARIO = """
name = "long sleep"
capacity = "16MiB"
[[step]]
sleep = "60s"
"""
CG_LOOP = 'while :; do "$@" cg read /misc.current >/dev/null 2>"$ERR" || { s=$?; cat "$ERR" >&2; exit $s; }; done'


def _stale_socket(path: Path) -> None:
    """A unix socket file nobody listens on (what kill -9 of an engine leaves behind)."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))


def _start(engine: RunningEngine, *args: str) -> subprocess.Popen[str]:
    """``epc-playground ARGS`` on ``engine``; its stdout is read only by a run (its KTAP)."""
    stdout = subprocess.PIPE if args[0] == "run" else subprocess.DEVNULL
    return subprocess.Popen([*CLI, *args], env=engine.env, cwd=ROOT, stdout=stdout, stderr=subprocess.PIPE, text=True)


def _cg_loop(engine: RunningEngine, tmp_path: Path) -> subprocess.Popen[str]:
    env = {**engine.env, "ERR": str(tmp_path / "cg.err")}
    return subprocess.Popen(
        ["sh", "-c", CG_LOOP, "sh", *CLI],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _workloads_running(engine: RunningEngine, count: int) -> None:
    """Wait until ``count`` workloads are registered and running (so each is attached when the engine goes)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with engine.client() as client:
            running = [w for w in client.snapshot()["workloads"] if w.get("state") == "running"]
        if len(running) >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"{count} workloads did not start")


def _ends(processes: dict[str, subprocess.Popen[str]]) -> dict[str, tuple[int | None, str]]:
    """Each one's exit status and stderr, once it exits or BOUND_S after now (then None: still running)."""
    deadline = time.monotonic() + BOUND_S
    out: dict[str, tuple[int | None, str]] = {}
    for name, process in processes.items():
        try:
            _, err = process.communicate(timeout=max(0.1, deadline - time.monotonic()))
            out[name] = (process.returncode, err)
        except subprocess.TimeoutExpired:
            process.kill()
            out[name] = (None, process.communicate()[1])
    return out


def _gone(command: str, pid: int) -> tuple[int, str]:
    return 2, f"epc-playground {command}: the engine (pid {pid}) is gone\n"


def _cg_noticed(status: int | None, err: str) -> bool:
    """The cg loop's last call: in flight when the engine went (gone), or the next one (no engine there)."""
    one_line = err.count("\n") == 1 and err.startswith("epc-playground cg: ")
    return status == 2 and one_line and ("is gone" in err or "no engine" in err)


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_every_ipc_client_exits_2_with_one_line_when_the_engine_goes(tmp_path: Path, signum: int) -> None:
    scenario = tmp_path / "wait.toml"
    scenario.write_text(WAIT_SCENARIO)
    engine = start_engine(tmp_path, "--capacity", "64MiB")
    clients: dict[str, subprocess.Popen[str]] = {}
    try:
        clients["enclave"] = _start(engine, "enclave", "--size", "4MiB", "--pattern", "random", "--duration", "60")
        clients["vm"] = _start(engine, "vm", "--size", "4MiB", "--duration", "60")
        clients["run"] = _start(engine, "run", "--connect", engine.endpoint, str(scenario))
        clients["cg"] = _cg_loop(engine, tmp_path)
        _workloads_running(engine, 3)  # the enclave, the vm and the run's workload
        engine.process.send_signal(signum)
        engine.process.wait(timeout=10)
        ends = _ends(clients)
    finally:
        for process in clients.values():
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        stop_engine(engine)
    pid = engine.process.pid
    for command in ("enclave", "vm", "run"):
        assert ends[command] == _gone(command, pid), (command, ends[command])
    assert _cg_noticed(*ends["cg"]), ends["cg"]


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_tcp_clients_exit_2_with_one_line_when_the_engine_goes(
    tmp_path: Path, signum: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    scenario = tmp_path / "sleep.toml"
    scenario.write_text(SLEEP_SCENARIO)
    engine = _tcp_engine(tmp_path, monkeypatch)
    try:
        run = _start(engine, "run", "--connect", engine.endpoint, str(scenario))
        cg = _cg_loop(engine, tmp_path)
        _attached(run)
        engine.process.send_signal(signum)
        engine.process.wait(timeout=10)
        ends = _ends({"run": run, "cg": cg})
    finally:
        stop_engine(engine)
    assert ends["run"] == _gone("run", engine.process.pid)
    assert _cg_noticed(*ends["cg"]), ends["cg"]


def test_a_run_with_workloads_over_tcp_is_refused_before_anything_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workloads register only over ipc (the kernel vouches for their pid), so their spawn cannot work over tcp."""
    scenario = tmp_path / "spawn.toml"
    scenario.write_text(WAIT_SCENARIO.replace("[[step]]", '[[step]]\nmkdir = "t"\n[[step]]', 1))
    engine = _tcp_engine(tmp_path, monkeypatch)
    try:
        done = engine.cli("run", "--connect", engine.endpoint, str(scenario))
        with engine.client() as client:
            assert "t" not in client.listdir("/")
    finally:
        stop_engine(engine)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"epc-playground run: {scenario}: step 2 (spawn): workloads register only over ipc")


def _tcp_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RunningEngine:
    """An engine on tcp; its clients here and in its env use the CURVE keys it made in its runtime directory."""
    engine = start_engine(tmp_path, "--bind", f"tcp://127.0.0.1:{free_port_pair()}", "--capacity", "16MiB")
    monkeypatch.setenv(KEYS_ENV, str(engine.runtime_dir / "keys"))
    return engine


def _attached(run: subprocess.Popen[str]) -> None:
    """Wait until the run has started its steps (its KTAP plan is out): its client and its events are attached."""
    assert run.stdout is not None
    out = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([run.stdout], [], [], 1.0)
        if ready:
            chunk = os.read(run.stdout.fileno(), 4096)  # not readline: select cannot see its buffer
            assert chunk, (out, run.communicate())  # it ended before its steps
            out += chunk
        if b"\n1.." in out:
            return
    raise AssertionError("the run did not start its steps")


def test_a_tcp_client_notices_an_engine_that_stopped_answering(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Over tcp there is no pid to look at: ZMTP heartbeats find an engine whose host went silent (SIGSTOP here)."""
    scenario = tmp_path / "sleep.toml"
    scenario.write_text(SLEEP_SCENARIO)
    engine = _tcp_engine(tmp_path, monkeypatch)
    try:
        run = _start(engine, "run", "--connect", engine.endpoint, str(scenario))
        _attached(run)
        engine.process.send_signal(signal.SIGSTOP)
        ends = _ends({"run": run})
    finally:
        engine.process.send_signal(signal.SIGCONT)
        stop_engine(engine)
    assert ends["run"] == _gone("run", engine.process.pid)


def _children(pid: int) -> Iterator[tuple[int, str]]:
    """(pid, command line) of each child of ``pid``."""
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as f:
            for child in f.read().split():
                with contextlib.suppress(OSError), open(f"/proc/{child}/cmdline", "rb") as cmdline:
                    yield int(child), cmdline.read().replace(b"\0", b" ").decode()


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_a_run_whose_own_engine_goes_exits_2_with_one_line(tmp_path: Path, signum: int) -> None:
    scenario = tmp_path / "wait.toml"
    scenario.write_text(WAIT_SCENARIO)
    env = private_env(tmp_path)
    run = subprocess.Popen(
        [*CLI, "run", str(scenario)], env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        engine_pid = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and run.poll() is None:  # its engine, and its workload started on it
            children = dict(_children(run.pid))
            engines = [pid for pid, cmd in children.items() if "playground.cli engine" in cmd]
            workloads = [cmd for cmd in children.values() if cmd.startswith("epc-playground: enclave")]  # its title
            if engines and workloads:
                engine_pid = engines[0]
                break
            time.sleep(0.1)
        assert engine_pid, run.communicate()
        time.sleep(0.5)  # the workload let go: the run is in its wait step
        os.kill(engine_pid, signum)
        ends = _ends({"run": run})
    finally:
        with contextlib.suppress(ProcessLookupError):
            run.kill()
    assert ends["run"] == _gone("run", engine_pid)


# -- the first ping ----------------------------------------------------------------


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {**os.environ, "PYTHONPATH": str(ROOT)}
    base.pop("EPC_PLAYGROUND_ENDPOINT", None)
    return subprocess.run([*CLI, *args], env=env or base, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_a_first_ping_to_a_stale_ipc_socket_says_no_engine_listens(tmp_path: Path) -> None:
    """Not "did not answer ping within 5 s": the kernel refuses the connection, and the client says so."""
    _stale_socket(tmp_path / "dead.sock")
    endpoint = f"ipc://{tmp_path}/dead.sock"
    done = _cli("cg", "--connect", endpoint, "read", "/misc.current")
    refused = f"no engine listens at {endpoint} (Connection refused): start one with `epc-playground engine`"
    assert (done.returncode, done.stderr) == (2, f"epc-playground cg: {refused}\n")
    sgx = _cli("test-sgx", "-t", "unclobbered_vdso_oversubscribed", "--connect", endpoint)
    assert sgx.returncode == 2 and sgx.stderr.startswith(f"epc-playground test-sgx: no engine listens at {endpoint}")
    assert sgx.stderr.count("\n") == 1


def _hang_up_listener(path: Path, *, stay: bool) -> threading.Thread:
    """A unix listener that accepts one connection and hangs up on it mid-handshake; gone too unless ``stay``."""
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen()

    def serve() -> None:
        conn, _ = listener.accept()
        conn.recv(64)  # the client's greeting has begun
        if not stay:
            listener.close()  # the engine is killed: its listener goes with the connection
        conn.close()
        if stay:
            time.sleep(3)
            listener.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("stay", [False, True], ids=["engine-died", "stranger"])
def test_a_handshake_cut_off_by_a_dying_engine_says_it_is_gone(tmp_path: Path, stay: bool) -> None:
    """CI saw "does not speak this protocol" from a cg whose handshake the engine's kill -9 cut in half."""
    path = tmp_path / "e.sock"
    thread = _hang_up_listener(path, stay=stay)
    endpoint = f"ipc://{path}"
    done = _cli("cg", "--connect", endpoint, "read", "/misc.current")
    thread.join(timeout=10)
    line = (
        f"what listens at {endpoint} does not speak this protocol (handshake failed)"
        if stay
        else f"the engine at {endpoint} is gone"
    )
    assert (done.returncode, done.stderr) == (2, f"epc-playground cg: {line}\n")


def test_a_first_ping_to_a_tcp_port_nobody_listens_on_says_no_engine_listens(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), KEYS_ENV: str(tmp_path / "keys")}
    assert _cli("keys", env=env).returncode == 0
    endpoint = f"tcp://127.0.0.1:{free_port_pair()}"
    done = _cli("cg", "--connect", endpoint, "tree", env=env)
    assert (done.returncode, done.stderr) == (
        2,
        f"epc-playground cg: no engine listens at {endpoint}: start one with `epc-playground engine`\n",
    )


# -- L4, L6, L10: bad input --------------------------------------------------------


@pytest.mark.parametrize(
    "nesting", ["{a=" * 5000 + "1" + "}" * 5000, "[" * 100_000 + "]" * 100_000], ids=["inline-tables", "arrays"]
)
def test_a_scenario_nested_too_deeply_is_refused_in_one_line(tmp_path: Path, nesting: str) -> None:
    path = tmp_path / "deep.toml"
    path.write_text(f'name = "deep"\ncapacity = "1MiB"\n[[step]]\nmkdir = {nesting}\n')
    done = _cli("run", "--inproc", str(path))
    assert (done.returncode, done.stderr) == (
        2,
        f"epc-playground run: {path}: arrays or inline tables nested too deeply to read\n",
    )


def test_cg_write_takes_a_value_that_starts_with_a_dash(engine: RunningEngine) -> None:
    assert engine.cli("cg", "mkdir", "/t").returncode == 0
    removed = engine.cli("cg", "write", "/t/cgroup.subtree_control", "-misc")
    assert removed.returncode == 0, removed.stderr
    assert engine.cli("cg", "read", "/t/cgroup.subtree_control").stdout == "memory\n"
    added = engine.cli("cg", "write", "/t/cgroup.subtree_control", "--", "+misc")
    assert added.returncode == 0, added.stderr
    assert engine.cli("cg", "read", "/t/cgroup.subtree_control").stdout == "memory misc\n"
    both = engine.cli("cg", "write", "/t/cgroup.subtree_control", "-misc", "-memory")
    assert both.returncode == 2 and "give exactly one value" in both.stderr
    assert engine.cli("cg", "read", "/t/cgroup.subtree_control").stdout == "memory misc\n"


def test_an_enclave_too_large_for_the_host_says_why_in_one_line(engine: RunningEngine) -> None:
    done = engine.cli("enclave", "--size", "4PiB")
    largest = (1 << (MAX_SIZE.bit_length() - 1)) - 5 * 4096
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("epc-playground enclave: --size 4 PiB: the enclave's ELRANGE")
    assert "rounded up to a power of two" in done.stderr
    assert f"more than the {format_size(MAX_SIZE)} the host takes" in done.stderr
    assert f"the heap can be at most {largest} bytes" in done.stderr
    vm = engine.cli("vm", "--size", str(MAX_SIZE + 4096))
    assert vm.returncode == 2 and vm.stderr.count("\n") == 1 and "largest guest EPC the host takes" in vm.stderr
    with engine.client() as client:
        assert client.snapshot()["workloads"] == []  # nothing ran


@pytest.mark.parametrize(
    "args",
    [
        ["enclave", "--size", "0"],
        ["vm", "--size", "0"],
        ["enclave", "--size", "4095"],
        ["enclave", "--size", "4KiB", "--duration", "nan"],
        ["enclave", "--size", "4KiB", "--batch", "5000", "--pattern", "random"],
        ["enclave", "--size", "4KiB", "--name", "n" * 100],
        ["vm", "--size", "4KiB", "--cgroup", "/c" * 3000],
    ],
    ids=["enclave-0", "vm-0", "below-a-page", "nan-duration", "batch-over-4096", "long-name", "long-cgroup"],
)
def test_workload_options_the_engine_would_refuse_are_usage_errors(engine: RunningEngine, args: list[str]) -> None:
    done = engine.cli(*args)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines()[-1].startswith(f"epc-playground {args[0]}: error: argument ")
    with engine.client() as client:
        assert client.snapshot()["workloads"] == []


def test_a_size_of_5000_digits_is_refused_without_pythons_digit_limit_hint(engine: RunningEngine) -> None:
    done = engine.cli("enclave", "--size", "9" * 5000)
    assert done.returncode == 2
    last = done.stderr.splitlines()[-1]
    assert "set_int_max_str_digits" not in done.stderr and "more than 40 digits" in last and len(last) < 200


def test_cg_refuses_what_the_wire_cannot_carry_with_the_kernels_errno(engine: RunningEngine) -> None:
    assert engine.cli("cg", "mkdir", "/t").returncode == 0
    big = engine.cli("cg", "write", "/t/misc.max", "sgx_epc " + "1" * 5000)
    assert (big.returncode, big.stderr) == (
        1,
        "epc-playground cg write /t/misc.max: Argument list too long (E2BIG): "
        "one write to misc.max takes at most 4096 bytes\n",
    )
    assert engine.cli("cg", "read", "/t/misc.max").stdout == "sgx_epc max\n"
    long = engine.cli("cg", "read", "/t/" + "x" * 5000)
    assert long.returncode == 1 and long.stderr.count("\n") == 1 and "File name too long (ENAMETOOLONG)" in long.stderr
    assert len(long.stderr) < 300  # the path is not echoed whole


@pytest.mark.parametrize(
    "args",
    [
        ["cg", "--connect", "bogus", "read", "/misc.current"],
        ["tui", "--connect", "bogus"],
        ["tui", "--connect", "ipc:///nowhere/engine.sock"],
    ],
)
def test_a_bad_or_empty_endpoint_is_one_line_and_exit_2_before_any_screen(args: list[str], tmp_path: Path) -> None:
    """Newcomer report: `tui --connect BAD` opened a screen (or crashed with a traceback and 0)."""
    done = subprocess.run(
        [*CLI, *args], env=private_env(tmp_path), cwd=ROOT, capture_output=True, text=True, timeout=60,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert done.stdout == "" and len(done.stderr.strip().splitlines()) == 1, done.stderr[-2000:]
    assert done.stderr.startswith(f"epc-playground {args[0]}: "), done.stderr

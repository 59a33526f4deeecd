"""Discovery and runtime files, sockets and tcp with CURVE: real engine processes, real sockets."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from engined import curve, runtime
from playground.feed import EngineFeed
from playground.scenario.backends.real import EventStream
from wire import protocol
from workloads.client import EngineClient, EngineError, NoEngine

from .engine_fixture import CLI, ROOT, RunningEngine, free_port_pair, running_engine, start_engine, stop_engine

pytestmark = pytest.mark.slow


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path / "run"), "PYTHONPATH": str(ROOT)}
    env.pop(runtime.ENDPOINT_ENV, None)
    env.pop(curve.KEYS_ENV, None)
    return {**env, **extra}


def _cli(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _engine_refused(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """An engine that must not start: its exit (2) and its one line; killed if it serves instead."""
    process = subprocess.Popen(
        [*CLI, "engine", "--capacity", "1MiB", *args], env=env, cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        out, err = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        raise AssertionError(f"the engine started where it must refuse: {out!r}") from None
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def _one_line(done: subprocess.CompletedProcess[str], *words: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr, done.stderr
    for word in words:
        assert word in done.stderr, done.stderr


def _stale_socket(path: Path) -> None:
    """A unix socket file that nobody listens on (what kill -9 of an engine leaves)."""
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()


# -- M5: one engine per ipc socket ---------------------------------------------


def test_a_second_engine_on_a_live_ipc_socket_exits_2_and_the_first_still_serves(tmp_path: Path) -> None:
    endpoint = f"ipc://{tmp_path}/e.sock"
    with running_engine(tmp_path, "--bind", endpoint, "--capacity", "1MiB") as first:
        second = _engine_refused(first.env, "--bind", endpoint)
        _one_line(second, endpoint, "already")
        with EngineClient(endpoint, timeout_s=10) as client:
            assert client.call("ping")["engine_pid"] == first.process.pid


def test_an_engine_starts_on_a_stale_ipc_socket_file(tmp_path: Path) -> None:
    _stale_socket(tmp_path / "e.sock")
    with running_engine(tmp_path, "--bind", f"ipc://{tmp_path}/e.sock", "--capacity", "1MiB") as running:
        assert running.cli("cg", "read", "/misc.capacity").stdout == "sgx_epc 1048576\n"


def test_an_ipc_path_that_is_not_a_socket_is_refused_and_kept(tmp_path: Path) -> None:
    (tmp_path / "notes").write_text("mine")
    _one_line(_engine_refused(_env(tmp_path), "--bind", f"ipc://{tmp_path}/notes"), "not a socket")
    assert (tmp_path / "notes").read_text() == "mine"


# -- M6: runtime directories and files are ours, or refused ---------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="making a directory of another uid needs root")
def test_a_runtime_dir_of_another_uid_is_refused_by_the_engine_and_by_discovery(tmp_path: Path) -> None:
    nobody = pwd.getpwnam("nobody").pw_uid
    with running_engine(tmp_path, "--bind", f"ipc://{tmp_path}/attacker.sock", "--capacity", "2MiB") as attacker:
        squatted = tmp_path / "victim" / "epc-playground"
        squatted.mkdir(parents=True, mode=0o700)
        info = {"pid": attacker.process.pid, "endpoint": attacker.endpoint, "pub": attacker.endpoint + ".events"}
        (squatted / "engine.json").write_text(json.dumps(info))
        os.chown(squatted / "engine.json", nobody, nobody)
        os.chown(squatted, nobody, nobody)
        env = {**_env(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path / "victim")}
        read = _cli(env, "cg", "read", "/misc.capacity")
        _one_line(read, str(squatted), f"uid {nobody}")
        assert "2097152" not in read.stdout
        _one_line(_engine_refused(env), str(squatted), f"uid {nobody}")
        assert os.stat(squatted).st_uid == nobody and "epc-playground" in os.listdir(squatted.parent)


def test_a_runtime_file_of_another_uid_is_not_followed(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("making a file of another uid needs root")
    nobody = pwd.getpwnam("nobody").pw_uid
    directory = tmp_path / "run" / "epc-playground"
    directory.mkdir(parents=True, mode=0o700)
    (directory / "engine.json").write_text(json.dumps({"pid": os.getpid(), "endpoint": "ipc:///nowhere"}))
    os.chown(directory / "engine.json", nobody, nobody)
    _one_line(_cli(_env(tmp_path), "cg", "tree"), str(directory / "engine.json"), f"uid {nobody}")


# -- L1: modes whatever the umask -----------------------------------------------


@contextlib.contextmanager
def _umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_sockets_runtime_dir_and_file_are_private_under_umask_000(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    with _umask(0):
        running = start_engine(tmp_path, "--capacity", "1MiB")
        bound = start_engine(tmp_path / "b", "--bind", f"ipc://{tmp_path}/shared.sock", "--capacity", "1MiB")
    try:
        directory = running.runtime_dir
        assert _mode(directory) == 0o700
        modes = {name: _mode(directory / name) for name in ("engine.sock", "events.sock", "engine.json")}
        assert modes == {"engine.sock": 0o600, "events.sock": 0o600, "engine.json": 0o600}
        assert _mode(tmp_path / "shared.sock") == 0o600 and _mode(tmp_path / "shared.sock.events") == 0o600
    finally:
        stop_engine(running)
        stop_engine(bound)


def test_a_runtime_dir_of_ours_with_open_bits_is_made_private(tmp_path: Path) -> None:
    directory = tmp_path / "run" / "epc-playground"
    directory.mkdir(parents=True)
    os.chmod(directory, 0o777)
    with _runtime_engine(_env(tmp_path)) as running:
        assert _mode(directory) == 0o700 and running.runtime_dir == directory


# -- L2: a runtime file whose socket refuses is stale, whatever its pid ----------


def test_a_stale_runtime_file_whose_pid_is_alive_is_stale_for_clients_and_engines(tmp_path: Path) -> None:
    directory = tmp_path / "run" / "epc-playground"
    directory.mkdir(parents=True, mode=0o700)
    _stale_socket(directory / "engine.sock")
    sleeper = subprocess.Popen(["sleep", "300"])
    try:
        info = {"pid": sleeper.pid, "endpoint": f"ipc://{directory}/engine.sock", "pub": "ipc:///nowhere"}
        (directory / "engine.json").write_text(json.dumps(info))
        os.chmod(directory / "engine.json", 0o600)
        env = _env(tmp_path)
        for args in (["cg", "read", "/misc.capacity"], ["enclave", "--size", "1MiB"]):
            _one_line(_cli(env, *args), "no engine is running")
        with _runtime_engine(env) as running:
            assert running.cli("cg", "read", "/misc.capacity").stdout == "sgx_epc 1048576\n"
            assert json.loads((directory / "engine.json").read_text())["pid"] == running.process.pid
    finally:
        sleeper.kill()
        sleeper.wait()


@contextlib.contextmanager
def _runtime_engine(env: dict[str, str]) -> Iterator[RunningEngine]:
    """A default engine in env's XDG_RUNTIME_DIR (which the test prepared)."""
    from playground.launch import start_engine_process

    process, endpoint = start_engine_process(["--capacity", "1MiB"], env)
    running = RunningEngine(process, {**env, runtime.ENDPOINT_ENV: endpoint}, Path(endpoint[6:]).parent, endpoint)
    try:
        yield running
    finally:
        stop_engine(running)


def test_a_client_of_an_explicit_stale_ipc_socket_says_no_engine_listens(tmp_path: Path) -> None:
    _stale_socket(tmp_path / "dead.sock")
    with pytest.raises(NoEngine, match="no engine listens at"):
        EngineClient(f"ipc://{tmp_path}/dead.sock", timeout_s=30)


# -- L3: taken tcp ports ---------------------------------------------------------


@pytest.mark.parametrize("taken", [0, 1], ids=["request-port", "events-port"])
def test_a_taken_tcp_port_exits_2_with_one_line(tmp_path: Path, taken: int) -> None:
    port = free_port_pair()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port + taken))
        squatter.listen()
        done = _engine_refused(_env(tmp_path), "--bind", f"tcp://127.0.0.1:{port}")
    _one_line(done, f"tcp://127.0.0.1:{port + taken}", "in use")


def test_a_tcp_port_out_of_range_exits_2_with_one_line(tmp_path: Path) -> None:
    for port in ("99999", "65535", "0", "x"):
        _one_line(_engine_refused(_env(tmp_path), "--bind", f"tcp://127.0.0.1:{port}"), "PORT 1-65534")


# -- H4: tcp only with CURVE, and beyond loopback only when asked -----------------


def test_a_non_loopback_tcp_bind_needs_allow_remote(tmp_path: Path) -> None:
    _one_line(_engine_refused(_env(tmp_path), "--bind", f"tcp://0.0.0.0:{free_port_pair()}"), "--allow-remote")
    _one_line(_engine_refused(_env(tmp_path), "--bind", f"tcp://example.invalid:{free_port_pair()}"), "--allow-remote")


def test_an_abstract_ipc_socket_is_refused(tmp_path: Path) -> None:
    _one_line(_engine_refused(_env(tmp_path), "--bind", "ipc://@epc-playground-test"), "abstract")


def test_keys_are_made_once_private_and_say_where_they_are(tmp_path: Path) -> None:
    keys = tmp_path / "k"
    with _umask(0):
        made = _cli(_env(tmp_path), "keys", "--dir", str(keys))
    assert made.returncode == 0, made.stderr
    assert str(keys) in made.stdout and "client.key_secret" in made.stdout and "server.key" in made.stdout
    names = sorted(os.listdir(keys))
    assert names == ["client.key", "client.key_secret", "server.key", "server.key_secret"]
    assert _mode(keys) == 0o700 and {_mode(keys / name) for name in names} == {0o600}
    before = {name: (keys / name).read_text() for name in names}
    again = _cli(_env(tmp_path), "keys", "--dir", str(keys))
    assert again.returncode == 0 and {name: (keys / name).read_text() for name in names} == before


def test_tcp_with_keys_serves_requests_writes_and_events(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port_pair()
    with running_engine(tmp_path, "--bind", f"tcp://127.0.0.1:{port}", "--capacity", "1MiB") as running:
        keys = running.runtime_dir / "keys"
        assert _mode(keys) == 0o700 and {_mode(keys / name) for name in os.listdir(keys)} == {0o600}
        monkeypatch.setenv(curve.KEYS_ENV, str(keys))
        with EngineClient(running.endpoint, timeout_s=10) as client:
            assert client.call("ping")["engine_pid"] == running.process.pid
            with pytest.raises(EngineError) as e:
                client.hello("enclave")  # a tcp request carries no pid the kernel vouches for
            assert e.value.code == "EPERM"
            stream = EventStream(client.pub_endpoint)
            feed = EngineFeed(running.endpoint)
            try:
                assert running.cli("cg", "mkdir", "/pod").returncode == 0
                assert running.cli("cg", "write", "/pod/misc.max", "sgx_epc 65536").returncode == 0
                assert client.read("/pod/misc.max") == "sgx_epc 65536\n"
                assert _eventually(lambda: any(ev["kind"] == "mkdir" for ev in stream.take()))
                assert _eventually(lambda: (feed.poll(), any(ev.get("kind") == "write" for ev in feed.events))[1])
                assert feed.connected
            finally:
                stream.close()
                feed.close()


def _eventually(condition: object, tries: int = 200) -> bool:
    for _ in range(tries):
        if callable(condition) and condition():
            return True
        time.sleep(0.05)
    return False


def test_tcp_clients_without_keys_or_with_wrong_keys_get_no_service(tmp_path: Path) -> None:
    port = free_port_pair()
    with running_engine(tmp_path, "--bind", f"tcp://127.0.0.1:{port}", "--capacity", "1MiB") as running:
        endpoint = running.endpoint
        none = _env(tmp_path, **{curve.KEYS_ENV: str(tmp_path / "empty")})
        missing = _cli({**none, runtime.ENDPOINT_ENV: endpoint}, "cg", "read", "/misc.capacity")
        _one_line(missing, "epc-playground keys")
        wrong = tmp_path / "wrong"
        assert _cli(none, "keys", "--dir", str(wrong)).returncode == 0
        (wrong / "server.key").write_text((running.runtime_dir / "keys" / "server.key").read_text())
        refused = _cli({**none, curve.KEYS_ENV: str(wrong), runtime.ENDPOINT_ENV: endpoint}, "cg", "tree")
        _one_line(refused, "refused")
        assert _no_reply_to_a_plain_dealer(endpoint)


def _no_reply_to_a_plain_dealer(endpoint: str) -> bool:
    """A client that speaks no CURVE at all: its ping gets nothing back."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    try:
        sock.connect(endpoint)
        sock.send(protocol.request("ping", 1))
        return sock.poll(2000) == 0
    finally:
        sock.close(linger=0)
        ctx.term()

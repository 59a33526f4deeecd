"""The test_sgx stand-in: an enclave of the whole EPC in the caller's cgroup, with the real test's exit status."""

from __future__ import annotations

import signal
import subprocess

import pytest

from .cgroupfs_fixture import VENV_BIN
from .engine_fixture import CLI, ROOT, RunningEngine, wait_for

CAPACITY = 16 << 20
TEST = "unclobbered_vdso_oversubscribed"


def run_in(engine: RunningEngine, cgroup: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``test_sgx ARGS`` from a shell first moved into ``cgroup`` (as ash_cgexec.sh does, by pid)."""
    cg = " ".join([*CLI, "cg", "write", f"{cgroup}/cgroup.procs", "$$"])
    script = f"{cg} && exec {VENV_BIN}/test_sgx {' '.join(args)}"
    return subprocess.run(["sh", "-c", script], env=engine.env, cwd=ROOT, capture_output=True, text=True, timeout=60)


def usage(engine: RunningEngine, path: str) -> int:
    with engine.client() as client:
        return int(client.read(path).split()[1])


def test_unknown_test_names_the_tests_and_exits_2() -> None:
    result = subprocess.run([f"{VENV_BIN}/test_sgx", "-t", "no_such_test"], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "no_such_test" in result.stderr and TEST in result.stderr and f"{TEST}_remove" in result.stderr


def test_list_names_the_tests_as_the_harness_does() -> None:
    result = subprocess.run([f"{VENV_BIN}/test_sgx", "-l"], capture_output=True, text=True)
    assert result.stdout.split() == [f"enclave.{TEST}", f"enclave.{TEST}_remove"]


@pytest.mark.parametrize("command", [["test_sgx"], ["epc-playground", "test-sgx"]], ids=["test_sgx", "test-sgx"])
def test_no_engine_is_one_line_naming_the_command_no_tap_and_exit_2(tmp_path: object, command: list[str]) -> None:
    result = subprocess.run(
        [f"{VENV_BIN}/{command[0]}", *command[1:], "-t", TEST, "--connect", f"ipc://{tmp_path}/none.sock"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and result.stdout == ""  # no TAP header of a test that never ran
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"{' '.join(command)}: no engine"), result.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [
        TEST,
        f"{TEST}_remove",
    ],
)
def test_an_enclave_of_the_whole_epc_passes_in_an_unlimited_cgroup(engine: RunningEngine, name: str) -> None:
    with engine.client() as client:
        client.mkdir("/free")
    result = run_in(engine, "/free", "-t", name)
    assert result.returncode == 0, result.stderr
    assert f"ok 1 enclave.{name}" in result.stdout.splitlines()
    assert usage(engine, "/free/misc.peak") > CAPACITY // 2  # it was charged here, reclaiming as it went
    assert wait_for(lambda: usage(engine, "/free/misc.current") == 0, 10)  # released once the engine sees it exit
    engine.check()


@pytest.mark.slow
def test_the_small_limit_fails_with_enomem_and_exit_1(engine: RunningEngine) -> None:
    with engine.client() as client:
        client.mkdir("/small")
        client.write("/small/misc.max", f"sgx_epc {CAPACITY // 512}")  # below its VA pages and SECS
    result = run_in(engine, "/small", "-t", TEST)
    assert result.returncode == 1
    assert "ENOMEM" in result.stderr and f"not ok 1 enclave.{TEST}" in result.stdout
    assert usage(engine, "/small/misc.events") > 0
    assert wait_for(lambda: usage(engine, "/small/misc.current") == 0, 10)  # released once the engine sees it exit
    engine.check()


@pytest.mark.slow
def test_a_memory_max_below_its_backing_gets_it_oom_killed(engine: RunningEngine) -> None:
    large = 4 * CAPACITY // 512
    with engine.client() as client:
        client.mkdir("/large")
        client.write("/large/misc.max", f"sgx_epc {large}")
        client.write("/large/memory.max", str(CAPACITY - 2 * large))
    result = run_in(engine, "/large", "-t", TEST)
    assert result.returncode == -signal.SIGKILL
    with engine.client() as client:
        assert "oom_kill 1" in client.read("/large/memory.events")
    assert wait_for(lambda: usage(engine, "/large/misc.current") == 0, 10)  # released once the engine sees it exit
    engine.check()


@pytest.mark.slow
def test_the_cli_subcommand_is_the_same_test(engine: RunningEngine) -> None:
    result = engine.cli("test-sgx", "-t", TEST)
    assert result.returncode == 0, result.stderr
    assert f"ok 1 enclave.{TEST}" in result.stdout
    assert engine.cli("test-sgx", "-t", "nope").returncode == 2

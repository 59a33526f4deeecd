"""The proof: a shell script written for /sys/fs/cgroup runs unchanged on the emulated host.

tests/kselftest/run_epc_cg_selftests.sh does what the kernel's selftest for the series
does (reference section 6), with test_sgx jobs started through ash_cgexec.sh (which
writes 0 to cgroup.procs and execs).  Here it runs inside `unshare -m` with the mount
bound over /sys/fs/cgroup, against a real engine.

The capacity is 1 GiB: the large cases race concurrent jobs against each other, and a
job must build for long enough (about a second) that the five of the negative case
overlap, whatever the start-up jitter of five Python processes on two cores.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .cgroupfs_fixture import Mount, mounted
from .engine_fixture import ROOT, RunningEngine, running_engine

SCRIPT = ROOT / "tests" / "kselftest" / "run_epc_cg_selftests.sh"
PASSES = [
    "PASS: small EPC limit test.",
    "PASS: large EPC limit positive testing.",
    "PASS: large EPC limit negative testing.",
    "PASS: larger EPC limit tests.",
    "PASS: larger EPC limit test with a process randomly killed.",
    "PASS: large EPC limit tests with memcontrol.",
    "PASS: leakage check.",
    "PASS: ALL cgroup limit tests, cleanup cgroups...",
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="unshare -m and mount --bind need root, as the selftest does"),
]


@pytest.fixture
def big_engine(tmp_path: Path) -> Iterator[RunningEngine]:
    with running_engine(tmp_path, "--capacity", "1GiB") as running:
        yield running


@pytest.fixture
def mnt(big_engine: RunningEngine, tmp_path: Path) -> Iterator[Mount]:
    with mounted(big_engine, tmp_path) as m:
        yield m


# The reference (section 6) says of the large cases "the outcome depends on timing, hence
# the 'at least one' checks"; with Python test_sgx processes starting on two shared cores
# the negative case came out the other way (all five passed) in about one run in ten.
# Such a run gets one more try on the same engine and mount (the script has removed its
# tree); any other failure fails at once.
TIMING_DEPENDENT = (
    "FAIL: Failed on large EPC limit positive testing",
    "FAIL: Failed on large EPC limit negative testing",
)


def run_script(mnt: Mount) -> subprocess.CompletedProcess[str]:
    inside = f"mount --bind {mnt.path} /sys/fs/cgroup && exec sh {SCRIPT}"
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", inside], env=mnt.env, cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_the_kernel_selftest_script_passes_over_the_mount(mnt: Mount, big_engine: RunningEngine) -> None:
    result = run_script(mnt)
    if result.returncode == 1 and any(line.startswith(TIMING_DEPENDENT) for line in result.stdout.splitlines()):
        result = run_script(mnt)
    output = result.stdout.splitlines()
    assert result.returncode == 0, result.stdout + result.stderr
    assert [line for line in output if line.startswith("PASS")] == PASSES, result.stdout
    assert output[-1] == "# Done SGX cgroup tests."
    with big_engine.client() as client:
        assert client.read("/misc.current") == "sgx_epc 0\n"  # every enclave gone, nothing leaked
        assert not any("sgx_" in name for name in client.listdir("/"))  # the script removed its tree
    big_engine.check()
    assert not Path("/sys/fs/cgroup/sgx_kselftest").exists()  # the host's own tree was never touched

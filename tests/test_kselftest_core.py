"""The kernel selftest's cases (run_epc_cg_selftests.sh, reference section 6) on the core.

Each job is test_sgx -t unclobbered_vdso_oversubscribed: an enclave whose heap is the
whole EPC, built, initialised and entered.  The jobs are the scenario runner's
in-process workloads (playground.scenario.backends.inproc): cooperative tasks interleaved round-robin,
one request chunk per turn on a virtual clock, so each run is deterministic.  The
bundled scenario ``kselftest`` runs the same cases from a file, in both modes.
"""

from __future__ import annotations

import random

import pytest

from engine import Host
from playground.scenario.backends.base import WorkloadSpec
from playground.scenario.backends.inproc import InprocBackend

from .helpers import value

CAPACITY = 32 << 20  # 8192 pages: small = 16 pages, which a capacity-sized enclave's 17 VA pages exceed
WAIT_NS = 600 * 10**9


def run_jobs(
    backend: InprocBackend, cgroup: str, n: int, *, kill_after_ns: int | None = None, seed: int = 0
) -> list[str | None]:
    """n test_sgx jobs (the product's in-process enclave task with passes = 0) started together in
    ``cgroup``; optionally SIGTERM a random one after ``kill_after_ns``; their outcomes."""
    spec = WorkloadSpec("test_sgx", cgroup, "enclave", backend.capacity_bytes, passes=0)
    pids = backend.spawn([spec] * n)
    if kill_after_ns is not None:
        backend.sleep(kill_after_ns, lambda: None)
        backend.kill(pids[random.Random(seed).randrange(n)], "TERM")
    assert backend.wait(pids, WAIT_NS, backend.host.check), "the jobs made no progress"
    backend.host.check()
    return [backend.outcome(pid) for pid in pids]


def selftest_backend() -> InprocBackend:
    """A host with the selftest's tree and limits: small = C/512, large = 4 small, larger = C."""
    backend = InprocBackend(CAPACITY, None, 0)
    h = backend.host
    for path in (
        "sgx_kselftest",
        "sgx_kselftest/sgx_test_small_parent",
        "sgx_kselftest/sgx_test_small_parent/sgx_test_small",
        "sgx_kselftest/sgx_test_large",
        "sgx_kselftest/sgx_test_larger",
    ):
        h.mkdir(path)
    for path in ("/", "/sgx_kselftest"):
        h.write(f"{path.rstrip('/')}/cgroup.subtree_control", "+misc +memory")
    h.write("/sgx_kselftest/sgx_test_small_parent/cgroup.subtree_control", "+misc")
    capacity = int(h.read("/misc.capacity").split()[1])
    small = capacity // 512
    h.write("/sgx_kselftest/sgx_test_small_parent/misc.max", f"sgx_epc {small}")
    h.write("/sgx_kselftest/sgx_test_large/misc.max", f"sgx_epc {small * 4}")
    h.write("/sgx_kselftest/sgx_test_larger/misc.max", f"sgx_epc {capacity}")
    return backend


@pytest.fixture
def backend() -> InprocBackend:
    """A fresh host for each case: the cases run alone, in any order (-k, xdist, random order)."""
    return selftest_backend()


SMALL = "/sgx_kselftest/sgx_test_small_parent/sgx_test_small"
LARGE = "/sgx_kselftest/sgx_test_large"
LARGER = "/sgx_kselftest/sgx_test_larger"


def case_1_small_limit_fails(backend: InprocBackend) -> None:
    host = backend.host
    assert run_jobs(backend, SMALL, 1) == ["ENOMEM"]
    assert value(host, "/sgx_kselftest/sgx_test_small_parent/misc.events") > 0  # on the parent,
    assert host.read(SMALL + "/misc.events") == "sgx_epc.max 0\n"  # not on the child


def case_2_large_positive_at_least_one_of_4_passes(backend: InprocBackend) -> None:
    assert "ok" in run_jobs(backend, LARGE, 4)


def case_3_large_negative_at_least_one_of_5_fails(backend: InprocBackend) -> None:
    outcomes = run_jobs(backend, LARGE, 5)
    assert any(o != "ok" for o in outcomes)
    assert set(outcomes) <= {"ok", "ENOMEM"}


def case_4_larger_all_8_pass(backend: InprocBackend) -> None:
    assert run_jobs(backend, LARGER, 8) == ["ok"] * 8


def case_5_larger_with_a_random_kill_the_others_pass(backend: InprocBackend, seed: int) -> None:
    kill_after_ns = random.Random(seed).randrange(3, 30) * 10**6  # 3-30 ms: while the jobs still build
    outcomes = run_jobs(backend, LARGER, 8, kill_after_ns=kill_after_ns, seed=seed)
    assert outcomes.count("killed") == 1
    assert [o for o in outcomes if o != "killed"] == ["ok"] * 7


def case_6_memcg_all_4_fail(backend: InprocBackend) -> None:
    host = backend.host
    capacity = host.capacity_bytes
    large = value(host, LARGE + "/misc.max")
    host.write(LARGE + "/memory.max", str(capacity - 2 * large))
    outcomes = run_jobs(backend, LARGE, 4)
    assert "ok" not in outcomes and "OOM" in outcomes
    events = dict(line.split() for line in host.read(LARGE + "/memory.events").splitlines())
    assert int(events["oom_kill"]) >= 1
    host.write(LARGE + "/memory.max", "max")


def leak_check_and_cleanup(host: Host) -> None:
    """The selftest's last case: once the work queue ran dry nothing stays charged, and the tree goes."""
    host.run_pending_work()
    assert host.read("/sgx_kselftest/misc.current") == "sgx_epc 0\n"
    assert host.read("/sgx_kselftest/memory.current") == "0\n"
    for path in (LARGE, SMALL, LARGER, "/sgx_kselftest/sgx_test_small_parent", "/sgx_kselftest"):
        host.rmdir(path)
    assert host.cgroups() == ["/"] and host.tree.all() == [host.tree.root]
    host.check()


def test_1_small_limit_fails(backend: InprocBackend) -> None:
    case_1_small_limit_fails(backend)
    leak_check_and_cleanup(backend.host)


def test_2_large_positive_at_least_one_of_4_passes(backend: InprocBackend) -> None:
    case_2_large_positive_at_least_one_of_4_passes(backend)
    leak_check_and_cleanup(backend.host)


def test_3_large_negative_at_least_one_of_5_fails(backend: InprocBackend) -> None:
    case_3_large_negative_at_least_one_of_5_fails(backend)
    leak_check_and_cleanup(backend.host)


def test_4_larger_all_8_pass(backend: InprocBackend) -> None:
    case_4_larger_all_8_pass(backend)
    leak_check_and_cleanup(backend.host)


@pytest.mark.parametrize("seed", [1, 2])
def test_5_larger_with_a_random_kill_the_others_pass(backend: InprocBackend, seed: int) -> None:
    case_5_larger_with_a_random_kill_the_others_pass(backend, seed)
    leak_check_and_cleanup(backend.host)


def test_6_memcg_all_4_fail(backend: InprocBackend) -> None:
    case_6_memcg_all_4_fail(backend)
    leak_check_and_cleanup(backend.host)


def test_7_leak_check_after_every_case_in_turn_on_one_host(backend: InprocBackend) -> None:
    """What the script does: cases 1 to 6 one after the other on one tree, then the leak check."""
    case_1_small_limit_fails(backend)
    case_2_large_positive_at_least_one_of_4_passes(backend)
    case_3_large_negative_at_least_one_of_5_fails(backend)
    case_4_larger_all_8_pass(backend)
    for seed in (1, 2):
        case_5_larger_with_a_random_kill_the_others_pass(backend, seed)
    case_6_memcg_all_4_fail(backend)
    leak_check_and_cleanup(backend.host)

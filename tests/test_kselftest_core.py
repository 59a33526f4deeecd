"""The kernel selftest's cases (run_epc_cg_selftests.sh, reference section 6) on the core.

Each job is test_sgx -t unclobbered_vdso_oversubscribed: an enclave whose heap is the
whole EPC, built, initialised and entered twice.  Jobs run interleaved round-robin,
one ioctl chunk per turn, so each run is deterministic.
"""

from __future__ import annotations

import errno
import random

import pytest

from engine import PAGE_SIZE, Blocked, Host, IoctlError, SigBus

from .helpers import value

CAPACITY = 32 << 20  # 8192 pages: small = 16 pages, which a capacity-sized enclave's 17 VA pages exceed
TCS_PAGES, CODE_PAGES, CHUNK = 1, 4, 256


class SgxTestJob:
    """One test_sgx process: a cooperative task that does one chunk of work per turn."""

    def __init__(self, host: Host, pid: int) -> None:
        self.host, self.pid = host, pid
        heap = host.capacity_pages
        total = TCS_PAGES + CODE_PAGES + heap
        self.plan = [("TCS", TCS_PAGES), ("REG", CODE_PAGES)] + [
            ("REG", min(CHUNK, heap - i)) for i in range(0, heap, CHUNK)
        ]
        self.size = 1 << (total - 1).bit_length()
        self.eid = -1
        self.outcome: str | None = None  # ok | ENOMEM | OOM | killed | SIGBUS

    def step(self) -> None:
        host, pid = self.host, self.pid
        if pid in host.oom_victims:
            return self.exit("OOM")
        try:
            if self.eid < 0:
                self.eid = host.ecreate(pid, self.size * PAGE_SIZE)
            elif self.plan:
                kind, count = self.plan[0]
                done = host.add_pages(pid, self.eid, count, kind)
                self.plan[0] = (kind, count - done)
                if done == count:
                    self.plan.pop(0)
            else:
                host.einit(pid, self.eid)
                for _ in range(2):  # enter twice: TCS, code and the data buffer
                    host.access(pid, self.eid, 0, TCS_PAGES + CODE_PAGES, write=True)
                self.exit("ok")
        except Blocked as e:
            if self.plan and e.done:
                kind, count = self.plan[0]
                self.plan[0] = (kind, count - e.done)
        except IoctlError as e:
            self.exit("OOM" if pid in host.oom_victims else errno.errorcode.get(e.errno or 0, "failed"))
        except SigBus:
            self.exit("SIGBUS")

    def exit(self, outcome: str) -> None:
        self.outcome = outcome
        self.host.exit_task(self.pid)


def run_jobs(host: Host, cgroup: str, n: int, *, kill_after: int | None = None, seed: int = 0) -> list[str | None]:
    jobs = []
    for i in range(n):
        pid = 1000 + len(host.tree.tasks) + i * 7 + random.Random(seed).randrange(5)
        host.write(f"{cgroup}/cgroup.procs", str(pid))
        jobs.append(SgxTestJob(host, pid))
    turns = 0
    victim = random.Random(seed).randrange(n)
    while any(j.outcome is None for j in jobs):
        for job in jobs:
            if job.outcome is None:
                job.step()
                host.check() if turns % 997 == 0 else None
        turns += 1
        if kill_after is not None and turns == kill_after and jobs[victim].outcome is None:
            jobs[victim].exit("killed")
        assert turns < 100_000, "the jobs made no progress"
        host.run_pending_work()
    host.check()
    return [j.outcome for j in jobs]


@pytest.fixture(scope="module")
def host() -> Host:
    """The selftest's tree and limits: small = C/512, large = 4 small, larger = C."""
    h = Host(CAPACITY)
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
    return h


SMALL = "/sgx_kselftest/sgx_test_small_parent/sgx_test_small"
LARGE = "/sgx_kselftest/sgx_test_large"
LARGER = "/sgx_kselftest/sgx_test_larger"


def test_1_small_limit_fails(host: Host) -> None:
    assert run_jobs(host, SMALL, 1) == ["ENOMEM"]
    assert value(host, "/sgx_kselftest/sgx_test_small_parent/misc.events") > 0  # on the parent,
    assert host.read(SMALL + "/misc.events") == "sgx_epc.max 0\n"  # not on the child


def test_2_large_positive_at_least_one_of_4_passes(host: Host) -> None:
    assert "ok" in run_jobs(host, LARGE, 4)


def test_3_large_negative_at_least_one_of_5_fails(host: Host) -> None:
    outcomes = run_jobs(host, LARGE, 5)
    assert any(o != "ok" for o in outcomes)
    assert set(outcomes) <= {"ok", "ENOMEM"}


def test_4_larger_all_8_pass(host: Host) -> None:
    assert run_jobs(host, LARGER, 8) == ["ok"] * 8


@pytest.mark.parametrize("seed", [1, 2])
def test_5_larger_with_a_random_kill_the_others_pass(host: Host, seed: int) -> None:
    kill_after = random.Random(seed).randrange(3, 30)  # while the jobs still build
    outcomes = run_jobs(host, LARGER, 8, kill_after=kill_after, seed=seed)
    assert outcomes.count("killed") == 1
    assert [o for o in outcomes if o != "killed"] == ["ok"] * 7


def test_6_memcg_all_4_fail(host: Host) -> None:
    capacity = host.capacity_bytes
    large = value(host, LARGE + "/misc.max")
    host.write(LARGE + "/memory.max", str(capacity - 2 * large))
    outcomes = run_jobs(host, LARGE, 4)
    assert "ok" not in outcomes and "OOM" in outcomes
    assert value(host, LARGE + "/memory.events") >= 0
    events = dict(line.split() for line in host.read(LARGE + "/memory.events").splitlines())
    assert int(events["oom_kill"]) >= 1
    host.write(LARGE + "/memory.max", "max")


def test_7_leak_check_and_cleanup(host: Host) -> None:
    host.run_pending_work()
    assert host.read("/sgx_kselftest/misc.current") == "sgx_epc 0\n"
    assert host.read("/sgx_kselftest/memory.current") == "0\n"
    for path in (LARGE, SMALL, LARGER, "/sgx_kselftest/sgx_test_small_parent", "/sgx_kselftest"):
        host.rmdir(path)
    assert host.cgroups() == ["/"] and host.tree.all() == [host.tree.root]
    host.check()

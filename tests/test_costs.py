"""Emulated time (docs/costs.md): the cost profiles, and each workload's clock in the Session,
which both the engine and the in-process scenario mode run."""

from __future__ import annotations

import pytest

from common.costs import COSTS, ProfileError, load_profile, parse_profile, slowdown
from engine import PAGE_SIZE
from engined.session import Session

from .helpers import limit
from .test_session import Rig

# distinct costs, so that one operation counted for another shows
ODD = dict(zip(COSTS, (101, 211, 307, 401, 503, 601, 701, 809, 907, 1009, 1103, 1201, 1301), strict=True))


def odd_profile() -> object:
    return parse_profile({"name": "odd", "cost_ns": ODD})


def rig_with(profile: object, capacity: str = "1MiB") -> Rig:
    rig = Rig(capacity)
    session = rig.session
    fresh = Session(
        rig.host, rig.processes, session.handlers, answer=rig.replies.__setitem__, publish=rig.events.extend,
        engine_pid=1, pub="test", profile=profile,  # type: ignore[arg-type]
    )  # fmt: skip
    rig.session = fresh
    return rig


def build_and_touch(rig: Rig, pid: int, cgroup: str, heap: int, passes: int) -> list[int]:
    """ECREATE, EADD of ``heap`` pages, EINIT, then ``passes`` accesses of the whole heap; the faults of each."""
    rig.start(pid, cgroup)
    eid = rig.ok(pid, "ecreate", size=512 * PAGE_SIZE)["eid"]
    rig.ok(pid, "add_pages", eid=eid, count=heap)
    rig.ok(pid, "einit", eid=eid)
    faults = []
    for _ in range(passes):
        key = rig.call(pid, "access", eid=eid, ranges=[[0, heap]])
        rig.rounds(200)
        reply = rig.replies.pop(key)
        assert not reply.err, reply
        faults.append(reply.ok["faults"])
    return faults


def test_a_workloads_clock_adds_up_every_operation_it_caused_at_the_profiles_costs() -> None:
    """100 pages EADDed under a 64-page limit, then touched twice: its clock is ECREATE + 100 EADD +
    EINIT + 2 entries + 200 accesses of compute + an ELDU and a fault per fault + an EWB and EBLOCK per
    page its own (sync and direct) reclaim wrote, ETRACK and bookkeeping per batch of it; the async
    work items' batches go on the kworkers' clock."""
    rig = rig_with(odd_profile())
    rig.ok(0, "mkdir", path="/a")
    limit(rig.host, "/a", 64)
    faults = build_and_touch(rig, 10, "/a", 100, 2)
    rig.session.flush_events()
    batches = [e for e in rig.events if e["kind"] == "reclaim"]
    mine = [b for b in batches if b["context"] not in ("async", "ksgxd")]
    theirs = [b for b in batches if b["context"] in ("async", "ksgxd")]
    assert mine and theirs and sum(faults) > 0
    assert not any(e["kind"] == "secs_write_back" for e in rig.events)
    c = ODD
    eldu = sum(faults) * (c["eldu"] + c["fault"])
    ewb = sum(b["written"] for b in mine) * (c["ewb"] + c["eblock"])
    per_batch = sum(1 for b in mine if b["written"]) * c["etrack"] + len(mine) * c["batch"]
    build = c["ecreate"] + 100 * c["eadd"] + c["einit"]
    compute = 2 * c["entry"] + 200 * c["compute"]
    w = rig.session.workloads[10]
    assert w.paging_ns == eldu + ewb + per_batch
    assert w.runtime_ns == build + compute + eldu + ewb + per_batch
    async_ns = sum(b["written"] for b in theirs) * (c["ewb"] + c["eblock"])
    async_ns += sum(1 for b in theirs if b["written"]) * c["etrack"] + len(theirs) * c["batch"]
    assert rig.session.kworker_ns + rig.session.ksgxd_ns == async_ns > 0


def test_the_zero_profile_gives_compute_alone() -> None:
    rig = rig_with(load_profile("zero"))
    rig.ok(0, "mkdir", path="/a")
    limit(rig.host, "/a", 64)
    faults = build_and_touch(rig, 10, "/a", 100, 2)
    w = rig.session.workloads[10]
    assert sum(faults) > 0
    assert (w.runtime_ns, w.paging_ns) == (200 * 1000, 0)


def test_a_workload_paging_under_a_limit_is_slower_and_the_same_unlimited_pays_exactly_its_time_less_paging() -> None:
    """slowdown = runtime / (runtime - paging): the unlimited run's runtime is the limited one's less its paging."""
    limited = rig_with(load_profile("sgx1-client"))
    limited.ok(0, "mkdir", path="/a")
    limit(limited.host, "/a", 64)
    assert sum(build_and_touch(limited, 10, "/a", 100, 3)) > 0
    free = rig_with(load_profile("sgx1-client"))
    free.ok(0, "mkdir", path="/a")
    assert sum(build_and_touch(free, 10, "/a", 100, 3)) == 0
    lw, fw = limited.session.workloads[10], free.session.workloads[10]
    assert slowdown(lw.runtime_ns, lw.paging_ns) > 1.0
    assert fw.paging_ns == 0 and slowdown(fw.runtime_ns, fw.paging_ns) == 1.0
    assert fw.runtime_ns == lw.runtime_ns - lw.paging_ns


def test_a_workloads_declared_compute_replaces_the_profiles() -> None:
    rig = rig_with(load_profile("zero"))
    rig.processes.live.add(10)
    rig.ok(10, "hello", pid=10, role="enclave", compute_ns=7)
    eid = rig.ok(10, "ecreate", size=64 * PAGE_SIZE)["eid"]
    rig.ok(10, "add_pages", eid=eid, count=10)
    rig.ok(10, "einit", eid=eid)
    rig.ok(10, "access", eid=eid, ranges=[[0, 10]])
    assert rig.session.workloads[10].runtime_ns == 70


def test_the_snapshot_carries_each_workloads_clock_the_cgroups_sums_and_the_workers() -> None:
    rig = rig_with(odd_profile(), "2MiB")
    for path in ("/p", "/p/a", "/p/b"):
        rig.ok(0, "mkdir", path=path)
    limit(rig.host, "/p/a", 64)
    build_and_touch(rig, 10, "/p/a", 100, 2)
    build_and_touch(rig, 20, "/p/b", 50, 1)
    snap = rig.session.snapshot()
    assert snap["profile"] == "odd"
    assert snap["kworker_ns"] == rig.session.kworker_ns > 0
    assert snap["ksgxd_ns"] == rig.session.ksgxd_ns
    rows = {w["pid"]: w for w in snap["workloads"]}
    a, b = rig.session.workloads[10], rig.session.workloads[20]
    assert (rows[10]["runtime_ns"], rows[10]["paging_ns"]) == (a.runtime_ns, a.paging_ns)
    assert rows[20]["paging_ns"] == 0 < rows[20]["runtime_ns"] == b.runtime_ns
    cgroups = {cg["path"]: cg for cg in snap["cgroups"]}
    assert cgroups["/p/a"]["runtime_ns"] == a.runtime_ns
    assert cgroups["/p"]["runtime_ns"] == cgroups["/"]["runtime_ns"] == a.runtime_ns + b.runtime_ns
    assert cgroups["/p"]["paging_ns"] == a.paging_ns


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ({"name": "x", "cost_ns": {**ODD, "ewb": -1}}, "'cost_ns.ewb' = -1 is not between 0"),
        ({"name": "x", "cost_ns": {k: v for k, v in ODD.items() if k != "eldu"}}, "'cost_ns.eldu' is missing"),
        ({"name": "x", "cost_ns": {**ODD, "edbgrd": 1}}, "unknown cost 'cost_ns.edbgrd'"),
        ({"name": "x", "cost_ns": {**ODD, "eadd": "fast"}}, "'cost_ns.eadd' must be a number of ns"),
        ({"name": "x", "clock": 3, "cost_ns": ODD}, "unknown key 'clock'"),
        ({"cost_ns": ODD}, "'name' is missing"),
    ],
)
def test_a_bad_profile_is_refused_in_one_line_naming_the_key(table: dict[str, object], says: str) -> None:
    with pytest.raises(ProfileError) as e:
        parse_profile(table, "mine.toml")
    assert says in str(e.value) and "\n" not in str(e.value)


def test_every_bundled_profile_loads_and_the_default_is_a_current_server_part() -> None:
    for name in ("sgx1-client", "icelake-sp", "sapphire-rapids", "zero"):
        assert load_profile(name).name == name
    assert load_profile().name == "sapphire-rapids"
    with pytest.raises(ProfileError, match="no cost profile 'skylake'"):
        load_profile("skylake")

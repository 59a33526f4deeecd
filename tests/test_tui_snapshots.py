"""What the TUI draws, compared as SVG at a fixed terminal size with fixed data (no engine, no clock)."""

from __future__ import annotations

from collections import deque

from common.limits import PAGE_SIZE, U64_MAX
from playground.feed import FeedState
from playground.tui.app import EpcApp
from wire.snapshot import CgroupRow, Snapshot, WorkloadRow

MiB = 1 << 20


def cgroup(path: str, current: int, limit: int | None, peak: int, events: int = 0, procs: int = 0) -> CgroupRow:
    return {
        "path": path,
        "misc_current": current,
        "misc_max": limit,
        "misc_peak": peak,
        "misc_events": events,
        "misc_events_local": events,
        "memory_current": current // 2,
        "memory_max": None,
        "memory_events": [0, 0, events // 10, 0, 0, 0],
        "reclaimable": current // PAGE_SIZE,
        "unreclaimable": 3,
        "swapped": current // 8192,
        "reclaimed": events * 16,
        "procs": list(range(procs)),
        "nr_procs": procs,
    }


def workload(pid: int, role: str, name: str, cgroup: str, faults: int, resident: int, swapped: int, size: int,
             reason: str = "", stalled_ns: int = 0, elrange: int = 0,
             exit_signal: str = "") -> WorkloadRow:  # fmt: skip
    state = "exited" if reason else "stalled" if stalled_ns else "running"
    return {"pid": pid, "role": role, "name": name, "cgroup": cgroup, "state": state, "reason": reason,
            "faults": faults, "resident": resident, "swapped": swapped, "size": size,
            "elrange": elrange or size, "pattern": "random" if role == "enclave" else "", "passes": 3,
            "duration_ms": None, "exit_signal": exit_signal, "exit_code": None,
            "stalled_ns": stalled_ns}  # fmt: skip


def fixed_feed() -> FeedState:
    """What an EngineFeed holds, from fixed data: two stats a second apart, a few events, a fixed history."""
    snapshot: Snapshot = {
        "stats_seq": 0,
        "seq": 0,
        "t_ns": 5 * 10**9,
        "capacity": 64 * MiB,
        "memory": None,
        "free": 30 * MiB,
        "ksgxd": False,
        "pub": "ipc:///nowhere.pub",
        "engine_pid": 1,
        "cgroups": [
            cgroup("/", 34 * MiB, None, 40 * MiB),
            cgroup("/pods", 24 * MiB, 24 * MiB, 24 * MiB, events=310),
            cgroup("/pods/web", 16 * MiB, U64_MAX, 18 * MiB, procs=1),
            cgroup("/pods/db", 8 * MiB, 8 * MiB, 8 * MiB, events=120, procs=1),
            cgroup("/guests", 10 * MiB, 12 * MiB, 11 * MiB, procs=1),
        ],
        "workloads": [
            workload(4101, "enclave", "web", "/pods/web", 9000, 4100, 0, 24 * MiB, elrange=32 * MiB),
            workload(4102, "enclave", "db", "/pods/db", 95000, 2019, 1058, 12 * MiB, elrange=16 * MiB),
            workload(4103, "vm", "guest", "/guests", 2048, 0, 0, 8 * MiB, reason="SIGBUS"),
            workload(4104, "enclave", "batch", "/pods/db", 310, 40, 12, MiB, stalled_ns=3 * 10**9, elrange=2 * MiB),
        ],
    }
    feed = FeedState(snapshot)
    later = snapshot | {"t_ns": 6 * 10**9, "seq": 7}  # a second on: /pods hit its limit once, /pods/db gave up 32
    later["cgroups"] = [  # pages
        cg
        | {
            "misc_events_local": cg["misc_events_local"] + (cg["path"] == "/pods"),
            "reclaimed": cg["reclaimed"] + 32 * (cg["path"] == "/pods/db"),
        }
        for cg in snapshot["cgroups"]
    ]
    later["workloads"] = [
        w | {"faults": w["faults"] + rate} for w, rate in zip(snapshot["workloads"], (1200, 35000, 0, 0), strict=True)
    ]
    feed.take_stats(later)
    feed.take_events(
        [
            {"kind": "mkdir", "cgroup": "/pods", "seq": 1},
            {"kind": "write", "path": "/pods/misc.max", "value": "sgx_epc 25165824", "seq": 2},
            {"kind": "sigbus", "pid": 4103, "cgroup": "/guests", "errno": "ENOMEM", "seq": 6},
            {"kind": "workload_exit", "pid": 4103, "name": "guest", "reason": "SIGBUS", "seq": 7},
            {"kind": "stall", "pid": 4104, "name": "batch", "cgroup": "/pods/db", "op": "access", "seq": 8},
        ]
    )
    for path in ("/", "/pods", "/pods/web", "/pods/db"):
        feed.usage[path] = deque(range(0, 24 * MiB, MiB))
        feed.reclaim[path] = deque([0, 16, 32, 0, 48] * 6)
    return feed


def app() -> EpcApp:
    return EpcApp("ipc:///nowhere", feed=fixed_feed())


def test_tui_overview(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(app(), terminal_size=(150, 40))


def test_tui_selected_cgroup_details(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(app(), terminal_size=(150, 40), press=["down", "down", "down"])


def test_tui_spawn_form(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(app(), terminal_size=(150, 40), press=["down", "e"])


def test_tui_workload_detail(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(app(), terminal_size=(160, 45), press=["tab", "down", "down", "enter"])  # the guest that died

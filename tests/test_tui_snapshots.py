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
    ms = 10**6
    feed.take_events(
        [
            {"kind": "mkdir", "cgroup": "/pods", "seq": 1, "t_ns": 120 * ms},
            {"kind": "write", "path": "/pods/misc.max", "value": "sgx_epc 25165824", "seq": 2, "t_ns": 130 * ms},
            {"kind": "sigbus", "pid": 4103, "cgroup": "/guests", "errno": "ENOMEM", "seq": 6, "t_ns": 4_250 * ms},
            {"kind": "workload_exit", "pid": 4103, "name": "guest", "reason": "SIGBUS", "seq": 7, "t_ns": 4_251 * ms},
            {
                "kind": "stall",
                "pid": 4104,
                "name": "batch",
                "cgroup": "/pods/db",
                "op": "access",
                "seq": 8,
                "t_ns": 5900 * ms,
            },
        ]
    )
    for path in ("/", "/pods", "/pods/web", "/pods/db"):
        feed.usage[path] = deque(range(0, 24 * MiB, MiB))
        feed.reclaim[path] = deque([0, 16, 32, 0, 48] * 6)
        feed.reclaim_subtree[path] = deque([0, 16, 32, 0, 48] * 6)
    return feed


def feed_of(capacity: int, cgroups: list[CgroupRow], workloads: list[WorkloadRow] | None = None) -> FeedState:
    """A FeedState holding one snapshot of these cgroups (pre-order) and workloads."""
    used = next((cg["misc_current"] for cg in cgroups if cg["path"] == "/"), 0)
    snapshot: Snapshot = {
        "stats_seq": 0, "seq": 0, "t_ns": 5 * 10**9, "capacity": capacity, "memory": None,
        "free": capacity - used, "ksgxd": False, "pub": "ipc:///nowhere.pub", "engine_pid": 1,
        "cgroups": cgroups, "workloads": workloads or [],
    }  # fmt: skip
    return FeedState(snapshot)


KSELFTEST = "/sgx_kselftest"


def kselftest_feed() -> FeedState:
    """The kernel selftest's cgroups (its names and limits on a 128 MiB EPC) while its large case runs."""
    small, large = 256 * 1024, 1024 * 1024
    return feed_of(
        128 * MiB,
        [
            cgroup("/", 5 * MiB, None, 128 * MiB),
            cgroup("/box", 4 * MiB, 8 * MiB, 8 * MiB, procs=1),
            cgroup(KSELFTEST, large, U64_MAX, 128 * MiB),
            cgroup(f"{KSELFTEST}/sgx_test_large", large, 4 * small, large, events=2038, procs=4),
            cgroup(f"{KSELFTEST}/sgx_test_larger", 0, 128 * MiB, 127 * MiB),
            cgroup(f"{KSELFTEST}/sgx_test_small_parent", 0, small, small, events=12),
            cgroup(f"{KSELFTEST}/sgx_test_small_parent/sgx_test_small", 0, U64_MAX, small),
        ],
        [
            workload(4201 + i, "enclave", f"large4.{i}", f"{KSELFTEST}/sgx_test_large", 64, 64, 900, 256 * MiB)
            for i in range(4)
        ],
    )


KUBEPODS = "/kubepods.slice"
BURSTABLE = f"{KUBEPODS}/kubepods-burstable.slice"
GUARANTEED = f"{KUBEPODS}/kubepods-guaranteed.slice"
POD_A = f"{BURSTABLE}/kubepods-burstable-pod7c1f0d2e_5b3a_4e8f_9a61_2f3e4d5ca5e2.slice"
POD_B = f"{BURSTABLE}/kubepods-burstable-pod0b2e9c41_77d0_4a1e_8c5f_91d2b7e3f018.slice"
POD_C = f"{GUARANTEED}/kubepods-guaranteed-pod5d8a3f10_2c6e_4b97_b0a4_6e1f9c2d7a33.slice"
CONTAINER_1 = f"{POD_A}/cri-containerd-{'9f2c4e6a8b0d1f3e5a7c9b1d3f5e7a9c' * 2}.scope"
CONTAINER_2 = f"{POD_A}/cri-containerd-{'1a3b5c7d9e0f2a4b6c8d0e2f4a6b8c0d' * 2}.scope"


def kubernetes_feed() -> FeedState:
    """A node's kubepods hierarchy, pods and containers with systemd's names: two burstable pods
    (one of two containers), a guaranteed pod; 192 MiB of limits promised on a 128 MiB EPC."""
    return feed_of(
        128 * MiB,
        [
            cgroup("/", 70 * MiB, None, 90 * MiB),
            cgroup(KUBEPODS, 70 * MiB, U64_MAX, 90 * MiB),
            cgroup(BURSTABLE, 60 * MiB, U64_MAX, 80 * MiB),
            cgroup(POD_B, 30 * MiB, 64 * MiB, 40 * MiB, procs=1),
            cgroup(POD_A, 30 * MiB, 32 * MiB, 32 * MiB, events=55),
            cgroup(CONTAINER_2, 6 * MiB, U64_MAX, 8 * MiB, procs=1),
            cgroup(CONTAINER_1, 24 * MiB, U64_MAX, 26 * MiB, procs=1),
            cgroup(GUARANTEED, 10 * MiB, U64_MAX, 12 * MiB),
            cgroup(POD_C, 10 * MiB, 96 * MiB, 12 * MiB, procs=1),
        ],
    )


def app() -> EpcApp:
    return EpcApp("ipc:///nowhere", feed=fixed_feed())


def test_tui_overview(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(app(), terminal_size=(150, 40))


def test_tui_selected_cgroup_details(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(app(), terminal_size=(150, 40), press=["down", "down", "down"])


def test_tui_spawn_form(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(app(), terminal_size=(150, 40), press=["down", "e"])


def test_tui_small_terminal(snap_compare) -> None:  # type: ignore[no-untyped-def]
    """100x30: the footer starts with ? and q, the graphs side by side."""
    assert snap_compare(app(), terminal_size=(100, 30))


def test_tui_spawn_form_of_a_vm(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(app(), terminal_size=(100, 30), press=["down", "v"])


def test_tui_help_of_the_focused_panel(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(app(), terminal_size=(150, 40), press=["tab", "question_mark"])


def test_tui_kselftest_names_160x45(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(EpcApp("ipc:///nowhere", feed=kselftest_feed()), terminal_size=(160, 45))


def test_tui_kselftest_names_100x30(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(EpcApp("ipc:///nowhere", feed=kselftest_feed()), terminal_size=(100, 30))


def test_tui_kubernetes_names_160x45(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(EpcApp("ipc:///nowhere", feed=kubernetes_feed()), terminal_size=(160, 45))


def test_tui_flat_view_160x45(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(app(), terminal_size=(160, 45), press=["down", "down", "t"])


def test_tui_workload_detail(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(app(), terminal_size=(160, 45), press=["tab", "down", "down", "enter"])  # the guest that died


def test_tui_sweep_curve(snap_compare) -> None:  # type: ignore[no-untyped-def]
    """w, a real sweep of nested-limits over 4 limits: the curve, the knee and the recommendation
    (in process, on its virtual clock: the same numbers every run)."""
    from textual.widgets import Input

    from playground.tui.screens.sweep import SweepFormScreen, SweepScreen
    from tests.tui_helpers import until

    async def sweep(pilot) -> None:  # type: ignore[no-untyped-def]
        await pilot.press("w")
        await until(pilot, lambda: isinstance(pilot.app.screen, SweepFormScreen), "the sweep form")
        pilot.app.screen.query_one("#scenario", Input).value = "nested-limits"
        await pilot.pause()
        pilot.app.screen.query_one("#range", Input).value = "512KiB..4MiB/4"
        pilot.app.screen.query_one("#budget", Input).value = "150%"
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(pilot.app.screen, SweepScreen), "the sweep's screen")
        await until(pilot, lambda: pilot.app.screen.state == "done", "the sweep to end", timeout=120)

    assert snap_compare(app(), terminal_size=(120, 30), run_before=sweep)

"""What the TUI draws, compared as SVG at a fixed terminal size with fixed data (no engine, no clock)."""

from __future__ import annotations

from collections import deque
from typing import Any

from playground.tui.app import EpcApp

MiB = 1 << 20
U64_MAX = (1 << 64) - 1


def cgroup(path: str, current: int, limit: int | None, peak: int, events: int = 0, procs: int = 0) -> dict[str, Any]:
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
        "reclaimable": current // 4096,
        "procs": list(range(procs)),
    }


class FixedFeed:
    """An EngineFeed stand-in: one snapshot, a few events, a history that never moves."""

    connected = True

    def __init__(self) -> None:
        self.snapshot = {
            "seq": 40,
            "t_ns": 0,
            "capacity": 64 * MiB,
            "free": 30 * MiB,
            "ksgxd": False,
            "cgroups": [
                cgroup("/", 34 * MiB, None, 40 * MiB),
                cgroup("/pods", 24 * MiB, 24 * MiB, 24 * MiB, events=310),
                cgroup("/pods/web", 16 * MiB, U64_MAX, 18 * MiB, procs=1),
                cgroup("/pods/db", 8 * MiB, 8 * MiB, 8 * MiB, events=120, procs=1),
                cgroup("/guests", 10 * MiB, 12 * MiB, 11 * MiB, procs=1),
            ],
            "workloads": [
                {"pid": 4101, "role": "enclave", "name": "web", "cgroup": "/pods/web", "state": "running",
                 "reason": "", "faults": 9000, "resident": 4100, "swapped": 0},
                {"pid": 4102, "role": "enclave", "name": "db", "cgroup": "/pods/db", "state": "running",
                 "reason": "", "faults": 95000, "resident": 2019, "swapped": 1058},
                {"pid": 4103, "role": "vm", "name": "guest", "cgroup": "/guests", "state": "exited",
                 "reason": "SIGBUS", "faults": 2048, "resident": 0, "swapped": 0},
            ],
        }  # fmt: skip
        self.events: deque[dict[str, Any]] = deque(
            [
                {"kind": "mkdir", "cgroup": "/pods", "seq": 1},
                {"kind": "write", "path": "/pods/misc.max", "value": "sgx_epc 25165824", "seq": 2},
                {"kind": "limit_hit", "cgroup": "/pods", "requester": "/pods/db", "seq": 3},
                {"kind": "reclaim", "cgroup": "/pods/db", "context": "async", "written": 16, "seq": 4},
                {"kind": "reclaim", "cgroup": "/pods/db", "context": "async", "written": 16, "seq": 5},
                {"kind": "sigbus", "pid": 4103, "cgroup": "/guests", "errno": "ENOMEM", "seq": 6},
                {"kind": "workload_exit", "pid": 4103, "name": "guest", "reason": "SIGBUS", "seq": 7},
            ]
        )
        self.usage = {path: deque(range(0, 24 * MiB, MiB)) for path in ("/", "/pods", "/pods/web", "/pods/db")}
        self.reclaim = {path: deque([0, 16, 32, 0, 48] * 6) for path in ("/", "/pods", "/pods/web", "/pods/db")}

    def poll(self) -> bool:
        return False

    def close(self) -> None:
        pass


def app() -> EpcApp:
    return EpcApp("ipc:///nowhere", feed=FixedFeed())  # type: ignore[arg-type]


def test_tui_overview(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(app(), terminal_size=(150, 40))


def test_tui_selected_cgroup_details(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(app(), terminal_size=(150, 40), press=["down", "down", "down"])


def test_tui_spawn_form(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(app(), terminal_size=(150, 40), press=["down", "e"])

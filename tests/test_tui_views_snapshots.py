"""What the kernel views draw (the LRU view, the frame map), as SVG at 160x45 and 100x30, from fixed
data: sources that answer the engine's ``lru`` and ``frames`` ops from a made-up host."""

from __future__ import annotations

import math
from typing import Any

import pytest
from textual.app import App

from playground.tui.views.frames import FrameMapScreen
from playground.tui.views.lru import LruScreen
from wire.messages import FrameCells, LruListing

KINDS = ["FREE", "SECS", "REG", "TCS", "TRIM", "VA", "VEPC"]
CGROUPS = ["/pods/web", "/pods/db", "/guests", "/sgx_kselftest/sgx_test_small_parent"]
CAPACITY = 16384  # frames: 64 MiB


def frame(n: int) -> tuple[int, int]:
    """A made-up EPC: (owner index or -1, kind) of frame ``n``."""
    if n < 4096:
        return 0, 1 if n == 0 else 5 if n % 512 == 1 else 3 if n % 512 == 2 else 2
    if n < 6144:
        return 1, 1 if n == 4096 else 2
    if 8192 <= n < 9216:
        return 2, 6
    if 12000 <= n < 12300:
        return 3, 2
    return -1, 0


class FixedFrames:
    def frames(self, count: int, first: int = 0, group: int = 1) -> FrameCells:
        owners, kinds, free = [], [], []
        cells = min(count, math.ceil((CAPACITY - first) / group))
        for cell in range(cells):
            members = [frame(n) for n in range(first + cell * group, min(CAPACITY, first + (cell + 1) * group))]
            used = [m for m in members if m[0] >= 0]
            owners.append(max({o for o, _ in used}, key=[o for o, _ in used].count) if used else -1)
            kinds.append(max({k for _, k in used}, key=[k for _, k in used].count) if used else 0)
            free.append(len(members) - len(used))
        return {
            "first": first, "group": group, "count": cells, "frames": min(CAPACITY - first, cells * group),
            "capacity": CAPACITY, "kinds": KINDS, "cgroups": CGROUPS, "dying": [3], "owner": owners,
            "kind": kinds, "free": free, "counts": [],
        }  # fmt: skip


class FixedLru:
    def lru(self, cgroup: str, offset: int = 0, limit: int = 256, unreclaimable_offset: int = 0) -> LruListing:
        size = 2040
        pages = []
        for position in range(offset, min(size, offset + limit)):
            young = 0b1 if position % 5 == 0 else 0b11 if position % 7 == 0 else 0
            mark = ("rotate" if young else "write") if position < 16 else ""
            pages.append((4100 + position, 2, position + 3, "TCS" if position == 0 else "REG", young, mark))
        return {
            "cgroup": cgroup, "size": size, "offset": offset, "pages": pages, "nr_to_scan": 16,
            "batch": {"rotate": sum(p[5] == "rotate" for p in pages), "write": sum(p[5] == "write" for p in pages)},
            "mms": [(2, [(4102, 0), (4107, 1)])], "next_cg": cgroup, "nr_unreclaimable": 5,
            "unreclaimable_offset": 0,
            "unreclaimable": [(4096, 2, -1, "SECS"), (4097, 2, 0, "VA"), (4610, 2, 1, "VA"), (4611, 2, 2, "VA"),
                              (5000, 2, 3, "VA")],
        }  # fmt: skip


class ViewApp(App[None]):
    """Only the view, on a screen of its own."""

    def __init__(self, screen: Any) -> None:
        super().__init__()
        self.view = screen

    def on_mount(self) -> None:
        self.push_screen(self.view)


@pytest.mark.parametrize("size", [(160, 45), (100, 30)])
def test_frame_map_by_cgroup(snap_compare, size: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(ViewApp(FrameMapScreen(FixedFrames(), CAPACITY * 4096)), terminal_size=size)


def test_frame_map_by_kind(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(ViewApp(FrameMapScreen(FixedFrames(), CAPACITY * 4096)), terminal_size=(160, 45), press=["k"])


@pytest.mark.parametrize("size", [(160, 45), (100, 30)])
def test_lru_view(snap_compare, size: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(ViewApp(LruScreen(FixedLru(), "/pods/db")), terminal_size=size)

"""What the tree's bars are made of: each cgroup's effective limit and the bar text (no textual here)."""

from __future__ import annotations

from common.limits import U64_MAX
from wire.snapshot import Snapshot

BAR = 16


def usage_bar(current: int, limit: int, peak: int, width: int = BAR) -> str:
    """``█████░░┃░░``: current against the effective limit, ``┃`` at the peak."""
    if limit <= 0:
        return "!" * width
    filled = min(width, round(width * current / limit))
    cells = ["█"] * filled + ["░"] * (width - filled)
    mark = min(width - 1, int(width * peak / limit)) if peak else -1
    if mark >= 0 and mark >= filled:
        cells[mark] = "┃"
    return "".join(cells)


def effective_limits(snapshot: Snapshot) -> dict[str, int]:
    """Each cgroup's smallest misc.max up to the root, or the capacity."""
    capacity = int(snapshot["capacity"])
    limits: dict[str, int] = {}
    for cg in snapshot["cgroups"]:  # pre-order: parents first
        path = cg["path"]
        parent = path.rsplit("/", 1)[0] or "/"
        own = cg["misc_max"] if cg["misc_max"] is not None else U64_MAX
        limits[path] = min(own, limits.get(parent, capacity)) if path != "/" else capacity
    return limits

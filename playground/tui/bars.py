"""What the tree's bars are made of (no textual here): each cgroup's effective limit, the room
it has left under its tightest ancestor (headroom siblings share), how full that makes it,
the node total (limits against the EPC), and the bar text.

A bar is drawn against the cgroup's effective limit (the smallest ``misc.max`` from it up to
the root, or the EPC): ``█`` its own usage, ``░`` the room it has left, ``▒`` the part of its
limit others hold (siblings, cousins) under an ancestor whose limit it shares, ``┃`` its peak.
"""

from __future__ import annotations

import enum

from common.limits import U64_MAX
from wire.snapshot import Snapshot

BAR = 16
USED, ROOM, OTHERS, PEAK = "█", "░", "▒", "┃"
LIMIT_0 = "limit 0"  # the bar of a cgroup whose effective limit is 0: nothing can be charged


class Level(enum.Enum):
    """How much of a cgroup's effective limit is taken (by it and by others under a shared limit)."""

    OK = "ok"  # below 75% (of the effective limit): green
    HIGH = "high"  # 75% to 95%: yellow
    FULL = "full"  # 95% and above, or a limit of 0: red


def parent_of(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


def limits_and_rooms(snapshot: Snapshot) -> tuple[dict[str, int], dict[str, int]]:
    """Each cgroup's effective limit (its smallest misc.max up to the root, or the capacity) and
    its headroom (the bytes it can still charge before some limit refuses it: the least, over it
    and its ancestors, of effective limit - usage, never below 0), in one pass of the pre-order.
    /pods at 20 of 24 MiB and /pods/web at 12 of 24 MiB: web has 4 MiB left, not 12 (its
    siblings hold the other 8).  At the root, the EPC that is not charged."""
    capacity = int(snapshot["capacity"])
    limits: dict[str, int] = {}
    rooms: dict[str, int] = {}
    for cg in snapshot["cgroups"]:  # pre-order: parents first
        path, current = cg["path"], int(cg["misc_current"])
        if path == "/":
            limit, room = capacity, capacity - current
        else:
            parent = path[: path.rfind("/")] or "/"
            own = cg["misc_max"]
            limit = limits.get(parent, capacity)
            if own is not None and own < limit:
                limit = own
            room = min(limit - current, rooms.get(parent, capacity))
        limits[path], rooms[path] = limit, max(0, room)
    return limits, rooms


def effective_limits(snapshot: Snapshot) -> dict[str, int]:
    """Each cgroup's smallest misc.max up to the root, or the capacity."""
    capacity = int(snapshot["capacity"])
    limits: dict[str, int] = {}
    for cg in snapshot["cgroups"]:  # pre-order: parents first
        path = cg["path"]
        own = cg["misc_max"] if cg["misc_max"] is not None else U64_MAX
        limits[path] = min(own, limits.get(parent_of(path), capacity)) if path != "/" else capacity
    return limits


def headrooms(snapshot: Snapshot) -> dict[str, int]:
    """Each cgroup's headroom: the room left under its tightest ancestor (limits_and_rooms)."""
    return limits_and_rooms(snapshot)[1]


def level(current: int, limit: int, room: int) -> Level:
    """Green, yellow or red by the share of the effective limit that is taken: all of it but the
    room left (a cgroup whose siblings fill their parent is as near a limit hit as a full one)."""
    if limit <= 0:
        return Level.FULL
    taken = limit - min(room, limit)
    return Level.OK if 100 * taken < 75 * limit else Level.HIGH if 100 * taken < 95 * limit else Level.FULL


def taken_percent(limit: int, room: int) -> int:
    """The share of the effective limit taken, in whole percent (100 for a limit of 0)."""
    if limit <= 0:
        return 100
    return 100 * (limit - min(room, limit)) // limit


def bar_runs(current: int, limit: int, peak: int, width: int = BAR, room: int | None = None) -> list[tuple[str, str]]:
    """The bar as runs of (text, part): part one of ``used``, ``room``, ``others``, ``peak``,
    ``limit0``.  ``room`` is the cgroup's headroom (by default: all of its limit it does not use)."""
    if limit <= 0:
        return [(LIMIT_0[:width].ljust(width), "limit0")]
    room = max(0, limit - current) if room is None else max(0, room)
    used_end = min(width, round(width * current / limit))
    room_end = max(used_end, min(width, round(width * (current + room) / limit)))
    mark = min(width - 1, int(width * peak / limit)) if peak else -1
    bounds = [(0, used_end, USED, "used"), (used_end, room_end, ROOM, "room"), (room_end, width, OTHERS, "others")]
    runs: list[tuple[str, str]] = []
    for start, end, cell, part in bounds:
        if used_end <= mark and start <= mark < end:  # the peak's cell, within the room or the others
            runs += [(cell * (mark - start), part), (PEAK, "peak"), (cell * (end - mark - 1), part)]
        else:
            runs.append((cell * (end - start), part))
    return [run for run in runs if run[0]]


def room_shown(current: int, limit: int, room: int, width: int = BAR) -> tuple[int, int]:
    """What a bar of ``width`` and the percentage show of the room: where the room's cells end and
    the share taken.  A room that moves less than that draws the same line (the root's free
    EPC, which every unlimited cgroup's room follows, moves by pages every tick)."""
    if limit <= 0:
        return 0, 100
    return min(width, round(width * (current + max(0, room)) / limit)), taken_percent(limit, room)


def usage_bar(current: int, limit: int, peak: int, width: int = BAR, room: int | None = None) -> str:
    """``█████░░┃▒▒``: current against the effective limit, the room left, what others hold, the peak."""
    return "".join(text for text, _ in bar_runs(current, limit, peak, width, room))


def node_total(snapshot: Snapshot) -> int:
    """The EPC the limits promise, summed over the top-level cgroups: a cgroup with a limit
    promises it (at most the EPC); one without promises what its children do, or the whole EPC
    when it has none (nothing stops it).  Against the capacity, the node's overcommit."""
    capacity = int(snapshot["capacity"])
    children: dict[str, int] = {}  # what each cgroup's children promise, summed
    total = 0
    for cg in reversed(snapshot["cgroups"]):  # children before parents
        path = cg["path"]
        if path == "/":
            continue
        limit = cg["misc_max"]
        promised = min(limit, capacity) if limit is not None and limit < U64_MAX else children.get(path, capacity)
        parent = path[: path.rfind("/")] or "/"
        if parent == "/":
            total += promised
        else:
            children[parent] = children.get(parent, 0) + promised
    return total


def short_size(nbytes: int) -> str:
    """A size in at most 9 characters (``127.9 MiB``, ``0.98 GiB``, ``1023 B``): 1000 or more of a
    unit is written in the next one, so columns of sizes stay aligned."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
    value, i = float(nbytes), 0
    while value >= 1024 and i < len(units) - 1:
        value, i = value / 1024, i + 1
    if i == 0:
        return f"{nbytes} B"
    if round(value, 1) >= 1000 and i < len(units) - 1:
        return f"{value / 1024:.2f} {units[i + 1]}"
    text = f"{value:.0f}" if value == int(value) else f"{value:.1f}"
    return f"{text} {units[i]}"


def compact_size(nbytes: int) -> str:
    """A size in at most 6 characters, as htop writes them: ``127.9M``, ``0.98G``, ``1023B``."""
    text = short_size(nbytes)
    number, unit = text.split(" ")
    return f"{number}{unit[0]}"

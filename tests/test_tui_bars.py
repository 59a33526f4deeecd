"""The arithmetic of the tree's bars (playground/tui/bars.py, no textual): effective limits and
the headroom siblings share, the bar's parts, the colour level and the share taken, the node
total, sizes that fit their columns."""

from __future__ import annotations

from common.limits import U64_MAX
from playground.tui.bars import (
    LIMIT_0,
    Level,
    bar_runs,
    compact_size,
    effective_limits,
    headrooms,
    level,
    node_total,
    short_size,
    taken_percent,
    usage_bar,
)
from wire.snapshot import Snapshot

from .test_tui_snapshots import MiB, cgroup, feed_of, kubernetes_feed

KiB = 1 << 10


def snap(capacity: int, *rows: tuple[str, int, int | None]) -> Snapshot:
    """A snapshot of (path, misc.current, misc.max) rows, in pre-order."""
    return feed_of(capacity, [cgroup(path, current, limit, current) for path, current, limit in rows]).snapshot


def test_headroom_is_the_least_room_over_the_cgroup_and_its_ancestors() -> None:
    s = snap(
        128 * MiB,
        ("/", 40 * MiB, None),
        ("/pods", 20 * MiB, 24 * MiB),
        ("/pods/web", 12 * MiB, 24 * MiB),  # its own limit leaves 12; its parent's only 4
        ("/pods/db", 8 * MiB, U64_MAX),  # max: the parent's limit is its own
        ("/pods/db/cache", 2 * MiB, 3 * MiB),  # its own limit is the tightest: 1 left
        ("/free", 20 * MiB, U64_MAX),  # under the root: the EPC not charged
        ("/zero", 0, 0),
        ("/zero/child", 0, U64_MAX),
        ("/over", 6 * MiB, 4 * MiB),  # a limit lowered under the usage: no room, not less than none
    )
    rooms = headrooms(s)
    assert rooms["/pods/web"] == 4 * MiB
    assert rooms["/pods/db"] == 4 * MiB
    assert rooms["/pods/db/cache"] == 1 * MiB
    assert rooms["/pods"] == 4 * MiB
    assert rooms["/free"] == rooms["/"] == 88 * MiB
    assert rooms["/zero"] == rooms["/zero/child"] == 0
    assert rooms["/over"] == 0
    limits = effective_limits(s)
    assert limits["/pods/db"] == 24 * MiB and limits["/zero/child"] == 0 and limits["/free"] == 128 * MiB


def test_a_bar_shows_its_use_the_room_left_and_what_others_hold_under_a_shared_limit() -> None:
    # /pods/web at 12 of 24 MiB under /pods at 20 of 24: half used, 4 MiB (2 cells) left, 8 held by siblings
    assert usage_bar(12 * MiB, 24 * MiB, 0, width=12, room=4 * MiB) == "██████░░▒▒▒▒"
    parts = [part for _, part in bar_runs(12 * MiB, 24 * MiB, 20 * MiB, width=12, room=4 * MiB)]
    assert parts == ["used", "room", "others", "peak", "others"]  # the peak (20 MiB) marks a cell of the others
    assert usage_bar(12, 24, 0, width=12) == "██████░░░░░░"  # no room given: all of its limit it does not use
    assert usage_bar(30, 24, 30, width=8, room=0) == "████████"  # over its limit: full, never longer
    assert usage_bar(0, 0, 0, width=10) == "limit 0   " and usage_bar(0, 0, 0, width=7) == LIMIT_0


def test_the_colour_level_and_the_percentage_follow_the_share_of_the_limit_taken() -> None:
    limit = 100 * MiB
    assert [level(0, limit, room) for room in (26 * MiB, 25 * MiB, 6 * MiB, 5 * MiB, 0)] == [
        Level.OK,
        Level.HIGH,
        Level.HIGH,
        Level.FULL,
        Level.FULL,
    ]
    assert [taken_percent(limit, room) for room in (26 * MiB, 25 * MiB, 5 * MiB)] == [74, 75, 95]
    assert level(0, 0, 0) is Level.FULL and taken_percent(0, 0) == 100  # limit 0: nothing can be charged
    # a cgroup using little whose siblings fill their parent is as near a limit hit as a full one
    assert level(1 * MiB, 24 * MiB, 0) is Level.FULL


def test_the_node_total_sums_the_limits_the_top_level_cgroups_promise() -> None:
    kube = kubernetes_feed().snapshot
    assert node_total(kube) == 192 * MiB  # 64 + 32 under burstable, 96 under guaranteed; the slices have none
    s = snap(
        64 * MiB,
        ("/", 0, None),
        ("/a", 0, 24 * MiB),
        ("/a/b", 0, 100 * MiB),  # under a limit: the parent's limit is what is promised
        ("/b", 0, U64_MAX),  # no limit and no children: nothing stops it, the whole EPC
        ("/c", 0, 1 << 40),  # more than the EPC: at most the EPC
        ("/d", 0, U64_MAX),
        ("/d/zero", 0, 0),  # its children promise nothing
    )
    assert node_total(s) == 24 * MiB + 64 * MiB + 64 * MiB + 0


def test_sizes_fit_their_columns() -> None:
    sizes = [0, 1, 1023, 1024, 1000 * KiB, 1023 * KiB + 1000, 127 * MiB + 999 * KiB, 999 * MiB, 1023 * MiB]
    sizes += [2**40 - 1, 2**50 * 1023, U64_MAX // 2]
    assert all(len(short_size(n)) <= 9 for n in sizes), [short_size(n) for n in sizes]
    assert all(len(compact_size(n)) <= 6 for n in sizes), [compact_size(n) for n in sizes]
    assert short_size(1000 * KiB) == "0.98 MiB" and compact_size(12 * MiB + 100 * KiB) == "12.1M"

"""The cgroup tree reads at a glance (issue 13): names whole while there is room and cut in the
middle when they must be, bars in one column at any depth, headroom that siblings share, colour
by the share of the limit taken, the node total, leaves without arrows, a click that only
selects, keys to move about, the new cgroup selected after ``n``, and the flat view.

The bars' arithmetic is in test_tui_bars.py; here the names and columns as plain functions, the
drawing on an injected feed (no engine), ``n`` against a real engine.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import pytest
from textual.pilot import Pilot

from common.limits import U64_MAX
from playground.feed import FeedState
from playground.tui.app import EpcApp
from playground.tui.widgets.cgroup_tree import CgroupTree, abbreviate, plan_layout, shared_prefixes
from playground.tui.widgets.flat_view import FlatView
from wire.snapshot import CgroupRow
from workloads.client import EngineClient

from .engine_fixture import RunningEngine
from .test_tui_snapshots import (
    CONTAINER_1,
    CONTAINER_2,
    POD_A,
    POD_B,
    MiB,
    cgroup,
    feed_of,
    fixed_feed,
    kselftest_feed,
    kubernetes_feed,
)
from .tui_helpers import until

KiB = 1 << 10


def drawn(app: EpcApp) -> list[str]:
    """The tree's lines as the screen shows them (guides, arrows, labels; cropped to the panel)."""
    tree = app.cgroup_tree
    return [tree.render_line(y).text.rstrip() for y in range(min(tree.size.height, tree.last_line + 1))]


def line_of(app: EpcApp, name: str) -> str:
    found = [line for line in drawn(app) if re.search(rf"[ …]{re.escape(name)} ", line)]
    assert len(found) == 1, (name, drawn(app))
    return found[0]


def show(feed: FeedState, size: tuple[int, int], check: Callable[[EpcApp, Pilot[Any]], Any]) -> None:
    """Run the app on ``feed`` at ``size`` until the tree shows every cgroup, then ``check`` it."""

    async def scenario() -> None:
        app = EpcApp("ipc:///nowhere", feed=feed)
        async with app.run_test(size=size) as pilot:
            paths = [cg["path"] for cg in feed.snapshot["cgroups"]]
            await until(pilot, lambda: all(p in app.cgroup_tree.nodes for p in paths), "the tree")
            await pilot.pause(0.1)
            result = check(app, pilot)
            if asyncio.iscoroutine(result):
                await result
            await pilot.press("q")

    asyncio.run(scenario())


# -- names and columns (pure) ---------------------------------------------------------------


def test_a_name_is_cut_in_the_middle_and_what_it_shares_with_its_parent_or_siblings_goes_first() -> None:
    assert abbreviate("sgx_test_small_parent", 21) == "sgx_test_small_parent"
    assert abbreviate("sgx_test_small_parent", 13) == "sgx_te…parent"
    pod = POD_A.rsplit("/", 1)[1]
    assert abbreviate(pod, 23) == "kubepods-bu…ca5e2.slice"  # the brief's kubepods-bur…a5e2.slice, 23 wide
    prefixes = shared_prefixes([pod, POD_B.rsplit("/", 1)[1]], "kubepods-burstable.slice")
    assert prefixes[pod] == "kubepods-burstable-"  # systemd's parent name, kept up to a separator
    assert abbreviate(pod, 23, prefixes[pod]) == "…pod7c1f0d2…ca5e2.slice"  # the pod's uid shows
    containers = [c.rsplit("/", 1)[1] for c in (CONTAINER_1, CONTAINER_2)]
    assert shared_prefixes(containers, pod) == dict.fromkeys(containers, "cri-containerd-")  # shared by siblings
    assert shared_prefixes(["a-1", "a-2"], "x") == {"a-1": "", "a-2": ""}  # under 4 characters: kept


def test_the_layout_keeps_names_whole_while_they_fit_and_the_numbers_always() -> None:
    kselftest = [(1, "box"), (1, "sgx_kselftest"), (2, "sgx_test_large"), (2, "sgx_test_small_parent")]
    kselftest.append((3, "sgx_test_small"))
    wide = plan_layout(kselftest, 85)
    assert (wide.bar, wide.percent, wide.compact) == (16, True, False)
    assert all(wide.name_width(depth) >= len(name) for depth, name in kselftest)
    narrow = plan_layout(kselftest, 52)
    assert narrow.line <= 52 and all(narrow.name_width(depth) >= len(name) for depth, name in kselftest)
    deep = [(depth, "x" * 80) for depth in range(1, 6)]
    for room in (40, 52, 85, 200):
        layout = plan_layout(deep, room)
        assert layout.line <= max(room, layout.line) and layout.numbers(1, 2).strip()  # never without numbers
        assert layout.line <= room or layout.name_width(5, "x" * 80) == 4


# -- what is drawn (an injected feed) ---------------------------------------------------------


def test_the_kselftest_names_are_whole_at_160_columns_and_the_numbers_stay_at_100() -> None:
    """Review UX 1 and 7: the three siblings read `sgx_tes…` three times at any width; at 100
    columns the limits were cut off (`28`, `20`, `8.`)."""
    names = ("sgx_kselftest", "sgx_test_large", "sgx_test_larger", "sgx_test_small_parent", "sgx_test_small")

    def wide(app: EpcApp, pilot: Pilot[Any]) -> None:
        for name in names:
            assert re.search(rf" {name} +[█░▒┃]", line_of(app, name)), drawn(app)
        assert re.search(r"1 MiB / 1 MiB$", line_of(app, "sgx_test_large"))
        assert re.search(r"0 B / 256 KiB↑$", line_of(app, "sgx_test_small"))  # its limit is its parent's

    def narrow(app: EpcApp, pilot: Pilot[Any]) -> None:
        lines = drawn(app)
        assert len(lines) == 7
        for line in lines:  # every line's usage and limit, within the panel
            assert re.search(r" \d+(\.\d+)?[BKMG]i?B?( / |/)\d+(\.\d+)? ?[BKMG]i?B?↑?$", line), lines
            assert len(line) <= app.cgroup_tree.size.width
        assert re.search(r"1M/1M$", line_of(app, "sgx_test_large"))

    show(kselftest_feed(), (160, 45), wide)
    show(kselftest_feed(), (100, 30), narrow)


def test_kubernetes_names_are_cut_in_the_middle_only_when_they_must_be() -> None:
    pod_a, pod_b = POD_A.rsplit("/", 1)[1], POD_B.rsplit("/", 1)[1]

    def at_160(app: EpcApp, pilot: Pilot[Any]) -> None:
        lines = drawn(app)
        assert any(" kubepods-burstable.slice " in line for line in lines)  # short enough: whole
        assert not any(pod_a in line or pod_b in line for line in lines)  # 64 characters: cut
        assert any("…pod7c1f0d2e" in line and ".slice " in line for line in lines)  # the pods tell apart
        assert any("…pod0b2e9c41" in line and ".slice " in line for line in lines)
        assert any("…9f2c4e6a" in line and ".scope " in line for line in lines)
        assert app.cgroup_tree.size.width <= 160 * 0.55  # within its share of the screen

    def at_280(app: EpcApp, pilot: Pilot[Any]) -> None:
        lines = drawn(app)
        assert any(f" {pod_a} " in line for line in lines) and any(CONTAINER_1.rsplit("/", 1)[1] in x for x in lines)

    show(kubernetes_feed(), (160, 45), at_160)
    show(kubernetes_feed(), (280, 60), at_280)


def test_bars_start_in_one_column_at_every_depth() -> None:
    """Review UX 1: at depth 4 the bars shifted out of alignment."""
    paths = ["/", "/a", "/a/b", "/a/b/c", "/a/b/c/d", "/a/b/c/d/e", "/a/sibling", "/z", "/zero"]
    rows = [cgroup(p, 1 * MiB, None if p == "/" else 0 if p == "/zero" else 8 * MiB, 2 * MiB) for p in paths]

    def aligned(app: EpcApp, pilot: Pilot[Any]) -> None:
        lines = drawn(app)
        starts = {re.search(r"[█░▒┃]|limit 0", line).start() for line in lines}  # type: ignore[union-attr]
        assert len(lines) == len(paths) and len(starts) == 1, lines

    show(feed_of(64 * MiB, rows), (160, 45), aligned)
    show(feed_of(64 * MiB, rows), (100, 30), aligned)


def test_bars_are_green_yellow_red_by_the_share_taken_with_the_figure_beside() -> None:
    rows = [
        cgroup("/", 38 * MiB, None, 0),
        cgroup("/calm", 5 * MiB, 10 * MiB, 0),  # 50%
        cgroup("/busy", 8 * MiB, 10 * MiB, 0),  # 80%
        cgroup("/full", 10 * MiB, 10 * MiB, 0),  # 100%
        cgroup("/pods", 15 * MiB, 16 * MiB, 0),
        cgroup("/pods/web", 1 * MiB, U64_MAX, 0),  # little of its own, but its parent is nearly full
        cgroup("/none", 0, 0, 0),
    ]

    def colours(app: EpcApp, pilot: Pilot[Any]) -> None:
        theme = app.theme_variables
        expect = {"calm": "success", "busy": "warning", "full": "error", "web": "warning"}
        for name, variable in expect.items():
            label = app.cgroup_tree.nodes[f"/pods/{name}" if name == "web" else f"/{name}"].label
            assert hasattr(label, "spans")
            used = [span for span in label.spans if "█" in label.plain[span.start : span.end]]
            assert used and str(used[0].style.color.triplet.hex).lower() == theme[variable].lower()[:7], name  # type: ignore[union-attr]
            percent = re.search(r"\d+%", label.plain)
            assert percent is not None
            assert any(s.start <= percent.start() < s.end and s.style == used[0].style for s in label.spans)
        assert re.search(r" 50% ", line_of(app, "calm")) and re.search(r" 80% ", line_of(app, "busy"))
        assert re.search(r" 93% ", line_of(app, "web"))  # 15 of 16 MiB taken under /pods
        assert "limit 0" in line_of(app, "none") and "!" not in line_of(app, "none")  # not `!!!!`

    show(feed_of(64 * MiB, rows), (160, 45), colours)


def test_the_root_line_shows_the_node_total() -> None:
    def total(app: EpcApp, pilot: Pilot[Any]) -> None:
        assert drawn(app)[0].startswith("▼ / limits 192 MiB = 1.5x ")

    def narrow(app: EpcApp, pilot: Pilot[Any]) -> None:
        assert re.match(r"▼ / limits (192 MiB = )?1\.5x ", drawn(app)[0])

    show(kubernetes_feed(), (160, 45), total)
    show(kubernetes_feed(), (100, 30), narrow)


def test_a_leaf_has_no_arrow_and_a_parent_gets_one_with_its_first_child() -> None:
    """Review UX 15: every leaf showed a `▼`."""
    feed = fixed_feed()

    async def arrows(app: EpcApp, pilot: Pilot[Any]) -> None:
        assert "▼ pods " in line_of(app, "pods")
        assert "▼" not in line_of(app, "web") and "▼" not in line_of(app, "guests")
        bar_column = line_of(app, "web").index("█")
        feed.snapshot = feed.snapshot | {"cgroups": [*feed.snapshot["cgroups"], cgroup("/guests/vm1", 0, None, 0)]}
        await until(pilot, lambda: "/guests/vm1" in app.cgroup_tree.nodes, "the new cgroup")
        await until(pilot, lambda: "▼ guests" in line_of(app, "guests"), "its parent's arrow")
        assert "▼" not in line_of(app, "vm1") and line_of(app, "vm1").index("░") == bar_column
        feed.snapshot = feed.snapshot | {"cgroups": feed.snapshot["cgroups"][:-1]}
        await until(pilot, lambda: "/guests/vm1" not in app.cgroup_tree.nodes, "vm1 gone")
        await until(pilot, lambda: "▼" not in line_of(app, "guests"), "the arrow gone with the last child")

    show(feed, (160, 45), arrows)


def test_a_click_selects_without_toggling_and_a_click_on_the_arrow_toggles() -> None:
    """Review UX 15: a single click on a row toggled its collapse as well as selecting it."""

    async def clicks(app: EpcApp, pilot: Pilot[Any]) -> None:
        tree, pods = app.cgroup_tree, app.cgroup_tree.nodes["/pods"]
        line = drawn(app).index(line_of(app, "pods"))
        await pilot.click(CgroupTree, offset=(line_of(app, "pods").index("pods") + 2, line + 1))  # + the border
        await until(pilot, lambda: app.selected == "/pods", "/pods selected")
        await pilot.pause(0.1)
        assert pods.is_expanded and "/pods/web" in app.cgroup_tree.nodes
        await pilot.click(CgroupTree, offset=(line_of(app, "pods").index("▼") + 1, line + 1))
        await until(pilot, lambda: not pods.is_expanded, "/pods collapsed by its arrow")
        await pilot.press("enter")
        await until(pilot, lambda: pods.is_expanded, "enter expands")
        await pilot.press("space")
        await until(pilot, lambda: not pods.is_expanded, "space collapses")
        assert tree.cursor_node is pods

    show(fixed_feed(), (160, 45), clicks)


def test_keys_go_to_the_parent_and_expand_or_collapse_everything() -> None:
    async def keys(app: EpcApp, pilot: Pilot[Any]) -> None:
        tree, nodes = app.cgroup_tree, app.cgroup_tree.nodes
        tree.select_path("/pods/db")
        await until(pilot, lambda: app.selected == "/pods/db", "/pods/db selected")
        moves = (("left", "/pods"), ("h", "/"), ("down", "/pods"), ("down", "/pods/web"), ("backspace", "/pods"))
        for key, where in moves:
            await pilot.press(key)
            await until(pilot, lambda where=where: app.selected == where, f"{key}: {where}")  # type: ignore[misc]
        await pilot.press("minus")
        await until(pilot, lambda: not nodes["/pods"].is_expanded and nodes["/"].is_expanded, "all collapsed")
        assert len(drawn(app)) == 3 and app.selected == "/pods"
        await pilot.press("plus")
        await until(pilot, lambda: nodes["/pods"].is_expanded, "all expanded")
        assert len(drawn(app)) == 5
        await pilot.press("minus", "f")
        await pilot.press(*"db", "enter")  # find goes into a collapsed subtree
        await until(pilot, lambda: app.selected == "/pods/db" and nodes["/pods"].is_expanded, "/pods/db found")
        await pilot.press("left", "right")
        await until(pilot, lambda: app.selected == "/pods/web", "right: to the first child")

    show(fixed_feed(), (160, 45), keys)


def flat_rows(app: EpcApp) -> list[list[str]]:
    table = app.query_one(FlatView)
    return [[str(cell).strip() for cell in table.get_row_at(i)] for i in range(table.row_count)]


def test_the_flat_view_lists_every_cgroup_by_usage_and_follows_the_selection() -> None:
    """systemd-cgtop: one list sorted by usage, any column; the same cgroup selected across the toggle."""

    async def flat(app: EpcApp, pilot: Pilot[Any]) -> None:
        tree, view = app.cgroup_tree, app.query_one(FlatView)
        tree.select_path("/pods/db")
        await until(pilot, lambda: app.selected == "/pods/db", "/pods/db selected")
        await pilot.press("t")
        await until(pilot, lambda: view.display and not tree.display and view.row_count == 5, "the flat view")
        assert [row[0] for row in flat_rows(app)] == ["/", "/pods", "/pods/web", "/guests", "/pods/db"]
        assert flat_rows(app)[2] == ["/pods/web", "16 MiB", "24 MiB↑", "0 B", "100%"]
        assert flat_rows(app)[view.cursor_row][0] == "/pods/db" and app.focused is view
        await pilot.press("greater_than_sign")  # by limit, largest first
        await until(pilot, lambda: view.sort_key == "limit", "sorted by limit")
        assert [row[2] for row in flat_rows(app)] == ["64 MiB", "24 MiB", "24 MiB↑", "12 MiB", "8 MiB"]
        await pilot.press("greater_than_sign", "s")  # by headroom, then the other way: largest first
        await until(pilot, lambda: view.sort_key == "headroom" and view.descending, "by headroom, largest first")
        assert [row[0] for row in flat_rows(app)][:2] == ["/", "/guests"]
        assert flat_rows(app)[view.cursor_row][0] == "/pods/db"  # the cursor stayed on the same cgroup
        await pilot.press("less_than_sign", "less_than_sign")  # back to usage
        await until(pilot, lambda: view.sort_key == "usage" and view.descending, "by usage again")
        await pilot.press("up")
        await until(pilot, lambda: app.selected == "/guests", "the details follow the flat view's cursor")
        await pilot.press("t")
        await until(pilot, lambda: tree.display and not view.display, "the tree again")
        assert tree.cursor_node is tree.nodes["/guests"] and app.focused is tree

    show(fixed_feed(), (160, 45), flat)


def test_a_click_on_a_flat_view_header_sorts_by_it_and_again_the_other_way() -> None:
    async def header(app: EpcApp, pilot: Pilot[Any]) -> None:
        view = app.query_one(FlatView)
        await pilot.press("t")
        await until(pilot, lambda: view.display and view.row_count == 5, "the flat view")
        x = sum(column.get_render_width(view) for column in list(view.columns.values())[:1]) + 1  # "usage"
        await pilot.click(FlatView, offset=(x + 2, 1))  # inside its border
        await until(pilot, lambda: view.sort_key == "usage" and not view.descending, "usage, smallest first")
        assert flat_rows(app)[0][0] == "/pods/db"
        await pilot.click(FlatView, offset=(2, 1))
        await until(pilot, lambda: view.sort_key == "cgroup", "by path")
        assert [row[0] for row in flat_rows(app)] == sorted(row[0] for row in flat_rows(app))

    show(fixed_feed(), (160, 45), header)


def test_only_the_lines_whose_figures_changed_are_drawn_again() -> None:
    """show() runs 4 times a second: with 1,000 cgroups it formats only what changed; a room
    that moves less than a cell (the root's free EPC moving by pages) draws nothing; the same
    rows again (an idle engine) are not even looked at."""
    rows: list[CgroupRow] = [cgroup("/", 10 * MiB, None, 0), cgroup("/k", 10 * MiB, U64_MAX, 0)]
    rows += [cgroup(f"/k/c{i:03d}", 10 * KiB, U64_MAX if i % 2 else 1 * MiB, 0) for i in range(998)]
    feed = feed_of(128 * MiB, rows)

    async def relabels(app: EpcApp, pilot: Pilot[Any]) -> None:
        tree = app.cgroup_tree
        drawn_from = dict(tree.made_of)
        changed = [dict(row) for row in rows]
        changed[0]["misc_current"] += 4 * KiB  # the root and /k: one page more, under /k/c500
        changed[1]["misc_current"] += 4 * KiB
        changed[502]["misc_current"] += 4 * KiB
        feed.snapshot = feed.snapshot | {"cgroups": changed}
        await until(pilot, lambda: tree.made_of != drawn_from, "a refresh")
        assert {path for path in tree.made_of if tree.made_of[path] != drawn_from[path]} == {"/", "/k", "/k/c500"}
        # an idle engine: the feed keeps the rows no stats message changed; nothing is computed again
        assert tree.last is not None
        computed, shown = tree.last[1], feed.snapshot
        feed.snapshot = shown | {"t_ns": shown["t_ns"] + 250_000_000}  # a stats tick, the same rows
        await until(pilot, lambda: tree.last is not None and tree.last[0] is feed.snapshot, "a refresh")
        assert tree.last[1] is computed

    show(feed, (160, 45), relabels)


# -- with a real engine -------------------------------------------------------------------------


@pytest.mark.slow
def test_after_n_the_new_cgroup_is_selected(engine: RunningEngine) -> None:
    """Review UX 16: after `n` the cursor stayed on the parent, so `n` then `m` set the parent's limit."""
    with EngineClient(engine.endpoint) as client:
        client.mkdir("/pods")

    async def scenario() -> None:
        app = EpcApp(engine.endpoint)
        async with app.run_test(size=(160, 45)) as pilot:
            await until(pilot, lambda: "/pods" in app.cgroup_tree.nodes, "the tree")
            app.cgroup_tree.select_path("/pods")
            await until(pilot, lambda: app.selected == "/pods", "/pods selected")
            await pilot.press("n", *"web", "enter")
            await until(pilot, lambda: app.selected == "/pods/web", "the new cgroup selected")
            assert app.cgroup_tree.cursor_node is app.cgroup_tree.nodes["/pods/web"]
            await pilot.press("m", *"4M", "enter")  # the new cgroup's limit, not its parent's
            with EngineClient(engine.endpoint) as client:
                await until(pilot, lambda: client.read("/pods/web/misc.max") == "sgx_epc 4194304\n", "misc.max")
                assert client.read("/pods/misc.max") == "sgx_epc max\n"
            await pilot.press("q")

    asyncio.run(scenario())

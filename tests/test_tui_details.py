"""The details panel on an injected feed: human units by default and the kernel's text with u,
backing RAM next to the EPC figures, graphs that say own or subtree, and the subtree's reclaim
summed by the feed (the root's graph counts its descendants)."""

from __future__ import annotations

import asyncio
from typing import Any

from textual.widgets import Sparkline, Static

from playground.feed import FeedState
from playground.tui.app import EpcApp
from playground.tui.widgets.details import Details

from .test_tui_eventlog import SIZE, S, tick, until
from .test_tui_snapshots import fixed_feed


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_details_read_in_human_units_and_u_shows_the_kernels_text() -> None:
    async def scenario() -> tuple[str, str, str]:
        app = EpcApp("ipc:///nowhere", feed=fixed_feed())
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: "/pods/db" in app.cgroup_tree.nodes, "the tree")
            app.cgroup_tree.move_cursor(app.cgroup_tree.nodes["/pods/db"])
            details = app.query_one(Details)
            await until(pilot, lambda: "/pods/db" in details.shown, "/pods/db's details")
            human = details.shown
            await pilot.press("u")
            await until(pilot, lambda: "sgx_epc" in details.shown, "the raw text")
            raw = details.shown
            await pilot.press("u")
            await until(pilot, lambda: "sgx_epc" not in details.shown, "human units again")
            return human, raw, str(app.query_one("#details", Static).border_title)

    human, raw, title = run(scenario())
    assert "misc.current 8 MiB (2048 pages), peak 8 MiB" in human and "misc.max 8 MiB (2048 pages)" in human
    assert "memory.current 4 MiB of memory.max max (backing RAM)" in human  # next to the EPC figures
    assert "misc.current  sgx_epc 8388608" in raw and "memory.current 4194304" in raw
    assert "u: the kernel's text" in title


def test_the_subtree_reclaim_graph_sums_the_descendants_and_titles_say_own_or_subtree() -> None:
    snapshot = fixed_feed().snapshot
    feed = FeedState(snapshot)
    tick(feed, snapshot["t_ns"] + S // 4, reclaimed={"/pods/db": 32, "/pods/web": 16, "/guests": 5})
    tick(feed, snapshot["t_ns"] + S // 2, reclaimed={"/pods": 4})
    assert list(feed.reclaim_subtree["/"]) == [53, 4]
    assert list(feed.reclaim_subtree["/pods"]) == [48, 4]
    assert list(feed.reclaim_subtree["/pods/db"]) == [32, 0] == list(feed.reclaim["/pods/db"])
    assert list(feed.reclaim["/"]) == [0, 0]  # the root's own LRU gave nothing

    async def scenario() -> tuple[str, list[float], str]:
        app = EpcApp("ipc:///nowhere", feed=feed)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: "/pods/db" in app.cgroup_tree.nodes, "the tree")
            graph = app.query_one("#reclaim-history", Sparkline)
            await until(pilot, lambda: "subtree" in str(graph.border_title), "root's graph")
            root = (str(graph.border_title), list(graph.data or []))
            app.cgroup_tree.move_cursor(app.cgroup_tree.nodes["/pods/db"])
            await until(pilot, lambda: "(own LRU)" in str(graph.border_title), "/pods/db's graph")
            return root[0], root[1], str(graph.border_title)

    root_title, root_data, leaf_title = run(scenario())
    assert root_title == "pages reclaimed per tick (subtree), last 0.5 s: 0 to 53"
    assert root_data == [0, 53, 4]
    assert leaf_title.startswith("pages reclaimed per tick (own LRU)")

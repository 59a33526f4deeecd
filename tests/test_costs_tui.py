"""Emulated time in the TUI, on an injected feed: the workloads table's runtime and slowdown
columns, the workload detail's time line and the cgroup details' (docs/costs.md)."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from playground.feed import FeedState
from playground.tui.app import EpcApp
from playground.tui.config import TuiConfig
from playground.tui.widgets.details import details_text

from .test_tui_snapshots import fixed_feed
from .test_tui_workloads import SIZE, column, detail_text, focus_table, pids, table


def timed_feed() -> FeedState:
    """fixed_feed a second later, the db workload (4102) having paged: 20 ms of runtime, 8 ms of it paging;
    /pods/db's row summing it."""
    feed = fixed_feed()
    snap = copy.deepcopy(feed.snapshot)
    for w in snap["workloads"]:
        if w["pid"] == 4102:
            w["runtime_ns"], w["paging_ns"] = 20_000_000, 8_000_000
        elif w["pid"] == 4101:
            w["runtime_ns"], w["paging_ns"] = 3_000_000, 0
    for cg in snap["cgroups"]:
        if cg["path"] in ("/", "/pods", "/pods/db"):
            cg["runtime_ns"], cg["paging_ns"] = 20_000_000, 8_000_000
    snap["t_ns"] += 10**9
    feed.take_stats(snap)
    return feed


def test_the_workloads_table_shows_runtime_and_slowdown_and_sorts_by_slowdown() -> None:
    async def scenario() -> None:
        app = EpcApp("ipc:///nowhere", feed=timed_feed())
        async with app.run_test(size=(220, 45)) as pilot:
            t = await focus_table(pilot)
            cells = dict(zip(pids(app), zip(column(app, "runtime"), column(app, "slowdown"), strict=True), strict=True))
            assert cells[4102] == ("20.00 ms", "1.67x")  # 20 / (20 - 8)
            assert cells[4101] == ("3.00 ms", "1.00x")
            assert cells[4104] == ("-", "-")  # no time yet
            t.sort_on("slowdown", True)
            await pilot.pause()
            assert pids(app)[0] == 4102

    asyncio.run(scenario())


def test_the_config_can_leave_the_time_columns_out() -> None:
    async def scenario() -> None:
        app = EpcApp("ipc:///nowhere", feed=timed_feed(), config=TuiConfig(columns=("pid", "name", "slowdown")))
        async with app.run_test(size=SIZE) as pilot:
            await focus_table(pilot)
            assert [c.key.value for c in table(app).ordered_columns] == ["pid", "name", "slowdown"]

    asyncio.run(scenario())


def test_the_workload_detail_and_the_cgroup_details_give_the_time_and_slowdown() -> None:
    async def scenario() -> None:
        app = EpcApp("ipc:///nowhere", feed=timed_feed())
        async with app.run_test(size=SIZE) as pilot:
            text = await detail_text(pilot, 4102)
            assert "time     emulated 20.00 ms, paging 8.00 ms, slowdown 1.67x (against no limit)" in text

    asyncio.run(scenario())
    feed = timed_feed()
    rows: dict[str, Any] = {cg["path"]: cg for cg in feed.snapshot["cgroups"]}
    text = details_text(rows["/pods/db"], 64 << 20)
    assert "workloads' time: emulated 20.00 ms, paging 8.00 ms, slowdown 1.67x" in text
    assert "workloads' time" not in details_text(rows["/guests"], 64 << 20)

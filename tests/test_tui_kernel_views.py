"""The TUI shows what the kernel does (issue 13): the LRU view, the EPC frame map and step mode,
driven with Pilot against a real engine and a real workload."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Static

from playground.tui.app import EpcApp
from playground.tui.views.frames import FrameMap, FrameMapScreen, grouping
from playground.tui.views.lru import LruScreen
from workloads.client import EngineClient

from .engine_fixture import RunningEngine
from .tui_helpers import Notes, until

pytestmark = pytest.mark.slow
SIZE = (150, 40)


def holder(engine: RunningEngine, client: EngineClient, size: str = "256KiB") -> Any:
    """A workload in /p that built its enclave and holds it, its pages on /p's LRU."""
    client.mkdir("/p")
    process = engine.spawn("enclave", "--size", size, "--duration", "60", "--cgroup", "/p", "--name", "hold")
    deadline = time.monotonic() + 20
    while client.lru("/p", 0, 1)["size"] < 64:
        assert time.monotonic() < deadline, "the holder never filled /p's LRU"
        time.sleep(0.05)
    return process


async def select(pilot: Pilot[Any], app: EpcApp, path: str) -> None:
    await until(pilot, lambda: path in app.cgroup_tree.nodes, f"{path} in the tree")
    app.cgroup_tree.move_cursor(app.cgroup_tree.nodes[path])
    await until(pilot, lambda: app.selected == path, f"{path} selected")


def test_the_lru_view_lists_the_selected_cgroups_pages_head_first_with_the_next_batch(engine: RunningEngine) -> None:
    with EngineClient(engine.endpoint) as client:
        process = holder(engine, client)
        try:
            listing = client.lru("/p", 0, 4096)

            async def scenario() -> tuple[list[list[str]], str]:
                app = EpcApp(engine.endpoint)
                async with app.run_test(size=SIZE) as pilot:
                    await select(pilot, app, "/p")
                    await pilot.press("L")
                    await until(pilot, lambda: isinstance(app.screen, LruScreen), "the LRU view")
                    table = app.screen.query_one("#lru-pages", DataTable)
                    await until(pilot, lambda: table.row_count > 0, "the LRU's pages")
                    rows = [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
                    summary = str(app.screen.query_one("#lru-summary", Static).render())
                    await pilot.press("escape")
                    await until(pilot, lambda: app.screen is app.screen_stack[0], "back on the main screen")
                    await pilot.press("q")
                    return rows, summary

            rows, summary = asyncio.run(scenario())
        finally:
            process.kill()
            process.wait()
    # position frame enclave index kind young-in next-batch; head first, as the engine lists it
    assert [int(r[1]) for r in rows[:16]] == [page[0] for page in listing["pages"][:16]]
    assert all(r[6] for r in rows[:16]) and not any(r[6] for r in rows[16:]), rows[:18]
    assert all(r[4] in ("REG", "TCS") for r in rows)
    assert f"{listing['size']} pages on its LRU" in summary and "/p" in summary


def test_the_frame_map_shows_every_frame_and_whose_it_is(engine: RunningEngine) -> None:
    with EngineClient(engine.endpoint) as client:
        process = holder(engine, client)
        try:

            async def scenario() -> tuple[str, str, str]:
                app = EpcApp(engine.endpoint)
                async with app.run_test(size=SIZE) as pilot:
                    await until(pilot, lambda: app.feed is not None and "/" in app.feed.usage, "the feed")
                    await pilot.press("F")
                    await until(pilot, lambda: isinstance(app.screen, FrameMapScreen), "the frame map")
                    frame_map = app.screen.query_one(FrameMap)
                    await until(pilot, lambda: frame_map.cells is not None, "the frames")
                    by_cgroup = str(frame_map.render())
                    legend = str(app.screen.query_one("#frame-legend", Static).render())
                    await pilot.press("k")
                    await until(pilot, lambda: frame_map.by_kind, "by kind")
                    by_kind = str(frame_map.render())
                    await pilot.press("escape", "q")
                    return by_cgroup, legend, by_kind

            by_cgroup, legend, by_kind = asyncio.run(scenario())
        finally:
            process.kill()
            process.wait()
    cells = by_cgroup.replace("\n", "")
    capacity_frames = 16 * 1024 * 1024 // 4096  # the engine fixture's 16 MiB
    assert grouping(capacity_frames, 10**9) == 1 and len(cells) == capacity_frames  # a cell a frame: it fits
    used = len(cells) - cells.count("·")
    assert 64 < used <= 256 + 16, used  # the holder's enclave: its pages, SECS, VA
    assert "/p" in legend
    assert "S" in by_kind and "V" in by_kind and "█" in by_kind  # its SECS, a VA page, REG pages


def test_step_mode_freezes_the_engine_steps_a_workload_and_thaws(engine: RunningEngine) -> None:
    notes = Notes()
    with EngineClient(engine.endpoint) as client:
        client.mkdir("/s")

        async def scenario() -> tuple[list[int], str]:
            app = EpcApp(engine.endpoint)
            async with app.run_test(size=SIZE, message_hook=notes) as pilot:
                await until(pilot, lambda: app.feed is not None and "/" in app.feed.usage, "the feed")
                await pilot.press("z")
                await until(pilot, lambda: any(n.startswith("frozen") for n in notes), "frozen")
                status = app.query_one("#status", Static)
                await until(pilot, lambda: "FROZEN" in str(status.render()), "FROZEN in the status line")
                frozen_status = str(status.render())
                process = engine.spawn("enclave", "--size", "64KiB", "--cgroup", "/s", "--name", "stepped")
                try:
                    usage = [int(client.read("/s/misc.current").split()[1])]
                    for _ in range(300):  # its hello, ecreate, adds and faults, a step each, until it ends
                        said = len(notes)
                        await pilot.press("full_stop")
                        await until(pilot, lambda: len(notes) > said, "the step's note")  # noqa: B023
                        if "nothing ran" in notes[-1]:  # its next request is not there yet
                            await pilot.pause(0.05)
                        usage.append(int(client.read("/s/misc.current").split()[1]))
                        if process.poll() is not None:
                            break
                    assert process.wait(10) == 0  # it ended by steps alone
                    await pilot.press("z")
                    await until(pilot, lambda: any(n.startswith("thawed") for n in notes), "thawed")
                finally:
                    if process.poll() is None:
                        process.kill()
                        process.wait()
                await pilot.press("q")
                return usage, frozen_status

        usage, frozen_status = asyncio.run(scenario())
    assert usage[0] == 0 and max(usage) > 0, usage  # the enclave grew only by steps
    assert len(set(usage)) > 2, usage  # step by step, not all at once
    assert "FROZEN" in frozen_status
    assert any("nothing ran" in n or "Waiting:" in n for n in notes), notes

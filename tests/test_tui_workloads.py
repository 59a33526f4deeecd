"""The workloads table and a workload's detail: sort, filters, states and Enter, on an injected feed.

No engine here (fast): the feed is FeedState with fixed snapshots (tests/test_tui_snapshots.py's
fixed_feed and its helpers), advanced by hand with ``take_stats``.  The flows that talk to an
engine are in tests/test_tui_workloads_engine.py.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from typing import Any

import pytest
from rich.text import Text
from textual.pilot import Pilot

from common.costs import slowdown
from playground.feed import FeedState
from playground.tui.app import EpcApp
from playground.tui.widgets.workload_table import NAMES, WorkloadTable
from playground.tui.workload_screen import WorkloadLogs, WorkloadScreen
from playground.tui.workload_text import abbreviate, relative, state_text
from wire.snapshot import Snapshot, WorkloadRow

from .test_tui_snapshots import MiB, cgroup, fixed_feed, kselftest_feed, workload

SIZE = (160, 45)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def feed_of_six() -> FeedState:
    """fixed_feed's four workloads a second later, and two more: one stopped in /pods/web, one killed by
    SIGTERM in /jobs."""
    feed = fixed_feed()
    snap = copy.deepcopy(feed.snapshot)
    snap["cgroups"].append(cgroup("/jobs", 0, None, 0))
    stopped = workload(4099, "enclave", "idle", "/pods/web", 0, 700, 300, 2 * MiB, elrange=4 * MiB)
    stopped["state"] = "stopped"
    killed = workload(4105, "vm", "held", "/jobs", 5, 0, 0, 4 * MiB, reason="killed", exit_signal="SIGTERM")
    snap["workloads"] += [stopped, killed]
    for w in snap["workloads"]:  # a second on: faults per second 500, 3,000 and 10
        w["faults"] += {4101: 500, 4102: 3000, 4104: 10}.get(w["pid"], 0)
    snap["t_ns"] += 10**9
    feed.take_stats(snap)
    return feed


def table(app: EpcApp) -> WorkloadTable:
    return app.query_one(WorkloadTable)


def column(app: EpcApp, name: str) -> list[str]:
    """The cells of column ``name``, top to bottom, as text."""
    t = table(app)
    return [str(t.get_row_at(i)[NAMES.index(name)]) for i in range(t.row_count)]


def pids(app: EpcApp) -> list[int]:
    return [int(pid) for pid in column(app, "pid")]


def screen_text(app: EpcApp) -> str:
    return "\n".join("".join(segment.text for segment in strip) for strip in app.screen._compositor.render_strips())


def expected(feed: FeedState, name: str, descending: bool) -> list[int]:
    """The pids in the order sorting by ``name`` should give (ties by pid)."""
    rates = feed.fault_rate
    key: dict[str, Any] = {
        "pid": lambda w: w["pid"],
        "name": lambda w: w["name"].lower(),
        "state": lambda w: ({"running": 0, "stopped": 1, "stalled": 2, "exited": 3}[w["state"]], state_text(w, 0)),
        "resident": lambda w: w["resident"],
        "swapped": lambda w: w["swapped"],
        "cgroup": lambda w: w["cgroup"],
        "faults/s": lambda w: rates.get(w["pid"], 0.0),
        "size": lambda w: w["size"],
        "elrange": lambda w: w["elrange"],
        "kind": lambda w: w["role"],
        "runtime": lambda w: w.get("runtime_ns", 0),
        "slowdown": lambda w: slowdown(w.get("runtime_ns", 0), w.get("paging_ns", 0)),
    }
    rows = sorted(feed.snapshot["workloads"], key=lambda w: (key[name](w), w["pid"]), reverse=descending)
    return [w["pid"] for w in rows]


async def focus_table(pilot: Pilot[Any]) -> WorkloadTable:
    app = pilot.app
    assert isinstance(app, EpcApp)
    await pilot.pause()
    t = table(app)
    t.focus()
    await pilot.pause()
    return t


async def detail_text(pilot: Pilot[Any], pid: int) -> str:
    """Enter on workload ``pid``'s row: the text of its detail screen."""
    app = pilot.app
    assert isinstance(app, EpcApp)
    t = await focus_table(pilot)
    t.move_cursor(row=pids(app).index(pid))
    await pilot.press("enter")
    await pilot.pause()
    assert isinstance(app.screen, WorkloadScreen)
    return screen_text(app)


def test_greater_and_less_than_sort_by_each_column_in_turn_and_s_reverses() -> None:
    async def scenario() -> None:
        app = EpcApp("ipc:///nowhere", feed=feed_of_six())
        async with app.run_test(size=SIZE) as pilot:
            t = await focus_table(pilot)
            assert app.feed is not None
            assert pids(app) == expected(app.feed, "pid", False) and t.sort_by == "pid"
            for name in NAMES[1:]:
                await pilot.press("greater_than_sign")
                assert t.sort_by == name
                assert pids(app) == expected(app.feed, name, False), name
                assert f"sort {name} ▲" in str(t.border_title)
                await pilot.press("s")
                assert pids(app) == expected(app.feed, name, True), name
                assert f"sort {name} ▼" in str(t.border_title)
                assert str(t.ordered_columns[NAMES.index(name)].label) == f"{name} ▼"  # the header says it
                await pilot.press("s")
            await pilot.press("greater_than_sign")  # past the last: the first again
            assert t.sort_by == "pid"
            await pilot.press("less_than_sign")
            assert t.sort_by == NAMES[-1]

    run(scenario())


def header_offset(t: WorkloadTable, name: str) -> tuple[int, int]:
    """Where column ``name``'s header is, from the table's top left (inside its border)."""
    x = 1  # the border
    for col in t.ordered_columns:
        if col.key.value == name:
            return x + 2, 1
        x += col.get_render_width(t)
    raise AssertionError(name)


def test_a_click_on_a_header_sorts_by_that_column_and_a_second_click_reverses() -> None:
    async def scenario() -> None:
        app = EpcApp("ipc:///nowhere", feed=feed_of_six())
        async with app.run_test(size=SIZE) as pilot:
            t = await focus_table(pilot)
            assert app.feed is not None
            assert await pilot.click(WorkloadTable, offset=header_offset(t, "resident"))
            await pilot.pause()
            assert (t.sort_by, t.descending) == ("resident", True)  # a number: biggest first
            assert pids(app) == expected(app.feed, "resident", True)
            assert await pilot.click(WorkloadTable, offset=header_offset(t, "resident"))
            await pilot.pause()
            assert (t.sort_by, t.descending) == ("resident", False)
            assert pids(app) == expected(app.feed, "resident", False)
            assert await pilot.click(WorkloadTable, offset=header_offset(t, "name"))
            await pilot.pause()
            assert (t.sort_by, t.descending) == ("name", False)  # words: from a
            assert column(app, "name") == sorted(column(app, "name"))
            assert "name ▲" in screen_text(app)

    run(scenario())


def test_the_sort_holds_across_refreshes_and_the_cursor_stays_on_its_workload() -> None:
    async def scenario() -> None:
        feed = feed_of_six()
        app = EpcApp("ipc:///nowhere", feed=feed)
        async with app.run_test(size=SIZE) as pilot:
            t = await focus_table(pilot)
            t.sort_on("resident", descending=True)
            await pilot.pause()
            t.move_cursor(row=pids(app).index(4102))  # db
            await pilot.pause()
            before = pids(app)
            later: Snapshot = copy.deepcopy(feed.snapshot)
            for w in later["workloads"]:  # db falls to the bottom, batch climbs to the top
                w["resident"] = {4102: 1, 4104: 9000}.get(w["pid"], w["resident"])
            later["t_ns"] += 10**9
            feed.take_stats(later)
            app.refresh_view()
            await pilot.pause()
            assert pids(app) != before and pids(app) == expected(feed, "resident", True)
            assert pids(app)[0] == 4104 and t.sort_by == "resident" and t.descending
            selected = t.selected()
            assert selected is not None and selected["pid"] == 4102  # the cursor followed db
            assert t.cursor_row == pids(app).index(4102)
            t.action_reverse_sort()  # the sort key changes: the cursor still follows
            await pilot.pause()
            assert t.cursor_row == pids(app).index(4102)

    run(scenario())


def test_c_filters_to_the_selected_subtree_with_relative_cgroups_and_h_hides_exited() -> None:
    async def scenario() -> None:
        app = EpcApp("ipc:///nowhere", feed=feed_of_six())
        async with app.run_test(size=SIZE) as pilot:
            t = await focus_table(pilot)
            await pilot.press("c")  # the root is selected: every workload, in /
            assert sorted(pids(app)) == [4099, 4101, 4102, 4103, 4104, 4105]
            assert "workloads in /: 6" in str(t.border_title)
            app.cgroup_tree.focus()
            await pilot.press("down")  # /guests... no: the tree's pre-order is / /guests /jobs /pods
            await pilot.pause()
            node = app.cgroup_tree.nodes["/pods"]
            app.cgroup_tree.move_cursor(node)
            await pilot.pause()
            assert app.selected == "/pods"
            assert sorted(pids(app)) == [4099, 4101, 4102, 4104]  # followed the tree at once
            assert dict(zip(pids(app), column(app, "cgroup"), strict=True)) == {
                4099: "web",
                4101: "web",
                4102: "db",
                4104: "db",
            }
            assert "workloads in /pods: 4 of 6" in str(t.border_title)
            app.cgroup_tree.move_cursor(app.cgroup_tree.nodes["/pods/db"])
            await pilot.pause()
            assert sorted(pids(app)) == [4102, 4104] and column(app, "cgroup") == [".", "."]
            t.focus()
            await pilot.press("c")  # off: all again, absolute
            assert len(pids(app)) == 6 and "/pods/db" in column(app, "cgroup")
            await pilot.press("h")
            assert sorted(pids(app)) == [4099, 4101, 4102, 4104]  # guest (SIGBUS) and held (SIGTERM) hidden
            assert "4 of 6 · exited hidden" in str(t.border_title)
            assert "exited hidden" in screen_text(app)
            await pilot.press("h")
            assert len(pids(app)) == 6

    run(scenario())


def test_states_say_stopped_stalled_and_which_signal_killed_a_workload_and_failures_are_red() -> None:
    async def scenario() -> None:
        app = EpcApp("ipc:///nowhere", feed=feed_of_six())
        async with app.run_test(size=SIZE) as pilot:
            await focus_table(pilot)
            t = table(app)
            states = {pid: t.get_row_at(i)[NAMES.index("state")] for i, pid in enumerate(pids(app))}
            assert {pid: str(cell) for pid, cell in states.items()} == {
                4099: "stopped", 4101: "running", 4102: "running", 4103: "exited: SIGBUS",
                4104: "stalled 4s", 4105: "killed: SIGTERM",
            }  # fmt: skip
            assert isinstance(states[4103], Text) and "red" in str(states[4103].style)
            assert isinstance(states[4104], Text) and "red" in str(states[4104].style)
            assert isinstance(states[4099], Text) and "yellow" in str(states[4099].style)
            assert not isinstance(states[4105], Text)  # killed by someone: not a failure
            sizes = dict(zip(pids(app), zip(column(app, "size"), column(app, "elrange"), strict=True), strict=True))
            assert sizes[4102] == ("12 MiB", "16 MiB") and sizes[4103] == ("8 MiB", "8 MiB")
            text = screen_text(app)
            assert "killed: SIGTERM" in text and "stopped" in text

    run(scenario())


@pytest.mark.parametrize(
    ("row", "text"),
    [
        ({"reason": "killed", "exit_signal": "", "exit_code": 3}, "exited: code 3"),
        ({"reason": "killed", "exit_signal": "", "exit_code": None}, "exited: killed"),
        ({"reason": "OOM", "exit_signal": "SIGKILL", "exit_code": None}, "exited: OOM"),
        ({"reason": "ok", "exit_signal": "", "exit_code": 0}, "exited: ok"),
    ],
)
def test_how_an_exited_workload_ended_reads_in_words(row: dict[str, Any], text: str) -> None:
    w: WorkloadRow = workload(1, "enclave", "x", "/", 0, 0, 0, MiB, reason="killed") | row  # type: ignore[assignment]
    assert state_text(w, 0) == text


def test_long_cgroups_are_cut_in_the_middle_keeping_their_last_name() -> None:
    assert abbreviate("/pods/db", 12) == "/pods/db"
    assert abbreviate("/sgx_kselftest/sgx_test_small_parent/sgx_test_small", 24) == "/sgx_kse…/sgx_test_small"
    k8s = "/kubepods.slice/kubepods-burstable.slice/pod1234.slice/cri-containerd-0123456789abcdef.scope"
    cut = abbreviate(k8s, 20)
    assert len(cut) == 20 and cut.startswith("/kube") and cut.endswith("abcdef.scope") and "…" in cut
    assert relative("/pods/db/x", "/pods") == "db/x" and relative("/pods", "/pods") == "."
    assert relative("/pods/db", "/") == "/pods/db"


def test_enter_opens_the_workload_detail_with_its_plan_pages_log_and_events_and_escape_closes() -> None:
    async def scenario() -> None:
        app = EpcApp("ipc:///nowhere", feed=feed_of_six())
        async with app.run_test(size=SIZE) as pilot:
            t = await focus_table(pilot)
            said = "enclave %d starts in /guests"
            record = logging.LogRecord("epc.workload", logging.INFO, "", 0, said, (4103,), None)
            record.process = 4103
            app.workload_logs.emit(record)
            t.move_cursor(row=pids(app).index(4103))
            await pilot.press("enter")
            assert isinstance(app.screen, WorkloadScreen) and app.screen.pid == 4103
            await pilot.pause()
            text = screen_text(app)
            for said in (
                "vm guest", "pid 4103", "in /guests", "exited: SIGBUS",
                "died by SIGBUS", "8 MiB of guest EPC", "3 passes", "8 MiB of virtual EPC",
                "resident 0", "faults 2,048", "now 0/s",
                "enclave 4103 starts in /guests",  # its own log line
                "pid 4103 in /guests: SIGBUS", "4103 exited: SIGBUS",  # its events (describe()'s lines)
            ):  # fmt: skip
                assert said in text, said
            assert "batch (pid 4104)" not in text  # not another's events
            await pilot.press("escape")
            assert not isinstance(app.screen, WorkloadScreen)
            t.move_cursor(row=pids(app).index(4102))
            await pilot.press("enter")
            await pilot.pause()
            text = screen_text(app)
            assert "12 MiB of heap, random pattern, 3 passes" in text and "16 MiB (ECREATE" in text
            assert "not started by this TUI" in text
            assert "now 3,000/s" in text and "faults 133,000" in text

    run(scenario())


def test_the_workload_logs_keep_lines_by_pid_within_bounds() -> None:
    from playground.tui import workload_screen

    logs = WorkloadLogs()
    for pid in range(workload_screen.PIDS + 10):
        for i in range(3):
            record = logging.LogRecord("w", logging.INFO, "", 0, "line %d", (i,), None)
            record.process = pid
            logs.emit(record)
    assert logs.lines(0) is None  # the oldest pids went
    lines = logs.lines(workload_screen.PIDS + 9)
    assert lines is not None and [line.split(" ", 1)[1] for line in lines] == ["line 0", "line 1", "line 2"]


def test_a_resize_refits_the_cgroup_column_even_while_paused() -> None:
    """The cgroup column takes the width the others leave: after a resize it is as wide as in a
    TUI started at the new size, at once, not at the next snapshot (none comes while paused; the
    snapshot tests caught it fitted to a layout not yet settled)."""

    def cgroup_width(app: EpcApp) -> int:
        t = table(app)
        return t.columns[list(t.columns)[NAMES.index("cgroup")]].content_width

    async def scenario(size: tuple[int, int], resize: tuple[int, int] | None) -> int:
        app = EpcApp("ipc:///nowhere", feed=kselftest_feed())  # cgroups of up to 48 characters
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            await pilot.press("p")
            if resize is not None:
                await pilot.resize_terminal(*resize)
                await pilot.pause()
            return cgroup_width(app)

    small, wide = run(scenario((100, 30), None)), run(scenario((250, 45), None))
    assert small < wide, (small, wide)
    assert run(scenario((100, 30), (250, 45))) == wide
    assert run(scenario((250, 45), (100, 30))) == small

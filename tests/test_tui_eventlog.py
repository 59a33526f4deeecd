"""The event log on an injected feed (no engine): stamps, focus and keys, wrapping, pressure
folded per second and its reclaim trace, no duplicate lines, failures in red, the live filter
and n/N, what each event kind explains.  One test at the end drives a real engine: reclaim
batches from the pressure topic reach an open trace, and only while one is open."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Static

import engine.events
from playground.feed import FeedState
from playground.tui.app import EpcApp
from playground.tui.describe import DESCRIBE, EXPLAIN, STAMP_WIDTH, event_text, explain
from playground.tui.widgets.log_lines import LogLines
from wire.snapshot import Snapshot
from workloads.client import EngineClient

from .engine_fixture import RunningEngine
from .test_tui_snapshots import MiB, fixed_feed
from .tui_helpers import until

SIZE = (150, 40)
S = 10**9


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def lines_of(app: EpcApp) -> LogLines:
    return app.query_one(LogLines)


def drawn(app: EpcApp) -> list[str]:
    """The log's rows as drawn on the screen now."""
    lines = lines_of(app)
    return ["".join(segment.text for segment in lines.render_line(y)).rstrip() for y in range(lines.size.height)]


def logical(rows: list[str]) -> list[str]:
    """The drawn rows with each wrapped line joined again (its rows after the first have no stamp)."""
    joined: list[str] = []
    for row in rows:
        if joined and row and not row[:STAMP_WIDTH].strip():
            joined[-1] += " " + row.strip()
        else:
            joined.append(row)
    return joined


def tick(
    feed: FeedState, t_ns: int, reclaimed: dict[str, int] | None = None, hits: dict[str, int] | None = None
) -> None:
    """A stats message at ``t_ns``: the cgroups named reclaimed (and hit their limit) this much more."""
    before = feed.snapshot
    after: Snapshot = before | {"t_ns": t_ns}  # type: ignore[assignment]
    after["cgroups"] = [
        cg
        | {
            "reclaimed": cg["reclaimed"] + (reclaimed or {}).get(cg["path"], 0),
            "misc_events_local": cg["misc_events_local"] + (hits or {}).get(cg["path"], 0),
        }
        for cg in before["cgroups"]
    ]  # type: ignore[misc]
    feed.take_stats(after)


def batch(t_ns: int, cgroup: str = "/pods/db", written: int = 16) -> dict[str, Any]:
    walk = {"walk_root": "/pods", "next_cg": "/pods/web", "stop": ""}
    done = {"scanned": 16, "rotated": 16 - written, "backing_failed": 0, "written": written}
    return {"kind": "reclaim", "t_ns": t_ns, "cgroup": cgroup, "context": "sync", **done, **walk}


async def focus_log(pilot: Pilot[Any]) -> None:
    """Tab until the log has the focus (it must be reachable by Tab)."""
    app = pilot.app
    for _ in range(6):
        if isinstance(app.focused, LogLines):
            return
        await pilot.press("tab")
    assert isinstance(app.focused, LogLines), f"tab never reached the log: {app.focused}"


def select(app: EpcApp, text: str) -> None:
    """Put the log's cursor on the newest shown line containing ``text``."""
    lines = lines_of(app)
    index = max(i for i, entry in enumerate(lines.shown) if text in entry.line())
    lines.move_to(index)


# -- stamps, focus, keys, wrapping ------------------------------------------------------------


def test_every_line_is_stamped_with_the_engine_clock_as_dmesg_does() -> None:
    async def scenario() -> list[str]:
        app = EpcApp("ipc:///nowhere", feed=fixed_feed())
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: len(lines_of(app).entries) >= 6, "the fixed events")
            app.scenario_line("ok 1 - step 1: mkdir /t")  # no engine event: stamped with the engine's time now
            await pilot.pause(0.1)
            return drawn(app)

    rows = run(scenario())
    assert any(row.startswith("[    4.250] sigbus          guest (pid 4103)") for row in rows), rows
    assert any(row.startswith("[    0.120] mkdir           /pods") for row in rows), rows
    [ktap] = [row for row in rows if " ktap " in row]
    assert 6.0 <= float(ktap[1:10]) < 60, ktap  # the engine's clock of the newest stats (6 s), and since


def test_tab_reaches_the_log_and_its_keys_move_the_cursor_end_follows_again() -> None:
    feed = fixed_feed()

    async def scenario() -> None:
        app = EpcApp("ipc:///nowhere", feed=feed)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: len(lines_of(app).entries) >= 6, "the fixed events")
            await focus_log(pilot)
            lines = lines_of(app)
            last = len(lines.shown) - 1
            assert lines.follow and lines.cursor == last
            await pilot.press("up", "up")
            assert lines.cursor == last - 2 and not lines.follow
            held = lines.selected()
            feed.take_events([{"kind": "mkdir", "cgroup": "/new", "seq": 9, "t_ns": 7 * S}])
            await until(pilot, lambda: "/new" in lines.shown[-1].text, "the new line")
            assert lines.selected() is held  # not following: the cursor stays on its line
            assert "3 newer below" in str(app.event_log.border_subtitle)  # the two passed, and the new one
            await pilot.press("home")
            assert lines.cursor == 0
            await pilot.press("pagedown")
            assert lines.cursor > 0
            await pilot.press("end")
            assert lines.follow and lines.cursor == len(lines.shown) - 1
            feed.take_events([{"kind": "mkdir", "cgroup": "/newer", "seq": 10, "t_ns": 8 * S}])
            await until(pilot, lambda: "/newer" in lines.shown[-1].text, "the newer line")
            assert lines.cursor == len(lines.shown) - 1  # following again
            assert not app.event_log.border_subtitle

    run(scenario())


def test_a_log_scrolled_up_by_the_mouse_stays_there_as_lines_come() -> None:
    feed = fixed_feed()
    feed.take_events([{"kind": "mkdir", "cgroup": f"/c{i}", "seq": 10 + i, "t_ns": 7 * S} for i in range(40)])

    async def scenario() -> tuple[int, int, bool, list[str]]:
        app = EpcApp("ipc:///nowhere", feed=feed)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: len(lines_of(app).entries) >= 46, "the lines")
            lines = lines_of(app)
            await pilot.pause(0.1)
            assert lines.follow and lines.is_vertical_scroll_end
            lines.scroll_to(y=3, animate=False, immediate=True)  # as the wheel or the scrollbar does
            feed.take_events([{"kind": "mkdir", "cgroup": "/late", "seq": 99, "t_ns": 8 * S}])
            await until(pilot, lambda: "/late" in lines.shown[-1].text, "the new line")
            await pilot.pause(0.3)  # a few refreshes: none may scroll it back
            return lines.scroll_offset.y, lines.max_scroll_y, lines.follow, drawn(app)

    y, bottom, follow, rows = run(scenario())
    assert (y, follow) == (3, False) and bottom > 3
    assert not any("/late" in row for row in rows)


def test_long_lines_wrap_in_their_column_and_nothing_scrolls_sideways() -> None:
    feed = fixed_feed()
    value = "sgx_epc " + "9" * 19
    path = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0f1e2d3c4b5a.slice/misc.max"

    async def scenario() -> tuple[list[str], int, bool]:
        app = EpcApp("ipc:///nowhere", feed=feed)
        async with app.run_test(size=(130, 40)) as pilot:  # room for the whole wrapped line
            feed.take_events([{"kind": "write", "path": path, "value": value, "seq": 9, "t_ns": 7 * S}])
            await until(pilot, lambda: any("kubepods" in entry.text for entry in lines_of(app).entries), "the write")
            await pilot.pause(0.1)
            lines = lines_of(app)
            width = lines.scrollable_content_region.width
            return drawn(app), width, lines.virtual_size.width <= width and not lines.show_horizontal_scrollbar

    rows, width, no_sideways = run(scenario())
    assert all(len(row) <= width for row in rows) and no_sideways
    start = next(i for i, row in enumerate(rows) if row.startswith("[    7.000] write"))
    wrapped = [rows[start]]
    for row in rows[start + 1 :]:
        if row[:STAMP_WIDTH].strip():
            break
        wrapped.append(row)
    assert len(wrapped) > 1  # it did not fit: the rest is on the rows under it, under the stamp's column
    assert path in "".join(row.strip() for row in wrapped), wrapped
    assert value.replace(" ", "") in "".join(wrapped).replace(" ", ""), wrapped


# -- pressure folded, and its trace ----------------------------------------------------------


def test_pressure_is_one_line_per_cgroup_per_second_with_the_sums() -> None:
    feed = fixed_feed()  # its stats at 6.0 s: /pods hit its limit once, /pods/db gave up 32 pages

    async def scenario() -> list[str]:
        app = EpcApp("ipc:///nowhere", feed=feed)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: len(lines_of(app).entries) >= 6, "the fixed events")
            for quarter in (1, 2, 3):  # three more ticks within the same second
                tick(feed, 6 * S + quarter * S // 4, reclaimed={"/pods/db": 16}, hits={"/pods": 2})
            tick(feed, 7 * S, reclaimed={"/pods/db": 8})  # the next second
            await until(pilot, lambda: sum(e.kind == "pressure" for e in lines_of(app).entries) == 3, "3 lines")
            return app.event_log.texts()

    texts = run(scenario())
    pressure = [line for line in texts if line.startswith("pressure")]
    assert pressure == [
        "pressure        /pods: limit hit x7",
        "pressure        /pods/db: 80 pages reclaimed",
        "pressure        /pods/db: 8 pages reclaimed",
    ], pressure


def test_enter_opens_a_pressure_lines_reclaim_trace_and_the_feed_receives_batches_only_meanwhile() -> None:
    feed = fixed_feed()

    async def scenario() -> tuple[list[str], list[str], tuple[bool, int], list[str], bool, bool]:
        app = EpcApp("ipc:///nowhere", feed=feed)
        async with app.run_test(size=(150, 60)) as pilot:  # room for the trace under the line
            await until(pilot, lambda: len(lines_of(app).entries) >= 6, "the fixed events")
            assert not feed.tracing  # nobody looks: no batch is received
            tick(feed, 7 * S)  # the engine's clock is in the next second: /pods/db's line of 6 s is over
            await until(pilot, lambda: app.event_log.now_ns() >= 7 * S, "the clock at 7 s")
            await focus_log(pilot)
            lines = lines_of(app)
            select(app, "/pods/db: 32 pages")
            await pilot.press("enter")
            opened_tracing = feed.tracing
            old = drawn(app)
            feed.take_trace([batch(7 * S + 100), batch(7 * S + 200, written=12), batch(7 * S + 300, "/pods/web")])
            tick(feed, 7 * S + S // 4, reclaimed={"/pods/db": 28})
            await until(pilot, lambda: "28 pages" in lines.shown[-1].text, "the next second's line")
            await pilot.press("end")
            await pilot.pause(0.1)
            rows = drawn(app)  # it opened by itself, with its batches
            feed.take_trace([batch(8 * S + 100)])
            tick(feed, 8 * S + S // 4, reclaimed={"/pods/db": 16})
            await until(pilot, lambda: "16 pages" in lines.shown[-1].text, "a later line")
            later = lines.shown[-1]
            later_state = (later.expanded, later.trace.count if later.trace else -1)
            await pilot.pause(0.1)
            later_rows = drawn(app)
            for text in ("28 pages", "/pods/db: 32 pages"):  # close both
                select(app, text)
                await pilot.press("enter")
            return old, rows, later_state, later_rows, opened_tracing, feed.tracing

    old, rows, later_state, later_rows, opened_tracing, tracing_at_end = run(scenario())
    assert opened_tracing and not tracing_at_end
    assert any("no trace of this second" in row for row in old), old  # a second before the trace was asked for
    trace = [row for row in logical(rows) if "├ reclaim" in row or "└ reclaim" in row]
    assert len(trace) == 2, rows  # /pods/db's two batches; /pods/web's are not on its LRU
    assert "/pods/db's LRU, sync walk from /pods: scanned 16, rotated 4, written 12; next /pods/web" in trace[1]
    assert any("▾ /pods/db: 28 pages reclaimed" in row for row in rows), rows
    assert later_state == (False, 1)  # later lines have their batches, closed: ▸
    assert any("▸ /pods/db: 16 pages reclaimed" in row for row in later_rows), later_rows


# -- lines: no duplicates, names, failures ---------------------------------------------------


def test_no_line_says_the_same_twice_and_workloads_are_named_not_enclave_ids() -> None:
    feed = fixed_feed()
    feed.take_events(
        [
            {"kind": "ecreate", "enclave": 7, "pid": 4102, "size_bytes": 16 * MiB, "seq": 10, "t_ns": 7 * S},
            {"kind": "secs_writeback", "enclave": 7, "cgroup": "/pods/db", "seq": 11, "t_ns": 7 * S},
            {
                "kind": "release",
                "enclave": 7,
                "pid": 4102,
                "pages_freed": 2048,
                "backing_bytes": MiB,
                "seq": 12,
                "t_ns": 8 * S,
            },
            {"kind": "workload_exit", "pid": 4102, "name": "db", "reason": "ok", "seq": 13, "t_ns": 8 * S},
        ]
    )

    def record(message: str, pid: int) -> logging.LogRecord:
        made = logging.LogRecord("epc.workload", logging.INFO, __file__, 1, message, None, None)
        made.processName, made.process = "enclave", pid
        return made

    async def scenario() -> list[str]:
        app = EpcApp("ipc:///nowhere", feed=feed)
        app.logs.lines += [record("enclave 4102 starts in /pods/db", 4102), record("enclave 4102 exits: ok", 4102),
                           record("enclave 4102 exits: ENOMEM", 4102), record("a line of its own", 4102)]  # fmt: skip
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: any("a line of its own" in e.text for e in lines_of(app).entries), "the logs")
            return [entry.line() for entry in lines_of(app).entries]

    lines = run(scenario())
    assert "[    0.120] mkdir           /pods" in lines  # the kind once
    assert "[    7.000] secs_writeback  SECS of db's enclave (pid 4102) in /pods/db written out" in lines
    assert any(line.endswith("release         db (pid 4102)'s enclave released: 2048 pages and 1 MiB of backing freed")
               for line in lines)  # fmt: skip
    assert not any("enclave 7" in line for line in lines)
    assert sum("exit" in line for line in lines) == 2, lines  # guest's and db's workload_exit, not their logs
    [own] = [line for line in lines if "a line of its own" in line]
    assert own[12:].startswith("log             enclave[4102] a line of its own")  # in the columns of the others


def test_failures_are_red_and_say_what_failed() -> None:
    feed = fixed_feed()
    feed.take_events(
        [
            {"kind": "enomem", "pid": 4101, "cgroup": "/pods/web", "op": "ECREATE", "seq": 10, "t_ns": 7 * S},
            {"kind": "oom_kill", "cgroup": "/pods", "pid": 4101, "memory_bytes": MiB, "seq": 11, "t_ns": 7 * S},
            {"kind": "workload_exit", "pid": 4101, "name": "web", "reason": "ok", "seq": 12, "t_ns": 7 * S},
        ]
    )

    async def scenario() -> dict[str, tuple[str, bool]]:
        app = EpcApp("ipc:///nowhere", feed=feed)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: len(lines_of(app).entries) >= 9, "the events")
            lines = lines_of(app)
            red = lines.get_component_rich_style("log--failure").color
            drawn_red = {}
            for entry in lines.entries:
                strips = lines._strips(entry, lines.scrollable_content_region.width)
                text = "".join(segment.text for segment in strips[0])
                drawn_red[entry.kind + " " + entry.text] = (
                    text,
                    any(s.style and s.style.color == red for s in strips[0]),
                )
            return drawn_red

    drawn_red = run(scenario())
    failures = {line: red for line, (_, red) in drawn_red.items() if red}
    assert set(failures) == {
        "sigbus guest (pid 4103) in /guests: SIGBUS on fault (ENOMEM)",
        "workload_exit guest (pid 4103) exited: SIGBUS",
        "stall batch (pid 4104) in /pods/db: access stalls, no reclaim can help",
        "enomem web (pid 4101) in /pods/web: ECREATE failed with ENOMEM",
        "oom_kill /pods: OOM killer picked web (pid 4101), 1 MiB of backing",
    }, failures
    assert not drawn_red["workload_exit web (pid 4101) exited: ok"][1]


# -- filter and n/N --------------------------------------------------------------------------


def test_slash_filters_as_you_type_ignoring_case_commas_mean_or_enter_keeps_esc_clears() -> None:
    async def scenario() -> dict[str, Any]:
        app = EpcApp("ipc:///nowhere", feed=fixed_feed())
        seen: dict[str, Any] = {}
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: len(lines_of(app).entries) >= 6, "the fixed events")
            await pilot.press("slash")
            await until(pilot, lambda: app.focused is not None and app.focused.id == "event-filter", "the filter input")
            await pilot.press(*"sig")
            seen["sig"] = app.event_log.texts()
            await pilot.press(*"BUS")
            seen["sigBUS"] = app.event_log.texts()
            await pilot.press("escape")
            seen["esc"] = (app.event_log.filter, len(app.event_log.texts()), app.focused)
            await pilot.press("slash", *"mkdir, STALL", "enter")
            seen["or"] = app.event_log.texts()
            seen["enter"] = (app.event_log.filter, app.focused, str(app.event_log.border_title))
            await pilot.press("escape")  # on the log: the filter goes
            seen["esc on the log"] = (app.event_log.filter, str(app.event_log.border_title))
            return seen

    seen = run(scenario())
    assert [line.split()[0] for line in seen["sigBUS"]] == ["sigbus", "workload_exit"]  # "exited: SIGBUS" too
    assert len(seen["sig"]) >= len(seen["sigBUS"])
    assert seen["esc"][0] == "" and seen["esc"][1] >= 6 and isinstance(seen["esc"][2], LogLines)
    assert [line.split()[0] for line in seen["or"]] == ["mkdir", "stall"]
    assert seen["enter"][0] == "mkdir, STALL" and isinstance(seen["enter"][1], LogLines)
    assert "events matching 'mkdir, STALL': 2 of" in seen["enter"][2]
    assert seen["esc on the log"] == ("", "events")


def test_n_and_shift_n_jump_between_matches_of_the_last_filter_in_the_whole_log() -> None:
    async def scenario() -> list[str]:
        app = EpcApp("ipc:///nowhere", feed=fixed_feed())
        visited = []
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: len(lines_of(app).entries) >= 6, "the fixed events")
            await pilot.press("slash", *"GUEST", "enter")  # kept: two lines shown
            assert len(app.event_log.texts()) == 2
            lines = lines_of(app)
            await pilot.press("home")
            for key in ("n", "n", "N"):
                await pilot.press(key)
                entry = lines.selected()
                assert entry is not None
                visited.append(f"{entry.kind} {len(app.event_log.texts())}")
            return visited

    # n clears the filter in place: the matches are seen among every line; it wraps around
    assert run(scenario()) == ["workload_exit 7", "sigbus 7", "workload_exit 7"]


# -- explain this event ----------------------------------------------------------------------


def event_classes() -> Iterator[type[engine.events.Event]]:
    todo = list(engine.events.Event.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        yield cls


def sample(cls: type[engine.events.Event]) -> dict[str, Any]:
    """An event of this class with plausible values, as the wire carries it."""
    values = {"int": 3, "str": "/a", "bool": True}
    fields = {f.name: values[str(f.type)] for f in dataclasses.fields(cls)}
    return {"kind": cls.kind, **fields, "seq": 1}


DISPLAY_KINDS = {
    "pressure": {"kind": "pressure", "t_ns": 0, "cgroup": "/a", "hits": 2, "reclaimed": 16},
    "malformed": {"kind": "malformed", "topic": "stats", "error": "ValueError: bad"},
}


def test_every_event_kind_has_a_line_and_an_explanation_naming_what_the_kernel_does() -> None:
    events = [sample(cls) for cls in event_classes()] + list(DISPLAY_KINDS.values())
    assert len(events) > 15
    for event in events:
        kind = event["kind"]
        assert kind in DESCRIBE and kind in EXPLAIN, kind
        text, said = event_text(event), explain(event)
        assert "=" not in text, (kind, text)  # not the fallback that lists the fields
        assert "Mirrors " in said or "No kernel counterpart" in said, (kind, said)


def test_the_pane_under_the_log_explains_the_selected_line_while_the_log_has_focus() -> None:
    feed = fixed_feed()
    feed.take_trace([])

    async def scenario() -> tuple[str, str, bool]:
        app = EpcApp("ipc:///nowhere", feed=feed)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: len(lines_of(app).entries) >= 6, "the fixed events")
            pane = app.query_one("#event-explain", Static)
            assert not pane.display  # the log has no focus: no pane
            await focus_log(pilot)
            select(app, "SIGBUS on fault")
            await until(pilot, lambda: "sgx_vma_fault" in str(pane.render()), "the sigbus explanation")
            sigbus = str(pane.render())
            select(app, "/pods/db: 32 pages")
            await until(pilot, lambda: "sgx_reclaim_pages" in str(pane.render()), "the pressure explanation")
            pressure = str(pane.render())
            await pilot.press("shift+tab")
            await pilot.pause(0.1)
            return sigbus, pressure, pane.display

    sigbus, pressure, shown_after = run(scenario())
    assert sigbus.startswith("A fault of guest (pid 4103) in /guests (fault) could not get an EPC page (ENOMEM)")
    assert "Mirrors sgx_vma_fault()" in sigbus
    assert "gave up 32 pages from its own LRU" in pressure and "Enter: its reclaim trace." in pressure
    assert not shown_after


# -- a real engine: the trace ----------------------------------------------------------------


@pytest.mark.slow
def test_reclaim_batches_from_the_pressure_topic_reach_an_open_trace(engine: RunningEngine) -> None:
    with EngineClient(engine.endpoint) as client:
        client.mkdir("/tight")
        client.write("/tight/misc.max", "sgx_epc 1048576")  # 1 MiB for a 4 MiB heap: it reclaims all along
    worker = engine.spawn("enclave", "--size", "4MiB", "--duration", "60", "--cgroup", "/tight", "--name", "churn")

    async def scenario() -> tuple[list[str], int, int]:
        app = EpcApp(engine.endpoint)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.feed is not None and "/" in app.feed.usage, "the first stats")
            lines = lines_of(app)
            assert app.feed is not None and not app.feed.tracing
            await until(pilot, lambda: any(e.text.startswith("/tight:") for e in lines.entries), "/tight's pressure")
            await focus_log(pilot)
            select(app, "/tight:")
            await pilot.press("enter")  # from now on the feed receives the batches
            assert app.feed.tracing

            def traced() -> bool:  # a later line of /tight with its batches under it
                return any(e.trace is not None and e.trace.count for e in lines.entries if e.text.startswith("/tight:"))

            await until(pilot, traced, "a /tight line with its reclaim batches", timeout=60)  # slow under CI load
            entry = next(e for e in reversed(lines.entries) if e.trace is not None and e.trace.count)
            lines.move_to(lines.shown.index(entry))
            await pilot.press("enter")
            await pilot.pause(0.1)
            rows = drawn(app)
            for opened in [e for e in lines.entries if e.expanded]:  # close every trace: the feed stops
                lines.move_to(lines.shown.index(opened))
                await pilot.press("enter")
            assert not app.feed.tracing
            received = app.feed.trace_received
            stats = app.feed.snapshot["stats_seq"]
            await until(pilot, lambda: app.feed is not None and app.feed.snapshot["stats_seq"] >= stats + 4, "4 stats")
            return rows, received, app.feed.trace_received

    try:
        rows, received, later = run(scenario())
    finally:
        worker.kill()
        worker.wait()
    assert any("reclaim" in row and "/tight's LRU" in row and "scanned" in row for row in rows), rows
    assert received > 0
    # once closed, batches that were on their way may still come, but no more are asked for
    assert later - received < 256, (received, later)

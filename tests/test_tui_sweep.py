"""The TUI's sweep (w): the form, a real sweep in a worker with its curve, escape, the files it writes."""

from __future__ import annotations

import asyncio
import multiprocessing
from pathlib import Path

import psutil
from textual.widgets import Input, Static

from playground.scenario.load import load_scenario
from playground.scenarios import resolve
from playground.tui.app import EpcApp
from playground.tui.screens.sweep import SweepFormScreen, SweepScreen
from playground.tui.sweep_text import RECOMMENDED, default_path, default_range
from tests.test_tui_snapshots import fixed_feed
from tests.tui_helpers import Notes, until


def feed_app() -> EpcApp:
    """A TUI on fixed data: a sweep runs in process and needs no engine."""
    return EpcApp("ipc:///nowhere", feed=fixed_feed())


def fill(screen: SweepFormScreen, **fields: str) -> None:
    for name, value in fields.items():
        screen.query_one(f"#{name}", Input).value = value


def text_of(screen: object, selector: str) -> str:
    return str(screen.query_one(selector, Static).content)  # type: ignore[attr-defined]


def test_the_form_proposes_the_scenarios_limit_and_a_range_up_to_four_times_it() -> None:
    sqlite = load_scenario(resolve("trace-sqlite"))
    assert default_path(sqlite, "/") == "pod/misc.max"  # the first cgroup with a misc.max write
    assert default_range(sqlite, "pod/misc.max") == "64KiB..1MiB/16"  # its 256 KiB, times 4, in 16 points
    nested = load_scenario(resolve("nested-limits"))
    assert default_path(nested, "/t/parent/child") == "t/parent/child/misc.max"  # the selected one it makes
    assert default_path(nested, "/pods/db") == "t/parent/misc.max"  # not one it makes
    assert default_range(nested, "t/parent/misc.max") == "512KiB..8MiB/16"  # capacity/8 = 2 MiB, times 4


def test_w_sweeps_a_limit_in_a_worker_and_draws_the_curve_with_the_recommendation(tmp_path: Path) -> None:
    async def run() -> None:
        notes = Notes()
        app = feed_app()
        app.screenshot_dir = str(tmp_path)
        async with app.run_test(size=(150, 40), message_hook=notes) as pilot:
            await pilot.press("w")
            await until(pilot, lambda: isinstance(app.screen, SweepFormScreen), "the sweep form")
            form = app.screen
            assert isinstance(form, SweepFormScreen)
            assert form.query_one("#scenario", Input).value == "trace-sqlite"  # nothing ran yet: the default
            fill(form, scenario="nested-limits")
            await pilot.pause()
            assert form.query_one("#path", Input).value == "t/parent/misc.max"  # refilled for the new scenario
            fill(form, range="512KiB..4MiB/4", budget="150%")
            form.query_one("#budget", Input).focus()
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, SweepScreen), "the sweep's screen")
            screen = app.screen
            assert isinstance(screen, SweepScreen)
            await until(pilot, lambda: screen.state != "running", "the sweep to end", timeout=120)
            assert screen.state == "done"
            assert "4 points" in text_of(screen, "#sweep-progress")
            curve = text_of(screen, "#sweep-curve").splitlines()
            assert curve[0].split()[:2] == ["t/parent/misc.max", "slowdown"]
            assert [line.split()[0] + " " + line.split()[1] for line in curve[1:]] == [
                "512 KiB", "1.7 MiB", "2.8 MiB", "4 MiB",
            ]  # fmt: skip
            assert "█" in curve[1] and curve[2].endswith("◆ knee")  # the bar, the knee
            assert curve[4].endswith(RECOMMENDED)  # only the largest ends as the largest: guest ok
            summary = text_of(screen, "#sweep-summary")
            assert "recommendation: t/parent/misc.max = 4194304 bytes (4 MiB)" in summary
            assert 'pod resources: limits: sgx.intel.com/epc: "4Mi"' in summary
            await pilot.press("w")
            await until(pilot, lambda: any(n.startswith("written: ") for n in notes), "the files written")
            csv = next(tmp_path.glob("sweep-nested limits-*.csv"))
            assert csv.read_text().splitlines()[0].startswith("point,t/parent/misc.max,")
            assert len(csv.read_text().splitlines()) == 5
            png = csv.with_suffix(".png")
            assert png.read_bytes()[:4] == b"\x89PNG"
            assert f"{csv}, {png}" in next(n for n in notes if n.startswith("written: "))
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, SweepScreen), "back to the tree")

    asyncio.run(run())


def test_escape_cancels_a_running_sweep_and_kills_its_workers() -> None:
    async def run() -> None:
        app = feed_app()
        app.sweep_jobs = 2
        async with app.run_test(size=(150, 40)) as pilot:
            await pilot.press("w")
            await until(pilot, lambda: isinstance(app.screen, SweepFormScreen), "the sweep form")
            form = app.screen
            assert isinstance(form, SweepFormScreen)
            fill(form, range="64KiB,68KiB,72KiB,76KiB,80KiB,84KiB", budget="")  # seconds each: thrashing
            before = {child.pid for child in multiprocessing.active_children()}  # other tests' children

            def pool() -> list[int | None]:
                return [child.pid for child in multiprocessing.active_children() if child.pid not in before]

            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, SweepScreen), "the sweep's screen")
            screen = app.screen
            assert isinstance(screen, SweepScreen)
            await until(pilot, lambda: len(pool()) == 2, "the pool's two workers")
            workers = pool()
            assert screen.state == "running" and "0/6 points done" in text_of(screen, "#sweep-progress")
            await pilot.press("escape")
            assert not isinstance(app.screen, SweepScreen)  # back at once
            try:
                await until(pilot, lambda: screen.state == "cancelled", "the worker to stop", timeout=10)
            except AssertionError:
                raise AssertionError(f"state {screen.state!r}, done {screen.done}, pool {pool()}") from None
            assert screen.done < 6
            assert not pool()
            assert not [pid for pid in workers if pid is not None and psutil.pid_exists(pid)]

    asyncio.run(run())


def test_a_bad_range_path_or_budget_stays_in_the_form_with_its_error_and_runs_nothing() -> None:
    async def run() -> None:
        app = feed_app()
        async with app.run_test(size=(150, 40)) as pilot:
            await pilot.press("w")
            await until(pilot, lambda: isinstance(app.screen, SweepFormScreen), "the sweep form")
            form = app.screen
            assert isinstance(form, SweepFormScreen)
            cases = [
                ({"range": "1MiB..64KiB/4"}, "range", "range: the range runs from LO up to HI: 1MiB is above it"),
                ({"range": "64KiB..1MiB"}, "range", "range: a range needs its number of points"),
                ({"path": "nope/misc.max"}, "path", "path: the scenario never makes the cgroup /nope"),
                ({"path": "sqlite.count"}, "path", "is not a limit"),
                ({"budget": "lots"}, "budget", "budget: 'lots' is not a budget"),
                ({"scenario": "no-such-scenario"}, "scenario", "scenario: "),
            ]
            for fields, field, message in cases:
                fill(form, scenario="trace-sqlite", path="pod/misc.max", range="64KiB..1MiB/4", budget="10%")
                fill(form, **fields)
                form.query_one("#budget", Input).focus()
                await pilot.press("enter")
                await pilot.pause()
                assert app.screen is form, fields  # still open, nothing run
                error = text_of(form, "#error")
                assert message in error and error.count("\n") == 0, error
                assert app.focused is form.query_one(f"#{field}"), fields
            assert not [s for s in app.screen_stack if isinstance(s, SweepScreen)]

    asyncio.run(run())


def test_a_point_that_ends_after_escape_is_counted_and_draws_nothing() -> None:
    """The worker's last point can end between Esc and the pool stopping: its progress comes to a
    screen already gone (CI saw NoMatches('#sweep-progress') fail the app so)."""

    async def run() -> None:
        app = feed_app()
        async with app.run_test(size=(150, 40)) as pilot:
            await pilot.press("w")
            await until(pilot, lambda: isinstance(app.screen, SweepFormScreen), "the sweep form")
            form = app.screen
            assert isinstance(form, SweepFormScreen)
            request = form.request()
            screen = SweepScreen(request)
            screen.run_worker = lambda *args, **kwargs: None  # type: ignore[method-assign,assignment]  # no sweep
            await app.switch_screen(screen)
            await pilot.pause()
            await pilot.press("escape")
            await pilot.pause()
            assert not screen.is_attached
            screen._point_done()  # as call_from_thread delivers it, after the screen went
            screen._finished("cancelled", None, "/pod")
            await pilot.pause()
            assert screen.done == 1 and screen.state == "cancelled"

    asyncio.run(run())

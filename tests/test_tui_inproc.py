"""``epc-playground tui --inproc SCENARIO``: the TUI on a scenario run in process, on a virtual clock.

Frozen, the host moves only by the steps the TUI runs, each moving the virtual clock by its
cost; unfrozen, the run gives the KTAP of ``run --inproc`` byte for byte; the LRU view and
the frame map draw from the in-process host; k ends an in-process workload and signals no
process; quit stops the scenario's thread, frozen or not.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Static

from playground.cli import main
from playground.scenario.backends.inproc import PAGE_NS, TURN_NS
from playground.scenario.load import load_scenario
from playground.scenarios import bundled
from playground.tui.inproc_app import InprocApp
from playground.tui.inproc_feed import RATES, InprocFeed, InprocRun
from playground.tui.views.frames import FrameMap, FrameMapScreen
from playground.tui.views.lru import LruScreen
from playground.tui.widgets.workload_table import NAMES
from wire.snapshot import CgroupRow

from .tui_helpers import Notes
from .tui_helpers import until as wait_until

ROOT = Path(__file__).resolve().parent.parent
SIZE = (160, 45)
SLOW = RATES.index(10**7)  # 10 ms of virtual time a wall second


async def until(pilot: Pilot[Any], holds: Callable[[], object], what: str, timeout: float = 60.0) -> None:
    """tui_helpers.until with this file's longer default: an in-process run under load takes its time."""
    await wait_until(pilot, holds, what, timeout)


def _app(name: str, rate_index: int = 0) -> InprocApp:
    return InprocApp(InprocRun(load_scenario(bundled()[name])), rate_index=rate_index)


def _feed(app: InprocApp) -> InprocFeed:
    assert isinstance(app.feed, InprocFeed)
    return app.feed


def _cgroup(app: InprocApp, path: str) -> CgroupRow | None:
    return next((cg for cg in _feed(app).snapshot["cgroups"] if cg["path"] == path), None)


async def select(pilot: Pilot[Any], app: InprocApp, path: str) -> None:
    """Move the tree's cursor to ``path`` (again each time: a node added in this refresh has no line yet)."""

    def selected() -> bool:
        node = app.cgroup_tree.nodes.get(path)
        if node is not None and app.selected != path:
            app.cgroup_tree.move_cursor(node)
        return app.selected == path

    await until(pilot, selected, f"{path} selected")


def _status(app: InprocApp) -> str:
    return str(app.query_one("#status", Static).render())


@pytest.mark.slow
def test_frozen_the_host_moves_only_by_steps_and_each_moves_the_virtual_clock_by_its_cost() -> None:
    """limit-zero's thrasher faults through a limit of 512 KiB: frozen there, misc.current and
    the clock stay put over refreshes; a request step charges pages, a reclaim batch uncharges
    them, each moving t by 20 us a request step and 2 us a page; z thaws; q stops the thread."""

    async def scenario() -> tuple[InprocApp, list[str]]:
        notes = Notes()
        app = _app("limit-zero", SLOW)  # slowed down: the thrash lasts 30 s of wall time
        async with app.run_test(size=SIZE, message_hook=notes) as pilot:
            feed, run = _feed(app), app.inproc
            session, host = run.backend.session, run.backend.host

            def thrashing() -> bool:
                cg = _cgroup(app, "/squeezed")
                running = [w for w in feed.snapshot["workloads"] if w["name"] == "thrasher" and w["state"] == "running"]
                return cg is not None and cg["misc_events_local"] > 0 and bool(running)

            await until(pilot, thrashing, "the thrasher faulting at its limit")
            await pilot.press("z")
            await until(pilot, lambda: feed.snapshot["frozen"], "the host frozen")
            t0 = int(feed.snapshot["t_ns"])
            current = _cgroup(app, "/squeezed")["misc_current"]  # type: ignore[index]
            polls = feed.polls
            await until(pilot, lambda: feed.polls >= polls + 3, "three refreshes")
            assert int(feed.snapshot["t_ns"]) == t0, "the clock moved while frozen"
            assert _cgroup(app, "/squeezed")["misc_current"] == current, "misc.current moved while frozen"  # type: ignore[index]
            status = _status(app)
            assert "FROZEN" in status and f"t={t0 / 1e9:.6f} s virtual" in status, status

            raised = lowered = False
            for _ in range(300):
                what = "request" if session.freeze_state()["ready"] else "reclaim"
                steps, pages, written = session.steps_run, session.pages_stepped, host.pages_reclaimed
                await pilot.press("full_stop" if what == "request" else "comma")
                cost = (session.steps_run - steps) * TURN_NS
                cost += (session.pages_stepped - pages + host.pages_reclaimed - written) * PAGE_NS
                t1 = int(feed.snapshot["t_ns"])  # the step's refresh came at once
                assert t1 - t0 == cost, notes[-1]
                assert what == "reclaim" or cost >= TURN_NS or notes[-1].startswith("nothing ran"), notes[-1]
                assert f"t={t1 / 1e9:.6f} s virtual" in _status(app)
                now = _cgroup(app, "/squeezed")["misc_current"]  # type: ignore[index]
                raised = raised or (what == "request" and now > current)
                lowered = lowered or (what == "reclaim" and now < current)
                t0, current = t1, now
                if raised and lowered:
                    break
            assert raised and lowered, "the steps never charged and uncharged /squeezed"

            await pilot.press("z")
            await until(pilot, lambda: not feed.snapshot["frozen"], "the host thawed")
            await until(pilot, lambda: int(feed.snapshot["t_ns"]) > t0, "the clock going on by itself")
            await pilot.press("z")  # frozen again, and quit: the thread must not wait for a thaw
            await until(pilot, lambda: feed.snapshot["frozen"], "the host frozen again")
            await pilot.press("q")
        return app, notes

    app, notes = asyncio.run(scenario())
    assert not app.inproc.thread.is_alive(), "the scenario's thread outlived the TUI"
    assert any(note.startswith("frozen. Waiting:") for note in notes)


@pytest.mark.slow
def test_unfrozen_the_run_gives_the_ktap_of_run_inproc_byte_for_byte_and_the_host_stays_to_browse() -> None:
    """The display does not move the virtual clock: the same KTAP as the command line's, every
    line of it in the event log, the summary said; then the host is still there, LRU view and
    frame map included (the engine's own handlers, on the in-process Session)."""
    command = [sys.executable, "-m", "playground.cli", "run", "--inproc", "-q", "sgx2"]
    expected = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True).stdout

    async def scenario() -> tuple[InprocApp, Notes, list[Any], list[list[str]], str]:
        notes = Notes()
        app = _app("sgx2")
        async with app.run_test(size=SIZE, message_hook=notes) as pilot:
            await until(pilot, lambda: app.ended, "the scenario's end")
            logged = [entry for entry in app.event_log.lines.entries if entry.kind == "ktap"]
            await select(pilot, app, "/t")  # still there after the end
            await pilot.press("L")
            await until(pilot, lambda: isinstance(app.screen, LruScreen), "the LRU view")
            assert isinstance(app.screen, LruScreen)
            await until(pilot, lambda: app.screen.listing is not None or app.screen.error, "the LRU listing")
            lru = app.screen
            assert lru.error == "" and lru.listing is not None and lru.listing["cgroup"] == "/t"
            table = lru.query_one("#lru-pages", DataTable)
            rows = [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
            await pilot.press("escape")
            await pilot.press("F")
            await until(pilot, lambda: isinstance(app.screen, FrameMapScreen), "the frame map")
            frame_map = app.screen.query_one(FrameMap)
            await until(pilot, lambda: frame_map.cells is not None, "the frame map's cells")
            drawn = str(frame_map.render())
            await pilot.press("escape")
            await pilot.press("q")
        return app, notes, logged, rows, drawn

    app, notes, logged, rows, drawn = asyncio.run(scenario())
    assert "\n".join(app.inproc.ktap) + "\n" == expected  # byte for byte
    ktap_in_log = [entry.text for entry in logged]
    assert ktap_in_log == app.inproc.ktap
    assert any("scenario SGX2 growth and removal: passed" in note for note in notes), notes
    listing = app.inproc.backend.session.host.lru_view("/t", 0, 4096, 0)
    assert len(rows) == min(listing.size, 200)
    assert drawn.strip(), "the frame map drew nothing"


@pytest.mark.slow
def test_k_ends_an_in_process_workload_and_signals_no_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """There is no process behind an in-process workload's pid (the pid may be another's on
    this host): K ends the task as a scenario's kill step does, and os.kill is never called."""
    signalled: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: signalled.append((pid, sig)))

    async def scenario() -> tuple[str, str]:
        app = _app("limit-lowered", SLOW)  # its resident enclave runs 60 s of virtual time
        async with app.run_test(size=SIZE) as pilot:
            feed = _feed(app)

            def resident() -> Any:
                return next((w for w in feed.snapshot["workloads"] if w["name"] == "resident"), None)

            await until(pilot, lambda: resident() is not None and app.workload_table.row_count, "the resident enclave")
            pid = int(resident()["pid"])
            table = app.workload_table
            table.move_cursor(row=table.get_row_index(str(pid)))
            table.focus()
            await pilot.press("K")
            await until(pilot, lambda: resident()["state"] == "exited", "the resident ended")
            state = f"{resident()['state']}: {resident()['reason']}"
            drawn = str(table.get_row(str(pid))[table.drawn_columns.index(NAMES.index("state"))])
            await pilot.press("q")
        return state, drawn

    state, drawn = asyncio.run(scenario())
    assert state == "exited: killed" and drawn == "exited: killed"
    assert signalled == []


@pytest.mark.slow
def test_slow_motion_keeps_the_virtual_clock_to_its_rate_of_the_wall_clock() -> None:
    """From 100 ms of virtual time a wall second, - slows it to 10 ms (said in the status line):
    from then on the clock is never ahead of that rate by more than the last round's cost."""
    rate_ns = RATES[3]

    async def scenario() -> tuple[int, float, str]:
        app = _app("limit-lowered", RATES.index(10**8))
        async with app.run_test(size=SIZE) as pilot:
            backend = app.inproc.backend
            await pilot.press("left_square_bracket")
            assert backend.rate_ns == rate_ns
            status = _status(app)
            start_ns, start_s = backend.anchor
            await until(
                pilot, lambda: backend.clock.now_ns() >= start_ns + 20 * 10**6, "20 ms of virtual time", timeout=120
            )
            elapsed_s, moved_ns = time.monotonic() - start_s, backend.clock.now_ns() - start_ns
            await pilot.press("q")
        return moved_ns, elapsed_s, status

    moved_ns, elapsed_s, status = asyncio.run(scenario())
    assert "10 ms virtual a second" in status, status
    last_round_ns = 3 * 10**6
    assert elapsed_s >= (moved_ns - last_round_ns) / rate_ns, f"{moved_ns} ns of virtual time in {elapsed_s:.2f} s"


def test_tui_inproc_refuses_a_scenario_it_cannot_read_or_with_connect_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["tui", "--inproc", "no-such-scenario"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no-such-scenario: no such file" in err[0]
    assert main(["tui", "--inproc", "sgx2", "--connect", "ipc:///nowhere"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["epc-playground tui: --inproc runs its own in-process host: leave out --connect"]


@pytest.mark.slow
def test_a_real_terminal_shows_the_virtual_time_and_frozen_and_q_quits_while_frozen(tmp_path: Path) -> None:
    """The command itself on a pseudo-terminal: no engine is started (no runtime file), the
    status line says the virtual time and FROZEN, and q while frozen ends the process with 0."""
    from .test_tui_robust import terminal

    runtime = tmp_path / "xdg"
    runtime.mkdir(mode=0o700)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}
    with terminal(["tui", "--inproc", "limit-zero"], env) as term:
        term.wait_for(" s virtual")
        term.type(b"z")
        term.wait_for("FROZEN")
        term.type(b"q")
        assert term.process.wait(30) == 0, term.text()
    assert not (runtime / "epc-playground").exists(), "an engine's runtime directory appeared"

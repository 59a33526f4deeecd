"""The workloads table and a workload's detail against a real engine: sizes, states and signals.

Each test waits on state (``until``) with generous bounds, never for a fixed time.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from textual.pilot import Pilot

from playground.tui.app import EpcApp
from playground.tui.screens.signal import SignalScreen
from playground.tui.screens.spawn import SpawnScreen
from playground.tui.widgets.workload_table import NAMES, WorkloadTable
from playground.tui.workload_screen import WorkloadScreen

from .engine_fixture import RunningEngine
from .test_tui import ready, until
from .test_tui_workloads import screen_text

pytestmark = pytest.mark.slow
SIZE = (160, 45)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def by_name(app: EpcApp) -> dict[str, dict[str, str]]:
    """Each row of the workloads table as {column: text}, by the workload's name."""
    table = app.query_one(WorkloadTable)
    rows = [dict(zip(NAMES, (str(cell) for cell in table.get_row_at(i)), strict=True)) for i in range(table.row_count)]
    return {row["name"]: row for row in rows}


async def spawn(pilot: Pilot[Any], key: str, size: str) -> None:
    """``e`` or ``v``, a size, Enter: one workload into the selected cgroup."""
    await pilot.press(key)
    await until(pilot, lambda: isinstance(pilot.app.screen, SpawnScreen), "the spawn form")
    await pilot.press("tab", *["backspace"] * 6, *size, "enter")


def test_the_table_shows_the_size_asked_for_and_the_elrange_of_an_enclave_and_a_guest_it_spawned(
    engine: RunningEngine,
) -> None:
    """An enclave of 4 MiB of heap gets an ELRANGE of 8 MiB (heap, TCS and code, rounded up to a
    power of two); a guest of 4 MiB, 4 MiB of vEPC.  Enter on the enclave: its plan, its own log
    lines (it was spawned here) and its events."""

    async def scenario() -> tuple[dict[str, dict[str, str]], str]:
        app = EpcApp(engine.endpoint)
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            await spawn(pilot, "e", "4MiB")
            await until(pilot, lambda: any(n.startswith("enclave-") for n in by_name(app)), "the enclave's row")
            await spawn(pilot, "v", "4MiB")
            await until(pilot, lambda: any(n.startswith("vm-") for n in by_name(app)), "the guest's row")
            await until(pilot, lambda: all(r["elrange"] != "-" for r in by_name(app).values()), "both ELRANGEs")
            rows = by_name(app)
            table = app.query_one(WorkloadTable)
            table.focus()
            enclave = next(name for name in rows if name.startswith("enclave-"))
            pid = int(rows[enclave]["pid"])
            table.move_cursor(row=table.get_row_index(str(pid)))
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, WorkloadScreen), "the detail")

            def said() -> bool:
                text = screen_text(app)
                return f"enclave {pid} starts in /" in text and f"enclave pid {pid} starts in /" in text

            await until(pilot, said, "its own log line and its workload_start event in the detail")
            text = screen_text(app)
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, WorkloadScreen), "the detail closed")
            await pilot.press("q")
            return rows, text

    rows, text = run(scenario())
    enclave = next(row for name, row in rows.items() if name.startswith("enclave-"))
    guest = next(row for name, row in rows.items() if name.startswith("vm-"))
    assert (enclave["size"], enclave["elrange"], enclave["kind"]) == ("4 MiB", "8 MiB", "enclave"), enclave
    assert (guest["size"], guest["elrange"], guest["kind"]) == ("4 MiB", "4 MiB", "vm"), guest
    assert "4 MiB of heap, sequential pattern, 3 passes" in text and "8 MiB (ECREATE" in text
    assert "not started by this TUI" not in text


def test_stop_continue_and_term_from_the_signal_list_read_stopped_running_and_killed_sigterm(
    engine: RunningEngine,
) -> None:
    """A workload started from a shell (not the TUI's child): SIGSTOP reads stopped, SIGCONT
    running, SIGTERM `killed: SIGTERM` (the engine learns the signal from the kernel)."""
    victim = engine.spawn("enclave", "--size", "1MiB", "--duration", "60", "--name", "victim")

    async def signal(pilot: Pilot[Any], name: str) -> None:
        await pilot.press("k")
        await until(pilot, lambda: isinstance(pilot.app.screen, SignalScreen), "the signal list")
        screen = pilot.app.screen
        assert isinstance(screen, SignalScreen)
        await pilot.press(*["down"] * screen.signals.index(name), "enter")

    async def scenario() -> list[str]:
        app = EpcApp(engine.endpoint)
        states = []
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            await until(pilot, lambda: by_name(app).get("victim", {}).get("state") == "running", "the victim")
            app.query_one(WorkloadTable).focus()
            for name, state in (("STOP", "stopped"), ("CONT", "running"), ("TERM", "killed: SIGTERM")):
                await signal(pilot, name)
                await until(pilot, lambda s=state: by_name(app)["victim"]["state"] == s, state)
                states.append(by_name(app)["victim"]["state"])
            await pilot.press("q")
        return states

    try:
        assert run(scenario()) == ["stopped", "running", "killed: SIGTERM"]
        assert victim.wait(10) == -15
    finally:
        if victim.poll() is None:
            victim.kill()
        victim.wait()
        for stream in (victim.stdout, victim.stderr):
            if stream is not None:
                stream.close()

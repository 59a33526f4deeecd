"""The TUI driven with Pilot against a real engine process: actions change the engine, the screen shows it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from typing import Any

import pytest
from rich.text import Text
from textual.widgets import DataTable, Log, Static

from playground.tui.app import EpcApp, effective_limits, usage_bar
from workloads.client import EngineClient

from .engine_fixture import RunningEngine

pytestmark = pytest.mark.slow
SIZE = (150, 40)


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


async def settle(pilot, seconds: float = 0.6) -> None:  # type: ignore[no-untyped-def]
    await pilot.pause(seconds)


def labels(app: EpcApp) -> list[str]:
    return [str(node.label) for node in app.nodes.values()]


def test_new_cgroup_and_limits_through_keys(engine: RunningEngine) -> None:
    async def scenario() -> None:
        app = EpcApp(engine.endpoint)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await pilot.press("n", *"pod", "enter")
            await settle(pilot)
            assert any(label.startswith("pod") for label in labels(app))
            await pilot.press("down")  # select /pod
            await settle(pilot, 0.2)
            assert app.selected == "/pod"
            await pilot.press("m", *"16M", "enter")
            await settle(pilot)
            await pilot.press("M", *"1G", "enter")
            await settle(pilot)
            await pilot.press("m", *"bogus", "enter")  # refused in the TUI, nothing sent
            await settle(pilot)
            assert "16 MiB" in next(label for label in labels(app) if label.startswith("pod"))
            await pilot.press("q")

    run(scenario())
    with EngineClient(engine.endpoint) as client:
        assert client.read("/pod/misc.max") == "sgx_epc 16777216\n"
        assert client.read("/pod/memory.max") == "1073741824\n"


def test_engine_errors_are_notifications_not_crashes(engine: RunningEngine) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with EngineClient(engine.endpoint) as client:
            client.mkdir("/busy")
            client.write("/busy/cgroup.procs", str(sleeper.pid))

        async def scenario() -> list[str]:
            app = EpcApp(engine.endpoint)
            async with app.run_test(size=SIZE) as pilot:
                await settle(pilot)
                await pilot.press("down")
                await settle(pilot, 0.2)
                await pilot.press("x")  # rmdir of a cgroup with a task: EBUSY
                await settle(pilot)
                messages = [n.message for n in app._notifications]
                await pilot.press("q")
                return messages

        messages = run(scenario())
        assert any("EBUSY" in m for m in messages), messages
        with EngineClient(engine.endpoint) as client:
            assert "busy" in client.listdir("/")
    finally:
        sleeper.kill()
        sleeper.wait()


def test_spawned_enclaves_show_in_the_table_and_finish(engine: RunningEngine) -> None:
    with EngineClient(engine.endpoint) as client:
        client.mkdir("/jobs")
        client.write("/jobs/misc.max", "sgx_epc 4194304")

    async def scenario() -> tuple[list[list[str]], list[str]]:
        log_lines: list[str] = []
        app = EpcApp(engine.endpoint)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await pilot.press("down")
            await settle(pilot, 0.2)
            await pilot.press("e")
            await settle(pilot, 0.3)
            await pilot.press("tab", *["backspace"] * 6, *"8MiB")
            for _ in range(3):
                await pilot.press("tab")
            await pilot.press(*["backspace"] * 3, "2", "enter")  # count 2
            deadline = time.monotonic() + 30
            rows: list[list[str]] = []
            while time.monotonic() < deadline:
                await settle(pilot, 0.3)
                table = app.query_one("#workloads", DataTable)
                rows = [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
                log_lines = list(app.query_one("#events", Log).lines)
                logs_in = sum("exits: ok" in line for line in log_lines) == 2  # they arrive a tick later
                if len(rows) == 2 and all(r[-1].startswith("exited") for r in rows) and logs_in:
                    break
            await pilot.press("q")
            return rows, log_lines

    rows, log_lines = run(scenario())
    assert len(rows) == 2 and all(r[1] == "/jobs" and r[-1] == "exited: ok" for r in rows), rows
    assert any("starts in /jobs" in line for line in log_lines)  # their logs reached the TUI
    assert any(line.startswith("pressure") and "reclaim" in line for line in log_lines)


def test_pause_freezes_the_display_but_history_keeps_recording(engine: RunningEngine) -> None:
    async def scenario() -> tuple[int, int]:
        app = EpcApp(engine.endpoint)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await pilot.press("p")
            assert app.paused
            assert app.feed is not None
            before = len(app.feed.usage["/"])
            await settle(pilot, 1.2)
            after = len(app.feed.usage["/"])
            await pilot.press("p")
            await pilot.press("q")
            return before, after

    before, after = run(scenario())
    assert after >= before + 3  # stats at 4 Hz kept arriving while paused


def test_usage_bar_and_effective_limit() -> None:
    assert usage_bar(0, 100, 0, width=10) == "░" * 10
    assert usage_bar(50, 100, 80, width=10) == "█████░░░┃░"
    snap = {
        "capacity": 1000,
        "cgroups": [
            {"path": "/", "misc_max": None},
            {"path": "/a", "misc_max": 300},
            {"path": "/a/b", "misc_max": (1 << 64) - 1},
            {"path": "/c", "misc_max": 5000},
        ],
    }
    assert effective_limits(snap) == {"/": 1000, "/a": 300, "/a/b": 300, "/c": 1000}


def test_the_headless_parts_never_import_textual() -> None:
    code = (
        "import sys, engine, engined.server, workloads.client, workloads.enclave, workloads.cli, playground.cli, "
        "playground.feed, playground.launch, playground.tui.command, playground.cgroupfs, playground.scenario.runner, "
        "playground.scenario.backends.real, playground.scenario.backends.inproc; assert 'textual' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_event_filter_shows_only_matching_lines(engine: RunningEngine) -> None:
    async def scenario() -> list[str]:
        app = EpcApp(engine.endpoint)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await pilot.press("slash", *"/keep", "enter")
            await settle(pilot, 0.2)
            with EngineClient(engine.endpoint) as client:
                client.mkdir("/keep")
                client.mkdir("/drop")
            await settle(pilot)
            lines = list(app.query_one("#events", Log).lines)
            await pilot.press("q")
            return lines

    lines = run(scenario())
    assert any("mkdir /keep" in line for line in lines)
    assert not any("/drop" in line for line in lines)


def test_a_lost_engine_shows_disconnected_and_r_starts_a_new_one(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from engined import runtime

    from .engine_fixture import start_engine

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "mine"))
    monkeypatch.delenv(runtime.ENDPOINT_ENV, raising=False)
    running = start_engine(tmp_path, "--capacity", "4MiB")

    async def scenario() -> tuple[str, str, bool]:
        app = EpcApp(running.endpoint)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            running.process.kill()
            running.process.wait()
            await settle(pilot, 1.0)
            gone = app.sub_title
            await pilot.press("r")
            await settle(pilot, 1.0)
            assert app.feed is not None
            again = app.sub_title
            alive = app.feed.connected and app.endpoint != running.endpoint
            await pilot.press("q")
            return gone, again, alive

    gone, again, alive = run(scenario())
    assert "disconnected" in gone and again == "" and alive
    assert runtime.read_runtime_file(str(tmp_path / "mine" / "epc-playground")) is None  # quit stopped it


def test_kill_with_a_chosen_signal_and_the_workload_columns(engine: RunningEngine) -> None:
    victim = engine.spawn("enclave", "--size", "1MiB", "--duration", "60", "--name", "victim")
    with EngineClient(engine.endpoint) as client:
        deadline = time.monotonic() + 20
        while not any(w["name"] == "victim" for w in client.snapshot()["workloads"]):
            assert time.monotonic() < deadline, "the workload never registered"
            time.sleep(0.1)

    async def scenario() -> tuple[list[str], list[str]]:
        app = EpcApp(engine.endpoint)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            table = app.query_one("#workloads", DataTable)
            running = [str(c) for c in table.get_row_at(0)]
            await pilot.press("tab")  # the tree -> the workloads table
            await pilot.press("k")
            await settle(pilot, 0.3)
            await pilot.press("down", "enter")  # TERM [KILL]
            victim.wait(10)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                await settle(pilot, 0.3)
                ended = [str(c) for c in table.get_row_at(0)]
                if ended[-1].startswith("exited"):
                    break
            await pilot.press("q")
            return running, ended

    running, ended = run(scenario())
    assert victim.returncode == -9
    # pid cgroup kind name size resident swapped faults/s state
    assert running[2:5] == ["enclave", "victim", "2 MiB"] and int(running[5]) > 256, running
    assert float(running[7].replace(",", "")) >= 0 and running[8] == "running"
    assert ended[8] == "exited: killed" and ended[4] == "2 MiB", ended


def test_find_help_and_the_command_palette(engine: RunningEngine) -> None:
    from playground.tui.screens import HelpScreen

    with EngineClient(engine.endpoint) as client:
        for path in ("/a", "/a/b", "/a/db", "/z", "/z/db"):
            client.mkdir(path)

    async def scenario() -> tuple[str, str, bool]:
        app = EpcApp(engine.endpoint)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await pilot.press("f", *"DB", "enter")  # case does not matter
            await settle(pilot, 0.2)
            first = app.selected
            await pilot.press("f", "enter")  # the same text again: the next match
            await settle(pilot, 0.2)
            second = app.selected
            await pilot.press("question_mark")
            await settle(pilot, 0.3)
            helped = isinstance(app.screen, HelpScreen)
            await pilot.press("escape")
            await pilot.press("ctrl+p")
            await settle(pilot, 0.3)
            await pilot.press(*"New cgroup")
            await settle(pilot, 0.5)
            await pilot.press("enter")
            await settle(pilot, 0.3)
            await pilot.press(*"viapalette", "enter")
            await settle(pilot)
            await pilot.press("q")
            return first, second, helped

    first, second, helped = run(scenario())
    assert (first, second) == ("/a/db", "/z/db")
    assert helped
    with EngineClient(engine.endpoint) as client:
        assert "viapalette" in client.listdir("/z/db")  # made under the cgroup found last


def test_the_event_log_keeps_up_past_its_history_and_filters_redraw_it(engine: RunningEngine) -> None:
    async def scenario() -> tuple[list[str], list[str], list[str]]:
        app = EpcApp(engine.endpoint)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            with EngineClient(engine.endpoint) as client:
                client.mkdir("/busy")
                for i in range(2100):  # more events than the feed keeps (2,000)
                    client.write("/busy/misc.max", f"sgx_epc {4096 * (i + 1)}")
                client.mkdir("/last")
            await settle(pilot, 1.0)
            log = app.query_one("#events", Log)
            everything = list(log.lines)
            await pilot.press("slash", *"/last", "enter")
            await settle(pilot, 0.3)
            filtered = list(log.lines)
            await pilot.press("slash", *["backspace"] * 5, "enter")
            await settle(pilot, 0.3)
            again = list(log.lines)
            await pilot.press("q")
            return everything, filtered, again

    everything, filtered, again = run(scenario())
    assert any("mkdir /last" in line for line in everything)
    assert filtered and all("/last" in line for line in filtered)  # lines from before the filter too
    assert len(again) == len(everything) and again[-1] == everything[-1]


def test_a_guest_vm_spawned_over_its_limit_dies_by_sigbus_and_x_removes_an_empty_cgroup(engine: RunningEngine) -> None:
    with EngineClient(engine.endpoint) as client:
        client.mkdir("/guests")
        client.write("/guests/misc.max", "sgx_epc 1048576")  # 1 MiB for a 4 MiB guest
        client.mkdir("/spare")

    async def scenario() -> tuple[list[str], list[str]]:
        app = EpcApp(engine.endpoint)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await pilot.press("down")  # /guests
            await settle(pilot, 0.2)
            await pilot.press("v")
            await settle(pilot, 0.3)
            await pilot.press("tab", *["backspace"] * 6, *"4MiB", "enter")
            table = app.query_one("#workloads", DataTable)
            deadline = time.monotonic() + 30
            row: list[str] = []
            while time.monotonic() < deadline and not (row and row[-1].startswith("exited")):
                await settle(pilot, 0.3)
                row = [str(c) for c in table.get_row_at(0)] if table.row_count else []
            await pilot.press("down")  # /spare
            await settle(pilot, 0.2)
            await pilot.press("x")
            await settle(pilot)
            await pilot.press("q")
            return row, [str(line) for line in app.query_one("#events", Log).lines]

    row, lines = run(scenario())
    assert row[1:3] == ["/guests", "vm"] and row[-1] == "exited: SIGBUS", row
    assert any(line.startswith("sigbus") and "/guests" in line for line in lines)
    with EngineClient(engine.endpoint) as client:
        names = client.listdir("/")
        assert "guests" in names and "spare" not in names
        assert client.read("/guests/misc.current") == "sgx_epc 0\n"
    engine.check()


def test_a_stalled_workload_is_red_in_the_table_and_its_stall_is_in_the_event_log(engine: RunningEngine) -> None:
    """Reference 7.3: the staller's fault under the full /p cannot be helped by any reclaim; the
    table shows it stalled (red, with how long), the log says when it stalls and when it goes on."""
    with EngineClient(engine.endpoint) as client:
        for path in ("/p", "/p/a", "/p/b"):
            client.mkdir(path)
        client.write("/p/misc.max", f"sgx_epc {64 * 4096}")
        holder = engine.spawn("enclave", "--size", "208KiB", "--duration", "120", "--cgroup", "/p/a", "--name", "hold")
        deadline = time.monotonic() + 20
        while client.read("/p/a/misc.current") != f"sgx_epc {59 * 4096}\n":
            assert time.monotonic() < deadline, "the holder never filled /p"
            time.sleep(0.05)
    staller = engine.spawn("enclave", "--size", "32KiB", "--cgroup", "/p/b", "--name", "staller")

    async def scenario() -> tuple[Any, str, Any, list[str]]:
        app = EpcApp(engine.endpoint)
        async with app.run_test(size=SIZE) as pilot:
            table = app.query_one("#workloads", DataTable)

            async def staller_state() -> Any:
                await settle(pilot, 0.3)
                rows = [table.get_row_at(i) for i in range(table.row_count)]
                return next((row[-1] for row in rows if str(row[3]) == "staller"), None)

            deadline = time.monotonic() + 20
            stalled = await staller_state()
            while time.monotonic() < deadline and not str(stalled).startswith("stalled"):
                stalled = await staller_state()
            status = str(app.query_one("#status", Static).render())
            holder.terminate()
            deadline = time.monotonic() + 20
            ended = await staller_state()
            while time.monotonic() < deadline and not str(ended).startswith("exited"):
                ended = await staller_state()
            await settle(pilot, 0.6)
            lines = [str(line) for line in app.query_one("#events", Log).lines]
            await pilot.press("q")
            return stalled, status, ended, lines

    try:
        stalled, status, ended, lines = run(scenario())
        assert staller.wait(timeout=30) == 0
    finally:
        for process in (holder, staller):
            if process.poll() is None:
                process.kill()
                process.wait()
    assert isinstance(stalled, Text) and stalled.plain.startswith("stalled ") and "red" in str(stalled.style), stalled
    assert "1 stalled" in status, status
    assert str(ended) == "exited: ok", ended
    assert any(line.startswith("stall ") and "staller" in line and "/p/b" in line for line in lines), lines
    assert any(line.startswith("stall_end") and "staller" in line and "goes on" in line for line in lines), lines
    engine.check()


SCENARIO = """\
name = "from the TUI"
capacity = "16MiB"  # the engine fixture's
[[step]]
mkdir = "tui/job"
[[step]]
write = { path = "tui/job/misc.max", value = "sgx_epc {capacity/4}" }
[[step]]
spawn = { name = "e", cgroup = "tui/job", size = "capacity/2", passes = 2 }
[[step]]
wait = { name = "e", timeout = "30s" }
[[step]]
expect = { name = "e", exited = "ok", all = true }
[[step]]
expect = { path = "tui/job/misc.events", matches = 'sgx_epc\\.max [1-9]' }
[[step]]
sleep = "60s"
"""


def test_a_scenario_runs_from_the_tui_and_s_stops_it(engine: RunningEngine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "tui.toml"
    path.write_text(SCENARIO)

    async def scenario() -> tuple[list[str], list[str], bool]:
        app = EpcApp(engine.endpoint)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await pilot.press("o")
            await settle(pilot, 0.3)
            await pilot.press("tab", *str(path), "enter")  # past the bundled list, into the file field
            deadline = time.monotonic() + 60
            lines: list[str] = []
            in_tree = False  # the scenario's cgroups show in the tree as they come (a tick behind)
            while time.monotonic() < deadline and not (
                in_tree and any(line.startswith("ktap            ok 2") for line in lines)
            ):
                await settle(pilot, 0.3)
                lines = [str(line) for line in app.query_one("#events", Log).lines]
                in_tree = in_tree or "/tui/job" in app.nodes
            await pilot.press("S")  # the 60 s sleep: stop it
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and app.scenario_stop is not None:
                await settle(pilot, 0.3)
            messages = [str(n.message) for n in app._notifications]
            await pilot.press("q")
            return lines, messages, in_tree

    lines, messages, in_tree = run(scenario())
    ktap = [line.split(maxsplit=1)[1] for line in lines if line.startswith("ktap")]
    assert ktap == [
        "KTAP version 1",
        "# scenario: from the TUI",
        "1..2",
        "ok 1 - step 5: e: all 1 exited ok",
        "ok 2 - step 6: /tui/job/misc.events matches /sgx_epc\\.max [1-9]/",
    ], ktap
    assert in_tree
    assert any("scenario from the TUI: stopped" in m for m in messages), messages
    engine.check()

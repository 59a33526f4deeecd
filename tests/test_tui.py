"""The TUI driven with Pilot against a real engine process: actions change the engine, the screen shows it.

The tests wait on state (``until``: the tree has a node, a screen is up, the engine has a
value), never for a fixed time: the 20 s bounds are generous, and a test that hits one
says what it waited for.  Notifications are read through ``run_test``'s message hook.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from typing import Any

import pytest
from rich.text import Text
from textual.command import CommandList, CommandPalette
from textual.pilot import Pilot
from textual.widgets import DataTable, Static

from playground.tui.app import DISCONNECTED, EpcApp
from playground.tui.bars import effective_limits, usage_bar
from playground.tui.screens.help import HelpScreen
from playground.tui.screens.picker import ScenarioScreen
from playground.tui.screens.prompt import PromptScreen
from playground.tui.screens.signal import SignalScreen
from playground.tui.screens.spawn import SpawnScreen
from playground.tui.widgets.workload_table import NAMES
from workloads.client import EngineClient

from .engine_fixture import RunningEngine
from .tui_helpers import Notes, until

pytestmark = pytest.mark.slow
SIZE = (150, 40)
# the workloads table's columns, by name
PID, NAME, STATE, RESIDENT, CGROUP, FAULTS, ASKED, ELRANGE, KIND = (
    NAMES.index(name) for name in ("pid", "name", "state", "resident", "cgroup", "faults/s", "size", "elrange", "kind")
)


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


async def ready(pilot: Pilot[Any]) -> None:
    """The app is up and follows the engine: the feed is there, a stats message came over its
    subscription (so events from now on reach it), and the tree shows what it has."""
    app = pilot.app
    assert isinstance(app, EpcApp)
    await until(pilot, lambda: app.feed is not None and app.feed.connected, "the feed")
    feed = app.feed
    assert feed is not None
    await until(pilot, lambda: "/" in feed.usage, "the first stats message")
    await until(pilot, lambda: all(cg["path"] in app.cgroup_tree.nodes for cg in feed.snapshot["cgroups"]), "the tree")


def labels(app: EpcApp) -> list[str]:
    return [str(node.label) for node in app.cgroup_tree.nodes.values()]


def rows(app: EpcApp) -> list[list[str]]:
    table = app.query_one("#workloads", DataTable)
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def log_lines(app: EpcApp) -> list[str]:
    """``kind text`` of each line the event log shows (without its stamp)."""
    return app.event_log.texts()


def split(lines: list[str]) -> list[list[str]]:
    return [line.split() for line in lines]


def test_new_cgroup_and_limits_through_keys(engine: RunningEngine) -> None:
    notes = Notes()

    async def scenario(client: EngineClient) -> None:
        app = EpcApp(engine.endpoint)
        async with app.run_test(size=SIZE, message_hook=notes) as pilot:
            await ready(pilot)
            await pilot.press("n", *"pod", "enter")
            await until(pilot, lambda: "/pod" in app.cgroup_tree.nodes, "/pod in the tree")
            await pilot.press("down")  # select /pod
            await until(pilot, lambda: app.selected == "/pod", "/pod selected")
            await pilot.press("m", *"16M", "enter")
            await until(pilot, lambda: client.read("/pod/misc.max") == "sgx_epc 16777216\n", "misc.max written")
            await pilot.press("M", *"1G", "enter")
            await until(pilot, lambda: client.read("/pod/memory.max") == "1073741824\n", "memory.max written")
            await pilot.press("m", *"bogus", "enter")  # refused in the prompt, which stays open; nothing sent
            await until(pilot, lambda: "'bogus' is not a size" in str(app.screen.query_one("#error").render()), "why")
            await pilot.press("escape")
            assert client.read("/pod/misc.max") == "sgx_epc 16777216\n"
            await until(pilot, lambda: any(x.startswith("pod") and "16 MiB" in x for x in labels(app)), "the limit")
            await pilot.press("q")

    with EngineClient(engine.endpoint) as client:
        run(scenario(client))


def test_engine_errors_are_notifications_not_crashes(engine: RunningEngine) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    notes = Notes()
    try:
        with EngineClient(engine.endpoint) as client:
            client.mkdir("/busy")
            client.write("/busy/cgroup.procs", str(sleeper.pid))

        async def scenario() -> None:
            app = EpcApp(engine.endpoint)
            async with app.run_test(size=SIZE, message_hook=notes) as pilot:
                await ready(pilot)
                await pilot.press("down")
                await until(pilot, lambda: app.selected == "/busy", "/busy selected")
                await pilot.press("x")  # rmdir of a cgroup with a task: EBUSY
                await until(pilot, lambda: any("EBUSY" in note for note in notes), f"EBUSY among {notes}")
                assert app.is_running  # the error did not take the app down
                await pilot.press("q")

        run(scenario())
        assert [note for note in notes if "EBUSY" in note] == ["rmdir /busy: /busy has tasks (EBUSY)"]
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
        app = EpcApp(engine.endpoint)
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            await pilot.press("down")
            await until(pilot, lambda: app.selected == "/jobs", "/jobs selected")
            await pilot.press("e")
            await until(pilot, lambda: isinstance(app.screen, SpawnScreen), "the spawn form")
            await pilot.press("tab", *["backspace"] * 6, *"8MiB")
            for _ in range(3):
                await pilot.press("tab")
            await pilot.press(*["backspace"] * 3, "2", "enter")  # count 2

            def done() -> bool:
                table = rows(app)
                exits = sum(line.startswith("workload_exit") for line in log_lines(app))
                return len(table) == 2 and all(r[STATE].startswith("exited") for r in table) and exits == 2

            await until(pilot, done, "two enclaves that exited, and their logs", timeout=60)
            await pilot.press("q")
            return rows(app), log_lines(app)

    table, lines = run(scenario())
    assert all(r[CGROUP] == "/jobs" and r[STATE] == "exited: ok" for r in table), table
    assert sum(line.startswith("workload_start") and "starts in /jobs" in line for line in lines) == 2, lines
    # one line each for a start and an exit: the workloads' own log lines that say the same are left out
    assert sum("exited: ok" in line or "exits: ok" in line for line in lines) == 2, lines
    assert not any(line.startswith("log") and "starts in" in line for line in lines), lines
    assert any(line.startswith("pressure") and "reclaim" in line for line in lines)


def test_pause_freezes_the_display_but_history_keeps_recording(engine: RunningEngine) -> None:
    """While paused a new cgroup reaches the feed (and its history) but not the tree; p again shows it."""

    async def scenario() -> None:
        app = EpcApp(engine.endpoint)
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            feed = app.feed
            assert feed is not None
            await pilot.press("p")
            assert app.paused and "paused" in app.sub_title
            with EngineClient(engine.endpoint) as client:
                client.mkdir("/while-paused")
            await until(pilot, lambda: "/while-paused" in feed.usage, "the new cgroup's history in the feed")
            assert "/while-paused" not in app.cgroup_tree.nodes  # the display stayed as it was
            samples = len(feed.usage["/"])
            await until(pilot, lambda: len(feed.usage["/"]) > samples, "more stats while paused")
            assert "/while-paused" not in app.cgroup_tree.nodes
            await pilot.press("p")
            assert not app.paused and app.sub_title == ""
            await until(pilot, lambda: "/while-paused" in app.cgroup_tree.nodes, "the new cgroup in the tree")
            await pilot.press("q")

    run(scenario())


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


# The modules DESIGN section 1 names ("the headless runner and the cgroupfs mount never import
# textual"), and below every other module of the three packages but the TUI's own.
HEADLESS = (
    "engine", "engined.server", "workloads.client", "workloads.enclave", "workloads.vm", "workloads.cli",
    "playground.cli", "playground.feed", "playground.launch", "playground.tui.command", "playground.cgroupfs",
    "playground.scenario.runner", "playground.scenario.backends.real", "playground.scenario.backends.inproc",
)  # fmt: skip
ALL_BUT_THE_TUI = """
import importlib, pkgutil, sys
packages = ("common", "engine", "wire", "engined", "workloads", "playground")
names = [n for p in packages
         for n in [p] + [m.name for m in pkgutil.walk_packages(importlib.import_module(p).__path__, p + ".")]
         if not n.startswith("playground.tui") and not n.endswith(".__main__")]
for name in sys.argv[1:] + names:
    importlib.import_module(name)
    assert "textual" not in sys.modules, name + " imports textual"
print(len(names))
"""


def test_the_headless_parts_never_import_textual() -> None:
    done = subprocess.run([sys.executable, "-c", ALL_BUT_THE_TUI, *HEADLESS], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > len(HEADLESS)  # the walk found the packages' modules


def test_event_filter_shows_only_matching_lines(engine: RunningEngine) -> None:
    async def scenario() -> tuple[list[str], list[str]]:
        app = EpcApp(engine.endpoint)
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            await pilot.press("slash", *"/keep", "enter")
            await until(pilot, lambda: app.event_filter == "/keep", "the filter")
            with EngineClient(engine.endpoint) as client:
                client.mkdir("/drop")  # first: by the time /keep shows, /drop has come and been filtered out
                client.mkdir("/keep")
            await until(pilot, lambda: ["mkdir", "/keep"] in split(log_lines(app)), "mkdir /keep in the log")
            await pilot.press("q")
            return log_lines(app), app.event_log.texts(everything=True)

    shown, received = run(scenario())
    assert ["mkdir", "/drop"] in split(received)
    assert not any("/drop" in line for line in shown)


def test_a_lost_engine_shows_disconnected_and_r_starts_a_new_one(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from engined import runtime

    from .engine_fixture import start_engine

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "mine"))
    monkeypatch.delenv(runtime.ENDPOINT_ENV, raising=False)
    running = start_engine(tmp_path, "--capacity", "4MiB")

    async def scenario() -> None:
        app = EpcApp(running.endpoint)
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            running.process.kill()
            running.process.wait()
            await until(pilot, lambda: app.sub_title == DISCONNECTED, "disconnected in the title")
            await pilot.press("r")
            await until(pilot, lambda: app.feed is not None and app.feed.connected, "the new engine's feed")
            assert app.sub_title == "" and app.endpoint != running.endpoint
            await pilot.press("q")

    run(scenario())
    assert runtime.read_runtime_file(str(tmp_path / "mine" / "epc-playground")) is None  # quit stopped it


def test_kill_with_a_chosen_signal_and_the_workload_columns(engine: RunningEngine) -> None:
    victim = engine.spawn("enclave", "--size", "1MiB", "--duration", "60", "--name", "victim")

    async def scenario() -> tuple[list[str], list[str]]:
        app = EpcApp(engine.endpoint)
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)

            def built() -> bool:  # 1 MiB of heap, the TCS and the code: over 256 pages resident
                return bool(rows(app)) and rows(app)[0][NAME] == "victim" and int(rows(app)[0][RESIDENT]) > 256

            await until(pilot, built, "the victim's row, built")
            running = rows(app)[0]
            await pilot.press("tab")  # the tree -> the workloads table
            await pilot.press("k")
            await until(pilot, lambda: isinstance(app.screen, SignalScreen), "the signal list")
            await pilot.press("down", "enter")  # TERM [KILL]
            await until(pilot, lambda: rows(app)[0][STATE].startswith("killed"), "the victim's end in the table")
            await pilot.press("q")
            return running, rows(app)[0]

    try:
        running, ended = run(scenario())
        assert victim.wait(10) == -9
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()
    # the size asked for (1 MiB of heap) and the ELRANGE (heap, TCS and code: 2 MiB), kept once it ended
    columns = (PID, CGROUP, KIND, NAME, ASKED, ELRANGE)
    assert [running[i] for i in columns] == [str(victim.pid), "/", "enclave", "victim", "1 MiB", "2 MiB"], running
    assert re.fullmatch(r"\d[\d,]*", running[FAULTS]) and running[STATE] == "running", running
    assert ended[STATE] == "killed: SIGKILL" and [ended[ASKED], ended[ELRANGE]] == ["1 MiB", "2 MiB"], ended


def test_find_help_and_the_command_palette(engine: RunningEngine) -> None:
    with EngineClient(engine.endpoint) as client:
        for path in ("/a", "/a/b", "/a/db", "/z", "/z/db"):
            client.mkdir(path)

    async def scenario() -> None:
        app = EpcApp(engine.endpoint)
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            await pilot.press("f", *"DB", "enter")  # case does not matter
            await until(pilot, lambda: app.selected == "/a/db", "/a/db selected")
            await pilot.press("f", "enter")  # the same text again: the next match
            await until(pilot, lambda: app.selected == "/z/db", "/z/db selected")
            await pilot.press("question_mark")
            await until(pilot, lambda: isinstance(app.screen, HelpScreen), "the help screen")
            await pilot.press("escape")
            await until(pilot, lambda: app.screen is app.screen_stack[0], "the help screen gone")
            await pilot.press("ctrl+p")
            await until(pilot, lambda: isinstance(app.screen, CommandPalette), "the command palette")
            await pilot.press(*"New cgroup")

            def first_hit() -> str:
                hits = app.screen.query_one(CommandList)
                return str(hits.get_option_at_index(hits.highlighted).prompt) if hits.highlighted is not None else ""

            await until(pilot, lambda: first_hit().startswith("New cgroup"), "New cgroup, found")
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, PromptScreen), "the prompt for the name")
            await pilot.press(*"viapalette", "enter")
            await until(pilot, lambda: "/z/db/viapalette" in app.cgroup_tree.nodes, "the new cgroup in the tree")
            await pilot.press("q")

    run(scenario())
    with EngineClient(engine.endpoint) as client:
        assert "viapalette" in client.listdir("/z/db")  # made under the cgroup found last


def test_the_event_log_keeps_up_past_its_history_and_filters_redraw_it(engine: RunningEngine) -> None:
    async def scenario() -> tuple[list[str], list[str], list[str]]:
        app = EpcApp(engine.endpoint)
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            with EngineClient(engine.endpoint) as client:
                client.mkdir("/busy")
                for i in range(2100):  # more events than the feed keeps (2,000)
                    client.write("/busy/misc.max", f"sgx_epc {4096 * (i + 1)}")
                client.mkdir("/last")
            await until(pilot, lambda: ["mkdir", "/last"] in split(log_lines(app)), "mkdir /last")
            everything = log_lines(app)
            await pilot.press("slash", *"/last", "enter")
            await until(pilot, lambda: app.event_filter == "/last", "the filter")
            filtered = log_lines(app)
            await pilot.press("slash", *["backspace"] * 5, "enter")
            await until(pilot, lambda: app.event_filter == "", "no filter")
            again = log_lines(app)
            await pilot.press("q")
            return everything, filtered, again

    everything, filtered, again = run(scenario())
    assert len(everything) == 1000 and all("<- sgx_epc" in line for line in everything[:-1])  # the newest 1,000
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
            await ready(pilot)
            await pilot.press("down")  # /guests
            await until(pilot, lambda: app.selected == "/guests", "/guests selected")
            await pilot.press("v")
            await until(pilot, lambda: isinstance(app.screen, SpawnScreen), "the spawn form")
            await pilot.press("tab", *["backspace"] * 6, *"4MiB", "enter")
            await until(pilot, lambda: bool(rows(app)) and rows(app)[0][STATE].startswith("exited"), "the guest's exit")
            row = rows(app)[0]
            await pilot.press("down")  # /spare
            await until(pilot, lambda: app.selected == "/spare", "/spare selected")
            await pilot.press("x")
            await until(pilot, lambda: "/spare" not in app.cgroup_tree.nodes, "/spare gone from the tree")
            await until(pilot, lambda: any(line.startswith("sigbus") for line in log_lines(app)), "the sigbus event")
            await pilot.press("q")
            return row, log_lines(app)

    row, lines = run(scenario())
    assert [row[CGROUP], row[KIND], row[STATE]] == ["/guests", "vm", "exited: SIGBUS"], row
    assert [row[ASKED], row[ELRANGE]] == ["4 MiB", "4 MiB"], row  # a guest's vEPC is what it asked for
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
    started: list[subprocess.Popen[str]] = []

    async def scenario() -> tuple[Any, str, Any, list[str]]:
        app = EpcApp(engine.endpoint)
        async with app.run_test(size=SIZE) as pilot:
            table = app.query_one("#workloads", DataTable)

            def staller_state() -> Any:
                cells = [table.get_row_at(i) for i in range(table.row_count)]
                return next((row[STATE] for row in cells if str(row[NAME]) == "staller"), None)

            await ready(pilot)  # subscribed: the stall event, which comes once, reaches the log
            started.append(engine.spawn("enclave", "--size", "32KiB", "--cgroup", "/p/b", "--name", "staller"))
            await until(pilot, lambda: str(staller_state()).startswith("stalled"), "the staller, stalled")
            stalled = staller_state()
            await until(pilot, lambda: "1 stalled" in str(app.query_one("#status", Static).render()), "the status")
            status = str(app.query_one("#status", Static).render())
            holder.terminate()
            await until(pilot, lambda: str(staller_state()).startswith("exited"), "the staller's exit")
            ended = staller_state()
            await until(pilot, lambda: any(x.startswith("stall_end") for x in log_lines(app)), "the stall's end")
            lines = log_lines(app)
            await pilot.press("q")
            return stalled, status, ended, lines

    try:
        stalled, status, ended, lines = run(scenario())
        [staller] = started
        assert staller.wait(timeout=30) == 0
    finally:
        for process in (holder, *started):
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
    notes = Notes()

    async def scenario() -> tuple[list[str], bool]:
        app = EpcApp(engine.endpoint)
        async with app.run_test(size=SIZE, message_hook=notes) as pilot:
            await ready(pilot)
            await pilot.press("o")
            await until(pilot, lambda: isinstance(app.screen, ScenarioScreen), "the scenario list")
            await pilot.press("tab", *str(path), "enter")  # past the bundled list, into the file field
            in_tree = False  # the scenario's cgroups show in the tree as they come (a tick behind)

            def both_expects_passed() -> bool:
                nonlocal in_tree
                in_tree = in_tree or "/tui/job" in app.cgroup_tree.nodes
                return in_tree and any(line.startswith("ktap            ok 2") for line in log_lines(app))

            await until(pilot, both_expects_passed, "both expects passed, /tui/job in the tree", timeout=60)
            await pilot.press("S")  # the 60 s sleep: stop it
            await until(pilot, lambda: app.scenario_stop is None, "the scenario's end", timeout=30)
            await until(pilot, lambda: any("scenario from the TUI: stopped" in n for n in notes), "its notification")
            await pilot.press("q")
            return log_lines(app), in_tree

    lines, in_tree = run(scenario())
    ktap = [line.split(maxsplit=1)[1] for line in lines if line.startswith("ktap")]
    assert ktap[:5] == [
        "KTAP version 1",
        "# scenario: from the TUI",
        "1..3",  # the two expects, then the other steps
        "ok 1 - step 5: e: all 1 exited ok",
        "ok 2 - step 6: /tui/job/misc.events matches /sgx_epc\\.max [1-9]/",
    ], ktap
    assert ktap[5] == "# cancelled at step 7: the rest does not run", ktap  # S stopped the 60 s sleep
    assert in_tree
    engine.check()

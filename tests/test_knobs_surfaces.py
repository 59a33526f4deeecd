"""The series' knobs on every surface (issue 14): options and a scenario's [knobs] reach the host,
bad ones are refused before anything starts, and a run with knobs other than V17's says so
wherever its output could be taken for the kernel's; V17's own values change no byte."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any, cast

import pytest
from textual.widgets import Static

from common.knobs import Knobs
from playground.cli import main
from playground.scenario.load import ScenarioError, parse_scenario
from playground.tui.app import status_line
from playground.tui.inproc_app import InprocApp
from playground.tui.inproc_feed import InprocRun
from wire.snapshot import Snapshot, format_tree, merge_stats

from .engine_fixture import CLI, ROOT, private_env, running_engine
from .tui_helpers import until

V17_OPTIONS = ["--nr-to-scan", "16", "--low-pages", "32", "--high-pages", "64", "--cg-margin", "32"]
V17_OPTIONS += ["--cg-low-limit", "128"]
MARK = "knobs (not the kernel's): nr_to_scan=4 (V17: 16), async_reclaim=off (V17: on)"

SCENARIO = """
name = "knobbed"
capacity = "1MiB"

[knobs]
nr_to_scan = 4
cg_margin = 0

[[step]]
mkdir = "t"
[[step]]
write = { path = "t/misc.max", value = "sgx_epc {capacity/4}" }
[[step]]
spawn = { name = "w", cgroup = "t", size = "capacity/2", passes = 2 }
[[step]]
wait = { name = "w", timeout = "60s" }
[[step]]
expect = { name = "w", exited = "ok", all = true, title = "served by reclaim" }
"""


def run_inproc(tmp_path: Path, *argv: str, scenario: str = "nested-limits") -> tuple[int, str, str, list[Any]]:
    """``run --inproc`` as a process of its own: exit status, KTAP, stderr, the --events records."""
    events = tmp_path / "events.jsonl"
    done = subprocess.run(
        [*CLI, "run", "--inproc", "-q", scenario, "--events", str(events), *argv],
        env=private_env(tmp_path),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    records = [json.loads(line) for line in events.read_text().splitlines()] if events.exists() else []
    return done.returncode, done.stdout, done.stderr, records


def untimed(ktap: str) -> list[str]:
    """KTAP's lines but the emulated time's (``# NAME: emulated runtime ...``)."""
    return [line for line in ktap.splitlines() if ": emulated runtime " not in line]


def scanned(records: list[dict[str, Any]]) -> set[int]:
    return {record["scanned"] for record in records if record.get("kind") == "reclaim"}


def test_v17s_values_given_give_the_ktap_and_events_of_none_given_byte_for_byte(tmp_path: Path) -> None:
    """V17's values on the command line are the kernel's: no mark, and the very run of no knobs given
    (when the knobs landed, both were checked against the output of the commit before them)."""
    runs = []
    for argv in ([], V17_OPTIONS):
        code, ktap, _err, _records = run_inproc(tmp_path, *argv)
        assert code == 0 and "knobs" not in ktap
        runs.append((ktap, (tmp_path / "events.jsonl").read_text()))
    assert runs[0] == runs[1]


def test_run_inproc_marks_ktap_and_jsonl_and_the_host_takes_the_knobs(tmp_path: Path) -> None:
    code, ktap, _err, records = run_inproc(tmp_path, "--nr-to-scan", "4", "--no-async-reclaim")
    lines = ktap.splitlines()
    assert lines[:4] == [
        "KTAP version 1",
        "# scenario: nested limits",
        "# a child under a limited parent: the limit hit lands on the parent, not the child",
        f"# {MARK}",
    ]
    assert lines[4].startswith("1..")  # the mark comes before the plan
    assert records[0] == {"kind": "knobs", "knobs": {"nr_to_scan": 4, "async_reclaim": False}, "note": MARK}
    assert scanned(records) == {4}
    kinds = {record["kind"] for record in records}
    assert "work_queued" not in kinds and "work_run" not in kinds
    # with no async worker the child's faults at the parent's limit stall (docs/knobs.md), so the run fails
    assert code == 1 and "# step 7: wait for big: 1 of 1 stalled after 60 s" in lines and "stall" in kinds


def test_a_scenarios_knobs_table_sets_the_host_and_the_command_line_goes_over_it(tmp_path: Path) -> None:
    scenario = parse_scenario(SCENARIO)
    assert scenario.knobs == Knobs(nr_to_scan=4, cg_margin=0)
    path = tmp_path / "knobbed.toml"
    path.write_text(SCENARIO)
    code, ktap, err, records = run_inproc(tmp_path, scenario=str(path))
    assert code == 0, ktap + err
    assert "# knobs (not the kernel's): nr_to_scan=4 (V17: 16), cg_margin=0 (V17: 32)" in ktap.splitlines()
    assert scanned(records) == {4}
    code, ktap, err, records = run_inproc(tmp_path, "--nr-to-scan", "8", scenario=str(path))
    assert code == 0, ktap + err
    assert scanned(records) == {8} and records[0]["knobs"] == {"nr_to_scan": 8, "cg_margin": 0}


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ("[knobs]\nnr_to_scn = 4\n", "[knobs]: unknown knob 'nr_to_scn': the knobs are nr_to_scan,"),
        ("[knobs]\nnr_to_scan = 0\n", "[knobs]: knob nr_to_scan: 0 is not a whole number from 1 to 1024"),
        ("[knobs]\nlow_pages = 64\n", "[knobs]: knobs low_pages (64) and high_pages (64)"),
        ("[knobs]\nasync_reclaim = 0\n", "[knobs]: knob async_reclaim: 0 is not true or false"),
        ('knobs = "fast"\n', "key 'knobs': write the series' knobs as a [knobs] table"),
    ],
)
def test_a_bad_knobs_table_is_one_problem_of_the_file(table: str, problem: str) -> None:
    with pytest.raises(ScenarioError) as e:
        parse_scenario(f'name = "x"\ncapacity = "1MiB"\n{table}')
    assert len(e.value.problems) == 1 and problem in e.value.problems[0], e.value.problems


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["engine", "--nr-to-scan", "0"], "argument --nr-to-scan: '0' is not a whole number from 1 to 1024"),
        (["engine", "--nr-to-scan", "4096"], "argument --nr-to-scan: '4096' is not a whole number from 1 to 1024"),
        (["engine", "--low-pages", "64"], "error: knobs low_pages (64) and high_pages (64)"),
        (["engine", "--cg-margin", "-1"], "argument --cg-margin: '-1' is not a whole number from 0"),
        (["engine", "--nr-to-scn", "4"], "unrecognized arguments: '--nr-to-scn 4'"),
        (["tui", "--high-pages", "16"], "error: knobs low_pages (32) and high_pages (16)"),
        (["tui", "--inproc", "sgx2", "--low-pages", "100"], "error: knobs low_pages (100) and high_pages (64)"),
        (["run", "--inproc", "sgx2", "--cg-low-limit", "x"], "argument --cg-low-limit: 'x' is not a whole number"),
        (["run", "sgx2", "--high-pages", "1"], "argument --high-pages: '1' is not a whole number from 2"),
        (["run", "sgx2", "--low-pages", "70"], "error: knobs low_pages (70) and high_pages (64)"),
    ],
)
def test_a_bad_knob_option_is_a_usage_error_before_anything_starts(
    argv: list[str], said: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in private_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    captured = capsys.readouterr()
    assert exit_.value.code == 2
    assert said in captured.err.splitlines()[-1], captured.err
    assert captured.out == ""  # no KTAP, no engine's banner
    assert not list((tmp_path / "run").rglob("engine.json"))  # no engine started


def test_the_engine_says_its_knobs_in_hello_snapshot_and_cg_tree(tmp_path: Path) -> None:
    with running_engine(tmp_path, "--capacity", "1MiB", "--nr-to-scan", "4", "--no-async-reclaim") as engine:
        with engine.client() as client:
            assert client.knobs == {"nr_to_scan": 4, "async_reclaim": False}
            assert client.hello("client")["knobs"] == client.knobs
            assert client.call("snapshot")["knobs"] == client.knobs
            assert client.call("lru", cgroup="/")["nr_to_scan"] == 4
        tree = engine.cli("cg", "tree")
        assert tree.returncode == 0 and tree.stdout.splitlines()[0] == MARK
    with running_engine(tmp_path) as engine:
        with engine.client() as client:
            assert client.knobs == {} and client.call("snapshot")["knobs"] == {}
        tree = engine.cli("cg", "tree")
        assert tree.returncode == 0 and "knobs" not in tree.stdout and tree.stdout.startswith("cgroup")


def test_run_connect_refuses_an_engine_whose_knobs_are_not_the_runs(tmp_path: Path) -> None:
    with running_engine(tmp_path, "--nr-to-scan", "4") as engine:
        done = engine.cli("run", "--connect", engine.endpoint, "-q", "sgx2")
        assert done.returncode == 2 and done.stdout == ""
        assert done.stderr.strip().splitlines() == [
            f"epc-playground run: the engine at {engine.endpoint} runs knobs (not the kernel's): nr_to_scan=4 "
            "(V17: 16), but this run asks for V17's knobs (the file's [knobs] and the command line's): start an "
            "engine with those, or leave out --connect"
        ]


@pytest.mark.slow
def test_the_engine_and_the_in_process_host_agree_with_knobs_set(tmp_path: Path) -> None:
    knobs = ["--nr-to-scan", "4", "--cg-margin", "0", "--low-pages", "8", "--high-pages", "24"]
    code, inproc, err, records = run_inproc(tmp_path, *knobs)
    assert code == 0, inproc + err
    env = private_env(tmp_path)
    real = subprocess.run(
        [*CLI, "run", "-q", "nested-limits", "--events", str(tmp_path / "real.jsonl"), *knobs],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert real.returncode == 0, real.stdout + real.stderr
    # the same results, the same mark; not the emulated time's lines: a workload's clock pays for the reclaim
    # it runs itself, and how much of it the async worker did first is the real engine's interleaving
    # (docs/scenarios.md: the modes' event streams differ in which work item ran when)
    assert untimed(real.stdout) == untimed(inproc)
    real_records = [json.loads(line) for line in (tmp_path / "real.jsonl").read_text().splitlines()]
    assert (
        real_records[0]
        == records[0]
        == {
            "kind": "knobs",
            "knobs": {"nr_to_scan": 4, "low_pages": 8, "high_pages": 24, "cg_margin": 0},
            "note": Knobs(nr_to_scan=4, low_pages=8, high_pages=24, cg_margin=0).mark(),
        }
    )
    assert scanned(real_records) == scanned(records) == {4}


def test_cg_tree_and_the_status_line_show_knobs_that_are_not_v17s_and_stats_keep_them() -> None:
    snap = cast(
        Snapshot,
        {"capacity": 1 << 20, "free": 1 << 19, "ksgxd": False, "t_ns": 0, "cgroups": [], "workloads": []},
    )
    assert "knobs" not in format_tree(snap) and "V17" not in status_line(snap, 0)
    marked = cast(Snapshot, {**snap, "knobs": {"nr_to_scan": 4, "async_reclaim": False}})
    assert format_tree(marked).splitlines()[0] == MARK
    assert status_line(marked, 0).endswith("   [b yellow]not V17: nr_to_scan=4 async_reclaim=off[/]")
    delta = {**marked, "stats_seq": 1, "removed": [], "workloads_removed": [], "last": True}
    assert merge_stats(marked, cast(Any, delta))["knobs"] == {"nr_to_scan": 4, "async_reclaim": False}


def test_the_in_process_tuis_status_line_shows_the_knobs(tmp_path: Path) -> None:
    path = tmp_path / "knobbed.toml"
    path.write_text(SCENARIO)

    async def scenario() -> str:
        from playground.scenario.load import load_scenario

        app = InprocApp(InprocRun(load_scenario(path)))
        async with app.run_test(size=(160, 45)) as pilot:
            status = app.query_one("#status", Static)
            await until(pilot, lambda: "not V17" in str(status.render()), "the knobs in the status line")
            text = str(status.render())
            await pilot.press("q")
        return text

    assert "not V17: nr_to_scan=4 cg_margin=0" in asyncio.run(scenario())


def test_tui_knob_options_are_refused_for_an_engine_it_does_not_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with running_engine(tmp_path) as engine:
        for name, value in engine.env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("EPC_PLAYGROUND_ENDPOINT", raising=False)  # found by its runtime file
        assert main(["tui", "--nr-to-scan", "4"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(
            "epc-playground tui: the knob options apply to the engine this TUI starts, and one runs already at"
        )
        assert main(["tui", "--connect", engine.endpoint, "--no-async-reclaim"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [
            "epc-playground tui: the knob options apply to the engine this TUI starts, and --connect names one "
            "that runs already"
        ]
        with engine.client() as client:
            assert client.knobs == {}  # nothing changed it


def test_tui_profile_is_refused_for_an_engine_it_does_not_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--profile prices the engine the TUI starts; an engine found running, or named by --connect, keeps
    its own: one line and exit 2 (it was silently ignored, the TUI showing the other profile's times)."""
    with running_engine(tmp_path) as engine:
        for name, value in engine.env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("EPC_PLAYGROUND_ENDPOINT", raising=False)  # found by its runtime file
        assert main(["tui", "--profile", "zero"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(
            "epc-playground tui: --profile applies to the engine this TUI starts, and one runs already at"
        )
        assert err[0].endswith("stop it, or give --profile to `epc-playground engine`"), err
        assert main(["tui", "--connect", engine.endpoint, "--profile", "zero"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [
            "epc-playground tui: --profile applies to the engine this TUI starts, and --connect names one that "
            "runs already"
        ]
        with engine.client() as client:
            assert client.snapshot()["profile"] != "zero"  # its own, untouched


class _Host:
    """The TUI app as the scenario worker sees it, on this thread."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.notes: list[str] = []
        self.done: list[str] = []

    def call_from_thread(self, callback: Any, *args: Any) -> Any:
        return callback(*args)

    def scenario_line(self, line: str) -> None:
        self.lines.append(line)

    def scenario_progress(self, *args: Any) -> None:
        pass

    def scenario_note(self, text: str) -> None:
        self.notes.append(text)

    def scenario_done(self, name: str, summary: str, severity: str) -> None:
        self.done.append(summary)


def test_a_scenario_the_tui_runs_on_its_engine_says_the_engines_knobs(tmp_path: Path) -> None:
    import threading

    from playground.tui.scenario_worker import run_scenario_thread

    scenario = parse_scenario(SCENARIO.replace("nr_to_scan = 4\ncg_margin = 0\n", ""))
    assert scenario.knobs == Knobs()
    with running_engine(tmp_path, "--capacity", "1MiB", "--nr-to-scan", "4") as engine:
        host = _Host()
        run_scenario_thread(cast(Any, host), engine.endpoint, scenario, threading.Event())
    assert host.done and host.done[0].startswith("passed"), (host.done, host.lines)
    assert "# knobs (not the kernel's): nr_to_scan=4 (V17: 16)" in host.lines[:4]
    assert host.notes[0] == "knobbed: runs with this engine's knobs (nr_to_scan=4), not the file's"


def test_the_engine_the_tui_starts_gets_the_knob_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import playground.launch

    for name, value in private_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    started: list[list[str]] = []

    def start_engine_process(args: list[str], env: dict[str, str]) -> Any:
        started.append(args)
        raise RuntimeError("not in this test")

    monkeypatch.setattr(playground.launch, "start_engine_process", start_engine_process)
    assert main(["tui", "--capacity", "1MiB", "--nr-to-scan", "4", "--cg-margin", "0", "--no-async-reclaim"]) == 2
    assert started == [["--capacity", "1048576", "--nr-to-scan", "4", "--cg-margin", "0", "--no-async-reclaim"]]
    assert capsys.readouterr().err.strip() == "epc-playground: not in this test"


def test_r_starts_the_new_engine_with_the_capacity_knobs_and_profile_the_tui_was_started_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The TUI's r (an engine after the first was lost) gets the same --capacity, knobs and --profile as
    the engine `epc-playground tui` started; it used to drop --profile."""
    import asyncio

    import playground.launch
    from playground.tui.app import EpcApp

    from .test_tui_workloads import SIZE

    for name, value in private_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    started: list[list[str]] = []
    apps: list[EpcApp] = []

    class Gone:  # the first engine, already lost
        def poll(self) -> int:
            return 0

        def wait(self, timeout: float | None = None) -> int:
            return 0

    def start_engine_process(args: list[str], env: dict[str, str]) -> Any:
        started.append(args)
        if len(started) > 1:
            raise RuntimeError("not in this test")
        return Gone(), "ipc:///nowhere"

    monkeypatch.setattr(playground.launch, "start_engine_process", start_engine_process)
    monkeypatch.setattr(playground.launch, "drain_output", lambda process: None)
    monkeypatch.setattr(EpcApp, "run", lambda self, *args, **kwargs: apps.append(self))
    assert main(["tui", "--capacity", "1MiB", "--nr-to-scan", "4", "--profile", "sgx1-client"]) == 0
    [app] = apps
    monkeypatch.undo()

    async def scenario() -> None:
        monkeypatch.setattr(playground.launch, "start_engine_process", start_engine_process)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("r")
            await pilot.pause()

    asyncio.run(scenario())
    first = ["--capacity", "1048576", "--nr-to-scan", "4", "--profile", "sgx1-client"]
    assert started == [first, first]

"""The scenario runner in-process (--inproc): every bundled scenario, KTAP, exit codes, events, determinism."""

from __future__ import annotations

import errno
import io
import json
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from engine import Blocked
from engine.sgx import IoctlError
from playground.cli import main
from playground.scenario.backends.inproc import InprocBackend
from playground.scenario.ktap import KtapWriter, Observers, Progress, Result, RunObserver
from playground.scenario.load import load_scenario, parse_scenario
from playground.scenario.runner import SizeError, run_scenario
from playground.scenarios import bundled

ROOT = Path(__file__).resolve().parent.parent
KTAP_RESULT = re.compile(r"(not )?ok \d+ - ")
KTAP_LINE = re.compile(r"(KTAP version 1|1\.\.\d+|(not )?ok \d+ - [^#\n]+|# .*)")

PASSING = """
name = "passing"
description = "limits, a must-fail write, two enclaves, a kill"
capacity = "8MiB"
seed = 11

[[step]]
mkdir = "t/a"
[[step]]
write = { path = "t/a/misc.max", value = "sgx_epc {capacity/4}" }
[[step]]
write = { path = "t/a/misc.max", value = "sgx_epc lots", errno = "EINVAL" }
[[step]]
spawn = { name = "e", cgroup = "t/a", size = "capacity/2", count = 2, pattern = "random", passes = 2 }
[[step]]
spawn = { name = "v", cgroup = "t", kind = "vm", size = "256KiB", duration = "10s" }
[[step]]
wait = { name = "e", timeout = "30s" }
[[step]]
kill = { name = "v", pick = "random" }
[[step]]
expect = { name = "e", exited = "ok", all = true }
[[step]]
expect = { name = "v", exited = "killed", all = true }
[[step]]
expect = { path = "t/a/misc.events", matches = 'sgx_epc\\.max [1-9]' }
[[step]]
expect = { path = "t/a/misc.peak", at_most = "capacity/4 + 4KiB" }
[[step]]
expect = { path = "t/misc.current", equals = "sgx_epc 0" }
"""


def run_text(tmp_path: Path, text: str, *args: str) -> tuple[int, str, str]:
    path = tmp_path / "scenario.toml"
    path.write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", "playground.cli", "run", "--inproc", str(path), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result.returncode, result.stdout, result.stderr


# kselftest runs once, at 32 MiB, in test_the_selftest_scenario_gives_the_reference_outcomes.
@pytest.mark.parametrize("name", sorted(name for name in bundled() if name != "kselftest"))
def test_bundled_scenario_passes_in_process(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["run", "--inproc", name])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "not ok" not in out and "# FAIL" not in out


def test_ktap_output_has_a_plan_one_result_per_expect_one_for_the_other_steps_and_totals(tmp_path: Path) -> None:
    status, out, err = run_text(tmp_path, PASSING, "--quiet")
    assert status == 0, out + err
    lines = out.splitlines()
    assert lines[0] == "KTAP version 1"
    assert lines[1] == "# scenario: passing"
    assert "1..6" in lines
    assert [line.split(" - ")[0] for line in lines if line.startswith("ok ")] == [f"ok {n}" for n in range(1, 7)]
    assert lines[-2] == "ok 6 - the other steps and the host's invariants"
    assert lines[-1] == "# Totals: pass:6 fail:0 error:0"
    assert all(KTAP_LINE.fullmatch(line) for line in lines), [line for line in lines if not KTAP_LINE.fullmatch(line)]
    assert err == ""


def test_a_failing_expect_is_not_ok_with_what_was_read_and_expected_and_exits_1(tmp_path: Path) -> None:
    text = PASSING.replace('equals = "sgx_epc 0"', 'equals = "sgx_epc 4096"')
    status, out, _ = run_text(tmp_path, text)
    assert status == 1
    assert "not ok 5 - step 12: /t/misc.current equals 'sgx_epc 4096'" in out
    assert "# step 12: read: 'sgx_epc 0'" in out and "# step 12: expected: 'sgx_epc 4096'" in out
    assert out.splitlines()[-1] == "# Totals: pass:5 fail:1 error:0"


def test_a_workload_expect_that_fails_tallies_the_outcomes(tmp_path: Path) -> None:
    status, out, _ = run_text(tmp_path, PASSING.replace('exited = "ok", all = true', 'exited = "SIGBUS", at_least = 1'))
    assert status == 1
    assert "not ok 1 - step 8: e: at least 1 exited SIGBUS" in out
    assert "# step 8: e (2): 2 ok" in out


def test_other_steps_that_fail_are_diagnostics_then_a_not_ok_result_the_plan_counts_and_exit_1(tmp_path: Path) -> None:
    """A KTAP or kunit parser that reads only the plan and the results sees the run fail."""
    text = PASSING.replace('value = "sgx_epc lots", errno = "EINVAL"', 'value = "sgx_epc max", errno = "EINVAL"')
    text = text.replace('wait = { name = "e", timeout = "30s" }', 'wait = { name = "e", timeout = "1ms" }')
    status, out, _ = run_text(tmp_path, text)
    assert status == 1
    assert "# FAIL step 3: write 'sgx_epc max' to /t/a/misc.max succeeded; it should fail with EINVAL" in out
    assert "# FAIL step 6: wait for e: 2 of 2 still ran after 0.001 s" in out
    lines = out.splitlines()
    results = [line for line in lines if KTAP_RESULT.match(line)]
    assert "1..6" in lines and len(results) == 6
    assert results[-1] == "not ok 6 - the other steps and the host's invariants"
    assert lines[lines.index(results[-1]) + 1] == "# failed: step 3 (write), step 6 (wait)"
    assert lines[-1] == "# Totals: pass:1 fail:5 error:2"  # e still ran: 4 expects fail, then the steps' result


def test_events_are_json_lines_with_sorted_keys_and_sequence_numbers(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    status, _, _ = run_text(tmp_path, PASSING, "--events", str(events))
    assert status == 0
    lines = events.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    assert all(list(r) == sorted(r) for r in records)
    kinds = {r["kind"] for r in records}
    assert {"mkdir", "write", "workload_start", "workload_exit", "ecreate", "limit_hit", "reclaim", "release"} <= kinds
    exits = {r["name"]: r["reason"] for r in records if r["kind"] == "workload_exit"}
    assert exits == {"e.0": "ok", "e.1": "ok", "v": "killed"}


def test_in_process_runs_are_byte_for_byte_repeatable(tmp_path: Path) -> None:
    outputs = []
    for run in range(2):
        events = tmp_path / f"events{run}.jsonl"
        status, out, _ = run_text(tmp_path, PASSING, "--events", str(events))
        outputs.append((status, out, events.read_bytes()))
    assert outputs[0] == outputs[1]


def test_the_seed_changes_the_run_and_the_same_seed_repeats_it(tmp_path: Path) -> None:
    runs = {}
    for label, seed in (("a", "1"), ("b", "2"), ("c", "1")):
        events = tmp_path / f"{label}.jsonl"
        status, _, _ = run_text(tmp_path, PASSING, "--events", str(events), "--seed", seed)
        assert status == 0
        runs[label] = events.read_bytes()
    assert runs["a"] == runs["c"] and runs["a"] != runs["b"]


def test_list_names_every_bundled_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--list"]) == 0
    out = capsys.readouterr().out
    for name in bundled():
        assert name in out


def test_a_short_run_shows_no_progress_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    _, _, err = run_text(tmp_path, PASSING)
    assert "step" not in err


def test_progress_is_a_line_every_few_seconds_where_stderr_is_not_a_terminal_unless_quiet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A long run in a pipe or a CI log shows it is alive: a whole line each LINE_EVERY_S (here 0, each tick)."""
    from playground.scenario import ktap

    path = tmp_path / "scenario.toml"
    path.write_text(PASSING)
    monkeypatch.setattr(ktap, "LINE_EVERY_S", 0.0)
    assert main(["run", "--inproc", str(path)]) == 0
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert lines and all(
        re.fullmatch(r"epc-playground run: step \d+/12 \(\w+\), \d+ workloads? alive, [\d.]+ s", line) for line in lines
    ), err
    assert "\r" not in err and "\x1b" not in err
    assert main(["run", "--inproc", "--quiet", str(path)]) == 0
    assert capsys.readouterr().err == ""


def test_a_failed_read_keeps_the_expected_value_in_the_title(tmp_path: Path) -> None:
    text = PASSING.replace('path = "t/misc.current", equals', 'path = "t/misc.nonexistent", equals')
    status, out, _ = run_text(tmp_path, text)
    assert status == 1
    assert "not ok 5 - step 12: /t/misc.nonexistent equals 'sgx_epc 0'" in out
    assert "# step 12: expected: 'sgx_epc 0'" in out


class Recorder(RunObserver):
    def __init__(self) -> None:
        self.results: list[Result] = []
        self.progress_seen: list[Progress] = []

    def result(self, result: Result) -> None:
        self.results.append(result)

    def progress(self, progress: Progress) -> None:
        self.progress_seen.append(progress)


def test_run_scenario_can_be_driven_by_another_program() -> None:
    """The hook a TUI uses: a parsed scenario, a backend, an observer for results and progress."""
    scenario = parse_scenario(PASSING)
    backend = InprocBackend(scenario.capacity, scenario.memory, scenario.seed)
    recorder = Recorder()
    out = io.StringIO()
    events: list[dict[str, object]] = []
    report = run_scenario(scenario, backend, recorder, events=events.extend)
    assert report.exit_code == 0 and [r.ok for r in recorder.results] == [True] * 6  # the 5 expects, the other steps
    assert report.outcomes == {"e": ["ok", "ok"], "v": ["killed"]}
    assert {p.step for p in recorder.progress_seen} >= set(range(1, len(scenario.steps) + 1))
    assert events and events[0]["seq"] == 1
    KtapWriter(out).result(recorder.results[0])
    assert out.getvalue().startswith("ok 1 - step 8: e: all 2 exited ok")


def test_the_selftest_scenario_gives_the_reference_outcomes() -> None:
    """Reference section 6: small fails (ENOMEM), large 4/5 at least one passes / fails, larger all
    pass, the random kill spares the rest, memcg OOM-kills all, nothing leaks.

    The bundled file on a 32 MiB EPC (its limits are formulas of the capacity): the same
    outcomes as at its own 1 GiB in a second instead of 30; real mode runs it at 1 GiB."""
    scenario = load_scenario(bundled()["kselftest"])
    report = run_scenario(scenario, InprocBackend(32 << 20, scenario.memory, scenario.seed))
    outcomes = report.outcomes
    assert outcomes["small"] == ["ENOMEM"]
    assert "ok" in outcomes["large4"]
    assert any(o != "ok" for o in outcomes["large5"]) and set(outcomes["large5"]) <= {"ok", "ENOMEM"}
    assert outcomes["larger"] == ["ok"] * 8
    assert sorted(outcomes["killed"]) == ["killed"] + ["ok"] * 7
    assert outcomes["memcg"] == ["OOM"] * 4
    assert report.exit_code == 0


def test_fair_reclaim_visits_the_parent_then_its_children_in_pre_order(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    assert main(["run", "--inproc", "fairness", "--events", str(events)]) == 0
    records = [json.loads(line) for line in events.read_text().splitlines()]
    visits = [r["cgroup"] for r in records if r["kind"] == "reclaim" and r["context"] == "sync"]
    order = ["/t/p", "/t/p/a", "/t/p/b", "/t/p/c"]
    start = order.index(visits[0])
    expected = [order[(start + i) % 4] for i in range(len(visits))]
    assert visits == expected and len(visits) >= 8


class BrokenHost(InprocBackend):
    def check(self) -> str | None:
        return "invariant broken: free + in-use frames != capacity"


def test_a_broken_invariant_at_the_end_fails_the_run() -> None:
    scenario = parse_scenario(PASSING)
    out = io.StringIO()
    report = run_scenario(scenario, BrokenHost(scenario.capacity, None, 0), KtapWriter(out))
    assert report.exit_code == 1 and report.failed == 0
    broken = "invariant broken: free + in-use frames != capacity"
    assert f"# FAIL end: the host's invariant check: {broken}" in out.getvalue()
    assert out.getvalue().splitlines()[-3:] == [
        "not ok 6 - the other steps and the host's invariants",
        "# failed: the host's invariant check",
        "# Totals: pass:5 fail:1 error:1",
    ]


def test_a_run_can_be_stopped_from_outside() -> None:
    """A TUI's stop button: the rest of the steps do not run, the workloads are killed, the host checked."""
    scenario = parse_scenario(PASSING.replace('duration = "10s"', 'duration = "100s"'))
    stop = threading.Event()

    class StopAtKill(RunObserver):
        def progress(self, progress: Progress) -> None:
            if progress.kind == "kill":
                stop.set()

    backend = InprocBackend(scenario.capacity, None, 0)
    recorder = Recorder()
    report = run_scenario(scenario, backend, Observers(StopAtKill(), recorder), stop=stop)
    assert report.cancelled and report.exit_code == 1 and report.results == []
    (steps,) = recorder.results  # the expects did not run; the other steps' result says why
    assert not steps.ok and steps.diagnostics == ["failed: cancelled at step 8"]
    assert report.outcomes["v"] == ["killed"] and backend.alive() == 0


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--inproc", "--connect", "ipc:///nowhere", "sgx2"]) == 2
    assert "leave out --connect" in capsys.readouterr().err
    assert main(["run"]) == 2
    assert "--list shows them" in capsys.readouterr().err


def test_an_events_path_that_cannot_be_written_is_one_line_and_runs_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "scenario.toml"
    path.write_text(PASSING)
    assert main(["run", "--inproc", str(path), "--events", str(tmp_path / "no" / "such" / "events.jsonl")]) == 2
    out, err = capsys.readouterr()
    assert out == ""  # no KTAP: nothing ran
    assert err.count("\n") == 1 and "--events" in err and "No such file or directory" in err, err


def test_the_sizes_are_checked_against_the_engines_capacity_before_step_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--connect to an engine with less EPC than the file says: a negative size or a division by zero
    is one line and exit 2 before anything runs, not a silent 'failed' or a traceback mid-run."""
    import playground.scenario.command

    negative = PASSING.replace('size = "256KiB"', 'size = "capacity - 6MiB"')
    by_zero = PASSING.replace('"sgx_epc {capacity/4}"', '"sgx_epc {capacity / (capacity / 8MiB)}"')
    for text, key, what in ((negative, "'size'", "-2097152 bytes"), (by_zero, "'value'", "division by zero")):
        scenario = parse_scenario(text)
        assert len(run_scenario(scenario, InprocBackend(scenario.capacity, None, 0)).results) == 5  # as the file says
        backend = InprocBackend(4 << 20, None, 0)
        recorder = Recorder()
        with pytest.raises(SizeError, match=what):
            run_scenario(scenario, backend, recorder)
        assert recorder.results == [] and backend.tasks == {} and backend.take_events() == []

        path = tmp_path / "scenario.toml"
        path.write_text(text)
        monkeypatch.setattr(playground.scenario.command, "_backend", lambda *_: InprocBackend(4 << 20, None, 0))
        assert main(["run", str(path)]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1 and key in err and what in err, err


def test_the_last_events_are_taken_in_sync_with_the_engine() -> None:
    calls: list[bool] = []

    class Recording(InprocBackend):
        def take_events(self, sync: bool = False) -> list[dict[str, object]]:
            calls.append(sync)
            return super().take_events(sync)

    scenario = parse_scenario(PASSING)
    run_scenario(scenario, Recording(scenario.capacity, None, 0))
    assert calls[-1] is True


@pytest.mark.parametrize("where", ["modify_types", "remove_trimmed"])
@pytest.mark.parametrize("how", ["EAGAIN", "Blocked"])
def test_removing_pages_goes_on_after_eagain_or_blocked(where: str, how: str) -> None:
    """The core may stop MODIFY_TYPES or REMOVE_PAGES part way (EAGAIN, or Blocked behind an OOM victim):
    the Session's remove_pages goes on from there at the enclave's next turn."""
    scenario = load_scenario(bundled()["sgx2"])
    backend = InprocBackend(scenario.capacity, scenario.memory, scenario.seed)
    real = getattr(backend.host, where)
    stopped: list[tuple[int, int]] = []

    def stops_once(pid: int, eid: int, first: int, count: int, *kind: str) -> object:
        if stopped:
            return real(pid, eid, first, count, *kind)
        stopped.append((first, count))
        real(pid, eid, first, 3, *kind)
        if how == "EAGAIN":
            raise IoctlError(errno.EAGAIN, "the load got EBUSY", 3)
        raise Blocked(3, "waiting for an OOM victim")

    setattr(backend.host, where, stops_once)
    report = run_scenario(scenario, backend)
    assert stopped and report.outcomes == {"elastic": ["ok"]}
    assert report.exit_code == 0, report


STALL_THEN_KILL = """
name = "stall, then kill"
capacity = "16MiB"

[[step]]
mkdir = "p/a"
[[step]]
mkdir = "p/b"
[[step]]
write = { path = "p/misc.max", value = "sgx_epc {256KiB}" }
[[step]]
spawn = { name = "holder", cgroup = "p/a", size = "208KiB", duration = "120s" }
[[step]]
sleep = "1s"
[[step]]
spawn = { name = "staller", cgroup = "p/b", size = "32KiB" }
[[step]]
wait = { name = "staller", timeout = "1s" }
[[step]]
expect = { name = "staller", exited = "stalled", all = true }
[[step]]
kill = { name = "staller" }
[[step]]
wait = { name = "staller", timeout = "1s" }
[[step]]
expect = { name = "staller", exited = "killed", all = true }
[[step]]
expect = { path = "p/b/misc.current", equals = "sgx_epc 0" }
"""


class Noting(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.notes: list[str] = []
        self.failures: list[str] = []

    def note(self, text: str) -> None:
        self.notes.append(text)

    def step_failed(self, step: int, text: str) -> None:
        self.failures.append(text)


def test_a_wait_on_a_stalled_workload_ends_as_stalled_and_it_goes_on_when_its_sibling_exits() -> None:
    """Reference 7.3 (bundled stall.toml): the staller's fault stalls under the full /p; its wait ends
    as stalled (a note, not a failure); it finishes once the holder is killed; never SIGBUS."""
    scenario = load_scenario(bundled()["stall"])
    observer = Noting()
    events: list[dict[str, object]] = []
    report = run_scenario(
        scenario, InprocBackend(scenario.capacity, None, scenario.seed), observer, events=events.extend
    )
    assert report.exit_code == 0 and not observer.failures, observer.failures
    assert report.outcomes == {"holder": ["killed"], "staller": ["ok"]}
    assert any("wait for staller: 1 of 1 stalled after 2 s" in note for note in observer.notes), observer.notes
    [stall] = [e for e in events if e["kind"] == "stall"]
    [end] = [e for e in events if e["kind"] == "stall_end"]
    assert stall["cgroup"] == end["cgroup"] == "/p/b" and end["how"] == "resumed"
    assert not [e for e in events if e["kind"] == "sigbus"]
    # a try every 100 ms of virtual time while nothing changes, one failed charge each
    assert end["retries"] == int(end["stalled_ns"]) * 10 // 10**9, end
    hits = [e for e in events if e["kind"] == "limit_hit" and e["requester"] == "/p/b"]
    assert len(hits) >= int(end["retries"]) + 1


def test_a_kill_reaches_a_stalled_workload_and_its_stall_ends_with_it() -> None:
    scenario = parse_scenario(STALL_THEN_KILL)
    observer = Noting()
    events: list[dict[str, object]] = []
    report = run_scenario(
        scenario, InprocBackend(scenario.capacity, None, scenario.seed), observer, events=events.extend
    )
    assert report.exit_code == 0 and not observer.failures, (observer.failures, observer.notes)
    assert report.outcomes["staller"] == ["killed"]
    assert [e["how"] for e in events if e["kind"] == "stall_end"] == ["exited"]


def test_a_wait_that_times_out_with_a_workload_still_running_fails_and_counts_the_stalled_apart() -> None:
    text = STALL_THEN_KILL.replace('wait = { name = "staller", timeout = "1s" }', 'wait = { timeout = "1s" }', 1)
    observer = Noting()
    report = run_scenario(parse_scenario(text), InprocBackend(16 << 20, None, 0), observer)
    assert report.exit_code == 1
    assert observer.failures == ["wait for the workloads: 1 of 2 still ran after 1 s (1 more stalled)"]


NESTED = """
name = "nested limits"
capacity = "16MiB"
seed = 7
[[step]]
mkdir = "t/parent/child"
[[step]]
write = { path = "t/parent/misc.max", value = "sgx_epc {capacity/8}" }
[[step]]
spawn = { name = "big", cgroup = "t/parent/child", size = "capacity/4", count = 2, passes = 2 }
[[step]]
wait = { name = "big", timeout = "60s" }
[[step]]
expect = { name = "big", exited = "ok", all = true }
"""


def test_faults_that_reclaim_can_help_never_stall() -> None:
    """Two enclaves over their parent's limit, each with plenty on its LRU: every EBUSY is helped
    by the work it queued, so no call may be taken for stalled (it once was, when a call's first
    step came after that work had run and so saw its progress as 'before')."""
    events: list[dict[str, object]] = []
    report = run_scenario(parse_scenario(NESTED), InprocBackend(16 << 20, None, 7), events=events.extend)
    assert report.outcomes == {"big": ["ok", "ok"]}
    assert not [e for e in events if e["kind"] in ("stall", "stall_end")]
    assert sum(e["kind"] == "reclaim" for e in events) > 10


def test_an_in_process_run_ticks_by_wall_time_not_every_so_many_rounds(monkeypatch: pytest.MonkeyPatch) -> None:
    """A round can take milliseconds (kselftest's waited 10 s between ticks): progress and a stop request
    come every TICK_S of wall time (here 0: every round)."""
    from playground.scenario.backends import inproc

    monkeypatch.setattr(inproc, "TICK_S", 0.0)
    scenario = parse_scenario(PASSING)
    recorder = Recorder()
    run_scenario(scenario, InprocBackend(scenario.capacity, scenario.memory, scenario.seed), recorder)
    assert sum(p.kind == "wait" for p in recorder.progress_seen) > 10

"""Scenario files v1: the format, size expressions, and validation before anything runs (exit 2)."""

from __future__ import annotations

import gc
import re
from pathlib import Path
from typing import ClassVar

import pytest

from playground.cli import main
from playground.scenario.expr import ExprError, parse_expr, parse_template
from playground.scenario.load import ScenarioError, load_scenario, parse_duration, parse_scenario
from playground.scenario.model import ExpectEvent, ExpectExited, ExpectFile, Kill, Mkdir, Sleep, Spawn, Wait, Write
from playground.scenarios import bundled, resolve

ENV = {"capacity": 32 << 20, "memory": None}

DESIGN_EXAMPLE = """
name = "nested limits"
description = "a child under a limited parent"
capacity = "64MiB"
memory = "1GiB"
seed = 7

[[step]]
mkdir = "t/parent"
[[step]]
write = { path = "t/parent/misc.max", value = "sgx_epc {capacity/512}" }
[[step]]
write = { path = "t/parent/misc.max", value = "sgx_epc -1", errno = "EINVAL" }
[[step]]
[step.spawn]  # DESIGN.md splits this inline table over two lines, which TOML 1.0 (tomllib) does not allow
name = "big"
cgroup = "t/parent"
kind = "enclave"
size = "capacity"
count = 4
pattern = "sequential"
passes = 2
[[step]]
sleep = "500ms"
[[step]]
kill = { name = "big", pick = "random", signal = "TERM" }
[[step]]
kill = { name = "big", index = 2 }
[[step]]
wait = { name = "big", timeout = "60s" }
[[step]]
expect = { path = "t/misc.current", equals = "sgx_epc 0" }
[[step]]
expect = { name = "big", exited = "ok", at_least = 1 }
[[step]]
expect = { path = "t/parent/misc.events", matches = 'sgx_epc\\.max [1-9]' }
"""


def test_the_design_example_parses_into_typed_steps() -> None:
    scenario = parse_scenario(DESIGN_EXAMPLE)
    assert (scenario.name, scenario.capacity, scenario.memory, scenario.seed) == ("nested limits", 64 << 20, 1 << 30, 7)
    kinds = [type(step) for step in scenario.steps]
    assert kinds == [Mkdir, Write, Write, Spawn, Sleep, Kill, Kill, Wait, ExpectFile, ExpectExited, ExpectFile]
    mkdir, write, must_fail, spawn, sleep, kill, kill_index = scenario.steps[:7]
    assert isinstance(mkdir, Mkdir) and mkdir.path == "/t/parent"
    assert isinstance(write, Write) and write.value.render(ENV) == "sgx_epc 65536" and write.errno is None
    assert isinstance(must_fail, Write) and must_fail.errno == "EINVAL"
    assert isinstance(spawn, Spawn) and spawn.size.evaluate(ENV) == 32 << 20 and spawn.count == 4
    assert spawn.instance_name(2) == "big.2"
    assert isinstance(sleep, Sleep) and sleep.duration_ns == 500_000_000
    assert isinstance(kill, Kill) and (kill.pick, kill.signal) == ("random", "TERM")
    assert isinstance(kill_index, Kill) and (kill_index.pick, kill_index.index) == ("index", 2)
    assert scenario.expects == 3
    assert [step.number for step in scenario.steps] == list(range(1, 12))


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("capacity/512", 65536),
        ("4 * (capacity/512)", 262144),
        ("capacity - 2 * (4 * (capacity/512))", (32 << 20) - 2 * 262144),
        ("64MiB", 64 << 20),
        ("1.5KiB", 1536),
        ("16M + 4K", (16 << 20) + 4096),
        ("-7 / 2", -3),  # integer division truncates toward zero, as shell arithmetic does
        ("capacity", 32 << 20),
    ],
)
def test_size_expressions_evaluate_as_integers(text: str, value: int) -> None:
    assert parse_expr(text).evaluate(ENV) == value


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("capacity/", "ends where"),
        ("capacity +* 2", "unexpected '*'"),
        ("__import__('os')", "unexpected"),
        ("os", "unknown name 'os'"),
        ("512capacity", "unexpected"),
        ("(1 + 2", "without its ')'"),
        ("1/0", "division by zero"),
        ("memory", "does not set"),
        ("3 XiB", "unexpected"),
    ],
)
def test_bad_expressions_are_rejected_with_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ExprError, match=re.escape(message)):
        parse_expr(text).evaluate(ENV)


def test_templates_substitute_braces_and_keep_doubled_ones() -> None:
    assert parse_template("sgx_epc {capacity/512} {{x}}").render(ENV) == "sgx_epc 65536 {x}"
    with pytest.raises(ExprError):
        parse_template("sgx_epc {capacity")


def test_an_inline_table_over_two_lines_gets_a_hint() -> None:
    with pytest.raises(ScenarioError, match=r"must fit on one line; write a long one as \[step.spawn\]"):
        parse_scenario(HEAD + '[[step]]\nspawn = { name = "a",\n size = 4096 }\n', "bad.toml")


def test_durations() -> None:
    assert parse_duration("500ms") == 500_000_000
    assert parse_duration("1.5s") == 1_500_000_000
    assert parse_duration(2) == 2_000_000_000
    assert parse_duration("1m") == 60_000_000_000
    with pytest.raises(ValueError, match="bad duration"):
        parse_duration("soon")


HEAD = 'name = "x"\ncapacity = "16MiB"\n'
TWO_CONDITIONS = '[[step]]\nspawn = { name = "a", size = 4096 }\n[[step]]\nexpect = { name = "a", exited = "ok", all = true, none = true }\n'  # noqa: E501


@pytest.mark.parametrize(
    ("steps", "where", "key"),
    [
        ('[[step]]\nmkdir = "t"\n[[step]]\nwrite = { path = "t/misc.max", valu = "sgx_epc 0" }\n', "step 2", "'valu'"),
        ('[[step]]\nspawn = { name = "a", size = "16QiB" }\n', "step 1", "'size'"),
        ('[[step]]\nspawn = { name = "a", size = "capacity *" }\n', "step 1", "'size'"),
        ('[[step]]\nspawn = { name = "a", size = "capacity - 32MiB" }\n', "step 1", "'size'"),
        ('[[step]]\nmkdir = "t"\n[[step]]\nformat = "t"\n', "step 2", "'format'"),
        ('[[step]]\nmkdir = "t"\nrmdir = "t"\n', "step 1", "'mkdir' and 'rmdir'"),
        ('[[step]]\nexpect = { path = "misc.current", equals = "sgx_epc 0", at_most = 4 }\n', "step 1", "'equals'"),
        (TWO_CONDITIONS, "step 2", "'all' and 'none'"),
        ('[[step]]\nexpect = { name = "ghost", exited = "ok", all = true }\n', "step 1", "'ghost'"),
        (
            '[[step]]\nwrite = { path = "x/misc.max", value = "sgx_epc {capacity}", errno = "ENOTANERRNO" }\n',
            "step 1",
            "'errno'",
        ),
        ('[[step]]\nspawn = { name = "a", size = 4096, kind = "container" }\n', "step 1", "'kind'"),
        ('[[step]]\nsleep = "a while"\n', "step 1", "'sleep'"),
        ('[[step]]\nwrite = { path = "../etc/misc.max", value = "1" }\n', "step 1", "'path'"),
        ('[[step]]\nexpect = { path = "misc.current", matches = "([" }\n', "step 1", "'matches'"),
        ('[[step]]\nwrite = { path = "misc.max", value = "{memory/2}" }\n', "step 1", "'value'"),
    ],
)
def test_invalid_steps_name_the_step_number_and_the_key(steps: str, where: str, key: str) -> None:
    with pytest.raises(ScenarioError) as error:
        parse_scenario(HEAD + steps, "bad.toml")
    message = str(error.value)
    assert message.startswith("bad.toml: ") and where in message and key in message, message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('name = "x"\ncapacity = "16MiB"\ncapcity = "1GiB"\n', "'capcity'"),
        ('name = "x"\ncapacity = "lots"\n', "'capacity'"),
        ('name = "x"\ncapacity = "4097"\n', "'capacity'"),
        ('capacity = "16MiB"\n', "'name'"),
        ('name = "x"\ncapacity = "16MiB"\nseed = -1\n', "'seed'"),
        ('name = "x"\ncapacity = "16MiB"\n[[step]\n', "not valid TOML"),
    ],
)
def test_invalid_top_level_keys_are_named(text: str, key: str) -> None:
    with pytest.raises(ScenarioError, match=key):
        parse_scenario(text, "bad.toml")


def test_an_invalid_file_exits_2_runs_nothing_and_says_where(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(HEAD + '[[step]]\nmkdir = "t"\n[[step]]\nspawn = { name = "a", size = "capacity/0" }\n')
    events = tmp_path / "events.jsonl"
    assert main(["run", "--inproc", str(bad), "--events", str(events)]) == 2
    out, err = capsys.readouterr()
    assert out == ""  # no KTAP: nothing ran
    assert not events.exists()
    assert err.count("\n") == 1 and "step 2 (spawn)" in err and "'size'" in err and "division by zero" in err


def test_a_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--inproc", str(tmp_path / "nope.toml")]) == 2
    assert "cannot read it" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(bundled()))
def test_every_bundled_scenario_validates_and_describes_itself(name: str) -> None:
    scenario = load_scenario(bundled()[name])
    assert scenario.name and scenario.description and scenario.expects >= 1


def test_event_expects_take_fields_to_match() -> None:
    scenario = parse_scenario(
        HEAD + '[[step]]\nexpect = { event = "reclaim", where = { cgroup = "t/a" }, at_least = 1 }\n'
    )
    (step,) = scenario.steps
    assert isinstance(step, ExpectEvent) and step.where == (("cgroup", "/t/a"),) and step.count == 1


def test_every_cgroup_field_of_an_event_expect_is_a_path_written_as_elsewhere() -> None:
    """reclaim's walk_root and next_cg, and limit_hit's requester, are cgroup paths like cgroup."""
    reclaim = 'where = { walk_root = "t/p", next_cg = "t/p/a", context = "sync" }'
    limit_hit = 'where = { cgroup = "t/p", requester = "t/p/b" }'
    scenario = parse_scenario(
        HEAD
        + f'[[step]]\nexpect = {{ event = "reclaim", {reclaim}, at_least = 1 }}\n'
        + f'[[step]]\nexpect = {{ event = "limit_hit", {limit_hit}, at_least = 1 }}\n'
    )
    first, second = scenario.steps
    assert isinstance(first, ExpectEvent) and isinstance(second, ExpectEvent)
    assert dict(first.where) == {"walk_root": "/t/p", "next_cg": "/t/p/a", "context": "sync"}
    assert dict(second.where) == {"cgroup": "/t/p", "requester": "/t/p/b"}


def test_a_file_that_is_not_utf8_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(HEAD.encode() + b'description = "caf\xe9"\n')
    with pytest.raises(ScenarioError, match="not UTF-8 text"):
        load_scenario(bad)
    assert main(["run", "--inproc", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not UTF-8 text" in err


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("inf", "finite"),
        ("-inf", "finite"),
        ("nan", "finite"),
        ("1e300", "at most one day"),
        ("86401", "at most one day"),
        ('"25h"', "bad duration"),
        ('"1441m"', "at most one day"),
        ('"99999999999999999999999s"', "at most one day"),
    ],
)
@pytest.mark.parametrize("key", ["sleep", "timeout", "duration"])
def test_durations_are_finite_and_at_most_a_day(
    value: str, message: str, key: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    spawn = '[[step]]\nspawn = { name = "a", size = 4096%s }\n'
    steps = {
        "sleep": f"[[step]]\nsleep = {value}\n",
        "timeout": spawn % "" + f'[[step]]\nwait = {{ name = "a", timeout = {value} }}\n',
        "duration": spawn % f", duration = {value}",
    }[key]
    with pytest.raises(ScenarioError, match=message) as error:
        parse_scenario(HEAD + steps, "bad.toml")
    assert f"'{key}'" in str(error.value) and "step" in str(error.value)
    path = tmp_path / "bad.toml"
    path.write_text(HEAD + steps)
    assert main(["run", "--inproc", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"'{key}'" in err, err


def test_a_day_is_the_longest_duration() -> None:
    assert parse_duration(86400) == 86400 * 10**9
    assert parse_duration("1440m") == 86400 * 10**9


@pytest.mark.parametrize(
    ("steps", "where", "key"),
    [
        ('[[step]]\nspawn = { name = "a", size = 4096, duration = 0 }\n', "step 1", "'duration'"),
        ('[[step]]\nspawn = { name = "a", size = 4096, duration = "0ms" }\n', "step 1", "'duration'"),
        ('[[step]]\nspawn = { name = "a", size = "100000000000000000000000000000000" }\n', "step 1", "'size'"),
        ('[[step]]\nspawn = { name = "a", size = "capacity * 1024 * 1024 * 1024" }\n', "step 1", "'size'"),
        ('[[step]]\nspawn = { name = "a", size = 4096, grow = "8PiB" }\n', "step 1", "'grow'"),
        ('[[step]]\nspawn = { name = "a", size = 4096, trim = -4096 }\n', "step 1", "'trim'"),
        ('[[step]]\nexpect = { path = "misc.current", at_most = "{5PiB}" }\n', "step 1", "'at_most'"),
        (
            '[[step]]\nspawn = { name = "a", size = 4096 }\n[[step]]\nspawn = { name = "a", size = 8192 }\n',
            "step 2",
            "'name'",
        ),
    ],
)
def test_durations_sizes_and_names_out_of_range_are_rejected(steps: str, where: str, key: str) -> None:
    with pytest.raises(ScenarioError) as error:
        parse_scenario(HEAD + steps, "bad.toml")
    message = str(error.value)
    assert message.startswith("bad.toml: ") and where in message and key in message, message
    assert "\n" not in message


def test_the_largest_size_is_the_protocols() -> None:
    scenario = parse_scenario(HEAD + '[[step]]\nspawn = { name = "a", size = "8TiB" }\n')
    (step,) = scenario.steps
    assert isinstance(step, Spawn) and step.size.evaluate(ENV) == 1 << 43


@pytest.mark.parametrize(
    "text", ["-" * 1000 + "1", "1" + "+1" * 1000, "(" * 1000 + "1" + ")" * 1000], ids=["minus", "plus", "parens"]
)
def test_a_too_long_expression_is_an_expr_error_not_a_recursion_error(text: str) -> None:
    with pytest.raises(ExprError, match="too long"):
        parse_expr(text).evaluate(ENV)
    with pytest.raises(ScenarioError, match="too long"):
        parse_scenario(HEAD + f'[[step]]\nspawn = {{ name = "a", size = "{text}" }}\n')
    assert parse_expr("-" * 100 + "1").evaluate(ENV) == 1  # long enough for anything real


def test_a_directory_named_like_a_bundled_scenario_does_not_hide_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sgx2").mkdir()
    assert resolve("sgx2") == bundled()["sgx2"]
    (tmp_path / "mine").write_text(HEAD)
    assert resolve("mine") == Path("mine")  # a file of that name wins
    assert main(["run", "--inproc", "nothing-like-it"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no bundled scenario" in err and "--list" in err


def test_stalled_is_an_outcome_a_workload_expect_can_name() -> None:
    """A workload whose fault no reclaim can help is still waiting at the step: exited = "stalled"."""
    spawn = '[[step]]\nspawn = { name = "a", size = 4096 }\n'
    scenario = parse_scenario(HEAD + spawn + '[[step]]\nexpect = { name = "a", exited = "stalled", all = true }\n')
    step = scenario.steps[-1]
    assert isinstance(step, ExpectExited) and step.outcome == "stalled"


def test_a_run_whose_reader_goes_away_stops_quietly() -> None:
    """`epc-playground run ... | head -1`: no BrokenPipeError traceback, the status a SIGPIPE death shows."""
    import subprocess
    import sys

    with subprocess.Popen(
        [sys.executable, "-m", "playground.cli", "run", "--inproc", "global-reclaim"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as run:
        assert run.stdout is not None and run.stderr is not None
        assert run.stdout.readline() == b"KTAP version 1\n"
        run.stdout.close()  # the reader goes away after the first line
        stderr = run.stderr.read()
    assert run.returncode == 141 and stderr == b"", stderr.decode()


def _problems(text: str) -> tuple[str, ...]:
    with pytest.raises(ScenarioError) as error:
        parse_scenario(text, "bad.toml")
    return tuple(str(error.value).splitlines())


def test_an_event_kind_that_no_event_has_is_a_load_time_error_naming_the_nearest_kind() -> None:
    (problem,) = _problems(HEAD + '[[step]]\nexpect = { event = "enomen", at_most = 0 }\n')
    assert problem == "bad.toml: step 1 (expect): key 'event': no event is of kind 'enomen'; did you mean enomem?"
    (problem,) = _problems(HEAD + '[[step]]\nexpect = { event = "zzz", at_most = 0 }\n')
    assert "known: " in problem and "limit_hit" in problem and "workload_exit" in problem, problem


def test_a_where_field_that_the_events_kind_lacks_is_a_load_time_error_naming_the_nearest_field() -> None:
    text = HEAD + '[[step]]\nexpect = { event = "enomem", where = { cgruop = "/a" }, at_most = 0 }\n'
    (problem,) = _problems(text)
    assert (
        problem == "bad.toml: step 1 (expect): key 'where': enomem events have no field 'cgruop'; did you mean cgroup?"
    )
    (problem,) = _problems(text.replace('"enomem"', '"ksgxd_wake"'))  # a field of other kinds, not of this one
    assert "ksgxd_wake events have no field 'cgruop'" in problem and "known: t_ns, free_pages, seq" in problem


def test_a_where_value_of_the_wrong_type_or_a_boolean_field_is_refused() -> None:
    (problem,) = _problems(HEAD + '[[step]]\nexpect = { event = "reclaim", where = { scanned = "16" }, at_most = 0 }\n')
    assert "field 'scanned' of reclaim events is a whole number, not '16'" in problem
    (problem,) = _problems(HEAD + '[[step]]\nexpect = { event = "rmdir", where = { dying = 1 }, at_most = 0 }\n')
    assert "field 'dying' is true or false, which where cannot match" in problem
    ok = '[[step]]\nexpect = { event = "reclaim", where = { scanned = 16, seq = 3, context = "sync" }, at_most = 9 }\n'
    assert parse_scenario(HEAD + ok).steps  # the wire's seq counts as a field of every event


def test_the_event_kinds_and_fields_come_from_the_cores_event_classes() -> None:
    """engine/events.py is their one home: a kind added there is one a scenario may expect, with its fields."""
    from dataclasses import dataclass

    from engine.events import Event
    from playground.scenario.load import event_fields

    @dataclass(slots=True)
    class Probe(Event):
        kind: ClassVar[str] = "probe_for_a_test"
        cgroup: str
        pages: int

    event_fields.cache_clear()
    try:
        assert event_fields()["probe_for_a_test"] == {"t_ns": "int", "cgroup": "str", "pages": "int", "seq": "int"}
        step = parse_scenario(
            HEAD + '[[step]]\nexpect = { event = "probe_for_a_test", where = { pages = 2 }, at_least = 1 }\n'
        ).steps[0]
        assert isinstance(step, ExpectEvent) and step.where == (("pages", 2),)
    finally:
        del Probe
        gc.collect()  # the class goes from Event.__subclasses__()
        event_fields.cache_clear()
    assert "probe_for_a_test" not in event_fields()


def test_every_problem_of_a_file_is_one_line_then_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        'name = "x"\ncapacity = "16MiB"\nseed = -1\n'
        '[[step]]\nspwan = { name = "a", size = 4096 }\n'  # the name 'a' is not spawned: step 4 says so too
        '[[step]]\nspawn = { name = "b", size = "capacity/0" }\n'
        '[[step]]\nexpect = { event = "enomen", at_most = 0 }\n'
        '[[step]]\nwait = { name = "a" }\n'
        '[[step]]\nwait = { name = "b" }\n'  # b's spawn step has a problem, but b is spawned: no second one
    )
    assert main(["run", "--inproc", str(bad)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert [line.split(": ")[2] for line in lines] == [
        "the top level",
        "step 1",
        "step 2 (spawn)",
        "step 3 (expect)",
        "step 4 (wait)",
    ], err
    assert all(line.startswith(f"epc-playground run: {bad}: ") for line in lines)
    assert "'seed'" in lines[0] and "'spwan'" in lines[1] and "division by zero" in lines[2] and "'a'" in lines[4]


def test_a_bad_capacity_stops_the_steps_being_checked_against_it_not_the_top_levels() -> None:
    text = 'name = "x"\ncapacity = "lots"\nseed = -1\n[[step]]\nspawn = { name = "a", size = "capacity/2" }\n'
    problems = _problems(text)
    assert len(problems) == 2 and "'capacity'" in problems[0] and "'seed'" in problems[1], problems


def test_a_file_with_very_many_problems_says_how_many_it_leaves_out() -> None:
    with pytest.raises(ScenarioError) as error:
        parse_scenario(HEAD + '[[step]]\nsleep = "soon"\n' * 150, "bad.toml")
    problems = error.value.problems
    assert len(problems) == 101 and problems[-1] == "bad.toml: and 50 more problems"


def test_an_unterminated_string_gets_its_own_hint_not_the_inline_tables() -> None:
    (problem,) = _problems('name = "abc\ncapacity = "16MiB"\n')
    assert "Illegal character" in problem and "a quoted string must end on the line it starts" in problem
    assert "inline table" not in problem
    (problem,) = _problems(HEAD + '[[step]]\nspawn = { name = "a", }\n')  # a trailing comma: no line end involved
    assert "(" not in problem.split("(at line")[1].removeprefix(" 2, column 23)"), problem


def test_a_name_near_a_bundled_scenarios_is_suggested(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--inproc", "nested"]) == 2
    assert capsys.readouterr().err.endswith("no bundled scenario has that name (did you mean nested-limits?)\n")
    with pytest.raises(ScenarioError, match=r"did you mean kselftest\?"):
        resolve("kselftset")

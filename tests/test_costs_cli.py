"""Emulated time from the command line: --profile, a scenario's profile and its expects on time,
the exit events and KTAP lines that carry the figures, the same in both modes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from playground.cli import main
from playground.scenario.load import ScenarioError, load_scenario

from .test_runner_real import run_cli

SCENARIO = """
name = "paging db"
capacity = "4MiB"
profile = "sgx1-client"

[[step]]
mkdir = "pod"
[[step]]
write = { path = "pod/misc.max", value = "sgx_epc 1048576" }
[[step]]
spawn = { name = "db", cgroup = "pod", kind = "enclave", size = "2MiB", pattern = "sequential", passes = 2 }
[[step]]
spawn = { name = "free", cgroup = "/", kind = "enclave", size = "512KiB", pattern = "sequential", passes = 2 }
[[step]]
wait = { timeout = "60s" }
[[step]]
expect = { name = "db", slowdown = ">1.2" }
[[step]]
expect = { name = "free", slowdown = "<=1.0" }
[[step]]
expect = { name = "db", paging = ">1ms" }
"""


def exits(events: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for line in events.read_text().splitlines():
        event = json.loads(line)
        if event["kind"] == "workload_exit":
            out[event["name"]] = (event["runtime_ns"], event["paging_ns"])
    return out


@pytest.mark.slow
def test_a_real_engine_gives_the_same_times_as_the_in_process_run(tmp_path: Path) -> None:
    """A deterministic scenario (one workload paging under its limit, one not): the exit events' figures,
    the KTAP # lines and the expects on slowdown agree between a real engine with real processes and
    the in-process host."""
    scenario = tmp_path / "s.toml"
    scenario.write_text(SCENARIO)
    results = {}
    for mode in ("inproc", "real"):
        events = tmp_path / f"{mode}.jsonl"
        args = [str(scenario), "-q", "--events", str(events), *(["--inproc"] if mode == "inproc" else [])]
        result = run_cli(tmp_path, *args)
        assert result.returncode == 0, result.stdout + result.stderr
        notes = [line for line in result.stdout.splitlines() if "emulated runtime" in line]
        results[mode] = (exits(events), notes)
    figures, notes = results["inproc"]
    assert figures["db"][1] > 0 and figures["free"][1] == 0
    assert notes[0].startswith("# db: emulated runtime ") and notes[0].endswith("(1 of 1 exited)")
    assert results["real"] == results["inproc"]


def test_a_scenarios_profile_sets_the_costs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The same run under zero costs a page's compute alone: no paging, and the # line says so."""
    scenario = tmp_path / "s.toml"
    zero = SCENARIO.replace('"sgx1-client"', '"zero"').replace('slowdown = ">1.2"', 'paging = "<=0"')
    scenario.write_text(zero.replace('paging = ">1ms"', 'runtime = ">1ms"'))
    assert main(["run", str(scenario), "--inproc", "-q"]) == 0
    assert "# db: emulated runtime " in capsys.readouterr().out
    scenario.write_text(SCENARIO)
    assert main(["run", str(scenario), "--inproc", "-q", "--profile", "zero"]) == 1  # --profile over the file's
    assert "not ok 1 - step 6: db: slowdown >1.2" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("expect", "says"),
    [
        ('slowdown = "1.2"', "key 'slowdown': '1.2' is not a relation and a number, like '<1.2'"),
        ('slowdown = "<0.5"', "key 'slowdown': '0.5' is not a ratio of at least 1"),
        ('runtime = "<fast"', "key 'runtime': bad duration 'fast'"),
        ("paging = 3", "key 'paging': 3 is not a relation and a number"),
        ('slowdown = "<2", paging = "<1s"', "paging"),
        ('slowdown = "<2", speed = 1', "speed"),
    ],
)
def test_a_bad_time_expect_is_refused_at_load_in_one_line(tmp_path: Path, expect: str, says: str) -> None:
    scenario = tmp_path / "s.toml"
    scenario.write_text(SCENARIO.replace('slowdown = ">1.2"', expect))
    with pytest.raises(ScenarioError) as e:
        load_scenario(scenario)
    assert len(e.value.problems) == 1 and "step 6" in e.value.problems[0] and says in e.value.problems[0]


def test_a_bad_profile_in_a_scenario_is_refused_at_load_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "mine.toml").write_text('name = "mine"\n[cost_ns]\newb = -5\n')
    scenario = tmp_path / "s.toml"
    scenario.write_text(SCENARIO.replace('"sgx1-client"', '"mine.toml"'))  # beside the scenario
    assert main(["run", str(scenario), "--inproc"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "key 'profile': cost profile" in err and "mine.toml" in err
    scenario.write_text(SCENARIO.replace('"sgx1-client"', '"epyc"'))
    assert main(["run", str(scenario), "--inproc"]) == 2
    assert "no cost profile 'epyc'" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["engine"], ["run", "x.toml"], ["tui"]])
def test_a_bad_profile_option_is_a_usage_error_in_one_line(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\n[cost_ns]\nfoo = 1\n')
    for value, says in ((str(bad), "unknown cost 'cost_ns.foo'"), ("nehalem", "no cost profile 'nehalem'")):
        with pytest.raises(SystemExit) as exit_:
            main([*command, "--profile", value])
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert says in err and err.splitlines()[-1].startswith("epc-playground") and "--profile" in err

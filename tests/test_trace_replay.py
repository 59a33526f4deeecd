"""Replaying a trace: `epc-playground enclave --trace FILE` on a real engine, and a scenario spawn's
`trace = FILE` in both modes, with its checks at load."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from playground.scenario.load import ScenarioError, load_scenario
from workloads.trace import TraceWriter

from .engine_fixture import ROOT, RunningEngine, private_env

CLI = [sys.executable, "-m", "playground.cli"]


def cyclic_trace(path: Path, pages: int, rounds: int) -> Path:
    """Pages 0..pages-1 in order, ``rounds`` times: every re-access has an LRU distance of pages - 1."""
    with TraceWriter(path) as writer:
        for _ in range(rounds):
            for page in range(pages):
                writer.add(page, write=page % 2 == 0)
    return path


def _events(engine: RunningEngine, cgroup: str) -> int:
    done = engine.cli("cg", "read", f"{cgroup}/misc.events")
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1])


@pytest.mark.slow
def test_enclave_trace_faults_only_when_the_traces_pages_do_not_fit_under_the_limit(
    tmp_path: Path, engine: RunningEngine
) -> None:
    small = cyclic_trace(tmp_path / "small.trace", 16, 20)  # 16 heap pages + 5 of TCS and code: under 32
    large = cyclic_trace(tmp_path / "large.trace", 64, 20)  # a cycle over twice the limit
    for cgroup, trace in (("/fits", small), ("/over", large)):
        assert engine.cli("cg", "mkdir", cgroup).returncode == 0
        assert engine.cli("cg", "write", f"{cgroup}/misc.max", "sgx_epc 131072").returncode == 0  # 32 pages
        name = cgroup.strip("/")
        done = engine.cli("enclave", "--trace", str(trace), "--cgroup", cgroup, "--passes", "2", "--name", name)
        assert done.returncode == 0, done.stderr
    assert _events(engine, "/fits") == 0
    assert _events(engine, "/over") > 0
    with engine.client() as client:
        rows = {row["name"]: row for row in client.call("snapshot")["workloads"]}
    fits, over = rows["fits"], rows["over"]
    assert (fits["size"], over["size"]) == (16 * 4096, 64 * 4096)  # the heap is the trace's
    assert over["elrange"] == 128 * 4096  # 64 heap pages + 5 of TCS and code, to a power of two
    assert fits["faults"] == 0
    # a cycle over 64 pages with 32 frames: an LRU faults on every access (and on the entry's 5 pages)
    assert 64 * 20 * 2 // 2 <= over["faults"] <= 64 * 20 * 2 + 5, over
    engine.check()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--trace", "NOTES"], "epc-playground enclave: --trace: {dir}/NOTES: not an epc-playground trace"),
        (["--trace", "T", "--pattern", "random"], "epc-playground enclave: give --pattern or --trace, not both"),
        (["--trace", "T", "--size", "8KiB"], "epc-playground enclave: --size 8 KiB is smaller than the trace"),
        ([], "epc-playground enclave: give --size SIZE (the heap, e.g. 64MiB) or --trace FILE"),
        (
            ["--trace", "T", "--trim", "1MiB"],
            "epc-playground enclave: --trim 1 MiB: more than the heap it trims, the trace's heap of 256 KiB",
        ),
        (["--trace", "HUGE"], "epc-playground enclave: --trace HUGE: the enclave's ELRANGE (heap + 5 pages"),
    ],
    ids=["not-a-trace", "with-pattern", "size-too-small", "neither", "trim-past-the-trace", "too-large"],
)
def test_enclave_trace_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "NOTES").write_text("not a trace\n")
    cyclic_trace(tmp_path / "T", 64, 1)
    with TraceWriter(tmp_path / "HUGE") as writer:
        writer.add((1 << 31) - 1)  # the host's largest ELRANGE is 2^31 pages: this with the TCS and code is more
    done = subprocess.run(
        [*CLI, "enclave", *args], cwd=tmp_path, env=private_env(tmp_path), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stderr.startswith(message.format(dir=tmp_path.resolve())) or done.stderr.startswith(
        message.format(dir=".").replace("./", "")
    ), done.stderr
    assert done.stderr.count("\n") == 1, done.stderr


SCENARIO = """\
name = "a trace"
capacity = "1MiB"
[[step]]
mkdir = "pod"
[[step]]
write = {{ path = "pod/misc.max", value = "sgx_epc 131072" }}
[[step]]
spawn = {{ name = "t", cgroup = "pod", {spawn} }}
[[step]]
wait = {{ name = "t" }}
[[step]]
expect = {{ name = "t", exited = "ok", all = true }}
[[step]]
expect = {{ path = "pod/misc.events", matches = 'sgx_epc\\.max [1-9]' }}
[[step]]
expect = {{ event = "reclaim", where = {{ cgroup = "pod" }}, at_least = 1 }}
"""


def _run(tmp_path: Path, scenario: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "run", str(scenario), *args],
        cwd=ROOT,
        env=private_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_a_scenario_spawn_replays_its_trace_with_the_same_ktap_in_both_modes(tmp_path: Path) -> None:
    (tmp_path / "traces").mkdir()
    cyclic_trace(tmp_path / "traces" / "cycle.trace", 64, 10)
    scenario = tmp_path / "s.toml"
    scenario.write_text(SCENARIO.format(spawn='trace = "traces/cycle.trace"'))  # the scenario file's neighbour
    inproc = _run(tmp_path, scenario, "--inproc")
    real = _run(tmp_path, scenario)
    assert inproc.returncode == 0, inproc.stdout + inproc.stderr
    assert "not ok" not in inproc.stdout and "1..4" in inproc.stdout
    assert real.stdout == inproc.stdout, real.stdout + real.stderr


@pytest.mark.parametrize(
    ("spawn", "problem"),
    [
        ('trace = "missing.trace"', "key 'trace': no trace file 'missing.trace'"),
        ('trace = "notes.txt"', "key 'trace': {dir}/notes.txt: not an epc-playground trace"),
        ('trace = "cut.trace"', "key 'trace': {dir}/cut.trace: truncated trace"),
        ('trace = "t.trace", pattern = "random"', "keys 'trace' and 'pattern': give one of them"),
        ('trace = "t.trace", kind = "vm", size = "1MiB"', "key 'trace': only an enclave takes it, not a vm"),
        ('trace = "t.trace", size = "4KiB"', None),  # found by the runner against the capacity: below
    ],
    ids=["missing", "not-a-trace", "truncated", "with-pattern", "vm", "size-too-small"],
)
def test_a_spawns_trace_is_checked_at_load(tmp_path: Path, spawn: str, problem: str | None) -> None:
    (tmp_path / "notes.txt").write_text("hello\n")
    data = cyclic_trace(tmp_path / "t.trace", 64, 5).read_bytes()
    (tmp_path / "cut.trace").write_bytes(data[: len(data) - 10])
    scenario = tmp_path / "s.toml"
    scenario.write_text(SCENARIO.format(spawn=spawn))
    if problem is None:
        done = _run(tmp_path, scenario, "--inproc")
        assert done.returncode == 2
        assert "key 'size': '4KiB' is 4096 bytes" in done.stderr and "(its trace needs 262144)" in done.stderr
        return
    with pytest.raises(ScenarioError) as e:
        load_scenario(scenario)
    assert e.value.problems == (f"{scenario}: step 3 (spawn): {problem.format(dir=tmp_path.resolve())}",) or (
        len(e.value.problems) == 1 and problem.format(dir=tmp_path.resolve()) in e.value.problems[0]
    ), e.value.problems
    done = _run(tmp_path, scenario)
    assert done.returncode == 2 and done.stdout == ""

"""A workload's compute per page accessed, declared (`enclave --compute`, a spawn's `compute =`) or a
trace's own compute times (sent with each access as `compute_ns`), on its emulated clock (docs/costs.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest

from common.costs import load_profile
from engine import PAGE_SIZE
from playground.cli import main
from playground.scenario.load import ScenarioError, load_scenario
from wire.protocol import MAX_CALL_COMPUTE_NS, ProtocolError, decode_request
from workloads.trace import TraceWriter

from .engine_fixture import ROOT, RunningEngine, private_env
from .test_costs import rig_with

CLI = [sys.executable, "-m", "playground.cli"]
HEAP_PAGES = 512  # 2 MiB
ENTRY_PAGES = 5  # the entry touches the TCS and the 4 code pages once
PASSES = 2

SCENARIO = """
name = "compute"
capacity = "4MiB"
profile = "sgx1-client"
[[step]]
mkdir = "pod"
[[step]]
write = {{ path = "pod/misc.max", value = "sgx_epc 1048576" }}
[[step]]
spawn = {{ name = "db", cgroup = "pod", {spawn} }}
[[step]]
wait = {{ timeout = "60s" }}
[[step]]
expect = {{ name = "db", exited = "ok", all = true }}
"""


def exit_events(events: Path) -> dict[str, dict[str, object]]:
    return {e["name"]: e for e in map(json.loads, events.read_text().splitlines()) if e["kind"] == "workload_exit"}


def run_inproc(tmp_path: Path, spawn: str, capsys: pytest.CaptureFixture[str]) -> tuple[dict[str, object], str]:
    """The scenario in process with ``spawn``: db's workload_exit event and the KTAP # line of db."""
    scenario = tmp_path / "s.toml"
    scenario.write_text(SCENARIO.format(spawn=spawn))
    events = tmp_path / "events.jsonl"
    assert main(["run", str(scenario), "--inproc", "-q", "--events", str(events)]) == 0
    out = capsys.readouterr().out
    note = next(line for line in out.splitlines() if line.startswith("# db: emulated runtime"))
    return exit_events(events)["db"], note


def pages_trace(path: Path, pages: int, rounds: int, compute: list[int] | None) -> Path:
    """Pages 0..pages-1, ``rounds`` times; with ``compute``, access i comes after compute[i] ns."""
    with TraceWriter(path, compute=compute is not None) as writer:
        for i in range(pages * rounds):
            writer.add(i % pages, write=True, compute_ns=compute[i] if compute else 0)
    return path


def test_a_spawns_compute_changes_its_runtime_by_exactly_the_pages_it_accessed_times_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Under paging (sgx1-client, a 1 MiB limit on a 2 MiB heap), compute = "0ns" and "2500ns" differ by
    the pages accessed x 2500 ns and no more: the SGX operations and the paging are the same."""
    spawn = f'size = "2MiB", passes = {PASSES}, compute = "{{}}"'
    none, _ = run_inproc(tmp_path, spawn.format("0ns"), capsys)
    some, some_note = run_inproc(tmp_path, spawn.format("2.5us"), capsys)
    accessed = HEAP_PAGES * PASSES + ENTRY_PAGES
    assert int(some["runtime_ns"]) - int(none["runtime_ns"]) == accessed * 2500  # type: ignore[call-overload]
    assert some["paging_ns"] == none["paging_ns"] and int(none["paging_ns"]) > 0  # type: ignore[call-overload]
    assert (some["compute_ns"], some["compute_from"]) == (2500, "hello")
    assert ", compute 2.50 us a page (declared) (1 of 1 exited)" in some_note, some_note
    default, default_note = run_inproc(tmp_path, 'size = "2MiB", passes = 2', capsys)
    profile = load_profile("sgx1-client").cost_ns["compute"]
    assert int(default["runtime_ns"]) - int(none["runtime_ns"]) == accessed * profile  # type: ignore[call-overload]
    assert ", compute 1.00 us a page (the profile's) (1 of 1 exited)" in default_note, default_note


def test_a_traces_compute_times_are_what_its_replay_adds_to_the_runtime(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same pages with compute times (all different, summing to S) and with all zero: the runtimes
    differ by S exactly, whatever the batches; a declared compute replaces the trace's times."""
    pages, rounds = 300, 3  # a cycle over more than the limit: it pages
    times = [(7 * i) % 1301 for i in range(pages * rounds)]
    pages_trace(tmp_path / "timed.trace", pages, rounds, times)
    pages_trace(tmp_path / "zero.trace", pages, rounds, [0] * (pages * rounds))
    timed, note = run_inproc(tmp_path, 'trace = "timed.trace"', capsys)
    zero, _ = run_inproc(tmp_path, 'trace = "zero.trace"', capsys)
    assert int(timed["runtime_ns"]) - int(zero["runtime_ns"]) == sum(times)  # type: ignore[call-overload]
    assert timed["paging_ns"] == zero["paging_ns"] and int(zero["paging_ns"]) > 0  # type: ignore[call-overload]
    assert (timed["compute_ns"], timed["compute_from"]) == (sum(times) // (pages * rounds), "calls")
    assert "a page (the trace's)" in note, note
    declared, _ = run_inproc(tmp_path, 'trace = "timed.trace", compute = "3us"', capsys)
    accessed = pages * rounds + ENTRY_PAGES
    assert int(declared["runtime_ns"]) - int(zero["runtime_ns"]) == accessed * 3000 - ENTRY_PAGES * 1000  # type: ignore[call-overload]
    assert declared["compute_from"] == "hello"


def test_an_access_with_its_compute_pays_it_once_and_no_compute_per_page() -> None:
    """The Session: an access that gives compute_ns pays exactly that (and its entry), not the per-page
    compute, also when it runs in several steps."""
    rig = rig_with(load_profile("zero"))  # only compute costs: 1 us a page unless said
    rig.session.chunk_pages = 16  # so that the access runs in steps
    rig.processes.live.add(10)
    rig.ok(10, "hello", pid=10, role="enclave")
    eid = rig.ok(10, "ecreate", size=128 * PAGE_SIZE)["eid"]
    key = rig.call(10, "add_pages", eid=eid, count=100)
    rig.rounds()
    assert not rig.replies.pop(key).err
    rig.ok(10, "einit", eid=eid)
    workload = rig.session.workloads[10]
    key = rig.call(10, "access", eid=eid, ranges=[[0, 100]], compute_ns=12345)
    assert key not in rig.replies  # it goes on in steps
    rig.rounds()
    assert rig.replies.pop(key).ok == {"faults": 0}
    assert workload.runtime_ns == 12345
    rig.ok(10, "access", eid=eid, ranges=[[0, 10]])
    assert workload.runtime_ns == 12345 + 10 * 1000
    assert workload.compute_used(1000) == (123, "calls")


@pytest.mark.parametrize(
    ("value", "why"),
    [(-1, "compute_ns must be"), (MAX_CALL_COMPUTE_NS + 1, "compute_ns must be"), (True, "compute_ns must be")],
)
def test_an_access_compute_out_of_bounds_is_eproto(value: object, why: str) -> None:
    message = {"v": 1, "op": "access", "id": 1, "eid": 1, "ranges": [[0, 1]], "compute_ns": value}
    with pytest.raises(ProtocolError) as e:
        decode_request(msgpack.packb(message))
    assert e.value.code == "EPROTO" and why in e.value.message


@pytest.mark.parametrize("command", ["enclave", "vm"])
@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("250", "bad compute time '250': give a time with its unit, like 250ns, 2us or 1.5ms"),
        ("2s", "bad compute time '2s': at most 1s per page accessed"),
        ("-1us", "bad compute time '-1us'"),
        ("fast", "bad compute time 'fast'"),
    ],
)
def test_a_bad_compute_option_is_one_line_and_exit_2(tmp_path: Path, command: str, value: str, says: str) -> None:
    done = subprocess.run(
        [*CLI, command, "--size", "1MiB", f"--compute={value}"],
        cwd=ROOT,
        env=private_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"epc-playground {command}: error: argument --compute: {says}"), done.stderr


@pytest.mark.parametrize(
    ("compute", "says"),
    [
        ('"quick"', "key 'compute': bad compute time 'quick'"),
        ("250", "key 'compute': bad compute time 250: give a time with its unit"),
        ('"5s"', "key 'compute': bad compute time '5s': at most 1s per page accessed"),
    ],
)
def test_a_bad_spawn_compute_is_refused_at_load_in_one_line(tmp_path: Path, compute: str, says: str) -> None:
    scenario = tmp_path / "s.toml"
    scenario.write_text(SCENARIO.format(spawn=f'size = "1MiB", compute = {compute}'))
    with pytest.raises(ScenarioError) as e:
        load_scenario(scenario)
    assert len(e.value.problems) == 1 and "step 3 (spawn)" in e.value.problems[0], e.value.problems
    assert says in e.value.problems[0] and "\n" not in e.value.problems[0]


def test_enclave_compute_on_a_real_engine_adds_pages_times_compute(tmp_path: Path, engine: RunningEngine) -> None:
    """`epc-playground enclave --compute` says it in hello: two otherwise equal runs differ by exactly
    pages accessed x the difference, and the snapshot says the compute and who declared it."""
    for name, compute in (("slow", "2us"), ("fast", "0ns")):
        done = engine.cli("enclave", "--size", "256KiB", "--passes", "3", "--compute", compute, "--name", name)
        assert done.returncode == 0, done.stderr
    with engine.client() as client:
        rows = {row["name"]: row for row in client.call("snapshot")["workloads"]}
    accessed = 64 * 3 + ENTRY_PAGES
    assert rows["slow"]["runtime_ns"] - rows["fast"]["runtime_ns"] == accessed * 2000
    assert (rows["slow"]["compute_ns"], rows["slow"]["compute_from"]) == (2000, "hello")
    engine.check()


@pytest.mark.slow
def test_a_trace_with_compute_gives_the_same_times_on_a_real_engine_as_in_process(tmp_path: Path) -> None:
    """A trace-driven spawn whose trace has compute times, and a declared one: the exit events' figures
    and the KTAP output agree between a real engine with real processes and the in-process host."""
    pages_trace(tmp_path / "timed.trace", 300, 2, [(13 * i) % 997 for i in range(600)])
    scenario = tmp_path / "s.toml"
    kv = 'spawn = { name = "kv", cgroup = "/", size = "512KiB", compute = "750ns" }'
    text = SCENARIO.format(spawn='trace = "timed.trace"').replace("[[step]]\nwait", f"[[step]]\n{kv}\n[[step]]\nwait")
    scenario.write_text(text)
    results = {}
    for mode in ("inproc", "real"):
        events = tmp_path / f"{mode}.jsonl"
        done = subprocess.run(
            [*CLI, "run", str(scenario), "--events", str(events), *(["--inproc"] if mode == "inproc" else [])],
            cwd=ROOT,
            env=private_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        figures = {
            name: (e["runtime_ns"], e["paging_ns"], e["compute_ns"], e["compute_from"])
            for name, e in exit_events(events).items()
        }
        results[mode] = (figures, done.stdout)
    figures, out = results["inproc"]
    assert figures["db"][3] == "calls" and figures["kv"][2:] == (750, "hello")
    assert "# kv: emulated runtime" in out and "compute 750 ns a page (declared)" in out
    assert results["real"] == results["inproc"]


def test_the_tui_workload_detail_says_the_compute_per_page_and_who_said_it() -> None:
    import asyncio

    from playground.tui.app import EpcApp

    from .test_costs_tui import timed_feed
    from .test_tui_workloads import SIZE, detail_text

    feed = timed_feed()
    for w in feed.snapshot["workloads"]:
        if w["pid"] == 4102:
            w["compute_ns"], w["compute_from"] = 1234, "calls"

    async def scenario() -> None:
        app = EpcApp("ipc:///nowhere", feed=feed)
        async with app.run_test(size=SIZE) as pilot:
            assert "compute  on average 1.23 us a page accessed (the trace's)" in await detail_text(pilot, 4102)

    asyncio.run(scenario())

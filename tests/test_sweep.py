"""epc-playground sweep: the --vary grammar and grid, the values put into a scenario, the metrics
of a point, the knee and the recommendation, the outputs, and the same table however it runs."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import pytest

from common.limits import PAGE_SIZE
from playground.cli import main
from playground.scenario.load import load_scenario, parse_scenario
from playground.scenario.model import Mkdir, Spawn, Write
from playground.scenarios import bundled
from playground.sweep.analysis import k8s_quantity, knee, parse_budget, recommend
from playground.sweep.execute import ProgressBar, run_local
from playground.sweep.metrics import cost_column, point_metrics
from playground.sweep.point import PointResult, run_point
from playground.sweep.vary import VaryError, apply, grid, parse_vary

MiB = 1 << 20
NESTED = load_scenario(bundled()["nested-limits"])
VARY = "t/parent/misc.max=512KiB..2MiB/4"

LIMITED = """\
name = "one limited cgroup"
capacity = "16MiB"
seed = 5
[[step]]
mkdir = "pod"
[[step]]
spawn = { name = "app", cgroup = "pod", size = "2MiB", passes = 2, pattern = "random" }
[[step]]
wait = { name = "app", timeout = "60s" }
[[step]]
expect = { path = "pod/misc.max", equals = "sgx_epc 1048576", title = "the swept limit is the one written" }
"""


def sweep(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["sweep", *argv])
    out, err = capsys.readouterr()
    return code, out, err


# -- the grammar and the grid --------------------------------------------------------------


def test_a_range_gives_n_evenly_spaced_values_from_lo_to_hi_both_included() -> None:
    axis = parse_vary("t/parent/misc.max=8MiB..128MiB/16", NESTED)
    assert axis.values == tuple(8 * MiB * k for k in range(1, 17))
    assert (axis.kind, axis.target, axis.path) == ("misc.max", "/t/parent", "t/parent/misc.max")


def test_a_range_of_sizes_is_rounded_to_whole_pages_and_a_value_it_repeats_runs_once() -> None:
    assert parse_vary("t/parent/misc.max=0..10000/3", NESTED).values == (0, PAGE_SIZE, 2 * PAGE_SIZE)
    assert parse_vary("t/parent/misc.max=4096..8192/5", NESTED).values == (4096, 8192)
    assert parse_vary("big.size=1..3/2", NESTED).values == (PAGE_SIZE,)  # a size is at least a page


def test_a_list_keeps_its_order_and_max_means_no_limit() -> None:
    axis = parse_vary("t/parent/misc.max=2MiB,1MiB,max", NESTED)
    assert axis.values == (2 * MiB, MiB, None)
    assert parse_vary("big.count=1..4/4", NESTED).values == (1, 2, 3, 4)
    assert parse_vary("seed=7,3", NESTED).values == (7, 3)


def test_several_axes_make_a_grid_with_the_first_varying_slowest() -> None:
    axes = [parse_vary("t/parent/misc.max=1MiB,2MiB", NESTED), parse_vary("seed=1,2,3", NESTED)]
    points = grid(axes)
    assert [p.index for p in points] == list(range(6))
    assert [p.values for p in points] == [(MiB, 1), (MiB, 2), (MiB, 3), (2 * MiB, 1), (2 * MiB, 2), (2 * MiB, 3)]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("t/parent/misc.max=1MiB..2MiB/0", "0 points"),
        ("t/parent/misc.max=1MiB..2MiB", "number of points"),
        ("t/parent/misc.max=2MiB..1MiB/3", "from LO up to HI"),
        ("t/parent/misc.max=1MiB..2MiB/1", "N >= 2"),
        ("t/nowhere/misc.max=1MiB", "never makes the cgroup /t/nowhere"),
        ("t/parent/cpu.max=1", "'cpu.max' is not a file a sweep varies"),
        ("misc.max=1MiB", "the root cgroup has no misc.max"),
        ("bgi.count=1,2", "no spawn is named 'bgi' (did you mean big?)"),
        ("big.count=0,1", "from 1 to 256, not 0"),
        ("big.count=1..300/2", "from 1 to 256, not 300"),
        ("big.size=0", "not 0"),
        ("big.color=1", "not something a sweep varies"),
        ("t/parent/misc.max=1MiB,,2MiB", "an empty value"),
        ("t/parent/misc.max=lots", "bad size 'lots'"),
        ("t/parent/misc.max", "write PATH=LO..HI/N"),
        ("t/parent/misc.max=1MiB..max/3", "'max' ends no range"),
    ],
)
def test_a_vary_that_cannot_be_swept_is_one_line_exit_2_and_nothing_runs(
    text: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(VaryError) as error:
        parse_vary(text, NESTED)
    assert says in str(error.value) and "\n" not in str(error.value)
    code, out, err = sweep(["nested-limits", "--vary", text], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("epc-playground sweep: --vary ") and says in err, err


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--vary", VARY, "--budget", "ten%"], "--budget 'ten%' is not a budget"),
        (["--vary", VARY, "--budget=-5%"], "is not a budget"),
        (["--vary", VARY, "--vary", "seed=1,2", "--budget", "10%"], "--budget needs exactly one --vary"),
        (["--vary", "seed=1,2", "--budget", "10%"], "--budget needs exactly one --vary"),
        (["--vary", VARY, "--vary", "/t/parent/misc.max=1MiB"], "t/parent/misc.max is varied twice"),
        (["--vary", "seed=1..3/3", "--vary", "seed=4"], "seed is varied twice"),
        (["--vary", VARY, "--plot", "curve.jpg"], "ending in .png or .svg"),
        (["--vary", VARY, "--csv", "/nonexistent-dir/out.csv"], "--csv /nonexistent-dir/out.csv: cannot write it"),
        (["--vary", VARY, "--dask", "tcp://127.0.0.1:1", "--jobs", "2"], "with --dask the cluster's workers"),
    ],
)
def test_bad_flags_are_one_line_exit_2_and_nothing_runs(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = sweep(["nested-limits", *argv], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and says in err, err


def test_a_scenario_that_is_neither_a_file_nor_bundled_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = sweep(["nested-limit", "--vary", VARY], capsys)
    assert code == 2 and out == "" and "did you mean nested-limits" in err
    code, out, err = sweep(["nothing-like-it", "--vary", VARY], capsys)  # sweep has no --list: run's does
    assert code == 2 and out == "" and "(`epc-playground run --list` shows them)" in err


def test_jobs_must_be_a_positive_number(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["sweep", "nested-limits", "--vary", VARY, "--jobs", "0"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.splitlines()[-1].startswith("epc-playground sweep: error: argument --jobs")


def test_dask_asked_for_without_dask_installed_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed: ImportError
    code, out, err = sweep(["nested-limits", "--vary", VARY, "--dask", "tcp://127.0.0.1:1"], capsys)
    assert code == 2 and out == ""
    assert err == "epc-playground sweep: --dask needs dask.distributed, which is not installed: " + (
        "pip install 'dask[distributed]'\n"
    )
    code, out, _ = sweep(["nested-limits", "--vary", "t/parent/misc.max=1MiB", "--jobs", "1"], capsys)
    assert code == 0 and out.splitlines()[1].split()[:2] == ["0", "1"]  # without dask, the rest works


def test_dask_with_no_scheduler_at_the_address_is_one_line_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("distributed")
    monkeypatch.setattr("playground.sweep.execute.DASK_TIMEOUT_S", 1)
    code, out, err = sweep(["nested-limits", "--vary", VARY, "--dask", "tcp://127.0.0.1:9"], capsys)
    assert code == 2 and out == ""
    lines = [line for line in err.splitlines() if line.startswith("epc-playground sweep:")]
    assert len(lines) == 1 and "--dask tcp://127.0.0.1:9: no Dask scheduler answers there" in lines[0], err


# -- the values put into the scenario ------------------------------------------------------


def test_a_swept_misc_max_replaces_every_write_there_but_one_that_must_fail() -> None:
    axes = [parse_vary("t/parent/misc.max=3MiB", NESTED)]
    swept = apply(NESTED, axes, grid(axes)[0])
    writes = [s for s in swept.steps if isinstance(s, Write) and s.path == "/t/parent/misc.max"]
    assert [(w.value.source, w.errno) for w in writes] == [
        (f"sgx_epc {3 * MiB}", None),
        ("sgx_epc -1", "EINVAL"),
        ("sgx_epc 18446744073709551616", "ERANGE"),
    ]
    assert len(swept.steps) == len(NESTED.steps)


def test_a_limit_the_scenario_never_writes_is_written_right_after_the_mkdir_that_makes_its_cgroup() -> None:
    axes = [parse_vary("t/parent/memory.max=1MiB", NESTED), parse_vary("t/parent/sibling/misc.max=max", NESTED)]
    swept = apply(NESTED, axes, grid(axes)[0])
    steps = list(swept.steps)
    first = next(i for i, s in enumerate(steps) if isinstance(s, Mkdir) and s.path == "/t/parent/child")
    sibling = next(i for i, s in enumerate(steps) if isinstance(s, Mkdir) and s.path == "/t/parent/sibling")
    assert isinstance(steps[first + 1], Write) and steps[first + 1].path == "/t/parent/memory.max"
    assert steps[first + 1].value.source == str(MiB)
    assert isinstance(steps[sibling + 1], Write) and steps[sibling + 1].path == "/t/parent/sibling/misc.max"
    assert steps[sibling + 1].value.source == "sgx_epc max"
    assert len(steps) == len(NESTED.steps) + 2


def test_a_spawns_count_and_size_and_the_seed_are_replaced() -> None:
    axes = [parse_vary("big.count=3", NESTED), parse_vary("big.size=1MiB", NESTED), parse_vary("seed=42", NESTED)]
    swept = apply(NESTED, axes, grid(axes)[0])
    big = next(s for s in swept.steps if isinstance(s, Spawn) and s.name == "big")
    holder = next(s for s in swept.steps if isinstance(s, Spawn) and s.name == "holder")
    assert (big.count, big.size.evaluate({}), swept.seed) == (3, MiB, 42)
    assert holder.count == 1 and holder.size.source == "capacity/8 - 64KiB"  # the others stay as they were


def test_the_swept_value_is_what_the_run_reads_back_from_the_file() -> None:
    scenario = parse_scenario(LIMITED, "limited.toml")
    axes = [parse_vary("pod/misc.max=1MiB,4MiB", scenario)]
    results = [run_point(p.index, apply(scenario, axes, p), "/pod") for p in grid(axes)]
    assert [(r.expects_passed, r.expects_total) for r in results] == [(1, 1), (0, 1)]
    assert results[0].metrics["peak"] == MiB and MiB < results[1].metrics["peak"] < 4 * MiB
    assert results[0].metrics["faults"] > 0 and results[0].metrics["limit_hits"] > 0
    assert results[0].metrics["eldu"] == results[0].metrics["faults"]  # every fault an ELDU; the SECS stayed in
    assert results[0].metrics["ewb"] >= results[0].metrics["eldu"]
    assert results[1].metrics["faults"] == 0 and results[1].metrics["limit_hits"] == 0


# -- a point's metrics ---------------------------------------------------------------------


def _snapshot(**workload: int) -> dict[str, object]:
    row = {"pid": 1, "name": "app", "faults": 7, **workload}
    cg = {"path": "/pod", "misc_events": 3, "misc_peak": 4 * PAGE_SIZE}
    return {"workloads": [row], "cgroups": [cg]}


def test_ewb_counts_reclaimed_pages_and_secs_and_eldu_what_came_back_rather_than_freed_while_out() -> None:
    events = [
        {"kind": "reclaim", "written": 16},
        {"kind": "reclaim", "written": 4},
        {"kind": "secs_writeback", "enclave": 1},
        {"kind": "release", "backing_bytes": 5 * PAGE_SIZE},
    ]
    metrics = point_metrics(_snapshot(), events, {"app": ["ok"]}, "/pod")
    assert metrics == {
        "outcome:app": "ok",
        "faults": 7,
        "ewb": 21,
        "eldu": 16,
        "limit_hits": 3,
        "peak": 4 * PAGE_SIZE,
    }
    assert cost_column([metrics]) == "faults"


def test_slowdown_and_runtime_appear_only_when_the_snapshot_has_emulated_time() -> None:
    metrics = point_metrics(_snapshot(runtime_ns=3_000, paging_ns=1_000), [], {"app": ["ok", "SIGBUS"]}, "/gone")
    assert metrics["runtime_ns"] == 3_000 and metrics["slowdown"] == 1.5
    assert metrics["outcome:app"] == "1 SIGBUS, 1 ok" and metrics["limit_hits"] is None
    assert cost_column([metrics]) == "slowdown"


# -- the knee and the recommendation -------------------------------------------------------


def test_the_knee_is_the_point_farthest_below_the_chord() -> None:
    xs = [1, 2, 3, 4, 5, 6, 7, 8]
    assert knee(xs, [100, 60, 30, 12, 10, 9, 8, 8]) == 3
    assert knee(xs, [10] * 8) is None  # flat: no knee
    assert knee(xs, [8 - x for x in xs]) is None  # a straight line never falls below its chord
    assert knee([1, 2], [5, 1]) is None


def test_the_recommendation_is_the_smallest_limit_that_and_every_larger_one_keep_within_budget() -> None:
    slowdowns = [3.0, 1.5, 1.08, 1.2, 1.09, 1.05, 1.0]
    assert recommend(slowdowns, [True] * 7, 0.10, 1.0) == 4  # 1.08 at 2 is followed by 1.2
    assert recommend(slowdowns, [True] * 7, 0.25, 1.0) == 2
    assert recommend(slowdowns, [True] * 6 + [True], 0.0, 1.0) == 6
    assert recommend(slowdowns, [True, True, True, True, False, True, True], 0.10, 1.0) == 5
    assert recommend([2.0, 1.5], [True, True], 0.10, 1.0) is None


def test_budget_and_quantity_forms() -> None:
    assert parse_budget("10%") == pytest.approx(0.1) and parse_budget("2.5") == pytest.approx(0.025)
    with pytest.raises(ValueError, match="not a budget"):
        parse_budget("nan%")
    assert [k8s_quantity(n) for n in (48 * MiB, 1 << 30, 12 * 1024, 0)] == ["48Mi", "1Gi", "12Ki", "0"]


# -- the command and its outputs -----------------------------------------------------------


def test_a_sweep_on_two_jobs_gives_the_table_of_one_job_byte_for_byte(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["nested-limits", "--vary", "t/parent/misc.max=512KiB..4MiB/8"]
    code1, one, _ = sweep([*argv, "--jobs", "1"], capsys)
    code2, two, err = sweep([*argv, "--jobs", "2"], capsys)
    assert code1 == code2 == 0
    assert one == two
    lines = one.splitlines()
    header = ["point", "t/parent/misc.max", "big", "holder", "guest", "expects", "faults", "EWB", "ELDU"]
    assert lines[0].split() == [*header, "misc.events", "peak", "runtime", "slowdown"]
    assert len(lines) == 1 + 8 + 1 and lines[-1].startswith("knee: t/parent/misc.max = ")
    assert "8 points in" in err and "2 at a time" in err


def test_csv_json_plot_and_recommendation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = {ext: tmp_path / f"out.{ext}" for ext in ("csv", "json", "png", "svg")}
    # big, the size of the whole EPC, pages at every limit (slowdown 1.85 to 2.19): within 100%, the
    # smallest limit that ends as the largest does (the guest ok from 3 MiB on) is 3 MiB
    argv = ["nested-limits", "--vary", "t/parent/misc.max=512KiB..4MiB/8", "--budget", "100%", "--jobs", "1"]
    code, out, _ = sweep([*argv, "--csv", str(files["csv"]), "--json", str(files["json"])], capsys)
    assert code == 0
    assert "recommendation: t/parent/misc.max = 3145728 bytes (3 MiB)" in out
    assert 'sgx.intel.com/epc: "3Mi"' in out
    rows = list(csv.reader(io.StringIO(files["csv"].read_text())))
    assert rows[0][:3] == ["point", "t/parent/misc.max", "big"] and len(rows) == 9
    assert rows[1][1] == str(512 * 1024) and rows[8][1] == str(4 * MiB)
    data = json.loads(files["json"].read_text())
    assert [p["values"]["t/parent/misc.max"] for p in data["points"]] == [512 * 1024 * k for k in range(1, 9)]
    assert data["points"][0]["outcomes"] == {"big": "ok", "holder": "killed", "guest": "SIGBUS"}
    assert data["recommendation"] == {
        "path": "t/parent/misc.max",
        "bytes": 3 * MiB,
        "budget": 1.0,
        "cost": "slowdown",
        "resource": 'sgx.intel.com/epc: "3Mi"',
    }
    assert data["knee"] == 1536 * 1024 and data["cost"] == "slowdown"
    for ext in ("png", "svg"):
        code, _, _ = sweep([*argv, "--plot", str(files[ext])], capsys)
        assert code == 0
    assert files["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = files["svg"].read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg


def test_the_progress_bar_draws_on_a_terminal_and_is_quiet_elsewhere() -> None:
    result = PointResult(0, {}, 0, 0, (), 0.0)
    quiet, shown = io.StringIO(), io.StringIO()
    for out, terminal in ((quiet, False), (shown, True)):
        bar = ProgressBar(4, out, terminal=terminal)
        bar(result)
        bar(result)
        bar.clear()
    assert quiet.getvalue() == ""
    assert "\r[" + "#" * 15 + "." * 15 + "] 2/4 points" in shown.getvalue()


def test_run_local_returns_results_in_point_order() -> None:
    scenario = parse_scenario(LIMITED, "limited.toml")
    axes = [parse_vary("pod/misc.max=2MiB,256KiB,1MiB", scenario)]
    runs = [apply(scenario, axes, p) for p in grid(axes)]
    seen: list[int] = []
    results = run_local(runs, "/pod", 2, lambda r: seen.append(r.index))
    assert [r.index for r in results] == [0, 1, 2] and sorted(seen) == [0, 1, 2]
    assert [r.metrics["peak"] for r in results] == [2 * MiB, 256 * 1024, MiB]


@pytest.mark.slow
def test_a_sweep_on_a_dask_local_cluster_gives_the_local_table(capsys: pytest.CaptureFixture[str]) -> None:
    distributed = pytest.importorskip("distributed")
    argv = ["nested-limits", "--vary", "t/parent/misc.max=512KiB..4MiB/8"]
    code, local, _ = sweep([*argv, "--jobs", "1"], capsys)
    assert code == 0
    with distributed.LocalCluster(processes=True, n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster:
        code, remote, err = sweep([*argv, "--dask", cluster.scheduler_address], capsys)
    assert code == 0, err
    assert remote == local

"""A limit sweep on two jobs against one: the speed-up of running points in parallel (target >= 1.8x on 2 cores).

The sweep is issue 14's: 16 limits over a bundled trace, what
``epc-playground sweep trace-sqlite --vary "pod/misc.max=64KiB..1MiB/16"`` runs (sqlite3's
recorded accesses, 1.9M of them over 319 pages; a point is 0.8 to 2.5 s of CPU, which
outweighs starting a worker, about 0.2 s).  ``--quick`` sweeps 4 limits of a small synthetic
enclave instead (the smoke test's pass).  One job runs the points in this process; two
jobs in a pool of two spawned processes, started and warmed inside the timing (what the
command pays).  Each run's results must equal the others'
(the table does not depend on how the points ran); the figure is the ratio of the median
wall times of 3 runs each, taken in turns.

``.venv/bin/python bench/sweep.py [--quick] [--json FILE] [--runs N]``
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _common
from playground.scenario.load import load_scenario, parse_scenario
from playground.scenarios import resolve
from playground.sweep.execute import run_local
from playground.sweep.vary import apply, grid, parse_vary

SCENARIO = """\
name = "bench sweep"
capacity = "128MiB"
seed = 1
[[step]]
mkdir = "pod"
[[step]]
spawn = {{ name = "app", cgroup = "pod", size = "{size}", pattern = "random", passes = {passes} }}
[[step]]
wait = {{ name = "app", timeout = "3600s" }}
"""
TARGET = 1.8


def main() -> None:
    p = _common.parser("A 16-limit sweep on 2 jobs against 1: the parallel speed-up.")
    p.add_argument("--runs", type=int, default=3, help="runs of each (default 3)")
    args = p.parse_args()
    if args.quick:
        vary, what = "pod/misc.max=2MiB..16MiB/4", "an enclave of 8MiB, random, 2 passes"
        scenario = parse_scenario(SCENARIO.format(size="8MiB", passes=2), "bench-sweep.toml")
    else:
        vary, what = "pod/misc.max=64KiB..1MiB/16", "the bundled trace-sqlite (sqlite3's recorded accesses)"
        scenario = load_scenario(resolve("trace-sqlite"))
    axes = [parse_vary(vary, scenario)]
    runs = [apply(scenario, axes, point) for point in grid(axes)]
    info = _common.machine()
    _common.print_header(f"sweep: {vary}, {what}", info)
    times: dict[int, list[float]] = {1: [], 2: []}
    cpu: dict[int, list[float]] = {1: [], 2: []}
    reference = None
    load = os.getloadavg()
    for _ in range(args.runs if not args.quick else 1):
        for jobs in (1, 2):
            before = os.times()
            started = time.perf_counter()
            results = run_local(runs, "/pod", jobs)
            times[jobs].append(time.perf_counter() - started)
            after = os.times()
            cpu[jobs].append(sum(after[:4]) - sum(before[:4]))  # user and system, this process and its children
            metrics = [r.metrics for r in results]
            if reference is None:
                reference = metrics
            assert metrics == reference, f"{jobs} jobs gave other results"
            _common.flush()
    one, two = _common.median(times[1]), _common.median(times[2])
    ratio = one / two
    work = sum(r.wall_s for r in results)
    _common.print_table(
        [f"jobs (median of {len(times[1])})", "seconds", "points/s", "runs (s)", "CPU s (median)"],
        [[f"{jobs}", _common.median(times[jobs]), len(runs) / _common.median(times[jobs]),
          " ".join(f"{t:.2f}" for t in times[jobs]), _common.median(cpu[jobs])] for jobs in (1, 2)],
    )  # fmt: skip
    print(f"  2 jobs run the sweep {ratio:.2f}x as fast as 1 (target >= {TARGET}x): {_common.verdict(ratio >= TARGET)}")
    print(f"  a point: {work / len(runs):.2f} s of work on average (2 jobs' runs)")
    projected = _common.median(cpu[1]) / (_common.median(cpu[2]) / 2)
    print(f"  on two free cores the CPU times project {projected:.2f}x (the pool's start-up and hand-over included)")
    after = os.getloadavg()[0]
    print(f"  load average before and after: {load[0]:.2f}, {after:.2f} (other work on the cores lowers the ratio)")
    _common.write_json(
        args.json,
        {
            "benchmark": "sweep",
            "machine": info,
            "vary": vary,
            "points": len(runs),
            "seconds_1_job": one,
            "seconds_2_jobs": two,
            "speedup": ratio,
            "projected_speedup": projected,
            "runs_1_job": times[1],
            "runs_2_jobs": times[2],
            "cpu_s_1_job": cpu[1],
            "cpu_s_2_jobs": cpu[2],
            "load_average": [load[0], os.getloadavg()[0]],
        },
    )


if __name__ == "__main__":
    main()

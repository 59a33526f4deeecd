"""The ``epc-playground sweep`` command: its options and help, the checks before anything runs, the outputs.

Exit status: 0 when the sweep ran (whatever its points' expects said: a sweep looks for
where things break); 2 for a usage error (a scenario that does not validate, a --vary or
--budget that cannot be, an output that cannot be written, no Dask), one line, nothing
run.  The sweep machinery is imported when the command runs, not to build the parser.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING, Any

from common.options import EXIT_USAGE, positive

if TYPE_CHECKING:
    from playground.scenario.model import Scenario
    from playground.sweep.output import Sweep
    from playground.sweep.vary import Axis, Point

PROG = "epc-playground sweep"
DESCRIPTION = """\
Run a scenario file (or a bundled scenario, by name) in process at each point of a range of
values, or of a grid of them, and print a table: a row per point with how each workload
ended, the expects that passed, faults, EWB (pages written out), ELDU (pages loaded back),
misc.events (limit hits) and misc.peak of the swept cgroup.  Points run in parallel on
this machine's cores (--jobs), or on a Dask cluster (--dask).  Each point runs on the
in-process host's virtual clock, so the same sweep gives the same table, byte for byte,
however it runs; timings go to stderr only.

--vary "PATH=LO..HI/N" is N values evenly spaced from LO to HI, both included (sizes
rounded to 4 KiB pages); --vary "PATH=a,b,c" is those values.  PATH is one of:
  CGROUP/misc.max     a size or max: replaces what every write of the scenario to that file
  CGROUP/memory.max   writes (a write that must fail, with errno, stays); when the scenario
                      writes nothing there, the value is written right after the step that
                      makes the cgroup (its mkdir, or a child's)
  NAME.count          the number of instances of the spawn NAME (1..256)
  NAME.size           the size of each instance of the spawn NAME
  seed                the scenario's seed
Several --vary make a grid (every combination; the first varies slowest).

The knee: both axes scaled to 0..1, the point farthest below the straight line from the
first point to the last (Kneedle's difference curve): past it, more EPC buys little.
--budget P%: the smallest limit that, with every larger one swept, keeps the cost within
P% (slowdown <= 1 + P/100, once runs report emulated time; until then the cost is faults,
within P% of the fewest swept) and ends as the largest limit does; printed in bytes and
as the pod's resource line (sgx.intel.com/epc, the Intel SGX device plugin's resource).
"""

EPILOG = """\
examples:
  epc-playground sweep nested-limits --vary "t/parent/misc.max=512KiB..4MiB/8"
  epc-playground sweep my.toml --vary "pod/misc.max=8MiB..128MiB/16" --plot curve.png --budget 10%
  epc-playground sweep my.toml --vary "pod/misc.max=8MiB,16MiB,max" --vary "db.count=1,2,4" --csv out.csv
  epc-playground sweep my.toml --vary "seed=1..8/8" --dask tcp://scheduler:8786
"""


def add_parser(sub: Any) -> None:
    sweep = sub.add_parser(
        "sweep",
        help="a scenario run at each point of a range (or a grid) of limits, counts, sizes or seeds: a table",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sweep.add_argument("file", metavar="FILE.toml|NAME", help="a scenario file, or a bundled scenario's name")
    sweep.add_argument(
        "--vary",
        action="append",
        required=True,
        metavar="PATH=LO..HI/N",
        help="what to vary and its values (PATH=LO..HI/N or PATH=a,b,c); repeat it for a grid",
    )
    sweep.add_argument("--jobs", type=positive, metavar="N", help="points run at once (default: this machine's cores)")
    sweep.add_argument("--dask", metavar="ADDRESS", help="run the points on the Dask scheduler at ADDRESS")
    sweep.add_argument("--csv", metavar="FILE", help="also write the table as CSV (sizes in bytes)")
    sweep.add_argument("--json", metavar="FILE", help="also write the table, knee and recommendation as JSON")
    sweep.add_argument("--plot", metavar="FILE", help="draw the curve to FILE.png or FILE.svg")
    sweep.add_argument("--budget", metavar="P%", help="recommend the smallest limit whose cost is within P%%")
    sweep.set_defaults(handler=sweep_command)


def _fail(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return EXIT_USAGE


def sweep_command(args: argparse.Namespace) -> int:
    from playground.scenarios import load_or_say
    from playground.sweep.analysis import parse_budget
    from playground.sweep.plot import FORMATS
    from playground.sweep.vary import VaryError, grid, parse_vary

    scenario = load_or_say(args.file, PROG)
    if scenario is None:
        return EXIT_USAGE
    try:
        axes = [parse_vary(text, scenario) for text in args.vary]
        points = grid(axes)
    except VaryError as e:
        return _fail(str(e))
    budget = None
    if args.budget is not None:
        try:
            budget = parse_budget(args.budget)
        except ValueError as e:
            return _fail(f"--budget {e}")
        if len(axes) != 1 or not axes[0].is_limit:
            return _fail("--budget needs exactly one --vary, of a CGROUP/misc.max or CGROUP/memory.max: the limit")
    if args.plot is not None and not args.plot.endswith(FORMATS):
        return _fail(f"--plot {args.plot}: give a file name ending in .png or .svg")
    if args.dask is not None and args.jobs is not None:
        return _fail("--jobs is for this machine's cores; with --dask the cluster's workers run the points")
    if args.dask is not None:
        from playground.sweep.execute import DaskMissing, dask_client_class

        try:
            dask_client_class()
        except DaskMissing as e:
            return _fail(str(e))
    for option in ("csv", "json", "plot"):  # before anything runs: a path that cannot be written runs nothing
        path = getattr(args, option)
        if path is not None:
            try:
                with open(path, "a", encoding="utf-8"):
                    pass
            except OSError as e:
                return _fail(f"--{option} {path}: cannot write it: {e.strerror}")
    return _sweep(args, scenario, axes, points, budget)


def focus_cgroup(scenario: Scenario, axes: list[Axis]) -> str:
    """The cgroup whose misc files the rows show: the first varied limit's, else the varied
    spawn's, else the first spawn's; the root when the scenario spawns nothing."""
    from playground.scenario.model import Spawn

    for axis in axes:
        if axis.is_limit:
            return axis.target
    spawns = [step for step in scenario.steps if isinstance(step, Spawn)]
    for axis in axes:
        for step in spawns:
            if axis.kind in ("count", "size") and step.name == axis.target:
                return step.cgroup
    return spawns[0].cgroup if spawns else "/"


def _sweep(
    args: argparse.Namespace, scenario: Scenario, axes: list[Axis], points: list[Point], budget: float | None
) -> int:
    from playground.sweep.execute import DaskUnreachable, ProgressBar, default_jobs, run_dask, run_local
    from playground.sweep.output import Sweep, table, to_csv, to_json
    from playground.sweep.vary import apply

    cgroup = focus_cgroup(scenario, axes)
    runs = [apply(scenario, axes, point) for point in points]
    bar = ProgressBar(len(runs))
    started = time.monotonic()
    jobs = args.jobs or default_jobs()
    try:
        if args.dask is not None:
            results = run_dask(runs, cgroup, args.dask, bar)
            where = f"on the Dask cluster at {args.dask}"
        else:
            results = run_local(runs, cgroup, jobs, bar)
            where = f"{min(jobs, len(runs))} at a time"
    except DaskUnreachable as e:
        bar.clear()
        return _fail(str(e))
    except KeyboardInterrupt:
        bar.clear()
        print(f"\n{PROG}: interrupted", file=sys.stderr)
        return 130
    bar.clear()
    elapsed = time.monotonic() - started
    sweep = Sweep(scenario.name, cgroup, axes, points, results)
    lines = summarize(sweep, budget)
    sys.stdout.write(table(sweep))
    for line in lines:
        print(line)
    sys.stdout.flush()  # before stderr's lines: a terminal shows them in this order
    for result in results:
        for failure in result.failures[:1]:
            print(f"{PROG}: point {result.index}: {failure}", file=sys.stderr)
    print(f"{PROG}: {len(results)} points in {elapsed:.1f} s, {where}", file=sys.stderr)
    if args.csv:
        _write(args.csv, to_csv(sweep))
    if args.json:
        _write(args.json, to_json(sweep))
    if args.plot:
        from playground.sweep.plot import draw

        draw(sweep, args.plot, sweep.summary["cost"], sweep.summary.get("recommended_point"))
    return 0


def _write(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as out:
        out.write(text)


def summarize(sweep: Sweep, budget: float | None) -> list[str]:
    """The knee (and, given a budget, the recommendation): put in ``sweep.summary``; the lines to print."""
    from common.units import format_size
    from playground.sweep.analysis import k8s_quantity, knee, recommend
    from playground.sweep.metrics import cost_column

    axis = sweep.axes[0]
    cost = cost_column([r.metrics for r in sweep.results if r.metrics])
    sweep.summary["cost"] = cost
    lines: list[str] = []
    if len(sweep.axes) != 1:
        return lines
    rows = [i for i, p in enumerate(sweep.points) if p.values[0] is not None and sweep.results[i].metrics]
    rows.sort(key=lambda i: sweep.points[i].values[0] or 0)
    xs = [sweep.points[i].values[0] or 0 for i in rows]
    costs = [float(sweep.results[i].metrics[cost]) for i in rows]
    shown = format_size if axis.is_size else str
    at = knee(xs, costs)
    sweep.summary["knee"] = None if at is None else xs[at]
    lines.append(f"knee: {axis.path} = {shown(xs[at])} ({cost})" if at is not None else f"knee: none ({cost})")
    if budget is None:
        return lines
    outcomes = [{k: v for k, v in sweep.results[i].metrics.items() if k.startswith("outcome:")} for i in rows]
    ok = [o == outcomes[-1] for o in outcomes] if outcomes else []
    baseline = 1.0 if cost == "slowdown" else min((c for c, good in zip(costs, ok, strict=True) if good), default=0.0)
    chosen = recommend(costs, ok, budget, baseline)
    percent = f"{budget * 100:g}%"
    what = "slowdown" if cost == "slowdown" else f"faults (within {percent} of the fewest, {baseline:g})"
    if chosen is None:
        sweep.summary["recommendation"] = None
        lines.append(f"recommendation: none: no limit swept keeps {what} within {percent} and ends as the largest")
        return lines
    nbytes = xs[chosen]
    sweep.summary["recommended_point"] = sweep.points[rows[chosen]].index
    sweep.summary["recommendation"] = {"path": axis.path, "bytes": nbytes, "budget": budget, "cost": cost}
    lines.append(
        f"recommendation: {axis.path} = {nbytes} bytes ({format_size(nbytes)}), the smallest limit swept with"
        f" {what if cost != 'slowdown' else f'slowdown within {percent}'}"
    )
    if axis.kind == "misc.max":
        quantity = k8s_quantity(nbytes)
        sweep.summary["recommendation"]["resource"] = f'sgx.intel.com/epc: "{quantity}"'
        lines.append(f'  pod resources: limits: sgx.intel.com/epc: "{quantity}"  (and requests: the same)')
    return lines

"""The TUI's sweep (``w``): the form's defaults and checks, and the curve drawn as text.

The screen is ``playground/tui/screens/sweep.py``; what its form proposes and checks and
what the curve looks like are plain functions of the scenario and the sweep here, tested
without a screen.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.limits import PAGE_SIZE
from common.units import format_size, shown
from playground.scenario.model import Mkdir, Scenario, Write
from playground.sweep.output import Sweep
from playground.sweep.plot import curves
from playground.sweep.vary import Axis, Point
from playground.tui.fields import FieldError
from playground.tui.screens.prompt import size_text

DEFAULT_SCENARIO = "trace-sqlite"
DEFAULT_POINTS = 16
DEFAULT_BUDGET = "10%"
SPAN = 4  # the default range: up to the scenario's limit times this, from a sixteenth of that
BAR_WIDTH = 32
BLOCKS = " ▏▎▍▌▋▊▉█"  # eighths of a cell
KNEE = "◆ knee"
RECOMMENDED = "★ recommended"


@dataclass(frozen=True, slots=True)
class SweepRequest:
    """A checked form: the scenario, its one axis (a limit), the points, the budget (None: no recommendation)."""

    scenario: Scenario
    axis: Axis
    points: list[Point]
    budget: float | None


def default_path(scenario: Scenario, selected: str) -> str:
    """``<selected>/misc.max`` when the scenario makes the selected cgroup, else its first cgroup with
    a misc.max write, else its first cgroup; "" when it makes none."""
    made = [step.path for step in scenario.steps if isinstance(step, Mkdir)]
    if selected != "/" and any(path == selected or path.startswith(selected + "/") for path in made):
        return f"{selected.strip('/')}/misc.max"
    for step in scenario.steps:
        if isinstance(step, Write) and step.path.endswith("/misc.max") and step.errno is None:
            return step.path.strip("/")
    return f"{made[0].strip('/')}/misc.max" if made else ""


def current_limit(scenario: Scenario, path: str) -> int | None:
    """The bytes the scenario's first (successful) write to ``path`` gives it; None for none, or ``max``."""
    absolute = "/" + path.strip("/")
    env = {"capacity": scenario.capacity, "memory": scenario.memory}
    for step in scenario.steps:
        if isinstance(step, Write) and step.path == absolute and step.errno is None:
            try:
                text = step.value.render(env)
            except ValueError:
                return None
            number = text.removeprefix("sgx_epc").strip()
            return int(number) if number.isdigit() else None
    return None


def default_range(scenario: Scenario, path: str) -> str:
    """``LO..HI/16``: up to the scenario's limit there times SPAN (its EPC when it sets none), at most
    its EPC, from a sixteenth of that; whole pages."""
    now = current_limit(scenario, path)
    high = scenario.capacity if now is None else min(now * SPAN, scenario.capacity)
    high = max(PAGE_SIZE * DEFAULT_POINTS, high // PAGE_SIZE * PAGE_SIZE)
    low = max(PAGE_SIZE, high // DEFAULT_POINTS // PAGE_SIZE * PAGE_SIZE)
    return f"{size_text(low)}..{size_text(high)}/{DEFAULT_POINTS}"


def _vary_message(error: Exception) -> str:
    """A VaryError without its ``--vary 'TEXT':`` (the form shows the fields apart)."""
    text = str(error)
    return text.split(": ", 1)[1] if text.startswith("--vary ") and ": " in text else text


def check_sweep(scenario_text: str, path: str, range_text: str, budget_text: str) -> SweepRequest:
    """The form's fields as typed -> a SweepRequest; FieldError for the first field that is wrong."""
    from playground.scenario.load import ScenarioError, load_scenario
    from playground.scenarios import resolve
    from playground.sweep.analysis import parse_budget
    from playground.sweep.vary import VaryError, grid, parse_vary

    if not scenario_text:
        raise FieldError("scenario", "give a bundled scenario's name (trace-sqlite, nested-limits, ...) or a file")
    try:
        scenario = load_scenario(resolve(scenario_text))
    except ScenarioError as e:
        raise FieldError("scenario", e.problems[0] if e.problems else str(e)) from None
    if not path:
        raise FieldError("path", "give the limit to vary, CGROUP/misc.max or CGROUP/memory.max, e.g. pod/misc.max")
    try:
        axis = parse_vary(f"{path}=1", scenario)
    except VaryError as e:
        raise FieldError("path", _vary_message(e)) from None
    if not axis.is_limit:
        raise FieldError("path", f"{shown(path)} is not a limit: the curve varies a CGROUP/misc.max or memory.max")
    if not range_text:
        raise FieldError("range", "give LO..HI/N, e.g. 64KiB..1MiB/16, or a list: 256KiB,512KiB,1MiB")
    try:
        axis = parse_vary(f"{path}={range_text}", scenario)
        points = grid([axis])
    except VaryError as e:
        raise FieldError("range", _vary_message(e)) from None
    budget = None
    if budget_text:
        try:
            budget = parse_budget(budget_text)
        except ValueError as e:
            raise FieldError("budget", str(e)) from None
    return SweepRequest(scenario, axis, points, budget)


def _bar(value: float, low: float, high: float, width: int = BAR_WIDTH) -> str:
    """``value`` as a bar of ``width`` cells in eighths: ``low`` none, ``high`` full (at least a sliver)."""
    share = 1.0 if high <= low else (value - low) / (high - low)
    eighths = max(1, round(share * width * 8))
    full, part = divmod(eighths, 8)
    return ("█" * full + (BLOCKS[part] if part else "")).ljust(width)


def curve_lines(sweep: Sweep) -> list[str]:
    """The curve, a row per point in order of the limit: the limit, the cost as a bar and a number,
    the faults; the knee and the recommended point marked.  Points that could not run say why."""
    axis = sweep.axes[0]
    cost = str(sweep.summary.get("cost", "faults"))
    recommended = sweep.summary.get("recommended_point")
    knee_at = sweep.summary.get("knee")
    drawn = curves(sweep)
    rows = drawn[0].rows if drawn else []
    costs = [float(sweep.results[i].metrics[cost]) for i in rows]
    low = 1.0 if cost == "slowdown" else 0.0
    high = max(costs, default=low)
    labels = {i: format_size(sweep.points[i].values[0] or 0) for i in rows}
    width = max((len(label) for label in labels.values()), default=0)
    width = max(width, len(axis.path))
    # labels flush left: a Static drops a line's leading spaces
    lines = [f"{axis.path.ljust(width)}  {cost.ljust(BAR_WIDTH)}  {cost:>9}  {'faults':>9}"]
    for i, value in zip(rows, costs, strict=True):
        point = sweep.points[i]
        marks = []
        if knee_at is not None and point.values[0] == knee_at:
            marks.append(KNEE)
        if recommended is not None and point.index == recommended:
            marks.append(RECOMMENDED)
        shown_cost = f"{value:.3f}" if cost == "slowdown" else f"{value:.0f}"
        faults = sweep.results[i].metrics["faults"]
        row = f"{labels[i].ljust(width)}  {_bar(value, low, high)}  {shown_cost:>9}  {faults:>9}"
        lines.append(f"{row}  {'  '.join(marks)}".rstrip())
    for i, result in enumerate(sweep.results):
        if result.metrics and sweep.points[i].values[0] is None:  # max: no limit, off the bar's scale
            lines.append(
                f"{'max'.ljust(width)}  {'':{BAR_WIDTH}}  {result.metrics[cost]:>9}  {result.metrics['faults']:>9}"
            )
        elif not result.metrics:
            limit = sweep.points[i].values[0]
            label = "max" if limit is None else format_size(limit)
            reason = result.failures[0] if result.failures else "no result"
            lines.append(f"{label.ljust(width)}  did not run: {reason}")
    return lines

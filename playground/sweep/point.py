"""One point of a sweep: the scenario, its values put in, run in process; the row it gives.

``run_point`` is what a pool worker or a Dask worker runs: it takes the parsed scenario
(never a file name, so a worker needs no file and parses nothing), runs it on the
in-process backend (a virtual clock: the same point gives the same row anywhere), and
returns a ``PointResult`` of plain values that pickles small.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from playground.scenario.model import Scenario
from playground.sweep.metrics import Metrics, point_metrics


@dataclass(frozen=True, slots=True)
class PointResult:
    index: int
    metrics: Metrics
    expects_passed: int
    expects_total: int
    failures: tuple[str, ...]  # steps that failed, "step 3: ...": a point whose run could not start says why
    wall_s: float  # how long it took here: for stderr only, never in the table


def run_point(index: int, scenario: Scenario, cgroup: str) -> PointResult:
    """Run ``scenario`` in process; its metrics (``cgroup``: the one whose misc files the row shows)."""
    import time

    from playground.scenario.backends.base import BackendError
    from playground.scenario.backends.inproc import InprocBackend
    from playground.scenario.runner import run_scenario

    started = time.perf_counter()
    events: list[dict[str, Any]] = []
    backend = InprocBackend(scenario.capacity, scenario.memory, scenario.seed)
    try:
        report = run_scenario(scenario, backend, events=events.extend)
    except BackendError as e:  # a size of the file that does not work out with this point's values
        return PointResult(index, {}, 0, 0, (str(e),), time.perf_counter() - started)
    snapshot = backend.session.snapshot()
    events.extend(backend.take_events())
    backend.close()
    metrics = point_metrics(snapshot, events, report.outcomes, cgroup)
    total = len(report.results)
    return PointResult(index, metrics, report.passed, total, tuple(report.step_failures), time.perf_counter() - started)


def warm() -> None:
    """A pool worker's start: import what a point runs, so the first point pays no imports."""
    import playground.scenario.backends.inproc
    import playground.scenario.runner  # noqa: F401

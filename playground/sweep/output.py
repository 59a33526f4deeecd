"""A sweep's results as a table, CSV and JSON: one row per point, in point order, no wall-clock values.

``Sweep`` holds what ran (the axes, the points) and what each gave; ``columns()`` is the
one list of columns every format prints, so the three agree.  Sizes are bytes in CSV and
JSON, and IEC units in the table.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Any

from common.units import format_size
from playground.sweep.metrics import COUNTERS, HEADERS, TIMED, Metrics
from playground.sweep.point import PointResult
from playground.sweep.vary import Axis, Point

SIZE_COLUMNS = frozenset({"peak"})


@dataclass(slots=True)
class Sweep:
    name: str
    cgroup: str  # the cgroup whose misc files the rows show
    axes: list[Axis]
    points: list[Point]
    results: list[PointResult]
    summary: dict[str, Any] = field(default_factory=dict)  # knee, recommendation: added by the command

    def metrics(self) -> list[Metrics]:
        return [r.metrics for r in self.results]

    def columns(self) -> list[tuple[str, str]]:
        """(key, header) of every column, in order: point, axes, outcomes, expects, counters, timed."""
        out = [("point", "point")]
        out += [(f"axis:{i}", axis.path) for i, axis in enumerate(self.axes)]
        outcomes: list[str] = []
        for metrics in self.metrics():
            outcomes += [key for key in metrics if key.startswith("outcome:") and key not in outcomes]
        out += [(key, key.removeprefix("outcome:")) for key in outcomes]
        out.append(("expects", "expects"))
        timed = [key for key in TIMED if any(key in m for m in self.metrics())]
        out += [(key, HEADERS[key]) for key in (*COUNTERS, *timed)]
        return out

    def record(self, i: int) -> dict[str, Any]:
        """Point i as plain values (bytes, counts), keyed as columns() keys them."""
        point, result = self.points[i], self.results[i]
        out: dict[str, Any] = {"point": point.index}
        out |= {f"axis:{n}": value for n, value in enumerate(point.values)}
        out |= result.metrics
        out["expects"] = f"{result.expects_passed}/{result.expects_total}" if not result.failures else "-"
        return out


def _cell(key: str, value: Any, axes: list[Axis]) -> str:
    if value is None:
        if key.startswith("axis:"):
            return "max"
        return "-"
    if key.startswith("axis:"):
        axis = axes[int(key.removeprefix("axis:"))]
        return format_size(value) if axis.is_size else str(value)
    if key in SIZE_COLUMNS:
        return format_size(value)
    if key == "runtime_ns":
        return f"{value / 1e9:.6f} s"
    if key == "slowdown":
        return f"{value:.3f}"
    return str(value)


def table(sweep: Sweep) -> str:
    """The table: a header and a row per point, columns padded, numbers right-aligned."""
    columns = sweep.columns()
    rows = [[header for _, header in columns]]
    for i in range(len(sweep.points)):
        record = sweep.record(i)
        rows.append([_cell(key, record.get(key), sweep.axes) for key, _ in columns])
    widths = [max(len(row[c]) for row in rows) for c in range(len(columns))]
    text = [
        "  ".join(
            cell.ljust(w) if key.startswith("outcome:") else cell.rjust(w)
            for (key, _), cell, w in zip(columns, row, widths, strict=True)
        ).rstrip()
        for row in rows
    ]
    return "\n".join(text) + "\n"


def _plain(key: str, value: Any) -> Any:
    """A value as CSV and JSON carry it: ``max`` for no limit on an axis."""
    return "max" if value is None and key.startswith("axis:") else value


def to_csv(sweep: Sweep) -> str:
    """CSV: the table's columns (sizes in bytes, empty for none), one row per point."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    columns = sweep.columns()
    writer.writerow([header for _, header in columns])
    for i in range(len(sweep.points)):
        record = sweep.record(i)
        writer.writerow(["" if (v := _plain(k, record.get(k))) is None else v for k, _ in columns])
    return out.getvalue()


def to_json(sweep: Sweep) -> str:
    """JSON: the scenario, the axes, one object per point and the summary (knee, recommendation).

    A point: ``point``, ``values`` (by axis path), ``outcomes`` (by spawn name), ``expects``,
    and the counters by the table's headers (sizes in bytes)."""
    points = []
    for i, point in enumerate(sweep.points):
        record = sweep.record(i)
        result = sweep.results[i]
        entry: dict[str, Any] = {
            "point": point.index,
            "values": {axis.path: _plain("axis:", v) for axis, v in zip(sweep.axes, point.values, strict=True)},
            "outcomes": {k.removeprefix("outcome:"): v for k, v in result.metrics.items() if k.startswith("outcome:")},
            "expects": record["expects"],
        }
        entry |= {header: record.get(key) for key, header in sweep.columns() if key in HEADERS}
        if result.failures:
            entry["failures"] = list(result.failures)
        points.append(entry)
    data = {
        "scenario": sweep.name,
        "cgroup": sweep.cgroup,
        "vary": [
            {"path": axis.path, "given": axis.text, "values": ["max" if v is None else v for v in axis.values]}
            for axis in sweep.axes
        ],
        "points": points,
        **sweep.summary,
    }
    return json.dumps(data, indent=2) + "\n"

"""The sweep's curve as a picture: the cost (slowdown, or faults until the snapshot has emulated time)
and the faults against the first varied value, the knee and the recommendation marked.

matplotlib on its Agg backend (no display needed), imported when a plot is asked for;
the file's extension says the format: ``.png`` or ``.svg``.  With more than one axis,
one line per combination of the others' values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from playground.sweep.analysis import knee
from playground.sweep.output import Sweep

FORMATS = (".png", ".svg")


@dataclass(frozen=True, slots=True)
class Curve:
    label: str  # the other axes' values ("" for a one-axis sweep)
    xs: list[int]
    rows: list[int]  # indexes into the sweep's points, in the order of xs


def curves(sweep: Sweep) -> list[Curve]:
    """The lines to draw: the first axis's values (``max`` left out) for each combination of the rest."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, point in enumerate(sweep.points):
        if point.values[0] is not None and sweep.results[i].metrics:
            groups.setdefault(point.values[1:], []).append(i)
    out = []
    for rest, rows in groups.items():
        rows.sort(key=lambda i: sweep.points[i].values[0] or 0)
        label = ", ".join(f"{axis.path}={axis.label(value)}" for axis, value in zip(sweep.axes[1:], rest, strict=True))
        out.append(Curve(label, [sweep.points[i].values[0] or 0 for i in rows], rows))
    return out


def draw(sweep: Sweep, path: str, cost: str, recommended: int | None) -> None:
    """Write the plot to ``path`` (PNG or SVG by its extension)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axis = sweep.axes[0]
    scale, unit = (1 << 20, " (MiB)") if axis.is_size else (1, "")
    figure, left = plt.subplots(figsize=(8, 4.5))
    right = left.twinx() if cost != "faults" else None
    for n, curve in enumerate(curves(sweep)):
        colour = f"C{n % 10}"
        xs = [x / scale for x in curve.xs]
        ys = [float(sweep.results[i].metrics[cost]) for i in curve.rows]
        name = f" ({curve.label})" if curve.label else ""
        left.plot(xs, ys, "o-", color=colour, label=f"{cost}{name}")
        if right is not None:
            faults = [float(sweep.results[i].metrics["faults"]) for i in curve.rows]
            right.plot(xs, faults, "s--", color=colour, alpha=0.5, label=f"faults{name}")
            if min(faults) > 0 and max(faults) >= 100 * min(faults):
                right.set_yscale("log")  # faults span decades: on a linear axis they lie under the cost's curve
        at = knee(curve.xs, ys)
        if at is not None:
            left.axvline(xs[at], color=colour, linestyle=":", linewidth=1)
            left.annotate(
                f"knee {axis.label(curve.xs[at]) if not axis.is_size else _mib(curve.xs[at])}",
                (xs[at], ys[at]),
                textcoords="offset points",
                xytext=(6, 8),
                color=colour,
            )
        if recommended is not None and recommended in curve.rows:
            j = curve.rows.index(recommended)
            left.plot(
                [xs[j]],
                [ys[j]],
                marker="*",
                markersize=16,
                color="black",
                linestyle="none",
                label=f"recommended: {_mib(curve.xs[j]) if axis.is_size else curve.xs[j]}",
            )
    left.set_xlabel(f"{axis.path}{unit}")
    left.set_ylabel(cost)
    if right is not None:
        right.set_ylabel("faults")
    left.set_title(f"{sweep.name}: {cost} against {axis.path}")
    left.grid(True, alpha=0.3)
    handles, labels = left.get_legend_handles_labels()
    if right is not None:
        more = right.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    left.legend(handles, labels, loc="best", fontsize="small")
    figure.tight_layout()
    metadata = {"Date": None} if path.endswith(".svg") else {}
    figure.savefig(path, metadata=metadata)
    plt.close(figure)


def _mib(nbytes: int) -> str:
    from common.units import format_size

    return format_size(nbytes)

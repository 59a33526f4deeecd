"""The knee of a cost curve and the smallest limit within a budget: pure functions over numbers.

The knee (``knee``): both axes scaled to 0..1 over the points, the point farthest below
the straight line from the first point to the last, when it is below at all: where a
falling cost curve stops falling fast, so a larger limit buys little.  It is the
difference curve of Kneedle (Satopää, Albrecht, Irwin and Raghavan, "Finding a
'Kneedle' in a Haystack", ICDCS workshops 2011) for a decreasing convex curve, without
its smoothing (a sweep's points are exact, not noisy samples) and without its threshold
(the largest difference is the knee).  A flat curve, or one that never falls below its
chord, has no knee.

The recommendation (``recommend``): the smallest limit such that it, and every larger
limit swept, is within the budget and ended with the outcomes of the largest limit.
Within a budget of P percent means cost <= baseline * (1 + P/100), where the baseline is
1.0 for a slowdown (the same run with no limit) and, for a count, the smallest cost among
the limits that end as the largest does (faults: with none there, only limits with none
are within any budget).
"""

from __future__ import annotations

from collections.abc import Sequence

PERCENT_MAX = 1000.0


def parse_budget(text: str) -> float:
    """``10%`` (or ``10``): the budget as a fraction, 0.1; ValueError (one line) otherwise."""
    number = text.strip().removesuffix("%").strip()
    try:
        percent = float(number)
    except ValueError:
        percent = -1.0
    if not 0 <= percent <= PERCENT_MAX or percent != percent:
        raise ValueError(f"{text!r} is not a budget: give a percentage from 0 to {PERCENT_MAX:g}, like 10%")
    return percent / 100


def knee(xs: Sequence[float], ys: Sequence[float]) -> int | None:
    """The index of the knee of the curve (xs ascending), or None: see the module docstring."""
    if len(xs) < 3 or len(xs) != len(ys):
        return None
    x0, x1 = xs[0], xs[-1]
    low, high = min(ys), max(ys)
    if x1 <= x0 or high <= low:
        return None
    first, last = (ys[0] - low) / (high - low), (ys[-1] - low) / (high - low)
    best, best_gap = None, 0.0
    for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
        at = (x - x0) / (x1 - x0)
        chord = first + (last - first) * at
        gap = chord - (y - low) / (high - low)
        if gap > best_gap + 1e-12:
            best, best_gap = i, gap
    return best


def within(cost: float, baseline: float, budget: float) -> bool:
    return cost <= baseline * (1 + budget) + 1e-9


def recommend(costs: Sequence[float], ok: Sequence[bool], budget: float, baseline: float) -> int | None:
    """The index of the smallest limit that, with every larger one, is within the budget and ``ok``;
    costs in ascending order of the limit.  None when even the largest is not."""
    chosen = None
    for i in range(len(costs) - 1, -1, -1):
        if not (ok[i] and within(costs[i], baseline, budget)):
            break
        chosen = i
    return chosen


def k8s_quantity(nbytes: int) -> str:
    """A Kubernetes quantity for ``nbytes``: ``48Mi``, ``1Gi``, ``512Ki``, or the plain number."""
    for suffix, shift in (("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)):
        if nbytes and nbytes % (1 << shift) == 0:
            return f"{nbytes >> shift}{suffix}"
    return str(nbytes)

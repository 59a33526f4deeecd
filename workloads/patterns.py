"""Access patterns over an enclave's heap: each yields batches of page ranges to touch.

A pass touches as many pages as the heap has, in batches of at most ``batch`` pages;
``random``, ``hotcold`` and ``shifting`` draw from a seeded generator, so the same
seed gives the same accesses.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from wire.protocol import PATTERNS

Ranges = list[list[int]]


def batches(pattern: str, npages: int, *, passes: int, batch: int = 256, seed: int = 0) -> Iterator[Ranges]:
    """Batches of [first, count] ranges over pages 0..npages-1, ``passes`` times the heap's size."""
    if pattern not in PATTERNS:
        raise ValueError(f"unknown pattern {pattern!r}: use one of {', '.join(PATTERNS)}")
    if npages <= 0:
        return
    rng = random.Random(seed)
    for pass_no in range(passes):
        if pattern == "sequential":
            for first in range(0, npages, batch):
                yield [[first, min(batch, npages - first)]]
            continue
        for done in range(0, npages, batch):
            count = min(batch, npages - done)
            if pattern == "random":
                pages = [rng.randrange(npages) for _ in range(count)]
            elif pattern == "hotcold":
                pages = _hotcold(rng, npages, count)
            else:
                pages = _shifting(rng, npages, count, pass_no * npages + done, passes * npages)
            yield _to_ranges(pages)


def _hotcold(
    rng: random.Random, npages: int, count: int, hot_fraction: float = 0.1, hot_share: float = 0.9
) -> list[int]:
    """90% of accesses go to the first 10% of the heap."""
    hot = max(1, int(npages * hot_fraction))
    return [rng.randrange(hot) if rng.random() < hot_share else rng.randrange(npages) for _ in range(count)]


def _shifting(
    rng: random.Random, npages: int, count: int, position: int, total: int, window: float = 0.25
) -> list[int]:
    """A working set of a quarter of the heap that slides across it over the whole run."""
    size = max(1, int(npages * window))
    start = (position * (npages - size)) // max(1, total)
    return [start + rng.randrange(size) for _ in range(count)]


def _to_ranges(pages: list[int]) -> Ranges:
    """Pages in access order, adjacent ones merged into ranges."""
    out: Ranges = []
    for page in pages:
        if out and out[-1][0] + out[-1][1] == page:
            out[-1][1] += 1
        else:
            out.append([page, 1])
    return out

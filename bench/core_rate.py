"""The core's page rate under reclaim, against the dict-based baseline, and its flatness in resident pages.

1. Rate: one task in /a/b/c, misc.max on /a at 1/4 of the EPC, the limit already full
   (prefill untimed), then ``Host.add_pages`` of N pages: every 16th page reclaims a
   batch of 16.  The baseline (bench/baseline.py) does the same number of additions
   at the same limit.  Rounds of back-to-back runs (5; --quick 3); the figure is the
   median of the per-round ratios, target core >= 0.5x baseline (aim 1x).  The core
   runs again with the collector off while timed, to show what collection costs it.
2. Flatness: a 64 GiB EPC filled with no limit to R resident pages (R = 1e4 .. 1e7,
   one host per R), then misc.max on /a set to the usage so that every addition
   reclaims; a fixed number of additions at each R, timed in round-robin chunks across
   the sizes (median chunk), with the collector off while timed.  Target: max/min of
   the core's per-page cost within 1.2.  The baseline does the same beside it.

With --profile, one more core run of part 1 under cProfile: the top 15 by tottime.

``.venv/bin/python bench/core_rate.py [--quick] [--json FILE] [--profile]``
"""

from __future__ import annotations

import cProfile
import gc
import io
import pstats
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _common
from bench.baseline import BaselineEngine, prefilled, time_adds
from engine import Host
from engine.sgx import PAGE_SIZE

PID = 1000
RATE_TARGET = 0.5  # core / baseline
FLAT_TARGET = 1.2  # max / min per-page cost over the sizes
FLAT_CAPACITY_PAGES = 1 << 24  # 64 GiB: only the frames used cost memory
CHECK_UP_TO = 1_000_000  # Host.check() after runs up to this many pages (it is O(pages))
RATE_ABSOLUTE = 500_000  # the project's performance budget: pages/s on one core


def enclave_bytes(pages: int) -> int:
    """The smallest power-of-two enclave size holding ``pages`` pages (at least two)."""
    return max(2, 1 << (pages - 1).bit_length()) * PAGE_SIZE


def limited_host(capacity_pages: int, limit_pages: int | None, enclave_pages: int) -> tuple[Host, int]:
    """A host with /a/b/c, misc.max on /a (None: max), task PID in /a/b/c and one enclave; (host, eid)."""
    host = Host(capacity=capacity_pages * PAGE_SIZE)
    for path in ("/a", "/a/b", "/a/b/c"):
        host.mkdir(path)
    set_limit(host, limit_pages)
    host.write("/a/b/c/cgroup.procs", str(PID))
    eid = host.ecreate(PID, enclave_bytes(enclave_pages))
    return host, eid


def set_limit(host: Host, limit_pages: int | None) -> None:
    host.write("/a/misc.max", "sgx_epc max" if limit_pages is None else f"sgx_epc {limit_pages * PAGE_SIZE}")


def usage_pages(host: Host) -> int:
    return host.cgroup("/a").misc_usage


# -- 1. rate under reclaim ------------------------------------------------------


def core_run(
    capacity_pages: int, limit_pages: int, n_pages: int, check: bool = False, gc_on: bool = True
) -> dict[str, Any]:
    """One timed run of ``n_pages`` additions at a full limit on a fresh host (``check``: verify it afterwards)."""
    host, eid = limited_host(capacity_pages, limit_pages, limit_pages + n_pages)
    host.add_pages(PID, eid, limit_pages)  # prefill, untimed: the limit is full from here on
    reclaimed = host.pages_reclaimed
    gc.collect()
    if not gc_on:
        gc.disable()
    try:
        seconds = _common.timed(lambda: host.add_pages(PID, eid, n_pages))
    finally:
        gc.enable()
    reclaimed = host.pages_reclaimed - reclaimed
    if reclaimed < n_pages - 32:
        raise AssertionError(f"only {reclaimed} pages reclaimed for {n_pages} added at the limit")
    if check:
        host.check()
    return {"seconds": seconds, "pages_per_s": n_pages / seconds, "reclaimed": reclaimed}


def baseline_run(limit_pages: int, n_pages: int, levels: int, check: bool = False) -> dict[str, Any]:
    engine = prefilled(limit_pages, levels)
    reclaimed = engine.reclaimed
    gc.collect()
    seconds = time_adds(engine, n_pages)
    reclaimed = engine.reclaimed - reclaimed
    if check:
        engine.check()
    return {"seconds": seconds, "pages_per_s": n_pages / seconds, "reclaimed": reclaimed}


def measure_rate(capacity_pages: int, limit_pages: int, n_pages: int, runs: int, levels: int) -> dict[str, Any]:
    """``runs`` rounds of a core run, a baseline run and a core run with gc off, back to back.

    The ratios are medians of the per-round ratios: a slow patch of a shared machine
    falls on the runs of one round alike.
    """
    core_runs, nogc_runs, base_runs = [], [], []
    for run in range(runs):
        core_runs.append(core_run(capacity_pages, limit_pages, n_pages, check=run == 0))
        base_runs.append(baseline_run(limit_pages, n_pages, levels, check=run == 0))
        nogc_runs.append(core_run(capacity_pages, limit_pages, n_pages, gc_on=False))
    ratios = [c["pages_per_s"] / b["pages_per_s"] for c, b in zip(core_runs, base_runs, strict=True)]
    ratios_nogc = [c["pages_per_s"] / b["pages_per_s"] for c, b in zip(nogc_runs, base_runs, strict=True)]
    return {
        "capacity_pages": capacity_pages,
        "limit_pages": limit_pages,
        "pages": n_pages,
        "runs": runs,
        "baseline_levels": levels,
        "core_pages_per_s": _common.median([r["pages_per_s"] for r in core_runs]),
        "core_nogc_pages_per_s": _common.median([r["pages_per_s"] for r in nogc_runs]),
        "baseline_pages_per_s": _common.median([r["pages_per_s"] for r in base_runs]),
        "ratio": _common.median(ratios),
        "ratio_nogc": _common.median(ratios_nogc),
        "ratios": ratios,
        "core_runs": core_runs,
        "core_nogc_runs": nogc_runs,
        "baseline_runs": base_runs,
    }


def print_rate(r: dict[str, Any]) -> None:
    print(
        f"-- rate under reclaim: {r['pages']:,} additions, misc.max on /a = {r['limit_pages']:,} pages "
        f"(1/4 of {r['capacity_pages']:,}), {r['runs']} rounds, medians"
    )
    rows = []
    for label, key, runs_key in (
        ("core Host.add_pages (/a/b/c)", "core_pages_per_s", "core_runs"),
        ("core, gc off while timed", "core_nogc_pages_per_s", "core_nogc_runs"),
        (f"baseline ({r['baseline_levels']}-level dict LRU)", "baseline_pages_per_s", "baseline_runs"),
    ):
        rate = r[key]
        reclaimed = int(_common.median([x["reclaimed"] for x in r[runs_key]]))
        rows.append([label, rate, 1e9 / rate, reclaimed])
    _common.print_table(["engine", "pages/s", "ns/page", "reclaimed"], rows)
    ratio, core = r["ratio"], r["core_pages_per_s"]
    print(f"  core / baseline = {ratio:.2f}x (gc off: {r['ratio_nogc']:.2f}x), the median of the per-round ratios")
    print(f"    target >= {RATE_TARGET}x, aim 1x: {_common.verdict(ratio >= RATE_TARGET)}")
    print(f"  core = {core:,.0f} pages/s  (budget: >= {RATE_ABSOLUTE:,}/s): {_common.verdict(core >= RATE_ABSOLUTE)}")


# -- 2. flatness in resident pages ------------------------------------------------


class _Sized:
    """One engine filled to a size and limited there, so every addition reclaims."""

    def __init__(self, size: int, ops: int, levels: int, baseline: bool) -> None:
        self.size = size
        self.samples: list[float] = []
        if baseline:
            engine = BaselineEngine(levels)
            self.fill_s = _common.timed(lambda: engine.add_pages(size))
            engine.set_limit(engine.resident)
            self.resident = engine.resident
            self.add: Callable[[int], object] = engine.add_pages
            self.check: Callable[[], object] = engine.check
            self.reclaimed: Callable[[], int] = lambda: engine.reclaimed
        else:
            host, eid = limited_host(FLAT_CAPACITY_PAGES, None, size + ops + 1024)
            self.fill_s = _common.timed(lambda: host.add_pages(PID, eid, size))
            self.resident = usage_pages(host)
            set_limit(host, self.resident)
            self.add = lambda n: host.add_pages(PID, eid, n)
            self.check = host.check
            self.reclaimed = lambda: host.pages_reclaimed

    def chunk(self, pages: int) -> None:
        self.samples.append(_common.timed(lambda: self.add(pages)) * 1e9 / pages)


def measure_flatness(sizes: list[int], ops: int, rounds: int, levels: int, with_baseline: bool) -> dict[str, Any]:
    """Fill one core host (and one baseline) per size, then time ``ops`` additions at each, round-robin.

    Round-robin chunks (ops / rounds additions each, every size in turn) make a slow patch
    of a shared machine fall on every size alike; each size's figure is its median
    chunk.  The collector is off while this runs: what grows with the resident pages is
    the data structures, and the collector's cost (which grows with the pages written
    out, whatever the resident count) is in the rate figure.
    """
    core = [_Sized(size, ops, levels, baseline=False) for size in sizes]
    base = [_Sized(size, ops, levels, baseline=True) for size in sizes] if with_baseline else []
    for sized in core:
        print(f"   R = {sized.resident:>12,}: core filled in {sized.fill_s:.1f} s", flush=True)
    per_chunk = ops // rounds
    gc.collect()
    gc.disable()
    try:
        for _ in range(rounds):
            for i in range(len(sizes)):
                core[i].chunk(per_chunk)
                if base:
                    base[i].chunk(per_chunk)
    finally:
        gc.enable()
    rows: list[dict[str, Any]] = []
    for i, sized in enumerate(core):
        if sized.reclaimed() < ops - 32:
            raise AssertionError(f"the core at {sized.size:,} pages did not reclaim as it should")
        if sized.size <= CHECK_UP_TO:
            sized.check()
        row: dict[str, Any] = {
            "resident_pages": sized.resident,
            "fill_s": sized.fill_s,
            "core_ns_per_page": _common.median(sized.samples),
            "core_samples_ns": sized.samples,
        }
        if base:
            row["baseline_fill_s"] = base[i].fill_s
            row["baseline_ns_per_page"] = _common.median(base[i].samples)
            row["baseline_samples_ns"] = base[i].samples
        rows.append(row)
    out: dict[str, Any] = {"ops_per_size": ops, "rounds": rounds, "gc": "off while timed", "sizes": rows}
    for key in ("core_ns_per_page", "baseline_ns_per_page"):
        if key in rows[0]:
            values = [r[key] for r in rows]
            out[key.replace("ns_per_page", "max_over_min")] = max(values) / min(values)
    return out


def print_flatness(f: dict[str, Any]) -> None:
    print(f"-- per-page cost by resident pages: {f['ops_per_size']:,} additions at the limit per size")
    print(f"   (round-robin over the sizes in {f['rounds']} chunks, median chunk; gc off while timed)")
    has_base = "baseline_max_over_min" in f
    headers = ["resident pages", "core ns/page"] + (["baseline ns/page", "core x baseline"] if has_base else [])
    rows = []
    for r in f["sizes"]:
        row: list[object] = [f"{r['resident_pages']:,}", r["core_ns_per_page"]]
        if has_base:
            row += [r["baseline_ns_per_page"], r["baseline_ns_per_page"] / r["core_ns_per_page"]]
        rows.append(row)
    _common.print_table(headers, rows)
    flat = f["core_max_over_min"]
    line = f"  core max/min = {flat:.2f}  (target <= {FLAT_TARGET}): {_common.verdict(flat <= FLAT_TARGET)}"
    if has_base:
        line += f";  baseline max/min = {f['baseline_max_over_min']:.2f} (same sizes, same machine)"
    print(line)


# -- profile --------------------------------------------------------------------


def profile(capacity_pages: int, limit_pages: int, n_pages: int, top: int = 15) -> str:
    """cProfile of one core run (not timed for the figures); the top functions by tottime."""
    prof = cProfile.Profile()
    prof.enable()
    core_run(capacity_pages, limit_pages, n_pages, check=False)
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main() -> None:
    p = _common.parser("The core's page rate under reclaim vs the dict baseline, and its flatness in resident pages.")
    p.add_argument("--profile", action="store_true", help="also cProfile one core run and print the top 15 by tottime")
    p.add_argument(
        "--levels", type=int, default=4, help="cgroup levels the baseline charges per page, root included (default 4)"
    )
    p.add_argument("--no-baseline-flat", action="store_true", help="skip the baseline column of the flatness table")
    args = p.parse_args()
    capacity_pages = 1 << 18  # 1 GiB of EPC
    limit_pages = capacity_pages // 4
    if args.quick:
        n_pages, runs, sizes, ops, rounds = 50_000, 3, [10_000, 100_000], 30_000, 3
    else:
        n_pages, runs, sizes, ops, rounds = 1_000_000, 5, [10_000, 100_000, 1_000_000, 10_000_000], 300_000, 10
    info = _common.machine()
    _common.print_header("core_rate: Host.add_pages under reclaim vs a dict-based LRU baseline", info)
    rate = measure_rate(capacity_pages, limit_pages, n_pages, runs, args.levels)
    print_rate(rate)
    _common.flush()
    flat = measure_flatness(sizes, ops, rounds, args.levels, with_baseline=not args.no_baseline_flat)
    print_flatness(flat)
    result: dict[str, Any] = {
        "benchmark": "core_rate",
        "machine": info,
        "quick": args.quick,
        "rate": rate,
        "flat": flat,
    }
    if args.profile:
        text = profile(capacity_pages, limit_pages, n_pages)
        print(f"-- cProfile of one core run ({n_pages:,} additions), top 15 by tottime")
        print(text)
        result["profile"] = text
    _common.write_json(args.json, result)


if __name__ == "__main__":
    main()

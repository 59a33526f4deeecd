"""The core's page rate under reclaim, against the dict-based baseline, and its flatness in resident pages.

1. Rate: one task in /a/b/c, misc.max on /a at 1/4 of the EPC, the limit already full
   (prefill untimed), then ``Host.add_pages`` of N pages: every 16th page reclaims a
   batch of 16.  The baseline (bench/baseline.py) does the same number of additions
   at the same limit.  Median of 3 runs each, interleaved; target core >= 0.5x
   baseline (aim 1x).
2. Flatness: no limit, a 64 GiB EPC filled to R resident pages (R = 1e4 .. 1e7), then
   misc.max on /a set to the usage so that every addition reclaims; the per-page cost
   of a fixed number of additions at each R (median of chunks).  Target: max/min of
   the core's per-page cost within 1.2.  The baseline does the same beside it.

``.venv/bin/python bench/core_rate.py [--quick] [--json FILE] [--profile]``
"""

from __future__ import annotations

import cProfile
import io
import pstats
import sys
import time
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


def core_run(capacity_pages: int, limit_pages: int, n_pages: int, check: bool = True) -> dict[str, Any]:
    """One timed run of ``n_pages`` additions at a full limit; the state is checked afterwards."""
    host, eid = limited_host(capacity_pages, limit_pages, limit_pages + n_pages)
    host.add_pages(PID, eid, limit_pages)  # prefill, untimed: the limit is full from here on
    reclaimed = host.pages_reclaimed
    seconds = _common.timed(lambda: host.add_pages(PID, eid, n_pages))
    reclaimed = host.pages_reclaimed - reclaimed
    if check:
        host.check()
    return {"seconds": seconds, "pages_per_s": n_pages / seconds, "reclaimed": reclaimed}


def baseline_run(limit_pages: int, n_pages: int, levels: int) -> dict[str, Any]:
    engine = prefilled(limit_pages, levels)
    reclaimed = engine.reclaimed
    seconds = time_adds(engine, n_pages)
    reclaimed = engine.reclaimed - reclaimed
    engine.check()
    return {"seconds": seconds, "pages_per_s": n_pages / seconds, "reclaimed": reclaimed}


def measure_rate(capacity_pages: int, limit_pages: int, n_pages: int, runs: int, levels: int) -> dict[str, Any]:
    core_runs, base_runs = [], []
    for _ in range(runs):  # interleaved, so a slow patch of the machine hits both
        core_runs.append(core_run(capacity_pages, limit_pages, n_pages))
        base_runs.append(baseline_run(limit_pages, n_pages, levels))
    core = _common.median([r["pages_per_s"] for r in core_runs])
    base = _common.median([r["pages_per_s"] for r in base_runs])
    return {
        "capacity_pages": capacity_pages,
        "limit_pages": limit_pages,
        "pages": n_pages,
        "runs": runs,
        "baseline_levels": levels,
        "core_pages_per_s": core,
        "baseline_pages_per_s": base,
        "ratio": core / base,
        "core_runs": core_runs,
        "baseline_runs": base_runs,
    }


def print_rate(r: dict[str, Any]) -> None:
    print(
        f"-- rate under reclaim: {r['pages']:,} additions, misc.max on /a = {r['limit_pages']:,} pages "
        f"(1/4 of {r['capacity_pages']:,}), median of {r['runs']}"
    )
    core, base = r["core_pages_per_s"], r["baseline_pages_per_s"]
    reclaimed = _common.median([x["reclaimed"] for x in r["core_runs"]])
    base_reclaimed = _common.median([x["reclaimed"] for x in r["baseline_runs"]])
    _common.print_table(
        ["engine", "pages/s", "ns/page", "reclaimed"],
        [
            ["core Host.add_pages (/a/b/c)", core, 1e9 / core, int(reclaimed)],
            [f"baseline ({r['baseline_levels']}-level dict LRU)", base, 1e9 / base, int(base_reclaimed)],
        ],
    )
    ratio = r["ratio"]
    print(
        f"  core / baseline = {ratio:.2f}x  (target >= {RATE_TARGET}x, aim 1x): {_common.verdict(ratio >= RATE_TARGET)}"
    )


# -- 2. flatness in resident pages ------------------------------------------------


def chunked_ns(add: Any, ops: int, chunks: int) -> tuple[float, list[float]]:
    """Median ns per addition over ``chunks`` timed calls of ``add(ops // chunks)``."""
    per_chunk = ops // chunks
    samples = [_common.timed(lambda: add(per_chunk)) * 1e9 / per_chunk for _ in range(chunks)]
    return _common.median(samples), samples


def measure_flatness(sizes: list[int], ops: int, chunks: int, levels: int, with_baseline: bool) -> dict[str, Any]:
    """Grow one host (and one baseline) to each size in turn, then time ``ops`` additions at a limit there."""
    capacity_pages = 1 << 24  # 64 GiB: only the frames used cost memory
    host, eid = limited_host(capacity_pages, None, sizes[-1] + ops * len(sizes) + 1024)
    engine = BaselineEngine(levels) if with_baseline else None
    rows: list[dict[str, Any]] = []
    for size in sizes:
        set_limit(host, None)
        start = time.perf_counter()
        host.add_pages(PID, eid, size - usage_pages(host))
        fill_s = time.perf_counter() - start
        resident = usage_pages(host)
        set_limit(host, resident)
        core_ns, core_samples = chunked_ns(lambda n: host.add_pages(PID, eid, n), ops, chunks)
        row: dict[str, Any] = {
            "resident_pages": resident,
            "fill_s": fill_s,
            "core_ns_per_page": core_ns,
            "core_samples_ns": core_samples,
        }
        if engine is not None:
            engine.set_limit(None)
            engine.add_pages(size - engine.resident)
            engine.set_limit(engine.resident)
            row["baseline_ns_per_page"], row["baseline_samples_ns"] = chunked_ns(engine.add_pages, ops, chunks)
        rows.append(row)
        print(f"   R = {resident:>12,}: filled in {fill_s:.1f} s, {core_ns:,.0f} ns/page", flush=True)
    if len(sizes) <= 5:  # small enough to verify every invariant cheaply
        host.check()
    core = [r["core_ns_per_page"] for r in rows]
    out: dict[str, Any] = {
        "ops_per_size": ops,
        "chunks": chunks,
        "sizes": rows,
        "core_max_over_min": max(core) / min(core),
    }
    if engine is not None:
        engine.check()
        base = [r["baseline_ns_per_page"] for r in rows]
        out["baseline_max_over_min"] = max(base) / min(base)
    return out


def print_flatness(f: dict[str, Any]) -> None:
    print(f"-- per-page cost by resident pages: {f['ops_per_size']:,} additions at the limit per size")
    has_base = "baseline_max_over_min" in f
    headers = ["resident pages", "core ns/page"] + (["baseline ns/page", "core / baseline"] if has_base else [])
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
        line += f";  baseline max/min = {f['baseline_max_over_min']:.2f} (same machine, same sizes)"
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
    p.add_argument("--levels", type=int, default=3, help="cgroup levels the baseline charges per page (default 3)")
    p.add_argument("--no-baseline-flat", action="store_true", help="skip the baseline column of the flatness table")
    args = p.parse_args()
    capacity_pages = 1 << 18  # 1 GiB of EPC
    limit_pages = capacity_pages // 4
    if args.quick:
        n_pages, runs, sizes, ops, chunks = 50_000, 3, [10_000, 100_000], 30_000, 3
    else:
        n_pages, runs, sizes, ops, chunks = 1_000_000, 3, [10_000, 100_000, 1_000_000, 10_000_000], 300_000, 6
    info = _common.machine()
    _common.print_header("core_rate: Host.add_pages under reclaim vs a dict-based LRU baseline", info)
    rate = measure_rate(capacity_pages, limit_pages, n_pages, runs, args.levels)
    print_rate(rate)
    _common.flush()
    flat = measure_flatness(sizes, ops, chunks, args.levels, with_baseline=not args.no_baseline_flat)
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

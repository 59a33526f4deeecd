"""The core's memory per resident EPC page, and its start-up time, each beside a reference.

1. Bytes per resident page: one enclave filled with 4M pages (no limit) by a task in the
   root cgroup, measured in a fresh child process each way:
   - RSS: the resident set (/proc/self/statm) before and after the fill;
   - tracemalloc: the bytes Python's allocators hold, before and after the fill;
   - arrays: the sizes (sys.getsizeof) of the EPC's and the enclave's per-page arrays.
   The dict-based baseline (bench/baseline.py) filled with as many pages gives the
   reference, by RSS.  Target <= 32 B/page.
2. Start-up: ``Host(capacity="512GiB")`` against ``Host(capacity="128MiB")`` (O(1) in the
   EPC size means a ratio near 1), with the time to build an empty dict beside it.
   Target well under a second.

``.venv/bin/python bench/core_memory.py [--quick] [--json FILE] [--pages N]``
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _common
from bench.baseline import BaselineEngine
from bench.core_rate import enclave_bytes
from engine import Host

PID = 1000
BYTES_TARGET = 32  # per resident page
STARTUP_TARGET_S = 0.1  # "well under a second"
METHODS = ("rss", "tracemalloc", "baseline-rss")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# -- 1. bytes per page, one method per child process ---------------------------------


def child(method: str, pages: int) -> dict[str, Any]:
    """Fill ``pages`` resident pages and measure by ``method``; runs in a fresh process."""
    if method == "baseline-rss":
        engine = BaselineEngine()
        gc.collect()
        before = rss_bytes()
        start = time.perf_counter()
        engine.add_pages(pages)
        fill_s = time.perf_counter() - start
        gc.collect()
        return {"resident_pages": engine.resident, "bytes": rss_bytes() - before, "fill_s": fill_s}
    tracing = method == "tracemalloc"
    if tracing:
        import tracemalloc

        tracemalloc.start()
    host = Host(capacity=enclave_bytes(2 * pages))  # room for the VA pages and SECS too
    eid = host.ecreate(PID, enclave_bytes(pages))
    gc.collect()
    before = tracemalloc.get_traced_memory()[0] if tracing else rss_bytes()
    used_before = host.epc.nr_used
    start = time.perf_counter()
    host.add_pages(PID, eid, pages)
    fill_s = time.perf_counter() - start
    gc.collect()
    after = tracemalloc.get_traced_memory()[0] if tracing else rss_bytes()
    resident = host.epc.nr_used - used_before
    out: dict[str, Any] = {"resident_pages": resident, "bytes": after - before, "fill_s": fill_s}
    if not tracing:
        epc = host.epc
        encl = host.enclaves[eid]
        arrays = (epc.owner, epc.index, epc.cg, epc.flags, epc.prev, epc.next, encl.pages, encl.types)
        out["array_bytes"] = sum(sys.getsizeof(a) for a in arrays)
        out["array_pages"] = epc.nr_used
    return out


def run_child(method: str, pages: int) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", method, "--pages", str(pages)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{method} child failed:\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def measure_bytes(pages: int) -> dict[str, Any]:
    results = {method: run_child(method, pages) for method in METHODS}
    for r in results.values():
        r["bytes_per_page"] = r["bytes"] / r["resident_pages"]
    rss = results["rss"]
    rss["array_bytes_per_page"] = rss["array_bytes"] / rss["array_pages"]
    return {"pages": pages, **results, "ratio_rss": rss["bytes_per_page"] / results["baseline-rss"]["bytes_per_page"]}


def print_bytes(m: dict[str, Any]) -> None:
    print(f"-- bytes per resident page: {m['pages']:,} pages in one enclave, no limit, a fresh process each")
    rss, tm, arrays, base = m["rss"], m["tracemalloc"], m["rss"]["array_bytes_per_page"], m["baseline-rss"]
    _common.print_table(
        ["method", "B/page", "resident pages", "fill s"],
        [
            ["core, RSS delta (/proc/self/statm)", rss["bytes_per_page"], rss["resident_pages"], rss["fill_s"]],
            ["core, tracemalloc delta", tm["bytes_per_page"], tm["resident_pages"], tm["fill_s"]],
            ["core, per-page arrays (getsizeof)", arrays, rss["array_pages"], "-"],
            ["baseline dict LRU, RSS delta", base["bytes_per_page"], base["resident_pages"], base["fill_s"]],
        ],
    )
    worst = max(rss["bytes_per_page"], tm["bytes_per_page"])
    print(
        f"  core = {worst:.1f} B/page, the worse of RSS and tracemalloc (target <= {BYTES_TARGET}): "
        f"{_common.verdict(worst <= BYTES_TARGET)};  core / baseline (RSS) = {m['ratio_rss']:.2f}x"
    )


# -- 2. start-up ----------------------------------------------------------------------


def per_call_s(fn: Any, number: int, repeat: int = 5) -> float:
    """Median over ``repeat`` batches of the seconds one call of ``fn`` takes."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - start) / number)
    return _common.median(samples)


def measure_startup(number: int) -> dict[str, Any]:
    start = time.perf_counter()
    Host(capacity="512GiB")
    first = time.perf_counter() - start
    big = per_call_s(lambda: Host(capacity="512GiB"), number)
    small = per_call_s(lambda: Host(capacity="128MiB"), number)
    empty_dict = per_call_s(dict, number * 100)
    return {
        "first_512GiB_s": first,
        "host_512GiB_s": big,
        "host_128MiB_s": small,
        "empty_dict_s": empty_dict,
        "size_ratio": big / small,
        "dict_ratio": big / empty_dict,
    }


def print_startup(s: dict[str, Any]) -> None:
    print("-- start-up: Host() construction, median per call")
    _common.print_table(
        ["what", "us", "x empty dict"],
        [
            ['Host(capacity="512GiB"), first in this process', s["first_512GiB_s"] * 1e6, "-"],
            ['Host(capacity="512GiB")', s["host_512GiB_s"] * 1e6, s["dict_ratio"]],
            ['Host(capacity="128MiB")', s["host_128MiB_s"] * 1e6, s["host_128MiB_s"] / s["empty_dict_s"]],
            ["dict()", s["empty_dict_s"] * 1e6, 1.0],
        ],
    )
    worst = max(s["first_512GiB_s"], s["host_512GiB_s"])
    print(
        f"  512GiB / 128MiB = {s['size_ratio']:.2f}x (O(1) in EPC size: about 1);  "
        f"512 GiB host in {worst * 1e3:.2f} ms (target well under 1 s): {_common.verdict(worst < STARTUP_TARGET_S)}"
    )


def main() -> None:
    p = _common.parser("The core's bytes per resident EPC page and its start-up time, beside references.")
    p.add_argument("--pages", type=int, help="resident pages to fill (default 4Mi; --quick: 256Ki)")
    p.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)  # internal: one measurement
    args = p.parse_args()
    pages = args.pages or (1 << 18 if args.quick else 1 << 22)
    if args.child:
        print(json.dumps(child(args.child, pages)))
        return
    info = _common.machine()
    _common.print_header("core_memory: bytes per resident page and start-up time", info)
    mem = measure_bytes(pages)
    print_bytes(mem)
    startup = measure_startup(20 if args.quick else 200)
    print_startup(startup)
    _common.write_json(
        args.json, {"benchmark": "core_memory", "machine": info, "quick": args.quick, "memory": mem, "startup": startup}
    )


if __name__ == "__main__":
    main()

"""Helpers shared by the benchmarks: timing, the machine record, a plain table and JSON output."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def parser(description: str) -> argparse.ArgumentParser:
    """The options every benchmark takes: --quick and --json FILE."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="a short smoke run (small sizes, seconds)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    return p


def timed(fn: Callable[[], object]) -> float:
    """Seconds one call of ``fn`` takes (perf_counter)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def machine() -> dict[str, Any]:
    """What the reporting rules ask to record with every result."""
    info: dict[str, Any] = {
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "cpu": _cpu_model(),
    }
    try:
        import zmq

        info["pyzmq"] = zmq.__version__
        info["libzmq"] = zmq.zmq_version()
    except ImportError:  # not needed by these benchmarks; recorded when present
        pass
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def print_header(title: str, info: dict[str, Any]) -> None:
    print(f"== {title}")
    extra = f", pyzmq {info['pyzmq']} / libzmq {info['libzmq']}" if "pyzmq" in info else ""
    print(f"   {info['python']}, {info['cpus']} CPUs ({info['cpu']}), {info['platform']}{extra}")


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A plain left-aligned first column, right-aligned other columns."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        parts = [row[0].ljust(widths[0])] + [v.rjust(w) for v, w in zip(row[1:], widths[1:], strict=True)]
        print("  " + "  ".join(parts).rstrip())
        if n == 0:
            print("  " + "  ".join("-" * w for w in widths))


def _cell(value: object) -> str:
    if isinstance(value, float):
        if value >= 100:
            return f"{value:,.0f}"
        return f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def write_json(path: str | None, result: dict[str, Any]) -> None:
    if not path:
        return
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(f"   results written to {out}")


def flush() -> None:
    sys.stdout.flush()

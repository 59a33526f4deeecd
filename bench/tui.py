"""The TUI at scale: key-press latency and what an attached TUI costs the engine.

1. Key-press latency (a cursor move in the cgroup tree, until the screen is idle again)
   with 1,000 cgroups and 200 workloads, against the same TUI on an empty engine.
   Target: drawn within 100 ms.
2. Engine throughput (batched faults from 2 workload processes) with a TUI attached,
   against none. Target: at most 5% lost.

The 200 workloads are cheap stand-ins: ``sleep`` processes registered with the engine,
each owning a small enclave, so the tables and stats carry 200 rows.

``.venv/bin/python bench/tui.py [--quick] [--json FILE]``
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _common
from bench.e2e import batched_fault_rate
from playground.launch import start_engine_process
from workloads.client import EngineClient

PAGE = 4096


def populate(endpoint: str, cgroups: int, workloads: int) -> list[subprocess.Popen[bytes]]:
    """``cgroups`` cgroups (20 parents with children) and ``workloads`` registered processes."""
    sleepers = [subprocess.Popen(["sleep", "600"]) for _ in range(workloads)]
    with EngineClient(endpoint) as client:
        parents = max(1, cgroups // 50)
        made = 0
        for i in range(parents):
            client.mkdir(f"/g{i}")
            made += 1
            for j in range(cgroups // parents - 1):
                client.mkdir(f"/g{i}/c{j}")
                made += 1
        for n, sleeper in enumerate(sleepers):
            client.write(f"/g{n % parents}/c{n % 10}/cgroup.procs", str(sleeper.pid))
            client.hello("enclave", f"w{n}", pid=sleeper.pid)
            eid = client.call("ecreate", size=64 * PAGE)["eid"]
            client.call("add_pages", eid=eid, count=8)
    return sleepers


def key_latency(endpoint: str, presses: int) -> list[float]:
    from playground.tui.app import EpcApp

    async def scenario() -> list[float]:
        app = EpcApp(endpoint)
        samples = []
        async with app.run_test(size=(150, 40)) as pilot:
            await pilot.pause(1.0)
            for i in range(presses):
                start = time.perf_counter()
                await pilot.press("down" if i % 20 < 10 else "up")
                await pilot.wait_for_scheduled_animations()
                samples.append(time.perf_counter() - start)
                await pilot.pause(0.05)
            await pilot.press("q")
        return samples

    return asyncio.run(scenario())


def _attached_tui(endpoint: str, seconds: float) -> None:
    """A TUI, headless, attached for ``seconds``: its feed, its refreshes, its snapshot requests."""
    from playground.tui.app import EpcApp

    async def scenario() -> None:
        app = EpcApp(endpoint)
        async with app.run_test(size=(150, 40)) as pilot:
            await pilot.pause(seconds)
            await pilot.press("q")

    asyncio.run(scenario())


def main() -> None:
    p = _common.parser("The TUI at scale: key latency and the engine's throughput with a TUI attached.")
    args = p.parse_args()
    cgroups, workloads, presses, heap, seconds = (200, 40, 20, 2048, 1.0) if args.quick else (1000, 200, 60, 8192, 3.0)
    info = _common.machine()
    _common.print_header("tui: key latency and engine throughput with a TUI attached", info)
    results: dict[str, Any] = {"benchmark": "tui", "machine": info}
    with tempfile.TemporaryDirectory(prefix="epc-bench-") as directory:
        env = {**os.environ, "XDG_RUNTIME_DIR": directory, "PYTHONPATH": str(_common.REPO)}
        empty, empty_ep = start_engine_process(["--capacity", "256MiB"], env)
        try:
            base = key_latency(empty_ep, presses)
        finally:
            empty.terminate()
            empty.wait(10)
        engine, endpoint = start_engine_process(["--bind", f"ipc://{directory}/big.sock", "--capacity", "1GiB"], env)
        sleepers = populate(endpoint, cgroups, workloads)
        try:
            busy = key_latency(endpoint, presses)
            p95_base = statistics.quantiles(base, n=20)[18]
            p95_busy = statistics.quantiles(busy, n=20)[18]
            print(f"-- 1. key press to idle screen, {presses} presses")
            _common.print_table(
                ["engine", "median ms", "p95 ms"],
                [
                    ["empty", statistics.median(base) * 1e3, p95_base * 1e3],
                    [f"{cgroups} cgroups, {workloads} workloads", statistics.median(busy) * 1e3, p95_busy * 1e3],
                ],
            )
            verdict = "ok" if p95_busy <= 0.1 else "MISSED"
            print(
                f"  p95 {p95_busy * 1e3:.0f} ms = {p95_busy / p95_base:.2f}x the empty engine's; <= 100 ms: {verdict}"
            )
            results["keys"] = {"empty_s": base, "busy_s": busy}

            alone = batched_fault_rate(endpoint, 2, heap, False, seconds)["pages_per_s"]
            tui = multiprocessing.get_context("spawn").Process(target=_attached_tui, args=(endpoint, seconds * 6 + 10))
            tui.start()
            time.sleep(3)
            attached = batched_fault_rate(endpoint, 2, heap, False, seconds)["pages_per_s"]
            tui.join(120)
            loss = 1 - attached / alone
            print("-- 2. batched faults (2 workload processes) with and without a TUI attached")
            _common.print_table(["", "pages/s"], [["no TUI", alone], ["TUI attached", attached]])
            print(f"  throughput lost: {loss * 100:.1f}%  (target <= 5%): {'ok' if loss <= 0.05 else 'MISSED'}")
            results["throughput"] = {"alone": alone, "attached": attached, "loss": loss}
        finally:
            for sleeper in sleepers:
                sleeper.kill()
            engine.terminate()
            engine.wait(10)
    _common.write_json(args.json, results)


if __name__ == "__main__":
    main()

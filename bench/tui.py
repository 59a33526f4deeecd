"""The TUI at scale: key-press latency and what an attached TUI costs the engine.

1. Key-press latency (a cursor move in the cgroup tree, from the key event to the
   screen update that shows it) with 1,000 cgroups and 200 workloads, against the same
   TUI on a small engine (20 cgroups).  Target: p95 drawn within 50 ms.
2. Engine throughput (faults that reclaim, from 2 workload processes, for some seconds)
   with a TUI attached, against none before and after.  Target: at most 2% lost.

The 200 workloads are cheap stand-ins (bench/standins.py): forked processes that register
themselves with the engine, each owning a small enclave, so the tables and stats carry 200 rows.

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

from bench import _common, standins
from bench.e2e import batched_fault_rate
from playground.launch import start_engine_process
from workloads.client import EngineClient

PAGE = 4096
ROUNDS = 3  # attached windows, each between two alone ones


def populate(endpoint: str, cgroups: int, workloads: int) -> subprocess.Popen[str] | None:
    """``cgroups`` cgroups (20 parents with children) and ``workloads`` registered stand-in processes."""
    with EngineClient(endpoint) as client:
        parents = max(1, cgroups // 50)
        for i in range(parents):
            client.mkdir(f"/g{i}")
            for j in range(cgroups // parents - 1):
                client.mkdir(f"/g{i}/c{j}")
    if not workloads:
        return None
    return standins.start(endpoint, [f"/g{n % parents}/c{n % 10}" for n in range(workloads)], pages=8)


def key_latency(endpoint: str, presses: int) -> list[float]:
    """From a key event reaching the app (as the terminal driver posts it) to the screen update showing it.

    The app runs headless, so "shown" is the compositor's update handed to the display
    (everything but the bytes written to a terminal).  Keys are spaced a little over a
    refresh tick apart and at varying phases, so some land while a refresh is running.
    """
    from textual import events
    from textual.widgets import Tree

    from playground.tui.app import EpcApp

    class TimedApp(EpcApp):
        waiting: tuple[int, asyncio.Future[float]] | None = None

        def _display(self, screen: Any, renderable: Any) -> None:
            super()._display(screen, renderable)
            if renderable is not None and self.waiting is not None:
                line, shown = self.waiting
                if self.query_one(Tree).cursor_line == line and not shown.done():
                    shown.set_result(time.perf_counter())

    async def scenario() -> list[float]:
        app = TimedApp(endpoint)
        samples = []
        async with app.run_test(size=(150, 40)) as pilot:
            await pilot.pause(1.0)
            tree, driver = app.query_one(Tree), app._driver
            assert driver is not None
            for i in range(presses):
                down = i % 20 < 10
                shown = asyncio.get_running_loop().create_future()
                app.waiting = (tree.cursor_line + (1 if down else -1), shown)
                start = time.perf_counter()
                driver.send_message(events.Key("down" if down else "up", None))  # as the terminal driver does
                samples.append(await asyncio.wait_for(shown, 5) - start)
                app.waiting = None
                await asyncio.sleep(0.29 + 0.013 * (i % 7))
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
    # --quick: that the script runs (the smoke test), not a figure to quote
    cgroups, workloads, presses, heap, seconds = (200, 40, 6, 2048, 1.0) if args.quick else (1000, 200, 60, 8192, 5.0)
    rounds, settle = (1, 1.5) if args.quick else (ROUNDS, 3.0)
    info = _common.machine()
    _common.print_header("tui: key latency and engine throughput with a TUI attached", info)
    results: dict[str, Any] = {"benchmark": "tui", "machine": info}
    with tempfile.TemporaryDirectory(prefix="epc-bench-") as directory:
        env = {**os.environ, "XDG_RUNTIME_DIR": directory, "PYTHONPATH": str(_common.REPO)}
        small, small_ep = start_engine_process(["--capacity", "256MiB"], env)
        try:
            populate(small_ep, 20, 0)
            base = key_latency(small_ep, presses)
        finally:
            small.terminate()
            small.wait(10)
        engine, endpoint = start_engine_process(["--bind", f"ipc://{directory}/big.sock", "--capacity", "1GiB"], env)
        stand_ins = populate(endpoint, cgroups, workloads)
        try:
            busy = key_latency(endpoint, presses)
            p95_base = statistics.quantiles(base, n=20)[18]
            p95_busy = statistics.quantiles(busy, n=20)[18]
            print(f"-- 1. key press to screen update, {presses} presses (a cursor move in the cgroup tree)")
            _common.print_table(
                ["engine", "median ms", "p95 ms"],
                [
                    ["20 cgroups", statistics.median(base) * 1e3, p95_base * 1e3],
                    [f"{cgroups} cgroups, {workloads} workloads", statistics.median(busy) * 1e3, p95_busy * 1e3],
                ],
            )
            verdict = "ok" if p95_busy <= 0.05 else "MISSED"
            print(f"  p95 {p95_busy * 1e3:.0f} ms = {p95_busy / p95_base:.2f}x the small engine's; <= 50 ms: {verdict}")
            results["keys"] = {"small_s": base, "busy_s": busy}

            # Sustained faults that reclaim (events flowing): alone and attached in turn, each attached
            # window between two alone ones, so a drift of the machine's speed cancels out.
            alone_rates, attached_rates = [batched_fault_rate(endpoint, 2, heap, True, seconds)["pages_per_s"]], []
            for _ in range(rounds):
                tui = multiprocessing.get_context("spawn").Process(target=_attached_tui, args=(endpoint, seconds + 30))
                tui.start()
                time.sleep(settle)  # started, subscribed, drawing
                attached_rates.append(batched_fault_rate(endpoint, 2, heap, True, seconds)["pages_per_s"])
                tui.terminate()
                tui.join(30)
                alone_rates.append(batched_fault_rate(endpoint, 2, heap, True, seconds)["pages_per_s"])
            losses = [1 - rate / ((alone_rates[i] + alone_rates[i + 1]) / 2) for i, rate in enumerate(attached_rates)]
            loss = statistics.median(losses)
            before, attached, after = alone_rates[0], statistics.median(attached_rates), alone_rates[-1]
            print(
                f"-- 2. faults that reclaim, {seconds:g} s from 2 workload processes, with and without a TUI attached"
            )
            rows = [["no TUI (first)", before], ["TUI attached (median)", attached], ["no TUI (last)", after]]
            _common.print_table(["", "pages/s"], rows)
            shown = ", ".join(f"{x * 100:.1f}%" for x in losses)
            verdict = "ok" if loss <= 0.02 else "MISSED"
            print(f"  throughput lost: {loss * 100:.1f}% (median of {shown})  (target <= 2%): {verdict}")
            results["throughput"] = {"alone": alone_rates, "attached": attached_rates, "losses": losses, "loss": loss}
        finally:
            if stand_ins is not None:
                standins.stop(stand_ins)
            engine.terminate()
            engine.wait(10)
    _common.write_json(args.json, results)


if __name__ == "__main__":
    main()

"""Where the points run: in this process (one job), a pool of processes (``--jobs N``), or Dask.

Each way hands ``run_point`` the parsed scenario with the point's values already put in,
and gives the results back ordered by point, whatever order they finished in: the table
does not depend on how the points ran.

- The pool uses the ``spawn`` start method (no copy of this process's threads or
  sockets), is warmed before the first point (every worker has imported the in-process
  host), and takes the points one at a time, so two jobs share out uneven points.
- ``--dask ADDRESS`` submits the points to an existing dask.distributed scheduler; its
  workers need this same epc-playground installed.  Without dask installed,
  ``DaskMissing`` says what to install.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, TextIO

from playground.scenario.model import Scenario
from playground.sweep.point import PointResult, run_point, warm

Done = Callable[[PointResult], None]  # told of each point as it finishes (a progress bar)
DASK_INSTALL = "pip install 'dask[distributed]'"
DASK_TIMEOUT_S = 10  # to reach the scheduler


STOP_POLL_S = 0.1  # how often a local sweep looks at its stop event


class SweepCancelled(Exception):
    """The stop event of ``run_local`` was set: the points not finished never finish."""


class DaskMissing(RuntimeError):
    """--dask was asked for and dask.distributed cannot be imported."""


class DaskUnreachable(RuntimeError):
    """No Dask scheduler answers at the address."""


def default_jobs() -> int:
    """This machine's cores that this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def run_local(
    runs: Sequence[Scenario], cgroup: str, jobs: int, done: Done | None = None, stop: threading.Event | None = None
) -> list[PointResult]:
    """Every point, ``jobs`` at a time: in this process for one job, else in a pool of spawned processes.

    ``stop`` (a TUI's escape): once set, SweepCancelled is raised within STOP_POLL_S (in this
    process, after the point that runs); the pool's workers are killed and reaped, the points
    not started never start."""
    results: list[PointResult] = []
    if jobs <= 1 or len(runs) <= 1:
        for index, scenario in enumerate(runs):
            if stop is not None and stop.is_set():
                raise SweepCancelled
            result = run_point(index, scenario, cgroup)
            results.append(result)
            if done is not None:
                done(result)
        return results
    context = multiprocessing.get_context("spawn")
    workers = min(jobs, len(runs))
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=warm)
    try:
        pending: set[Future[PointResult]] = set()
        todo = iter(enumerate(runs))
        for index, scenario in todo:  # at most two points queued per worker: the rest wait here
            pending.add(pool.submit(run_point, index, scenario, cgroup))
            if len(pending) >= 2 * workers:
                break
        while pending:
            finished, pending = wait(
                pending, timeout=None if stop is None else STOP_POLL_S, return_when=FIRST_COMPLETED
            )
            if stop is not None and stop.is_set():
                raise SweepCancelled
            for future in finished:
                result = future.result()
                results.append(result)
                if done is not None:
                    done(result)
                following = next(todo, None)
                if following is not None:
                    pending.add(pool.submit(run_point, following[0], following[1], cgroup))
    except SweepCancelled:
        _kill_pool(pool)
        raise
    except BaseException:  # Ctrl-C or a point that raised: the points not started never start
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return sorted(results, key=lambda r: r.index)


def _kill_pool(pool: ProcessPoolExecutor) -> None:
    """Stop the pool now: no point starts, the workers running one are killed and reaped."""
    workers = getattr(pool, "_processes", None) or {}  # the executor's own (Python 3.14: terminate_workers)
    processes = list(workers.values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.kill()
    for process in processes:
        process.join()


def run_dask(runs: Sequence[Scenario], cgroup: str, address: str, done: Done | None = None) -> list[PointResult]:
    """Every point on the Dask cluster whose scheduler is at ``address``; DaskMissing, DaskUnreachable."""
    client_class = dask_client_class()
    try:
        client = client_class(address, timeout=f"{DASK_TIMEOUT_S}s")
    except (OSError, TimeoutError, ValueError) as e:
        raise DaskUnreachable(f"--dask {address}: no Dask scheduler answers there ({e})") from None
    try:
        from distributed import as_completed

        futures = [
            client.submit(run_point, index, scenario, cgroup, pure=False, key=f"epc-sweep-point-{index}")
            for index, scenario in enumerate(runs)
        ]
        results: list[PointResult] = []
        for future in as_completed(futures):  # type: ignore[no-untyped-call]
            result = future.result()
            results.append(result)
            if done is not None:
                done(result)
        return sorted(results, key=lambda r: r.index)
    finally:
        client.close()


def dask_client_class() -> Any:
    """dask.distributed's Client; DaskMissing (saying what to install) when it is not installed."""
    try:
        from distributed import Client
    except ImportError:
        raise DaskMissing(f"--dask needs dask.distributed, which is not installed: {DASK_INSTALL}") from None
    return Client


class ProgressBar:
    """``[#####.....] 5/16 points`` redrawn in place on a terminal (stderr); nothing elsewhere."""

    WIDTH = 30

    def __init__(self, total: int, out: TextIO = sys.stderr, terminal: bool | None = None) -> None:
        self.total = total
        self.done = 0
        self.out = out
        self.terminal = out.isatty() if terminal is None else terminal
        self._draw()

    def __call__(self, result: PointResult) -> None:
        self.done += 1
        self._draw()

    def _draw(self) -> None:
        if not self.terminal:
            return
        filled = self.WIDTH * self.done // max(1, self.total)
        bar = "#" * filled + "." * (self.WIDTH - filled)
        self.out.write(f"\r[{bar}] {self.done}/{self.total} points")
        self.out.flush()

    def clear(self) -> None:
        if self.terminal:
            self.out.write("\r" + " " * (self.WIDTH + 30) + "\r")
            self.out.flush()

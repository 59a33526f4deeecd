"""The engine as a process: choose its endpoints, serve until SIGTERM or SIGINT, clean up."""

from __future__ import annotations

import asyncio
import faulthandler
import signal
from collections.abc import Callable
from typing import Any

from common.costs import load_profile
from common.knobs import V17, Knobs
from engine import Host
from engine.clock import MonotonicClock
from engined import curve, runtime
from engined.server import Engine


def _run(coroutine: Any) -> None:
    """asyncio.run, on uvloop when it is installed (about 10 us less per request)."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(coroutine)
        return
    uvloop.run(coroutine)


def run_engine(
    capacity: int | str,
    memory: int | str | None,
    endpoint: str | None,
    *,
    seed: int = 0,
    ready: Callable[[str], None] | None = None,
    allow_remote: bool = False,
    knobs: Knobs = V17,
    profile: str | None = None,
) -> int:
    """Run an engine in this process until SIGTERM or SIGINT; returns the exit status.

    Without ``endpoint`` it listens on ipc in the runtime directory and writes the
    runtime file there.  tcp is CURVE, with keys made where missing, and loopback
    unless ``allow_remote``.  ``knobs``: the series' constants (V17's by default).
    runtime.Refused (one line) when it must not or cannot listen.
    """
    endpoints = runtime.choose_endpoints(endpoint, allow_remote=allow_remote)
    keys = curve.server_keys() if endpoints.endpoint.startswith("tcp://") else None
    host = Host(capacity, memory, seed, clock=MonotonicClock(), inline_work=False, knobs=knobs)
    engine = Engine(host, endpoints.endpoint, endpoints.pub, keys=keys, profile=load_profile(profile))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, engine.stop)
        serving = asyncio.create_task(engine.serve())
        await asyncio.sleep(0.05)
        if serving.done():
            await serving  # it could not listen: its Refused
        runtime.write_runtime_file(endpoints, host.capacity_bytes)
        if ready is not None:
            ready(endpoints.endpoint)
        await serving

    try:
        _run(main())
        faulthandler.cancel_dump_traceback_later()
    finally:
        runtime.remove_runtime_files(endpoints)
    return 0

"""A guest VM holding virtual EPC: pages charged on first touch, never reclaimable by the host."""

from __future__ import annotations

import time

from wire.protocol import PAGE_SIZE
from workloads.patterns import batches
from workloads.program import Call, Caller, Clock, Program, Sleep, run

HOLD_NS = 50_000_000  # a guest holding its EPC touches all of it again this often


def vepc_bytes(size_bytes: int) -> int:
    """The vEPC a guest of ``size_bytes`` opens: whole pages."""
    return -(-size_bytes // PAGE_SIZE) * PAGE_SIZE


def vm(size_bytes: int, now_ns: Clock, *, passes: int = 1, duration_ns: int | None = None, batch: int = 256) -> Program:
    """The guest's requests: open a vEPC of ``size_bytes``, touch it page by page for the passes,
    keep touching all of it every HOLD_NS for the duration, release it.  A page that cannot be had
    is SIGBUS."""
    npages = vepc_bytes(size_bytes) // PAGE_SIZE
    vid = int((yield Call("vepc_open", {"size": npages * PAGE_SIZE}))["vid"])
    deadline = None if duration_ns is None else now_ns() + duration_ns
    for ranges in batches("sequential", npages, passes=max(1, passes), batch=batch):
        yield Call("vepc_access", {"vid": vid, "ranges": ranges})
    while deadline is not None and now_ns() < deadline:
        yield Call("vepc_access", {"vid": vid, "ranges": [[0, npages]]})  # keep the guest's memory in use
        yield Sleep(HOLD_NS)
    yield Call("vepc_release", {"vid": vid})


def run_vm(
    client: Caller, size_bytes: int, *, passes: int = 1, duration_s: float | None = None, batch: int = 256
) -> None:
    """Run a guest of ``size_bytes`` over ``client`` (EngineError code SIGBUS for a page it cannot have)."""
    duration_ns = None if duration_s is None else int(duration_s * 1e9)
    run(client, vm(size_bytes, time.monotonic_ns, passes=passes, duration_ns=duration_ns, batch=batch))

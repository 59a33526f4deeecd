"""A guest VM holding virtual EPC: pages charged on first touch, never reclaimable by the host."""

from __future__ import annotations

import time

from wire.protocol import PAGE_SIZE
from workloads.client import EngineClient
from workloads.patterns import batches


def vepc_bytes(size_bytes: int) -> int:
    """The vEPC a guest of ``size_bytes`` opens: whole pages."""
    return -(-size_bytes // PAGE_SIZE) * PAGE_SIZE


def run_vm(
    client: EngineClient, size_bytes: int, *, passes: int = 1, duration_s: float | None = None, batch: int = 256
) -> None:
    """Open a vEPC of ``size_bytes``, touch it page by page for the passes (or the duration), release it.

    A page that cannot be had is SIGBUS (EngineError code SIGBUS).
    """
    npages = vepc_bytes(size_bytes) // PAGE_SIZE
    vid = int(client.call("vepc_open", size=npages * PAGE_SIZE)["vid"])
    deadline = None if duration_s is None else time.monotonic() + duration_s
    for ranges in batches("sequential", npages, passes=max(1, passes), batch=batch):
        client.call("vepc_access", vid=vid, ranges=ranges)
    while deadline is not None and time.monotonic() < deadline:
        client.call("vepc_access", vid=vid, ranges=[[0, npages]])  # keep the guest's memory in use
        time.sleep(0.05)
    client.call("vepc_release", vid=vid)

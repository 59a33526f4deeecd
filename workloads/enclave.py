"""An enclave workload, built like the kernel selftest's test enclave, then run over a pattern.

ECREATE (the size rounded up to a power of two, as the selftest does), ADD_PAGES of
one TCS page, the code/data pages and the heap, EINIT, then accesses over the heap in
batches, for ``passes`` passes or ``duration`` seconds; optional SGX2 growth by EAUG
and trimming by EDMM; then release.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from common.units import format_size
from wire.protocol import MAX_SIZE, PAGE_SIZE
from workloads.client import EngineClient, EngineError
from workloads.patterns import batches

TCS_PAGES = 1
CODE_PAGES = 4  # text and data segments of the test enclave


@dataclass(slots=True)
class EnclavePlan:
    size_bytes: int  # heap
    pattern: str = "sequential"
    passes: int = 1
    duration_s: float | None = None
    seed: int = 0
    batch: int = 256
    grow_pages: int = 0  # EAUG after EINIT (SGX2)
    trim_pages: int = 0  # trim and remove at the end (SGX2 EDMM)
    entries: int = 1  # times the enclave is entered after EINIT (test_sgx enters twice)

    @property
    def heap_pages(self) -> int:
        return -(-self.size_bytes // PAGE_SIZE)

    @property
    def enclave_bytes(self) -> int:
        pages = TCS_PAGES + CODE_PAGES + self.heap_pages + self.grow_pages
        return max(2, 1 << (pages - 1).bit_length()) * PAGE_SIZE

    def too_large(self) -> str | None:
        """Why the host would refuse this enclave's ELRANGE, in one line; None when it fits (ECREATE's size check)."""
        if self.enclave_bytes <= MAX_SIZE:
            return None
        limit = 1 << (MAX_SIZE.bit_length() - 1)  # the largest power of two the host takes
        fixed = TCS_PAGES + CODE_PAGES
        largest = (limit // PAGE_SIZE - fixed) * PAGE_SIZE
        grown = " + --grow" if self.grow_pages else ""
        return (
            f"the enclave's ELRANGE (heap{grown} + {fixed} pages of TCS and code, rounded up to a power of two) "
            f"would be {format_size(self.enclave_bytes)}, more than the {format_size(MAX_SIZE)} the host takes; "
            f"the heap{' and --grow together' if grown else ''} can be at most {largest} bytes "
            f"({format_size(limit)} less {fixed} pages)"
        )


def run_enclave(client: EngineClient, plan: EnclavePlan) -> None:
    """Build, run and release one enclave; EngineError on any failure (ENOMEM, SIGBUS, ...)."""
    eid = int(client.call("ecreate", size=plan.enclave_bytes)["eid"])
    _add(client, eid, TCS_PAGES, "TCS")
    _add(client, eid, CODE_PAGES, "REG")
    _add(client, eid, plan.heap_pages, "REG")
    client.call("einit", eid=eid)
    heap = TCS_PAGES + CODE_PAGES
    for _ in range(plan.entries):  # enter: TCS, code, data
        client.call("access", eid=eid, ranges=[[0, heap]], write=True)
    passes = plan.passes if plan.duration_s is None else 1 << 30
    deadline = None if plan.duration_s is None else time.monotonic() + plan.duration_s
    for ranges in batches(plan.pattern, plan.heap_pages, passes=passes, batch=plan.batch, seed=plan.seed):
        client.call("access", eid=eid, ranges=[[heap + first, count] for first, count in ranges], write=True)
        if deadline is not None and time.monotonic() >= deadline:
            break
    if plan.grow_pages:
        client.call("augment", eid=eid, count=plan.grow_pages)
    if plan.trim_pages:
        client.call("remove_pages", eid=eid, first=heap, count=min(plan.trim_pages, plan.heap_pages))
    client.call("release", eid=eid)


def _add(client: EngineClient, eid: int, count: int, kind: str) -> None:
    if count <= 0:
        return
    added = int(client.call("add_pages", eid=eid, count=count, kind=kind)["added"])
    if added < count:
        raise EngineError("EINTR", f"ADD_PAGES stopped after {added} of {count} pages (a signal)")

"""An enclave workload, built like the kernel selftest's test enclave, then run over a pattern or a trace.

ECREATE (the size rounded up to a power of two, as the selftest does), ADD_PAGES of
one TCS page, the code/data pages and the heap, EINIT, then accesses over the heap in
batches (a pattern's, or a recorded trace's: workloads/trace.py), for ``passes`` passes
or ``duration`` seconds; optional SGX2 growth by EAUG
and trimming by EDMM; then release.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

from common.units import format_size
from wire.protocol import MAX_CALL_COMPUTE_NS, MAX_SIZE, PAGE_SIZE, EngineError
from workloads.patterns import batches
from workloads.program import Call, Caller, Clock, Program, run
from workloads.trace import batches as trace_batches
from workloads.trace import read_header

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
    trace: str = ""  # a trace file to replay instead of the pattern (its pages are heap page offsets)
    # its compute per page accessed, declared (hello's compute_ns); None: the profile's, or a trace's own
    # compute times when it has them (sent with each access, docs/costs.md)
    compute_ns: int | None = None

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


def enclave(plan: EnclavePlan, now_ns: Clock) -> Program:
    """The enclave's requests: build, enter, run the pattern, grow, trim, release."""
    eid = int((yield Call("ecreate", {"size": plan.enclave_bytes}))["eid"])
    for count, kind in ((TCS_PAGES, "TCS"), (CODE_PAGES, "REG"), (plan.heap_pages, "REG")):
        if count > 0:
            added = int((yield Call("add_pages", {"eid": eid, "count": count, "kind": kind}))["added"])
            if added < count:
                raise EngineError("EINTR", f"ADD_PAGES stopped after {added} of {count} pages (a signal)")
    yield Call("einit", {"eid": eid})
    heap = TCS_PAGES + CODE_PAGES
    for _ in range(plan.entries):  # enter: TCS, code, data
        yield Call("access", {"eid": eid, "ranges": [[0, heap]], "write": True})
    passes = plan.passes if plan.duration_s is None else 1 << 30
    deadline = None if plan.duration_s is None else now_ns() + int(plan.duration_s * 1e9)
    for ranges, write, compute in _accesses(plan, passes):
        args = {"eid": eid, "ranges": [[heap + first, count] for first, count in ranges], "write": write}
        if compute is not None:
            args["compute_ns"] = compute
        yield Call("access", args)
        if deadline is not None and now_ns() >= deadline:
            break
    if plan.grow_pages:
        yield Call("augment", {"eid": eid, "count": plan.grow_pages})
    if plan.trim_pages:
        yield Call("remove_pages", {"eid": eid, "first": heap, "count": min(plan.trim_pages, plan.heap_pages)})
    yield Call("release", {"eid": eid})


def _accesses(plan: EnclavePlan, passes: int) -> Iterator[tuple[list[list[int]], bool, int | None]]:
    """The heap's batches of ranges, whether each writes and its compute (None: per page, as declared):
    the pattern's (all writes), or the trace's, read from its file as they are sent (a trace is replayed
    ``passes`` times; a trace with compute times gives each batch's, unless the plan declares its own)."""
    if not plan.trace:
        for ranges in batches(plan.pattern, plan.heap_pages, passes=passes, batch=plan.batch, seed=plan.seed):
            yield ranges, True, None
        return
    own = plan.compute_ns is None and read_header(plan.trace).has_compute
    for _ in range(passes):
        for ranges, write, compute_ns in trace_batches(plan.trace, plan.batch):
            yield ranges, write, min(compute_ns, MAX_CALL_COMPUTE_NS) if own else None


def run_enclave(client: Caller, plan: EnclavePlan) -> None:
    """Build, run and release one enclave over ``client``; EngineError on any failure (ENOMEM, SIGBUS, ...)."""
    run(client, enclave(plan, time.monotonic_ns))

"""The host's page size and bounds, known to the core, the wire and the front ends alike."""

from __future__ import annotations

PAGE_SIZE = 4096
PAGE_SHIFT = 12

# What the core can hold: its frame tables are 32-bit (array("i")), so page indexes lie
# below MAX_PAGES and an enclave's ELRANGE, a vEPC or the EPC has at most MAX_PAGES pages.
MAX_PAGES = 1 << 31
MAX_SIZE = MAX_PAGES * PAGE_SIZE  # bytes (8 TiB): the largest ELRANGE or vEPC the host takes

U64_MAX = (1 << 64) - 1  # misc "max"
MAX_COMPUTE_NS = 10**9  # a workload's compute per page accessed (hello, --compute, compute =): at most a second
MAX_CALL_COMPUTE_NS = 10**12  # the compute before one access call (a trace's batch): at most 1000 s

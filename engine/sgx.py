"""Constants and page kinds of the SGX driver (mirrors arch/x86/kernel/cpu/sgx/sgx.h).

Inside the core EPC is counted in pages; the cgroup files count bytes.  Convert only
at the boundary, with PAGE_SIZE.
"""

from __future__ import annotations

import enum

from common.knobs import SGX_CG_LOW_LIMIT as SGX_CG_LOW_LIMIT  # V17's values: a Host's Knobs default to them
from common.knobs import SGX_CG_MIN_FREE_PAGE as SGX_CG_MIN_FREE_PAGE
from common.knobs import SGX_NR_HIGH_PAGES as SGX_NR_HIGH_PAGES
from common.knobs import SGX_NR_LOW_PAGES as SGX_NR_LOW_PAGES
from common.knobs import SGX_NR_TO_SCAN as SGX_NR_TO_SCAN
from common.limits import MAX_PAGES as MAX_PAGES  # re-exported: the core's names for the host's bounds
from common.limits import MAX_SIZE as MAX_SIZE
from common.limits import PAGE_SHIFT as PAGE_SHIFT
from common.limits import PAGE_SIZE as PAGE_SIZE
from common.limits import U64_MAX as U64_MAX

SGX_VA_SLOT_COUNT = 512  # 8-byte version slots in one VA page
SGX_PCMD_PER_PAGE = 32  # 128-byte PCMD entries in one backing page

MAX_OWNER_ID = (1 << 31) - 1  # enclave and vEPC ids wrap around below it, as pids do

PAGE_COUNTER_MAX = ((1 << 63) - 1) // PAGE_SIZE  # memory "max", in pages (64-bit kernel)


class SgxReclaim(enum.IntEnum):
    """Mirrors enum sgx_reclaim (V17 patch 01)."""

    SGX_NO_RECLAIM = 0
    SGX_DO_RECLAIM = 1


NO_RECLAIM = SgxReclaim.SGX_NO_RECLAIM
DO_RECLAIM = SgxReclaim.SGX_DO_RECLAIM


class PageKind(enum.IntEnum):
    """What an EPC frame holds.  REG, TCS and TRIM are reclaimable; the rest never are."""

    FREE = 0
    SECS = 1
    REG = 2
    TCS = 3
    TRIM = 4
    VA = 5
    VEPC = 6


RECLAIMABLE_KINDS = frozenset({PageKind.REG, PageKind.TCS, PageKind.TRIM})

ERESTARTSYS = 512  # kernel-internal; a task with a signal pending restarts the call


def errno_name(code: int) -> str:
    """``ENOMEM`` for errno.ENOMEM, ``ERESTARTSYS`` for 512, ``E<n>`` for anything unknown."""
    import errno

    if code == ERESTARTSYS:
        return "ERESTARTSYS"
    return errno.errorcode.get(code, f"E{code}")


class SigBus(Exception):
    """The task's fault could not be served: the kernel sends it SIGBUS."""

    def __init__(self, pid: int, reason: int, message: str) -> None:
        super().__init__(f"SIGBUS to pid {pid}: {message} ({errno_name(reason)})")
        self.pid = pid
        self.reason = reason


class Blocked(Exception):
    """The task would wait here, as the kernel's task would spin or sleep.

    Raised when a fault gets EBUSY and the caller runs the reclaim work itself
    (``Host(inline_work=False)``: the engine); when a fault stalls in the in-process
    core, whose inline reclaim work moved nothing (the kernel's task would fault again,
    one more failed charge each time, until something frees the limiting cgroup); or
    when synchronous reclaim cannot make progress until another task exits (an OOM
    victim still dying).  ``done`` pages of the call were completed; the caller retries
    the rest later.  Never SIGBUS: that comes only from ENOMEM or another error.
    """

    def __init__(self, done: int, message: str, faults: int = 0) -> None:
        super().__init__(message)
        self.done = done
        self.faults = faults  # faults served before it blocked (access)


class IoctlError(OSError):
    """An ioctl-like call failed after completing ``done`` of its pages."""

    def __init__(self, code: int, message: str, done: int = 0) -> None:
        super().__init__(code, message)
        self.done = done

"""The misc controller's sgx_epc resource (mirrors kernel/cgroup/misc.c).

Counters are kept in pages on each Cgroup; the files show bytes.  Charging walks from
the page's cgroup up to and including root, checking each level's max *and* the
capacity; a failure undoes every level and counts an event on the failing cgroup
(local) and on it and its ancestors (hierarchical).
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from engine.sgx import U64_MAX

if TYPE_CHECKING:
    from engine.cgroup import Cgroup

RES_NAME = "sgx_epc"
# Every misc resource the V17 series' misc.c knows (enum misc_res_type: sev and sev_es, then
# the series' sgx_epc; tdx came to mainline later).  Only sgx_epc has capacity on this host,
# and a resource with none shows in no file (nothing is ever charged to sev or sev_es here).
RES_NAMES = ("sev", "sev_es", RES_NAME)
MAX_STR = "max"
_SPACE = " \t\n\v\f\r"


def try_charge(cg: Cgroup, capacity_pages: int) -> Cgroup | None:
    """Charge one page to ``cg`` and its ancestors.

    Returns None on success, or the cgroup whose limit (or the capacity) refused it,
    after undoing the levels already charged.  Mirrors misc_cg_try_charge().
    """
    level: Cgroup | None = cg
    while level is not None:
        new = level.misc_usage + 1
        if new > level.misc_max_pages or new > capacity_pages:
            undo: Cgroup = cg
            while undo is not level:
                undo.misc_usage -= 1
                undo = undo.parent  # type: ignore[assignment]
            level.misc_events_local += 1
            hit = level
            while hit.parent is not None:  # every level but root, which has no misc.events
                hit.misc_events += 1
                hit = hit.parent
            return level
        level.misc_usage = new
        if new > level.misc_peak:
            level.misc_peak = new
        level = level.parent
    return None


def refused_by(cg: Cgroup, capacity_pages: int) -> Cgroup:
    """The level that try_charge() of one page to ``cg`` would find full (``cg`` when none is)."""
    level: Cgroup | None = cg
    while level is not None:
        if level.misc_usage + 1 > min(level.misc_max_pages, capacity_pages):
            return level
        level = level.parent
    return cg


def room(cg: Cgroup, capacity_pages: int) -> int:
    """How many pages ``cg`` could be charged now before any level (or the capacity) refuses.

    No kernel counterpart: the batch paths charge N pages that room() said fit at once.
    """
    free = capacity_pages
    level: Cgroup | None = cg
    while level is not None:
        free = min(free, level.misc_max_pages - level.misc_usage, capacity_pages - level.misc_usage)
        level = level.parent
    return max(free, 0)


def charge(cg: Cgroup, pages: int) -> None:
    """Charge ``pages`` that room() said fit: the same counters and watermarks as one by one.

    No kernel counterpart: N of misc_cg_try_charge() that room() said fit.
    """
    level: Cgroup | None = cg
    while level is not None:
        new = level.misc_usage + pages
        level.misc_usage = new
        if new > level.misc_peak:
            level.misc_peak = new
        level = level.parent


def uncharge(cg: Cgroup, pages: int = 1) -> None:
    """Mirrors misc_cg_uncharge(): ``pages`` off ``cg`` and every ancestor."""
    level: Cgroup | None = cg
    while level is not None:
        level.misc_usage -= pages
        level = level.parent


def kstrtou64(text: str) -> int:
    """Parse like the kernel's kstrtou64(s, 0): optional '+', then 0x hex, 0 octal or decimal.

    Raises OSError(EINVAL) for anything else and OSError(ERANGE) above U64_MAX.
    """
    s = text[1:] if text.startswith("+") else text
    base = 10
    if s[:1] == "0":
        if s[1:2] in ("x", "X") and s[2:3] and s[2:3] in "0123456789abcdefABCDEF":
            base, s = 16, s[2:]
        else:
            base = 8
    digits = "0123456789abcdef"[:base]
    end = 0
    while end < len(s) and s[end].lower() in digits:
        end += 1
    if end and int(s[:end], base) > U64_MAX:  # _parse_integer() flags overflow first
        raise OSError(errno.ERANGE, f"{text!r} does not fit in 64 bits")
    if not end or end < len(s):
        raise OSError(errno.EINVAL, f"{text!r} is not a number")
    return int(s, base)


def parse_max_write(buf: str, capacity_bytes: int) -> int:
    """Return the new sgx_epc max in bytes from a write to misc.max.

    Mirrors misc_cg_max_write(): trim, split at the first space, ``<name> <value>``
    where value is ``max`` or a u64 in any base.  OSError(EINVAL) for a missing value,
    an unknown resource, a bad number or a resource with no capacity; OSError(ERANGE)
    for a number above 64 bits.
    """
    text = buf.strip(_SPACE)
    name, sep, value = text.partition(" ")
    if not sep:
        raise OSError(errno.EINVAL, "expected '<resource> <value>', e.g. 'sgx_epc 1048576' or 'sgx_epc max'")
    if name not in RES_NAMES:
        raise OSError(errno.EINVAL, f"unknown misc resource {name!r} (V17 knows {', '.join(RES_NAMES)})")
    try:
        limit = U64_MAX if value == MAX_STR else kstrtou64(value)
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise
        raise OSError(errno.EINVAL, f"{e.strerror}: misc.max takes bytes or max, e.g. 'sgx_epc 8388608'") from None
    if name != RES_NAME or capacity_bytes == 0:
        raise OSError(errno.EINVAL, f"misc resource {name!r} has no capacity on this host")
    return limit


def format_line(value: str, capacity_bytes: int, shown_anyway: bool = False) -> str:
    """One file line for sgx_epc, or nothing when SGX has no capacity (as misc.c prints)."""
    return f"{RES_NAME} {value}\n" if capacity_bytes or shown_anyway else ""


def format_max(max_bytes: int) -> str:
    return MAX_STR if max_bytes == U64_MAX else str(max_bytes)

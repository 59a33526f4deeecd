"""The memory controller, for the one thing SGX charges to it: backing store.

Only swapped-out EPC pages and their PCMD pages are charged here (shmem pages of the
enclave's backing file), to the memory cgroup the reference says pays.  Counters are
in pages on each Cgroup; the files show bytes.  A charge above memory.max fails; the
caller then runs the OOM killer (out_of_memory()) as mem_cgroup_oom() would.
"""

from __future__ import annotations

import errno
import re

from engine.cgroup import MEMCG_EVENTS, MEMCG_MAX, MEMCG_OOM, MEMCG_OOM_KILL, Cgroup
from engine.events import OomKill
from engine.sgx import PAGE_COUNTER_MAX, PAGE_SIZE
from engine.state import HostState

_MEMPARSE_RE = re.compile(r"(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)([kKmMgGtTpPeE]?)")
_SHIFTS = {"": 0, "k": 10, "m": 20, "g": 30, "t": 40, "p": 50, "e": 60}


def try_charge(cg: Cgroup, pages: int) -> Cgroup | None:
    """Charge backing pages to ``cg`` and its ancestors (root has no limit).

    Returns None, or the cgroup over its memory.max after undoing every level, with its
    ``max`` event counted.  Mirrors page_counter_try_charge() plus memcg_memory_event().
    """
    level: Cgroup | None = cg
    while level is not None:
        new = level.mem_usage + pages
        if new > level.mem_max_pages:
            undo: Cgroup = cg
            while undo is not level:
                undo.mem_usage -= pages
                undo = undo.parent  # type: ignore[assignment]
            memory_event(level, MEMCG_MAX)
            return level
        level.mem_usage = new
        if new > level.mem_peak:
            level.mem_peak = new
        level = level.parent
    return None


def room(cg: Cgroup) -> int:
    """How many backing pages ``cg`` could be charged now before a memory.max refuses.

    No kernel counterpart: the batch paths charge N pages that room() said fit at once.
    """
    free = PAGE_COUNTER_MAX
    level: Cgroup | None = cg
    while level is not None:
        free = min(free, level.mem_max_pages - level.mem_usage)
        level = level.parent
    return max(free, 0)


def charge(cg: Cgroup, pages: int) -> None:
    """Charge ``pages`` that room() said fit: the same counters and watermarks as one by one.

    No kernel counterpart: N of page_counter_try_charge() that room() said fit.
    """
    level: Cgroup | None = cg
    while level is not None:
        new = level.mem_usage + pages
        level.mem_usage = new
        if new > level.mem_peak:
            level.mem_peak = new
        level = level.parent


def uncharge(cg: Cgroup, pages: int) -> None:
    """``pages`` off ``cg`` and every ancestor.  Mirrors page_counter_uncharge()."""
    level: Cgroup | None = cg
    while level is not None:
        level.mem_usage -= pages
        level = level.parent


def memory_event(cg: Cgroup, event: int) -> None:
    """Mirrors memcg_memory_event(): local count, and hierarchical up to (not into) root."""
    cg.mem_events_local[event] += 1
    level: Cgroup | None = cg
    while level is not None and level.parent is not None:
        level.mem_events[event] += 1
        level = level.parent


def out_of_memory(state: HostState, memcg_cg: Cgroup) -> None:
    """The memory cgroup is full: kill the task in its subtree holding the most backing
    (the highest pid among equals).

    No new victim while an earlier one in the subtree is still exiting.  The victim gets a
    fatal signal (SIGKILL) that the driver must deliver.  Runs for a refused backing charge
    and for a memory.max written below the usage (memory_max_write()).  Mirrors
    mem_cgroup_out_of_memory() as far as this host's memory goes.
    """
    memory_event(memcg_cg, MEMCG_OOM)
    placed = state.tree.tasks
    for pid in state.oom_victims:  # few, and asked first: a reclaim that spins asks for every page
        cg = placed.get(pid)
        while cg is not None and cg is not memcg_cg:
            cg = cg.parent
        if cg is not None:
            return
    tasks = [pid for cg in memcg_cg.walk() for pid in cg.procs]
    if not tasks:
        return  # "Out of memory and no killable processes": the charge just fails
    pages, victim = max((state.task_mem.get(pid, 0), pid) for pid in tasks)
    state.signals.add(victim)
    state.oom_victims.add(victim)
    memory_event(state.tree.task_cgroup(victim).memory_css(), MEMCG_OOM_KILL)
    state.emit(OomKill(state.clock.now_ns(), memcg_cg.path, victim, pages * PAGE_SIZE))


def parse_max_write(buf: str) -> int:
    """Return the new memory.max in pages from a write.

    Mirrors page_counter_memparse(): ``max`` or a number with an optional K/M/G/T/P/E
    suffix, rounded down to pages.  OSError(EINVAL) for anything else.
    """
    text = buf.strip()
    if text == "max":
        return PAGE_COUNTER_MAX
    if not text:
        return 0  # memparse("") is 0: "echo > memory.max" sets the limit to 0
    m = _MEMPARSE_RE.fullmatch(text)
    if m is None:
        raise OSError(errno.EINVAL, f"{text!r} is not a size: use bytes, a K/M/G suffix, or 'max'")
    digits = m.group(1)
    number = _c_int(digits) if len(digits) > 1 and digits[0] == "0" else int(digits)
    nbytes = number << _SHIFTS[m.group(2).lower()]
    return min(nbytes // PAGE_SIZE, PAGE_COUNTER_MAX)


def _c_int(text: str) -> int:
    """A C literal with a leading 0: hex after 0x, otherwise octal."""
    return int(text[2:], 16) if text[1] in "xX" else int(text[1:], 8)


def format_max(max_pages: int) -> str:
    return "max" if max_pages >= PAGE_COUNTER_MAX else str(max_pages * PAGE_SIZE)


def format_events(counts: list[int]) -> str:
    return "".join(f"{name} {count}\n" for name, count in zip(MEMCG_EVENTS, counts, strict=True))

"""Random sequences of every driver-API operation of ``engine.Host``, checked after each step.

One ``Driver`` performs the operations and keeps an independent model of what must
exist: the live cgroups and where each task sits, the limits written, every enclave's
pages (added, augmented, removed), the tasks that map it (it lives until the last one
exits), its VA page count (from its own ``page_cnt``) and every vEPC page touched.  It
predicts the errno of every call it can (validation, EEXIST/ENOENT/EBUSY, EINVAL/ERANGE
parsing, "a refused call changes nothing") and accepts only the documented outcomes for
the rest (ENOMEM, ERESTARTSYS, SigBus, Blocked, IoctlError with ``done``), checking the
partial progress each one reports.

After every step ``Driver.verify`` runs ``host.check()`` and, from its own walk over
the enclaves and vEPCs, checks that:

(a) root ``misc.current`` is the bytes of every resident EPC page (data, TCS/TRIM,
    SECS, VA and guest pages), the model's pages are exactly the host's, and root's
    backing usage is one page per swapped page plus one per PCMD page in use;
(b) every cgroup's ``misc.current`` is the sum over the resident pages charged to it or
    any descendant (dying ones included); a page keeps its cgroup until it is freed, and
    one that became resident during a step is charged to the caller's misc cgroup;
(c) at teardown, once every task has exited and the work queue ran dry, every
    ``misc.current`` is 0, every ``memory.current`` is 0 and every removed cgroup is
    freed;
(d) ``misc.peak`` >= ``misc.current``, peaks and event counts never go down,
    ``misc.events`` of a cgroup >= its ``misc.events.local`` plus its live children's,
    and usage never grows past a limit (usage above a lowered limit can only fall);
(e) a call that failed for want of EPC (ENOMEM, Blocked, SIGBUS, EAGAIN) had a level
    from the caller's misc cgroup up to root at its limit, counted in ``misc.events``
    unless that level was root, and ENOMEM came only with no reclaimable page left in
    the caller's subtree (removed cgroups' pages included: rmdir only offlines a cgroup);
    EADD/ECREATE wrote out only pages of the caller's own subtree, and a NO_RECLAIM fault
    that does not run the work inline wrote out none;
(f) the accessed bit is per mm: each enclave's mm list is its mapping tasks, newest
    first; a page is young only in mms that touched it (an access, fault or EAUG makes
    it young in the caller's mm alone, EADD in none) and an exited task's bits are gone;
    each young page a reclaim scan rotates loses exactly the bit of the first mm on the
    list it is young in (sgx_reclaimer_age()), so it is written out only once every bit
    is gone: across a step without accesses, the bits gone from every page (all of them
    for a page written out) equal the pages the scans rotated; a step with no scan at
    all changes no bit but those it sets.
(g) reclaim stops only where the kernel's would spin: EADD/ECREATE give Blocked, the
    cgroup worker stops while its cgroup should reclaim, and ksgxd stops while fewer than
    64 frames are free, each only when every page on the LRUs of the subtree it reclaims
    is young-free and would be refused its backing charge (the memory cgroup of whoever
    pays has no room for the page, plus its PCMD page when none of its 32 is swapped).

``test_state_machine`` lets hypothesis pick the sequences; ``test_long_random_sequence``
runs a few thousand steps of the same operations from ``random.Random(seed)``, to reach
deep states (VA pages beyond the first, long reclaim histories) that shrinking would not.
Both also run the host in the engine's mode (``inline_work=False``: a fault that gets
EBUSY raises Blocked instead of running the queued reclaim work).
"""

from __future__ import annotations

import errno
import random
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import pytest
from hypothesis import seed, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from engine import PAGE_SIZE, Blocked, Host, IoctlError, SigBus
from engine.enclave import DENSE_SLACK, SWAPPED
from engine.events import LimitHit, ReclaimBatch, WorkRun
from engine.sgx import ERESTARTSYS, MAX_PAGES, MAX_SIZE, RECLAIMABLE_KINDS, PageKind

T = TypeVar("T")

PIDS = tuple(range(100, 108))
NAMES = ("a", "b", "c")
MAX_DEPTH = 3
VA_SLOTS = 512  # SGX_VA_SLOT_COUNT, restated: the model grows VA pages itself
PCMD_PER_PAGE = 32
NR_HIGH_PAGES = 64  # ksgxd reclaims while fewer frames than this are free
CG_MIN_FREE_PAGE, CG_LOW_LIMIT = 32, 128  # sgx_cgroup_should_reclaim()'s margin, and the limit it starts above
YOUNG = 0x08 | 0x20 | 0x40 | 0x80  # a frame's young bits: mm slots 0-2, and "some slot beyond" (epc.YOUNG)
U64_MAX = (1 << 64) - 1
RESERVED_NAMES = ("misc.max", "cgroup.procs", "memory.current")
KIND_NAMES = {kind.value: kind.name for kind in PageKind}  # verify() names every page's kind: no enum call each

# misc.max writes that must fail, with the errno misc_cg_max_write() gives.
BAD_MISC_MAX = (
    ("", errno.EINVAL),
    ("sgx_epc", errno.EINVAL),
    ("sgx_epc ", errno.EINVAL),
    ("sgx_epc -4096", errno.EINVAL),
    ("sgx_epc  4096", errno.EINVAL),
    ("sgx_epc 4096 4096", errno.EINVAL),
    ("sgx_epc 4k", errno.EINVAL),
    ("sgx_epc 4096x", errno.EINVAL),
    ("sgx_epc MAX", errno.EINVAL),
    ("sgx_epc 0x", errno.EINVAL),
    ("sgx_epc 08", errno.EINVAL),
    ("sgx_epc 1e6", errno.EINVAL),
    ("sgx_epc 18446744073709551616", errno.ERANGE),
    ("sgx_epc 0x10000000000000000", errno.ERANGE),
    ("sgx_epc 99999999999999999999999", errno.ERANGE),
    ("sev 4096", errno.EINVAL),
    ("sev 18446744073709551616", errno.ERANGE),  # a known name: its value is parsed first
    ("tdx 18446744073709551616", errno.EINVAL),  # not in V17's misc.c: unknown before parsed
    ("bogus 4096", errno.EINVAL),
    ("4096", errno.EINVAL),
)
BAD_MEMORY_MAX = ("abc", "-1", "1.5M", "12Q", "0x", "max max", "4096 4096")
BAD_PROCS = (("abc", errno.EINVAL), ("-5", errno.EINVAL), ("0", errno.ESRCH), ("1.5", errno.EINVAL))
BAD_SUBTREE = ("+bogus", "misc", "+", "-bogus")
BAD_ENCLAVE_SIZES = (0, PAGE_SIZE, 3 * PAGE_SIZE, 5000, 6 * PAGE_SIZE, 2 * MAX_SIZE, 1 << 52)
BAD_VEPC_SIZES = (0, 100, PAGE_SIZE + 1, MAX_SIZE + PAGE_SIZE)


# -- choosers: the same operations, driven by hypothesis or by random.Random -----------


class RandomChooser:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def choice(self, seq: Sequence[T]) -> T:
        return seq[self.rng.randrange(len(seq))]

    def integer(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def chance(self, percent: int) -> bool:
        return self.rng.randrange(100) < percent


class DataChooser:
    """Draws from hypothesis; ``chance`` shrinks towards False (the common path)."""

    def __init__(self, data: Any) -> None:
        self.data = data

    def choice(self, seq: Sequence[T]) -> T:
        return self.data.draw(st.sampled_from(list(seq)))  # type: ignore[no-any-return]

    def integer(self, lo: int, hi: int) -> int:
        return self.data.draw(st.integers(lo, hi))  # type: ignore[no-any-return]

    def chance(self, percent: int) -> bool:
        return self.data.draw(st.integers(0, 99)) >= 100 - percent  # type: ignore[no-any-return]


Chooser = RandomChooser | DataChooser


# -- the independent model ---------------------------------------------------------------


class MEnclave:
    """What the test believes of one enclave."""

    def __init__(self, eid: int, pid: int, size: int) -> None:
        self.eid = eid
        self.pid = pid
        self.size = size
        self.initialized = False
        self.pages: set[int] = set()  # indexes that exist (resident or swapped)
        self.mms = [pid]  # tasks that map it, newest first: it lives until the last one exits
        self.next_index = 0  # where EADD and EAUG append
        self.page_cnt = 1  # SECS + pages added - pages removed (sgx_encl_grow)
        self.peak_page_cnt = 1  # the page table may be as long as twice this, plus DENSE_SLACK
        self.va = 1  # VA pages: ECREATE grew one
        self.types: dict[int, str] = {}  # index -> REG, TCS or TRIM
        self.modified: set[int] = set()  # MODIFY_TYPES changed them, the enclave has not EACCEPTed them

    def map(self, pid: int) -> None:
        """``pid``'s mm maps the enclave: first on the mm list (sgx_encl_mm_add())."""
        if pid not in self.mms:
            self.mms.insert(0, pid)

    def add(self, indexes: Sequence[int], kind: str = "REG") -> None:
        for index in indexes:
            assert index not in self.pages
            self.types[index] = kind
            if self.page_cnt % VA_SLOTS == 0:
                self.va += 1
            self.page_cnt += 1
            self.peak_page_cnt = max(self.peak_page_cnt, self.page_cnt)
            self.pages.add(index)
            self.next_index = max(self.next_index, index + 1)

    def remove(self, indexes: Sequence[int]) -> None:
        for index in indexes:
            self.pages.remove(index)
            del self.types[index]
            self.modified.discard(index)
            self.page_cnt -= 1


class MVepc:
    def __init__(self, vid: int, pid: int, size: int) -> None:
        self.vid = vid
        self.pid = pid
        self.size = size
        self.pages: set[int] = set()


def join(path: str, name: str) -> str:
    return f"{path.rstrip('/')}/{name}"


def depth(path: str) -> int:
    return len([n for n in path.split("/") if n])


def parent_of(path: str) -> str:
    head = path.rstrip("/").rsplit("/", 1)[0]
    return head or "/"


def number(text: str) -> int:
    """The last number of a one-line file: ``sgx_epc 4096\\n`` -> 4096."""
    return int(text.split()[-1])


def expect_errno(call: Callable[[], object], allowed: Sequence[int]) -> OSError:
    with pytest.raises(OSError) as info:
        call()
    assert info.value.errno in allowed, f"errno {info.value.errno} not in {allowed}: {info.value}"
    return info.value


class Driver:
    """Performs random operations on a Host and checks it against an independent model."""

    def __init__(self, capacity_pages: int, memory_pages: int | None = None, seed: int = 0, inline: bool = True):
        memory = None if memory_pages is None else memory_pages * PAGE_SIZE
        # inline=False is the engine's mode: a fault that gets EBUSY raises Blocked(done)
        # instead of running the queued reclaim work itself.
        self.batches: list[ReclaimBatch] = []  # the reclaim batches of the step, for (f)
        self.limit_hits = 0  # failed charges (LimitHit events) since the count was last set to 0
        self.host = Host(capacity_pages * PAGE_SIZE, memory, seed=seed, inline_work=inline, event_sink=self.on_event)
        self.capacity = capacity_pages
        self.root_mem_max = memory_pages
        self.memory_limited = False  # a memory.max other than max was ever written
        self.cgroups: set[str] = {"/"}  # live cgroups
        self.cg_id: dict[str, int] = {"/": 0}  # live cgroup -> the id the host gave it
        self.cg_parent: dict[int, int] = {}  # cgroup id -> its parent's, removed cgroups' kept
        self.misc_max: dict[str, int] = {}  # bytes written to misc.max (absent: "max")
        self.task_cg: dict[int, str] = {}  # pid -> cgroup it was moved to (absent: root)
        self.enclaves: dict[int, MEnclave] = {}
        self.vepcs: dict[int, MVepc] = {}
        self.stale: list[int] = []  # released enclave and vEPC ids
        self.op_pid: int | None = None  # the task whose call may make pages resident
        self.op_name = ""  # the operation verify() follows
        self.last: dict[tuple[Any, ...], tuple[int, int]] = {}  # page -> (frame, cgroup id) at the last verify
        # (f): (eid, index) -> the tasks whose mm saw the resident page young at the last verify;
        # the pages the step touched and by whom, whether the call served them all, who exited
        self.young: dict[tuple[int, int], set[int]] = {}
        self.touched: tuple[int, int, range] | None = None
        self.touch_served = False
        self.exited: int | None = None
        self.unaged: set[tuple[int, int]] = set()  # pages whose bits went but not by aging: PTEs zapped, page removed
        self.prev: dict[tuple[str, str], int] = {}  # (cgroup, file) -> value at the last verify
        self.outcomes: Counter[str] = Counter()
        # Failures that need a cgroup at its limit, checked by verify(): (task's misc cgroup,
        # pages a failed call may have given back after its charge failed, "its LRUs are empty").
        self.at_limit: list[tuple[str, int, bool]] = []
        # Synchronous reclaim said Blocked: (task's misc cgroup, task), checked by verify().
        self.stuck: list[tuple[str, int]] = []
        # Faults that stalled (EBUSY that no reclaim helps), checked by verify(): the task's misc cgroup.
        self.stalled: list[str] = []

    def run_op(self, name: str, ch: Chooser) -> None:
        self.op_name = name
        self.touched, self.touch_served, self.exited = None, False, None
        self.unaged = set()
        getattr(self, name)(ch)

    def reclaim_scope(self) -> str | None:
        """Where the step just run may have written pages out: None anywhere, "" nowhere,
        or a cgroup path: only pages charged to that subtree's live cgroups.

        EADD and ECREATE reclaim synchronously from the caller's own subtree only (the
        ksgxd they may wake runs as async work); a NO_RECLAIM fault reclaims nothing unless
        it runs the queued work inline; EDMM's direct reclaim and the work may go anywhere.
        """
        inline = self.host.inline_work
        name = self.op_name
        if name in ("op_ecreate", "op_add_pages") or (name == "op_build" and not inline):
            assert self.op_pid is not None
            return self.misc_css(self.op_pid)
        if name in ("op_access", "op_access_far", "op_access_shared", "op_augment", "op_vepc_access"):
            return None if inline else ""
        if name in ("op_build", "op_remove_pages", "op_run_pending_work", "op_run_work_step", "teardown"):
            return None
        if name in ("op_modify_types", "op_restrict_permissions", "op_remove_trimmed"):
            return None  # sgx_reclaim_direct() before each page: the caller's subtree, then global
        return ""

    # -- helpers ---------------------------------------------------------------

    @property
    def children(self) -> bool:
        return len(self.cgroups) > 1

    def fingerprint(self) -> tuple[Any, ...]:
        h = self.host
        return (
            h.read("/misc.current"),
            h.pages_reclaimed,
            h.progress,
            sorted(h.enclaves),
            sorted(h.vepcs),
            h.cgroups(),
            sorted(h.signals),
            h.tree.root.mem_usage,
        )

    def files(self, path: str) -> dict[str, str]:
        """Every file of a live cgroup and its contents."""
        return {n: self.host.read(join(path, n)) for n in self.host.listdir(path) if "." in n}

    def expect_rejected(self, call: Callable[[], object], allowed: Sequence[int], what: str) -> None:
        """A call that validation must refuse, changing nothing at all."""
        before = self.fingerprint()
        expect_errno(call, allowed)
        assert self.fingerprint() == before, f"{what}: a refused call changed the host"
        self.outcomes[f"{what} refused"] += 1

    def misc_on(self, path: str) -> bool:
        return "misc" in self.host.read(join(path, "cgroup.controllers")).split()

    def memory_on(self, path: str) -> bool:
        return "memory" in self.host.read(join(path, "cgroup.controllers")).split()

    def misc_css(self, pid: int) -> str:
        """The cgroup a task's EPC pages are charged to: its own or the nearest one with misc."""
        path = self.task_cg.get(pid, "/")
        while path != "/" and not self.misc_on(path):
            path = parent_of(path)
        return path

    def limit_hit(self, pid: int, slack: int, lru_empty: bool = False) -> None:
        """The call of ``pid`` failed for want of EPC: verify() checks a limit was really in the way."""
        self.at_limit.append((self.misc_css(pid), slack, lru_empty))

    def in_subtree(self, cg_id: int, root_id: int) -> bool:
        """Whether cgroup ``cg_id`` (live or removed) is ``root_id`` or below it, by the ids of mkdir."""
        while cg_id != root_id:
            if cg_id == 0:
                return False
            cg_id = self.cg_parent[cg_id]
        return True

    def lru_pages(self, root_id: int | None) -> list[tuple[Any, int, int]]:
        """(enclave, index, frame) of every resident enclave page (each sits on its cgroup's LRU)
        charged to cgroup ``root_id``'s subtree, removed cgroups included; None: anywhere.
        Read from the frame table, which check() holds to the enclaves' page tables."""
        h = self.host
        epc = h.epc
        out = []
        for frame, flags in enumerate(epc.flags):
            if flags & 7 in RECLAIMABLE_KINDS and (root_id is None or self.in_subtree(epc.cg[frame], root_id)):
                out.append((h.enclaves[epc.owner[frame]], epc.index[frame], frame))
        return out

    def backing_room(self, payer: int) -> int:
        """Backing pages the memory cgroup of task ``payer`` (0: root) could be charged now."""
        h = self.host
        path = self.task_cg.get(payer, "/") if payer else "/"
        while path != "/" and not self.memory_on(path):
            path = parent_of(path)
        room = 1 << 62
        while path != "/":
            mem_max = h.read(join(path, "memory.max")).strip()
            if mem_max != "max":
                room = min(room, (int(mem_max) - number(h.read(join(path, "memory.current")))) // PAGE_SIZE)
            path = parent_of(path)
        if self.root_mem_max is not None:
            room = min(room, self.root_mem_max - h.tree.root.mem_usage)
        return room

    def all_refused(self, pages: list[tuple[Any, int, int]], payer: int | None, who: str) -> None:
        """Reclaim stopped where the kernel's would spin: no page is young, and each one's
        backing (plus a PCMD page when none of its 32 is swapped) finds no room with whoever
        pays, ``payer`` or the enclave's first mm (root when none)."""
        flags = self.host.epc.flags
        rooms: dict[int, int] = {}
        swapped: dict[int, set[int]] = {}
        movable = []
        for e, index, frame in pages:
            pays = payer if payer is not None else (e.mms[0] if e.mms else 0)
            if pays not in rooms:
                rooms[pays] = self.backing_room(pays)
            if e.id not in swapped:
                blocks = swapped[e.id] = {i // PCMD_PER_PAGE for i, f in e.entries() if f <= SWAPPED}
                if e.secs_frame <= SWAPPED:
                    blocks.add(e.size_pages // PCMD_PER_PAGE)
            need = 1 if index // PCMD_PER_PAGE in swapped[e.id] else 2
            if flags[frame] & YOUNG or rooms[pays] >= need:
                movable.append((e.id, index))
        assert not movable, f"{who} stopped while pages {movable[:4]} could still move"

    def should_reclaim(self, path: str, pages: list[tuple[Any, int, int]]) -> bool:
        """sgx_cgroup_should_reclaim() of a live cgroup whose subtree's LRUs hold ``pages``,
        from the model's limits."""
        if not pages:
            return False
        level, limit = path, U64_MAX
        while True:
            limit = min(limit, self.misc_max.get(level, U64_MAX))
            if level == "/":
                break
            level = parent_of(level)
        limit //= PAGE_SIZE
        if limit > CG_LOW_LIMIT:
            limit -= CG_MIN_FREE_PAGE
        return number(self.host.read(join(path, "misc.current"))) // PAGE_SIZE >= limit

    def on_event(self, event: Any) -> None:
        """The host's event sink: reclaim batches kept for (f), and (g) for the cgroup worker and
        ksgxd, checked as each stops (a WorkRun)."""
        if isinstance(event, ReclaimBatch):
            self.batches.append(event)
        elif isinstance(event, LimitHit):
            self.limit_hits += 1
        if not isinstance(event, WorkRun):
            return
        h = self.host
        if event.cgroup == "ksgxd":
            if h.epc.nr_free >= NR_HIGH_PAGES:
                return
            pages = self.lru_pages(None)
        else:
            same = [cg for cg in h.tree.all() if cg.path == event.cgroup]
            if len(same) != 1 or same[0].dying:
                return  # a removed cgroup's worker is not followed: the model drops its limit
            pages = self.lru_pages(self.cg_id[event.cgroup])
            if not self.should_reclaim(event.cgroup, pages):
                return
        if pages:
            self.all_refused(pages, None, f"the worker of {event.cgroup}")
            self.outcomes["state: worker stopped stuck"] += 1

    def should_reclaim_usage(self, css: str, usage: int) -> bool:
        """sgx_cgroup_should_reclaim() by this model: usage within 32 pages of the smallest
        misc.max from ``css`` up (no margin at or below 128 pages); the LRU test is the caller's."""
        limit = U64_MAX // PAGE_SIZE
        path = css
        while True:
            limit = min(limit, self.misc_max.get(path, U64_MAX) // PAGE_SIZE)
            if path == "/":
                break
            path = parent_of(path)
        if limit > 128:
            limit -= 32
        return usage >= limit

    def limit_pages(self, path: str) -> int:
        """The pages a cgroup may hold: its misc.max rounded down, and the capacity."""
        return min(self.misc_max.get(path, U64_MAX) // PAGE_SIZE, self.capacity)

    def pick_pid(self, ch: Chooser, owner: int | None = None) -> int:
        if owner is not None and ch.chance(75):
            return owner
        return ch.choice(PIDS)

    def pick_enclave(self, ch: Chooser, prefer: Callable[[MEnclave], bool] | None = None) -> int:
        """A live enclave, mostly one ``prefer`` likes; now and then a released one."""
        if self.stale and (not self.enclaves or ch.chance(3)):
            return ch.choice(self.stale)
        if not self.enclaves:
            return 10**6
        liked = sorted(e for e, m in self.enclaves.items() if prefer is None or prefer(m))
        if liked and ch.chance(85):
            return ch.choice(liked)
        return ch.choice(sorted(self.enclaves))

    def pick_vepc(self, ch: Chooser) -> int:
        if self.stale and (not self.vepcs or ch.chance(3)):
            return ch.choice(self.stale)
        if not self.vepcs:
            return 10**6
        return ch.choice(sorted(self.vepcs))

    def pick_range(self, ch: Chooser, size: int) -> tuple[int, int]:
        """A page range, now and then one reaching past ``size``."""
        if ch.chance(4):
            first = ch.integer(0, size)
            return first, size - first + ch.integer(1, 3)
        first = ch.integer(0, size - 1)
        return first, ch.integer(0, min(size - first, 48))

    def exists(self, eid: int) -> set[int]:
        return {i for i, _ in self.host.enclaves[eid].entries()}

    # -- cgroup filesystem -----------------------------------------------------

    def op_mkdir(self, ch: Chooser) -> None:
        self.op_pid = None
        parent = ch.choice(sorted(p for p in self.cgroups if depth(p) < MAX_DEPTH))
        if ch.chance(5):
            parent = join(parent, "gone")
        name = ch.choice(RESERVED_NAMES) if ch.chance(4) else ch.choice(NAMES)
        path = join(parent, name)
        if parent not in self.cgroups:
            self.expect_rejected(lambda: self.host.mkdir(path), [errno.ENOENT], "mkdir")
        elif path in self.cgroups or name in RESERVED_NAMES:
            self.expect_rejected(lambda: self.host.mkdir(path), [errno.EEXIST], "mkdir")
        else:
            self.host.mkdir(path)
            assert path in self.host.cgroups()
            self.cgroups.add(path)
            cg_id = self.host.cgroup(path).id  # a freed cgroup's id may come back
            self.cg_id[path] = cg_id
            self.cg_parent[cg_id] = self.cg_id[parent]
            self.misc_max.pop(path, None)
            for key in [k for k in self.prev if k[0] == path]:
                del self.prev[key]
            self.outcomes["mkdir"] += 1

    def op_rmdir(self, ch: Chooser) -> None:
        self.op_pid = None
        path = ch.choice([*sorted(self.cgroups), "/gone", "/a/gone"])
        if path not in self.cgroups:
            expected: int | None = errno.ENOENT
        elif path == "/" or path in self.task_cg.values():
            expected = errno.EBUSY  # root, or tasks inside
        elif any(parent_of(p) == path for p in self.cgroups if p != "/"):
            expected = errno.EBUSY  # live children
        else:
            expected = None
        if expected is not None:
            before = self.files(path) if path in self.cgroups else None
            self.expect_rejected(lambda: self.host.rmdir(path), [expected], "rmdir")
            assert before is None or self.files(path) == before
            return
        self.host.rmdir(path)
        assert path not in self.host.cgroups()
        self.cgroups.remove(path)
        del self.cg_id[path]  # its id stays in cg_parent: the removed cgroup may live on
        self.misc_max.pop(path, None)
        self.outcomes["rmdir"] += 1

    def op_write_misc_max(self, ch: Chooser) -> None:
        self.op_pid = None
        targets = sorted(p for p in self.cgroups if p != "/" and self.misc_on(p))
        if not targets or ch.chance(3):
            self.expect_rejected(lambda: self.host.write("/misc.max", "sgx_epc 4096"), [errno.ENOENT], "misc.max")
            return
        path = ch.choice(targets)
        target = join(path, "misc.max")
        before = self.files(path)
        kind = ch.integer(0, 9)
        if kind >= 7:
            text, code = ch.choice(BAD_MISC_MAX)
            expect_errno(lambda: self.host.write(target, text), [code])
            assert self.files(path) == before, f"a refused write of {text!r} changed {path}"
            self.outcomes["misc.max refused"] += 1
            return
        pages = ch.integer(0, 64) if ch.chance(60) else ch.integer(0, self.capacity + 16)
        value = pages * PAGE_SIZE
        if kind == 4:
            value += ch.integer(1, PAGE_SIZE - 1)
        if kind == 5:
            text, value = "max", U64_MAX
        elif kind == 6:
            text = ch.choice([f"0x{value:x}", f"0{value:o}", f"+{value}", str(U64_MAX)])
            value = U64_MAX if text == str(U64_MAX) else value
        else:
            text = str(value)
        buf = f"sgx_epc {text}"
        if ch.chance(20):
            buf += "\n"
        if ch.chance(10):
            buf = " " + buf
        self.host.write(target, buf)
        shown = "max" if value == U64_MAX else str(value)
        assert self.host.read(target) == f"sgx_epc {shown}\n"
        self.misc_max[path] = value
        self.outcomes["misc.max"] += 1

    def op_write_memory_max(self, ch: Chooser) -> None:
        self.op_pid = None
        targets = sorted(p for p in self.cgroups if p != "/" and self.memory_on(p))
        if not targets or ch.chance(3):
            self.expect_rejected(lambda: self.host.write("/memory.max", "max"), [errno.ENOENT], "memory.max")
            return
        path = ch.choice(targets)
        target = join(path, "memory.max")
        if ch.chance(20):
            before = self.files(path)
            text = ch.choice(BAD_MEMORY_MAX)
            expect_errno(lambda: self.host.write(target, text), [errno.EINVAL])
            assert self.files(path) == before
            self.outcomes["memory.max refused"] += 1
            return
        kind = ch.integer(0, 5)
        if kind == 0:
            text, shown = "max", "max"
        elif kind == 1:
            kib = ch.integer(0, 4096)
            text, shown = f"{kib}K", str(kib * 1024 // PAGE_SIZE * PAGE_SIZE)
        else:
            nbytes = ch.integer(0, 256) * PAGE_SIZE + (ch.integer(0, PAGE_SIZE - 1) if kind == 2 else 0)
            text, shown = str(nbytes), str(nbytes // PAGE_SIZE * PAGE_SIZE)
        self.host.write(target, text)
        assert self.host.read(target) == shown + "\n"
        self.memory_limited = self.memory_limited or shown != "max"
        self.outcomes["memory.max"] += 1

    def op_move_task(self, ch: Chooser) -> None:
        self.op_pid = None
        pid = ch.choice(PIDS)
        path = ch.choice(sorted(self.cgroups))
        if ch.chance(5):
            text, code = ch.choice(BAD_PROCS)
            self.expect_rejected(lambda: self.host.write(join(path, "cgroup.procs"), text), [code], "cgroup.procs")
            return
        if ch.chance(3):
            gone = join(path, "gone")
            self.expect_rejected(lambda: self.host.write(join(gone, "cgroup.procs"), str(pid)), [errno.ENOENT], "procs")
            return
        self.host.write(join(path, "cgroup.procs"), str(pid))
        self.task_cg[pid] = path
        assert self.host.task_cgroup(pid) == path
        assert str(pid) in self.host.read(join(path, "cgroup.procs")).split()
        self.outcomes["move"] += 1

    def op_subtree_control(self, ch: Chooser) -> None:
        """Toggle controllers; the core's cgroup-core rules are simpler than the kernel's, so
        only the errno family and "a failed write changes nothing" are checked here."""
        self.op_pid = None
        others = sorted(self.cgroups - {"/"})
        path = ch.choice(others) if others and ch.chance(90) else "/"  # root rarely: it turns a controller off
        target = join(path, "cgroup.subtree_control")
        text = ch.choice(BAD_SUBTREE) if ch.chance(15) else ch.choice(["+misc", "-misc", "+memory", "-memory", "+cpu"])
        before = {p: self.files(p) for p in self.cgroups}
        try:
            self.host.write(target, text)
        except OSError as e:
            assert e.errno in (errno.EINVAL, errno.ENOENT, errno.EBUSY), e
            assert {p: self.files(p) for p in self.cgroups} == before
            self.outcomes["subtree_control refused"] += 1
            return
        assert text.startswith(("+", "-")) and text[1:] in ("misc", "memory")
        shown = self.host.read(target).split()
        assert (text[1:] in shown) == text.startswith("+")
        self.outcomes["subtree_control"] += 1

    # -- tasks -----------------------------------------------------------------

    def op_signal(self, ch: Chooser) -> None:
        self.op_pid = None
        pid = ch.choice(PIDS)
        self.host.signal(pid)
        self.outcomes["signal"] += 1

    def op_exit_task(self, ch: Chooser) -> None:
        self.op_pid = None
        pid = ch.choice(PIDS)
        self.host.exit_task(pid)
        self.exited = pid
        for eid, m in list(self.enclaves.items()):
            if pid in m.mms:
                m.mms.remove(pid)
            if not m.mms:  # the last mapping went: the enclave's last reference
                del self.enclaves[eid]
                self.stale.append(eid)
        for vid in [v for v, m in self.vepcs.items() if m.pid == pid]:
            del self.vepcs[vid]
            self.stale.append(vid)
        self.task_cg.pop(pid, None)
        assert self.host.task_cgroup(pid) == "/"
        assert pid not in self.host.signals
        self.outcomes["exit"] += 1

    # -- enclaves --------------------------------------------------------------

    def op_ecreate(self, ch: Chooser) -> None:
        pid = self.op_pid = ch.choice(PIDS)
        if ch.chance(6):
            size = ch.choice(BAD_ENCLAVE_SIZES)
            if size > MAX_SIZE:  # the emulator's own bound: refused before any charge
                self.expect_rejected(lambda: self.host.ecreate(pid, size), [errno.EINVAL], "ecreate")
            else:
                self.do_bad_ecreate(pid, size)
            return
        pages = 1 << (ch.integer(1, 10) if ch.chance(85) else ch.integer(11, MAX_PAGES.bit_length() - 1))
        self.do_ecreate(pid, pages, f"{pages * 4}KiB" if ch.chance(15) else pages * PAGE_SIZE)

    def do_bad_ecreate(self, pid: int, size: int) -> None:
        """ECREATE of a SECS the CPU refuses: the VA page and the SECS are charged first (so it
        may reclaim, and fail as any charge does), then EIO with both freed."""
        before = set(self.host.enclaves)
        try:
            self.host.ecreate(pid, size)
        except Blocked:
            self.limit_hit(pid, 2)
            self.outcomes["ecreate bad size blocked"] += 1
        except OSError as e:
            assert e.errno in (errno.EIO, errno.ENOMEM, ERESTARTSYS), e
            assert e.errno != ERESTARTSYS or pid in self.host.signals
            if e.errno == errno.EIO:  # both pages were charged at once: misc.peak saw them
                css = self.misc_css(pid)
                peak, current = (number(self.host.read(join(css, f"misc.{n}"))) for n in ("peak", "current"))
                assert peak >= current + 2 * PAGE_SIZE, "a refused ECREATE did not charge its VA page and SECS"
            else:
                self.limit_hit(pid, 2, lru_empty=e.errno == errno.ENOMEM)
            self.outcomes[f"ecreate bad size {errno.errorcode.get(e.errno or 0, e.errno)}"] += 1
        else:
            raise AssertionError(f"ECREATE of {size} bytes went through")
        assert set(self.host.enclaves) == before

    def do_ecreate(self, pid: int, pages: int, size: int | str) -> int | None:
        """ECREATE of a valid size; the new id, or None when it failed as it may."""
        before = set(self.host.enclaves)
        try:
            eid = self.host.ecreate(pid, size)
        except Blocked:
            assert set(self.host.enclaves) == before
            self.limit_hit(pid, 2)
            self.stuck.append((self.misc_css(pid), pid))
            self.outcomes["ecreate blocked"] += 1
            return None
        except OSError as e:
            assert e.errno in (errno.ENOMEM, ERESTARTSYS), e
            assert e.errno != ERESTARTSYS or pid in self.host.signals
            assert set(self.host.enclaves) == before
            self.limit_hit(pid, 2, lru_empty=e.errno == errno.ENOMEM)
            self.outcomes[f"ecreate {errno.errorcode.get(e.errno or 0, e.errno)}"] += 1
            return None
        assert eid not in before and eid not in self.enclaves and eid not in self.vepcs and eid not in self.stale
        assert set(self.host.enclaves) == before | {eid}
        self.enclaves[eid] = MEnclave(eid, pid, pages)
        self.outcomes["ecreate"] += 1
        return eid

    def op_add_pages(self, ch: Chooser) -> None:
        eid = self.pick_enclave(ch, lambda m: not m.initialized and m.next_index < m.size)
        m = self.enclaves.get(eid)
        pid = self.op_pid = self.pick_pid(ch, m.pid if m else None)
        room = m.size - m.next_index if m else 0
        if ch.chance(5) or room == 0:
            count = room + ch.integer(0 if room else 1, 4)
        else:
            count = ch.integer(0 if ch.chance(3) else 1, min(room, 256 if ch.chance(20) else 32))
        kind = "SECS" if ch.chance(2) else ("TCS" if ch.chance(15) else "REG")
        if m is None or kind == "SECS" or m.initialized or count <= 0 or m.next_index + count > m.size:
            self.expect_rejected(lambda: self.host.add_pages(pid, eid, count, kind), [errno.EINVAL], "add_pages")
            return
        self.do_add_pages(pid, m, count, kind)

    def do_add_pages(self, pid: int, m: MEnclave, count: int, kind: str) -> int:
        """EADD that validation lets through; returns the pages added."""
        signalled = pid in self.host.signals  # then the first page must stop the call
        try:
            done = self.host.add_pages(pid, m.eid, count, kind)
        except IoctlError as e:
            assert e.errno in (errno.ENOMEM, ERESTARTSYS), e
            assert e.errno != ERESTARTSYS or pid in self.host.signals  # sent before, or by the OOM killer
            assert not signalled or (e.errno == ERESTARTSYS and e.done == 0), e
            assert 0 <= e.done < count
            done = e.done
            if e.errno == errno.ENOMEM:  # ERESTARTSYS may be the ioctl's own signal check
                self.limit_hit(pid, 2, lru_empty=True)
            self.outcomes[f"add_pages {errno.errorcode.get(e.errno or 0, e.errno)}"] += 1
        except Blocked as e:
            assert 0 <= e.done < count
            done = e.done
            self.limit_hit(pid, 2)
            self.stuck.append((self.misc_css(pid), pid))
            self.outcomes["add_pages blocked"] += 1
        else:
            assert not signalled or count == 0, "ADD_PAGES went on with a signal pending"
            assert done == count or (0 < done < count and pid in self.host.signals), (done, count)
            self.outcomes["add_pages"] += 1
        m.add(range(m.next_index, m.next_index + done), kind)
        return done

    def op_einit(self, ch: Chooser) -> None:
        eid = self.pick_enclave(ch, lambda m: not m.initialized)
        m = self.enclaves.get(eid)
        pid = self.op_pid = self.pick_pid(ch, m.pid if m else None)
        if m is None or m.initialized:
            self.expect_rejected(lambda: self.host.einit(pid, eid), [errno.EINVAL], "einit")
            return
        self.host.einit(pid, eid)
        m.initialized = True
        self.outcomes["einit"] += 1

    def op_build(self, ch: Chooser) -> None:
        """ECREATE, EADD a good part of it (a TCS first), EINIT and touch it: the selftest's
        enclave in one step, so that short sequences reach reclaim and swapped SECS."""
        pid = self.op_pid = ch.choice(PIDS)
        pages = 1 << ch.integer(3, 9)
        eid = self.do_ecreate(pid, pages, pages * PAGE_SIZE)
        if eid is None:
            return
        m = self.enclaves[eid]
        count = ch.integer(1, pages - 1)
        if self.do_add_pages(pid, m, 1, "TCS") != 1 or self.do_add_pages(pid, m, count, "REG") != count:
            self.outcomes["build cut short"] += 1
            return  # verify() checks a failure's limit evidence: nothing may run after it
        if ch.chance(80):
            self.host.einit(pid, eid)
            m.initialized = True
            if m.pages and ch.chance(70):
                self.touched = (eid, pid, range(m.next_index))
                try:
                    self.host.access(pid, eid, 0, m.next_index)
                    self.touch_served = True
                except SigBus as e:
                    self.sigbus(e, pid, m, [])
                except Blocked as e:
                    self.fault_blocked(e, pid, m.next_index, lambda done: self.host.access(pid, eid, done, 1))
        self.outcomes["build"] += 1

    def op_access(self, ch: Chooser) -> None:
        eid = self.pick_enclave(ch, lambda m: bool(m.pages))
        m = self.enclaves.get(eid)
        pid = self.op_pid = self.pick_pid(ch, m.pid if m else None)
        if m is None:
            self.expect_rejected(lambda: self.host.access(pid, eid, 0, 1), [errno.EINVAL], "access")
            return
        first, count = self.pick_range(ch, m.size)
        if m.pages and ch.chance(80 if m.initialized else 95):  # mostly where the pages are
            first = ch.choice(sorted(m.pages))
            count = min(count, m.next_index - first, 4096)  # a far page makes next_index huge: the model lists each
        self.do_access(eid, m, pid, first, count, ch.chance(50))

    def op_access_shared(self, ch: Chooser) -> None:
        """Another task touches an enclave's pages, mostly one that does not map it yet: the
        enclave gains an mm (each with its own accessed bits), at times beyond the three
        whose bits fit in a frame's flags."""
        eid = self.pick_enclave(ch, lambda m: bool(m.pages) and len(m.mms) < len(PIDS))
        m = self.enclaves.get(eid)
        if m is None:
            pid = self.op_pid = self.pick_pid(ch)
            self.expect_rejected(lambda: self.host.access(pid, eid, 0, 1), [errno.EINVAL], "access")
            return
        others = [p for p in PIDS if p not in m.mms]
        pid = self.op_pid = ch.choice(others) if others and ch.chance(80) else ch.choice(m.mms)
        if m.pages:
            first = ch.choice(sorted(m.pages))
            count = min(ch.integer(1, 32), m.next_index - first)
        else:
            first, count = self.pick_range(ch, m.size)
        self.do_access(eid, m, pid, first, count, ch.chance(50))
        self.outcomes["access shared"] += 1

    def op_access_far(self, ch: Chooser) -> None:
        """A fault far into the ELRANGE (an SGX2 EAUG at a sparse index), next to a page far
        out, or at the very last page: the page table must stay as small as the pages."""
        eid = self.pick_enclave(ch, lambda m: m.initialized and m.size > 2 * DENSE_SLACK)
        m = self.enclaves.get(eid)
        pid = self.op_pid = self.pick_pid(ch, m.pid if m else None)
        if m is None:
            self.expect_rejected(lambda: self.host.access(pid, eid, 0, 1), [errno.EINVAL], "access")
            return
        top = max(m.pages, default=0)
        where = ch.integer(0, 3)
        if where == 0:
            first = m.size - 1
        elif where == 1:
            first = ch.integer(0, m.size - 1)
        else:
            first = min(max(top + ch.integer(-2, 3), 0), m.size - 1)
        count = min(ch.integer(1, 3), m.size - first) if ch.chance(95) else m.size - first + 1
        self.do_access(eid, m, pid, first, count, ch.chance(50))
        self.outcomes["access far"] += 1

    def do_access(self, eid: int, m: MEnclave, pid: int, first: int, count: int, write: bool) -> None:
        """ACCESS of pages first..first+count-1 of a live enclave; every documented outcome."""
        if first + count > m.size:
            self.expect_rejected(lambda: self.host.access(pid, eid, first, count, write), [errno.EFAULT], "access")
            return
        window = range(first, first + count)
        absent = [i for i in window if i not in m.pages]
        m.map(pid)  # the fault maps the enclave, whatever happens next
        encl = self.host.enclaves[eid]
        swapped = sum(1 for i in window if encl.page(i) <= SWAPPED)
        self.touched = (eid, pid, window)
        try:
            faults = self.host.access(pid, eid, first, count, write)
            self.touch_served = True
        except SigBus as e:
            self.sigbus(e, pid, m, absent)
            self.accepted_up_to_a_failure(m, window)
            return
        except Blocked as e:  # pages before first + done were served, that one was not
            self.fault_blocked(e, pid, count, lambda done: self.host.access(pid, eid, first + done, 1, write))
            new = self.exists(eid) - m.pages
            assert new == {i for i in absent if i < first + e.done}, (new, absent, first, e.done)
            m.add(sorted(new))
            m.modified.difference_update(window[: e.done])  # EACCEPTed by the access
            return
        assert not absent or m.initialized, "a fault on a never-added page before EINIT must SIGBUS"
        assert len(absent) + swapped <= faults <= count, (faults, absent, swapped)
        m.add(absent)
        m.modified.difference_update(window)  # the enclave's access of a MODIFIED page is its EACCEPT
        self.outcomes["access"] += 1

    def accepted_up_to_a_failure(self, m: MEnclave, window: range) -> None:
        """A fault in ``window`` failed: the MODIFIED pages before it are EACCEPTed, none after."""
        encl = self.host.enclaves.get(m.eid)
        still = {i for i in m.modified & set(window) if encl is not None and encl.is_modified(i)}
        accepted = (m.modified & set(window)) - still
        assert not still or not accepted or max(accepted) < min(still), (sorted(accepted), sorted(still))
        m.modified -= accepted

    def fault_blocked(self, e: Blocked, pid: int, count: int, retry: Callable[[int], object] | None = None) -> None:
        """A fault got EBUSY: without inline work it waits for the async reclaim; with inline work
        the work ran and moved nothing, so the fault stalls (never SIGBUS): the kernel's task
        faults again for as long as nothing frees the limiting cgroup, one failed charge each
        time.  ``retry(e.done)`` faults the page that stalled once more: it must stall again, with
        exactly one more failed charge and nothing else changed."""
        assert 0 <= e.done < count
        self.limit_hit(pid, 2)
        if not self.host.inline_work:
            self.outcomes["fault blocked"] += 1
            return
        h = self.host
        assert not h.run_work_step(), "a fault stalled with reclaim work still to run"
        self.stalled.append(self.misc_css(pid))
        self.outcomes["fault stalled"] += 1
        if retry is None:
            return
        self.limit_hits = 0
        before = self.fingerprint()
        with pytest.raises(Blocked) as again:
            retry(e.done)
        assert again.value.done == 0
        assert self.limit_hits == 1, f"a retry of a stalled fault failed {self.limit_hits} charges, not one"
        assert self.fingerprint() == before, "a retry of a stalled fault changed the host"
        self.outcomes["fault stalled again"] += 1

    def sigbus(self, e: SigBus, pid: int, m: MEnclave, absent: list[int]) -> None:
        """A fault of ``pid`` got SIGBUS: pages absent before and EAUG'd before the failure stay."""
        allowed = [errno.ENOMEM, ERESTARTSYS] + ([errno.EFAULT] if absent and not m.initialized else [])
        assert e.pid == pid and e.reason in allowed, (e, allowed)
        assert e.reason != ERESTARTSYS or pid in self.host.signals
        now = self.exists(m.eid)
        new = now - m.pages
        assert m.pages <= now, "a SIGBUS lost pages"
        assert new <= set(absent), f"pages {sorted(new - set(absent))} appeared outside the faulting range"
        assert m.initialized or not new
        stuck = [i for i in absent if i not in now]
        assert not stuck or all(i < stuck[0] for i in new), "pages were EAUG'd past the one that failed"
        m.add(sorted(new))
        if e.reason != errno.EFAULT:  # SIGBUS for want of EPC is ENOMEM: nothing on the task's LRUs
            self.limit_hit(pid, 2, lru_empty=e.reason == errno.ENOMEM)
        self.outcomes[f"sigbus {errno.errorcode.get(e.reason, e.reason)}"] += 1

    def op_augment(self, ch: Chooser) -> None:
        eid = self.pick_enclave(ch, lambda m: m.initialized and m.next_index < m.size)
        m = self.enclaves.get(eid)
        pid = self.op_pid = self.pick_pid(ch, m.pid if m else None)
        if m is None:
            self.expect_rejected(lambda: self.host.augment(pid, eid, 1), [errno.EINVAL], "augment")
            return
        room = m.size - m.next_index
        count = room + ch.integer(1, 3) if ch.chance(4) or room == 0 else ch.integer(0, min(room, 32))
        if m.next_index + count > m.size:
            self.expect_rejected(lambda: self.host.augment(pid, eid, count), [errno.EFAULT], "augment")
            return
        window = list(range(m.next_index, m.next_index + count))
        m.map(pid)
        self.touched = (eid, pid, range(m.next_index, m.next_index + count))
        try:
            done = self.host.augment(pid, eid, count)
            self.touch_served = True
        except SigBus as e:
            self.sigbus(e, pid, m, window)
            return
        except Blocked as e:
            self.fault_blocked(e, pid, count, lambda _done: self.host.augment(pid, eid, 1))
            assert self.exists(eid) - m.pages == set(window[: e.done])
            m.add(window[: e.done])
            return
        assert m.initialized or count == 0
        assert done == count
        m.add(window)
        self.outcomes["augment"] += 1

    def edmm_range(self, ch: Chooser, m: MEnclave, prefer: Callable[[int], bool]) -> tuple[int, int]:
        """Mostly a run of existing pages, starting at one ``prefer`` likes when there is one."""
        if m.pages and ch.chance(85):
            liked = sorted(i for i in m.pages if prefer(i))
            first = ch.choice(liked) if liked and ch.chance(70) else ch.choice(sorted(m.pages))
            count = 0
            while first + count in m.pages and count < 24:
                count += 1
            return first, ch.integer(1, count)
        return self.pick_range(ch, m.size)

    def op_edmm(self, ch: Chooser, ioctl: str) -> None:
        """MODIFY_TYPES, RESTRICT_PERMISSIONS or REMOVE_PAGES on its own."""
        eid = self.pick_enclave(ch, lambda m: m.initialized and bool(m.pages))
        m = self.enclaves.get(eid)
        pid = self.op_pid = self.pick_pid(ch, m.pid if m else None)
        kind = (ch.choice(["REG", "TCS"]) if ch.chance(25) else "TRIM") if ioctl == "modify_types" else ""
        if m is None:
            self.expect_rejected(lambda: self.edmm_call(ioctl, pid, eid, 0, 1, kind), [errno.EINVAL], ioctl)
            return
        if ioctl == "remove_trimmed":
            first, count = self.edmm_range(ch, m, lambda i: m.types[i] == "TRIM" and i not in m.modified)
        elif ioctl == "modify_types" and kind == "TRIM":
            first, count = self.edmm_range(ch, m, lambda i: m.types[i] != "TRIM")
        else:
            first, count = self.edmm_range(ch, m, lambda i: m.types[i] == "REG")
        if not m.initialized or count == 0 or first + count > m.size or kind == "REG":
            self.expect_rejected(lambda: self.edmm_call(ioctl, pid, eid, first, count, kind), [errno.EINVAL], ioctl)
            return
        self.do_edmm(ioctl, pid, m, first, count, kind)

    def op_modify_types(self, ch: Chooser) -> None:
        self.op_edmm(ch, "modify_types")

    def op_restrict_permissions(self, ch: Chooser) -> None:
        self.op_edmm(ch, "restrict_permissions")

    def op_remove_trimmed(self, ch: Chooser) -> None:
        self.op_edmm(ch, "remove_trimmed")

    def edmm_call(self, ioctl: str, pid: int, eid: int, first: int, count: int, kind: str) -> object:
        if ioctl == "modify_types":
            return self.host.modify_types(pid, eid, first, count, kind)
        if ioctl == "restrict_permissions":
            return self.host.restrict_permissions(pid, eid, first, count)
        return self.host.remove_trimmed(pid, eid, first, count)

    @staticmethod
    def edmm_refusal(ioctl: str, m: MEnclave, index: int, kind: str) -> int:
        """The errno an EDMM ioctl's step must give page ``index`` once it is loaded (0: none), in
        ioctl.c's order."""
        if index not in m.pages:
            return errno.EFAULT  # sgx_encl_load_page(): no entry
        old = m.types[index]
        if ioctl == "modify_types":
            if not (old == "REG" or (old == "TCS" and kind == "TRIM")):
                return errno.EINVAL
            return errno.EFAULT if index in m.modified else 0  # EMODT: SGX_PAGE_NOT_MODIFIABLE
        if ioctl == "restrict_permissions":
            return errno.EINVAL if old != "REG" else 0
        return errno.EPERM if old != "TRIM" or index in m.modified else 0  # not TRIM; EMODPR probe

    def do_edmm(self, ioctl: str, pid: int, m: MEnclave, first: int, count: int, kind: str = "") -> bool:
        """An EDMM ioctl over a valid range, page by page against the model: the first page it
        must refuse ends it with that errno and the pages before; a load may fail earlier (EAGAIN
        for EBUSY, EFAULT for ENOMEM or a signal).  True when it did every page."""
        window = range(first, first + count)
        codes = ((j, self.edmm_refusal(ioctl, m, i, kind)) for j, i in enumerate(window))
        refusal = next(((j, code) for j, code in codes if code), None)
        ok = False
        try:
            self.edmm_call(ioctl, pid, m.eid, first, count, kind)
        except IoctlError as e:
            if refusal is not None and (e.done, e.errno) == refusal:
                outcome = f"{ioctl} {errno.errorcode[refusal[1]]}"
            else:  # a load's charge failed before the page the model refuses
                assert e.errno in (errno.EAGAIN, errno.EFAULT), (e, refusal)
                assert e.done < (refusal[0] + 1 if refusal else count), (e.done, refusal)
                self.limit_hit(pid, 1)
                outcome = f"{ioctl} load {errno.errorcode[e.errno or 0]}"
            done = e.done
        else:
            assert refusal is None, f"{ioctl} went through where page {first + refusal[0]} needs errno {refusal[1]}"
            done, ok, outcome = count, True, ioctl
        for index in window[:done]:
            if ioctl == "modify_types":
                if kind == "TCS":  # sgx_zap_enclave_ptes(): no mm sees it young any more
                    self.unaged.add((m.eid, index))
                m.types[index] = kind
                m.modified.add(index)
            elif ioctl == "remove_trimmed":
                m.remove([index])
                self.unaged.add((m.eid, index))
        self.outcomes[outcome] += 1
        return ok

    def op_remove_pages(self, ch: Chooser) -> None:
        """test_sgx's _remove flow, each step checked on its own: MODIFY_TYPES to TRIM, the
        enclave's EACCEPT of each page (an access), REMOVE_PAGES (Host.remove_pages() is those)."""
        eid = self.pick_enclave(ch, lambda m: m.initialized and bool(m.pages))
        m = self.enclaves.get(eid)
        pid = self.op_pid = self.pick_pid(ch, m.pid if m else None)
        if m is None:
            self.expect_rejected(lambda: self.host.remove_pages(pid, eid, 0, 1), [errno.EINVAL], "remove_pages")
            return
        first, count = self.edmm_range(ch, m, lambda i: m.types[i] != "TRIM")
        if not m.initialized or count == 0 or first + count > m.size:
            self.expect_rejected(lambda: self.host.remove_pages(pid, eid, first, count), [errno.EINVAL], "remove")
            return
        if not self.do_edmm("modify_types", pid, m, first, count, "TRIM"):
            return  # verify() checks a failure's limit evidence: nothing may run after it
        failures = len(self.at_limit)
        self.do_access(eid, m, pid, first, count, False)
        if len(self.at_limit) > failures or m.modified & set(range(first, first + count)):
            return
        if self.do_edmm("remove_trimmed", pid, m, first, count):
            self.outcomes["remove_pages"] += 1

    def op_release(self, ch: Chooser) -> None:
        self.op_pid = None
        eid = self.pick_enclave(ch)
        if eid not in self.enclaves:
            self.expect_rejected(lambda: self.host.release(eid), [errno.EINVAL], "release")
            return
        self.host.release(eid)
        del self.enclaves[eid]
        self.stale.append(eid)
        self.outcomes["release"] += 1

    # -- guests ----------------------------------------------------------------

    def op_vepc_open(self, ch: Chooser) -> None:
        pid = self.op_pid = ch.choice(PIDS)
        if ch.chance(6):
            size = ch.choice(BAD_VEPC_SIZES)
            self.expect_rejected(lambda: self.host.vepc_open(pid, size), [errno.EINVAL], "vepc_open")
            return
        pages = ch.integer(1, 64)
        vid = self.host.vepc_open(pid, pages * PAGE_SIZE)
        assert vid not in self.vepcs and vid not in self.enclaves and vid not in self.stale
        self.vepcs[vid] = MVepc(vid, pid, pages)
        self.outcomes["vepc_open"] += 1

    def op_vepc_access(self, ch: Chooser) -> None:
        vid = self.pick_vepc(ch)
        m = self.vepcs.get(vid)
        pid = self.op_pid = self.pick_pid(ch, m.pid if m else None)
        if m is None:
            self.expect_rejected(lambda: self.host.vepc_access(pid, vid, 0, 1), [errno.EINVAL], "vepc_access")
            return
        first, count = self.pick_range(ch, m.size)
        if first + count > m.size:
            self.expect_rejected(lambda: self.host.vepc_access(pid, vid, first, count), [errno.EFAULT], "vepc_access")
            return
        untouched = [i for i in range(first, first + count) if i not in m.pages]
        try:
            faults = self.host.vepc_access(pid, vid, first, count)
        except SigBus as e:
            assert e.pid == pid and e.reason in (errno.ENOMEM, ERESTARTSYS), e
            new = set(self.host.vepcs[vid].pages) - m.pages
            assert m.pages <= set(self.host.vepcs[vid].pages)
            assert sorted(new) == untouched[: len(new)] and len(new) < len(untouched), (new, untouched)
            m.pages |= new
            self.limit_hit(pid, 1, lru_empty=e.reason == errno.ENOMEM)
            self.outcomes["vepc sigbus"] += 1
            return
        except Blocked as e:
            self.fault_blocked(e, pid, count, lambda done: self.host.vepc_access(pid, vid, first + done, 1))
            new = set(self.host.vepcs[vid].pages) - m.pages
            assert new == {i for i in untouched if i < first + e.done}
            m.pages |= new
            return
        assert faults == len(untouched)
        m.pages.update(untouched)
        self.outcomes["vepc_access"] += 1

    def op_vepc_release(self, ch: Chooser) -> None:
        self.op_pid = None
        vid = self.pick_vepc(ch)
        if vid not in self.vepcs:
            self.expect_rejected(lambda: self.host.vepc_release(vid), [errno.EINVAL], "vepc_release")
            return
        self.host.vepc_release(vid)
        del self.vepcs[vid]
        self.stale.append(vid)
        self.outcomes["vepc_release"] += 1

    # -- async work ------------------------------------------------------------

    def op_run_pending_work(self, ch: Chooser) -> None:
        self.op_pid = None
        steps = self.host.run_pending_work()
        assert steps >= 0
        assert not self.host.run_work_step(), "run_pending_work left work behind"
        self.outcomes["work ran" if steps else "work idle"] += 1

    def op_run_work_step(self, ch: Chooser) -> None:
        self.op_pid = None
        for _ in range(ch.integer(1, 4)):
            if not self.host.run_work_step():
                break
        self.outcomes["work step"] += 1

    OPS: tuple[tuple[str, int], ...] = (
        ("op_mkdir", 4),
        ("op_rmdir", 2),
        ("op_write_misc_max", 4),
        ("op_write_memory_max", 2),
        ("op_move_task", 4),
        ("op_subtree_control", 1),
        ("op_signal", 1),
        ("op_exit_task", 2),
        ("op_ecreate", 5),
        ("op_add_pages", 10),
        ("op_einit", 3),
        ("op_build", 2),
        ("op_access", 10),
        ("op_access_far", 3),
        ("op_access_shared", 3),
        ("op_augment", 5),
        ("op_remove_pages", 4),
        ("op_modify_types", 3),
        ("op_restrict_permissions", 1),
        ("op_remove_trimmed", 2),
        ("op_release", 2),
        ("op_vepc_open", 1),
        ("op_vepc_access", 3),
        ("op_vepc_release", 1),
        ("op_run_pending_work", 2),
        ("op_run_work_step", 3),
    )

    # -- invariants ------------------------------------------------------------

    def verify(self) -> None:
        h = self.host
        h.check()
        assert len(set(h.cgroups())) == len(h.cgroups())
        assert set(h.cgroups()) == self.cgroups
        assert set(h.enclaves) == set(self.enclaves), (sorted(h.enclaves), sorted(self.enclaves))
        assert set(h.vepcs) == set(self.vepcs)
        for pid in PIDS:
            assert h.task_cgroup(pid) == self.task_cg.get(pid, "/")

        # (a) my own walk over every page that holds a frame
        resident: dict[tuple[Any, ...], int] = {}
        backing = 0
        for eid, m in self.enclaves.items():
            e = h.enclaves[eid]
            assert e.size_pages == m.size and e.initialized == m.initialized and e.pid == m.pid
            entries = list(e.entries())
            exists = {i for i, _ in entries}
            assert exists == m.pages, f"enclave {eid}: host {sorted(exists)} model {m.pages}"
            kinds = {i: KIND_NAMES[e.kind(i)] for i in m.pages}
            assert kinds == m.types, f"enclave {eid}: page types {kinds}, model {m.types}"
            modified = {i for i in m.pages if e.is_modified(i)} if e.modified is not None else set()
            assert modified == m.modified, f"enclave {eid}: MODIFIED {sorted(modified)}, model {sorted(m.modified)}"
            assert (e.modified is None) == (not m.modified), "an enclave keeps MODIFIED state for no page"
            if m.modified:
                self.outcomes["state: pages MODIFIED"] += 1
            assert len(e.pages) <= 2 * m.peak_page_cnt + DENSE_SLACK, f"enclave {eid}: page table outgrew its pages"
            if e.sparse:
                self.outcomes["state: sparse pages"] += 1
            assert e.mms == m.mms, (eid, e.mms, m.mms)
            if len(m.mms) > 1:
                self.outcomes["state: enclave with several mms"] += 1
            out = []
            for i, frame in entries:
                if frame >= 0:
                    resident[("page", eid, i)] = frame
                elif frame <= SWAPPED:  # a swap entry
                    out.append(i)
            if e.secs_frame >= 0:
                resident[("secs", eid)] = e.secs_frame
            else:
                assert e.secs_frame <= SWAPPED, f"enclave {eid} has lost its SECS"
                assert m.initialized and not any(k[:2] == ("page", eid) for k in resident), "SECS out too early"
                out.append(m.size)
            assert len(e.va_frames) == m.va, f"enclave {eid}: {len(e.va_frames)} VA pages, model {m.va}"
            if m.va > 1:
                self.outcomes["state: second VA page"] += 1
            if e.secs_frame <= SWAPPED:
                self.outcomes["state: SECS swapped"] += 1
            for ordinal, frame in enumerate(e.va_frames):
                assert frame >= 0, "a VA page was swapped or freed"
                resident[("va", eid, ordinal)] = frame
            backing += len(out) + len({i // PCMD_PER_PAGE for i in out})
        for vid, mv in self.vepcs.items():
            v = h.vepcs[vid]
            assert set(v.pages) == mv.pages
            for i, frame in v.pages.items():
                resident[("vepc", vid, i)] = frame
        frames = list(resident.values())
        assert len(set(frames)) == len(frames), "two pages share a frame"
        assert all(0 <= f < self.capacity for f in frames)
        assert number(h.read("/misc.current")) == len(frames) * PAGE_SIZE, "root misc.current != resident pages"
        assert h.capacity_pages - h.epc.nr_free == len(frames)
        assert h.read("/misc.capacity") == f"sgx_epc {self.capacity * PAGE_SIZE}\n"
        assert h.tree.root.mem_usage == backing, f"backing {h.tree.root.mem_usage} pages, model {backing}"
        assert self.root_mem_max is None or backing <= max(self.root_mem_max, self.prev.get(("/", "mem"), 0))
        self.prev[("/", "mem")] = backing
        self.verify_young(resident)

        # (b) per-cgroup usage from the frames' recorded cgroups, dying ones included
        charged: Counter[int] = Counter()
        now: dict[tuple[Any, ...], tuple[int, int]] = {}
        op_cg = h.cgroup(self.misc_css(self.op_pid)).id if self.op_pid is not None else None
        for key, frame in resident.items():
            cg = h.tree.by_id[h.epc.cg[frame]]
            assert cg is not None, f"{key} is charged to a freed cgroup"
            now[key] = (frame, cg.id)
            if self.last.get(key) != now[key]:
                assert cg.id == op_cg, f"{key} became resident charged to {cg.path}, not the caller's cgroup"
            level = cg
            while level is not None:
                charged[level.id] += 1
                level = level.parent
        scope = self.reclaim_scope()
        live_ids = set(self.cg_id.values())
        for key, (_, cg_id) in self.last.items():  # resident at the last step, written out since?
            if key in now or key[0] not in ("page", "secs") or key[1] not in self.enclaves:
                continue
            m = self.enclaves[key[1]]
            if key[0] == "page" and key[2] not in m.pages:
                continue  # removed, not written out
            assert scope != "", f"{self.op_name} wrote {key} out"
            if scope is not None and key[0] == "page":  # a removed cgroup's pages included
                assert self.in_subtree(cg_id, self.cg_id[scope]), (
                    f"{self.op_name} by a task of {scope} reclaimed {key} of cgroup {cg_id}"
                )
            self.outcomes[f"state: written out by {self.op_name}"] += 1
            if cg_id not in live_ids:
                self.outcomes["state: a removed cgroup's page written out"] += 1
        self.last = now
        for cg in h.tree.all():
            assert cg.misc_usage == charged[cg.id], f"{cg.path}: usage {cg.misc_usage}, pages {charged[cg.id]}"
            if cg.dying:
                self.outcomes["state: dying cgroup"] += 1

        # A charge failed (ENOMEM, Blocked, SIGBUS, EAGAIN): some level from the task's misc
        # cgroup up to root was at its limit or the capacity, and misc.events saw it unless
        # that level was root.  ENOMEM also means no live cgroup of that subtree held a
        # reclaimable page (a removed cgroup's included).
        for css, slack, lru_empty in self.at_limit:
            levels = [css]
            while levels[-1] != "/":
                levels.append(parent_of(levels[-1]))
            full = [p for p in levels if charged[h.cgroup(p).id] + slack > self.limit_pages(p)]
            assert full, f"a charge failed in {css} with every level below its limit"
            if css != "/" and "/" not in full:  # root refusing (the capacity) counts no event
                top = levels[-2]
                events = number(h.read(join(top, "misc.events")))
                assert events > self.prev.get((top, "events"), 0), f"{top}: a failed charge counted no event"
            if lru_empty:
                css_id = self.cg_id[css]
                busy = [k for k, f in resident.items() if k[0] == "page" and self.in_subtree(h.epc.cg[f], css_id)]
                assert not busy, f"ENOMEM in {css} while {len(busy)} reclaimable pages sat on its LRUs"
        self.at_limit.clear()
        for css, pid in self.stuck:  # (g) for the DO_RECLAIM charge loop
            self.all_refused(self.lru_pages(self.cg_id[css]), pid, f"sync reclaim in {css}")
            self.outcomes["state: sync reclaim stuck"] += 1
        self.stuck.clear()

        # A fault stalled: EBUSY, not ENOMEM, so something of the task's misc cgroup's subtree
        # (removed cgroups included) sat on an LRU; and the queued work had nothing to do: by
        # this model should_reclaim() was false for that cgroup, unless backing store could not
        # be had (a memory limit, or an OOM victim yet to exit) for what it would write out.
        for css in self.stalled:
            inside = {cg.id for cg in h.tree.all() if cg.path == css or cg.path.startswith(join(css, ""))}
            busy = [k for k, f in resident.items() if k[0] == "page" and h.epc.cg[f] in inside]
            assert busy, f"a fault stalled in {css} with nothing on its LRUs: that is ENOMEM, SIGBUS"
            memory_bound = self.root_mem_max is not None or self.memory_limited or h.oom_victims
            assert memory_bound or not self.should_reclaim_usage(css, charged[h.cgroup(css).id]), (
                f"a fault stalled in {css} although its work item had pages to reclaim"
            )
        self.stalled.clear()

        # (d) per live cgroup: files, peaks, events and limits
        for path in self.cgroups:
            cg = h.cgroup(path)
            if not self.misc_on(path):
                assert charged[cg.id] == 0
                continue
            current = number(h.read(join(path, "misc.current"))) // PAGE_SIZE
            peak = number(h.read(join(path, "misc.peak"))) // PAGE_SIZE
            assert current == charged[cg.id], f"{path}: misc.current {current} pages, charged {charged[cg.id]}"
            assert peak >= current, f"{path}: misc.peak below misc.current"
            assert peak >= self.prev.get((path, "peak"), 0), f"{path}: misc.peak went down"
            limit = self.limit_pages(path)
            if path != "/":
                shown = h.read(join(path, "misc.max"))
                written = self.misc_max.get(path, U64_MAX)
                assert shown == f"sgx_epc {'max' if written == U64_MAX else written}\n", (path, shown, written)
                events = number(h.read(join(path, "misc.events")))
                local = number(h.read(join(path, "misc.events.local")))
                kids = [p for p in self.cgroups if p != "/" and parent_of(p) == path and self.misc_on(p)]
                below = sum(number(h.read(join(k, "misc.events"))) for k in kids)
                assert events >= local + below, f"{path}: misc.events {events} < local {local} + children {below}"
                assert events >= self.prev.get((path, "events"), 0) and local >= self.prev.get((path, "local"), 0)
                self.prev[(path, "events")], self.prev[(path, "local")] = events, local
            # usage grows only up to the limit; above a lowered limit it can only fall
            assert current <= max(limit, self.prev.get((path, "current"), 0)), f"{path}: {current} pages > limit"
            assert peak <= max(limit, self.prev.get((path, "peak"), 0)), f"{path}: peak {peak} > limit"
            self.prev[(path, "current")], self.prev[(path, "peak")] = current, peak
        tops = 0
        for path in self.cgroups:
            if path == "/" or not self.memory_on(path):
                continue
            mem = number(h.read(join(path, "memory.current")))
            assert mem % PAGE_SIZE == 0 and 0 <= mem <= backing * PAGE_SIZE
            assert number(h.read(join(path, "memory.peak"))) >= mem
            if depth(path) == 1:
                tops += mem
            mem_max = h.read(join(path, "memory.max")).strip()
            bound = (1 << 62) if mem_max == "max" else int(mem_max)
            assert mem <= max(bound, self.prev.get((path, "mem"), 0)), f"{path}: memory.current above memory.max"
            self.prev[(path, "mem")] = mem
            events = dict(line.split() for line in h.read(join(path, "memory.events")).splitlines())
            for key in ("max", "oom", "oom_kill"):
                assert int(events[key]) >= self.prev.get((path, f"mem.{key}"), 0)
                self.prev[(path, f"mem.{key}")] = int(events[key])
        assert tops <= backing * PAGE_SIZE

    def verify_young(self, resident: dict[tuple[Any, ...], int]) -> None:
        """(f): each resident page's young mms against the model, then the model takes them.

        Runs before verify() moves ``self.last`` on: a page with the frame it had then
        stayed resident through the step, unless the step faulted (only touching steps do).
        """
        h = self.host
        batches, self.batches = self.batches, []
        rotated = sum(e.rotated for e in batches)
        touching = self.touched is not None
        eid_t, pid_t, window = self.touched if self.touched is not None else (-1, -1, range(0))
        gone = {self.exited} if self.exited is not None else set()
        young: dict[tuple[int, int], set[int]] = {}
        cleared = 0  # bits gone by aging, in a step that touched nothing
        for key, frame in resident.items():
            if key[0] != "page":
                continue
            eid, index = key[1], key[2]
            e = h.enclaves[eid]
            slots = h.epc.young_slots(frame)
            now = [pid for pid in e.mms if e.mm_slot[pid] in slots]  # mm-list order
            assert len(now) == len(slots), f"page {index} of {eid}: young in a slot no mm holds"
            stayed = self.last.get(key, (-1,))[0] == frame and (eid, index) not in self.unaged
            before = self.young.get((eid, index), set()) - gone if stayed else set()
            touch = eid == eid_t and index in window
            if not touching and not stayed and key in self.last and (eid, index) not in self.unaged:
                # written out and loaded back within the step (an EDMM ioctl loads pages): aging
                # cleared its bits before the write
                cleared += len(self.young.get((eid, index), set()) - gone)
            allowed = before | {pid_t} if touch else before
            assert set(now) <= allowed, f"page {index} of {eid} young in {now}, only {sorted(allowed)} touched it"
            if not batches:  # no scan: exactly the bits the step set
                expected = allowed if not touch or self.touch_served else set(now)
                assert set(now) == expected, f"page {index} of {eid}: young in {now}, expected {sorted(expected)}"
            elif not touching:  # scans only clear, each the first young mm on the list
                order = [pid for pid in e.mms if pid in before]
                assert now == order[len(order) - len(now) :], f"page {index} of {eid}: {now} is not a tail of {order}"
                cleared += len(before) - len(now)
            if len(now) > 1:
                self.outcomes["state: page young in several mms"] += 1
            if len(now) > 3:
                self.outcomes["state: page young in over three mms"] += 1
            young[(eid, index)] = set(now)
        if not touching:
            for key in self.last:  # written out: aging cleared all its bits first
                m = self.enclaves.get(key[1]) if key[0] == "page" and key not in resident else None
                if m is not None and key[2] in m.pages and (key[1], key[2]) not in self.unaged:
                    cleared += len(self.young.get((key[1], key[2]), set()) - gone)
            # a zapped or removed page may have lost a bit to a scan first (direct reclaim runs per page)
            unaged_bits = sum(len(self.young.get(key, set()) - gone) for key in self.unaged)
            assert cleared <= rotated <= cleared + unaged_bits, (
                f"{self.op_name}: scans rotated {rotated} young pages but {cleared} bits went"
                + (f" (and {unaged_bits} were zapped or removed)" if unaged_bits else "")
            )
            if rotated and any(len(v) > 1 for v in self.young.values()):
                self.outcomes["state: aged pages young in several mms"] += 1
        self.young = young

    def teardown(self) -> None:
        """(c): every task exits and the work runs dry; everything must be back to zero."""
        h = self.host
        for pid in PIDS:
            h.exit_task(pid)
        assert not h.enclaves and not h.vepcs, "exit_task left enclaves or vEPCs behind"
        self.enclaves.clear()
        self.vepcs.clear()
        self.task_cg.clear()
        h.run_pending_work()
        self.op_pid = None
        self.op_name = "teardown"
        self.verify()
        assert h.read("/misc.current") == "sgx_epc 0\n"
        assert h.tree.root.mem_usage == 0
        for path in self.cgroups:
            if self.misc_on(path):
                assert h.read(join(path, "misc.current")) == "sgx_epc 0\n", path
            if path != "/" and self.memory_on(path):
                assert h.read(join(path, "memory.current")) == "0\n", path
        for path in sorted(self.cgroups - {"/"}, key=depth, reverse=True):
            h.rmdir(path)
        self.cgroups = {"/"}
        assert [cg.path for cg in h.tree.all()] == ["/"], "a removed cgroup outlived its last charge"
        assert h.epc.nr_free == self.capacity
        h.check()


# -- hypothesis ---------------------------------------------------------------------------


def _rule(name: str, needs: str | None = None) -> Any:
    def step(self: EpcMachine, data: Any) -> None:
        self.driver.run_op(name, DataChooser(data))

    step.__name__ = name.removeprefix("op_")
    if needs is not None:
        step = precondition(lambda self: bool(getattr(self.driver, needs)))(step)
    return rule(data=st.data())(step)


@seed(20240830)  # V17's date: a fixed run, no example database; print_blob reproduces a failure
class EpcMachine(RuleBasedStateMachine):
    """Hypothesis has no rule weights: the common operations appear under several names."""

    def __init__(self) -> None:
        super().__init__()
        self.driver = Driver(256)

    @initialize(
        capacity=st.sampled_from([256, 512]),
        memory=st.sampled_from([None, None, None, 96]),
        inline=st.sampled_from([True, True, False]),
        data=st.data(),
    )
    def make_host(self, capacity: int, memory: int | None, inline: bool, data: Any) -> None:
        self.driver = Driver(capacity, memory, inline=inline)
        chooser = DataChooser(data)
        for _ in range(chooser.integer(0, 3)):  # a few cgroups to start with, most examples
            self.driver.op_mkdir(chooser)

    mkdir = _rule("op_mkdir")
    rmdir = _rule("op_rmdir", "children")
    write_misc_max = _rule("op_write_misc_max", "children")
    write_misc_max_more = _rule("op_write_misc_max", "children")
    write_memory_max = _rule("op_write_memory_max", "children")
    move_task = _rule("op_move_task")
    move_task_more = _rule("op_move_task")
    subtree_control = _rule("op_subtree_control", "children")
    signal = _rule("op_signal")
    exit_task = _rule("op_exit_task")
    ecreate = _rule("op_ecreate")
    build = _rule("op_build")
    build_more = _rule("op_build")
    add_pages = _rule("op_add_pages", "enclaves")
    add_pages_more = _rule("op_add_pages", "enclaves")
    einit = _rule("op_einit", "enclaves")
    access = _rule("op_access", "enclaves")
    access_more = _rule("op_access", "enclaves")
    access_again = _rule("op_access", "enclaves")
    access_far = _rule("op_access_far", "enclaves")
    access_shared = _rule("op_access_shared", "enclaves")
    augment = _rule("op_augment", "enclaves")
    augment_more = _rule("op_augment", "enclaves")
    remove_pages = _rule("op_remove_pages", "enclaves")
    remove_pages_more = _rule("op_remove_pages", "enclaves")
    modify_types = _rule("op_modify_types", "enclaves")
    restrict_permissions = _rule("op_restrict_permissions", "enclaves")
    remove_trimmed = _rule("op_remove_trimmed", "enclaves")
    release = _rule("op_release", "enclaves")
    vepc_open = _rule("op_vepc_open")
    vepc_access = _rule("op_vepc_access", "vepcs")
    vepc_release = _rule("op_vepc_release", "vepcs")
    run_pending_work = _rule("op_run_pending_work")
    run_work_step = _rule("op_run_work_step")

    @invariant()
    def invariants(self) -> None:
        self.driver.verify()

    def teardown(self) -> None:
        self.driver.teardown()


def test_state_machine() -> None:
    """As many examples and steps as the hypothesis profile says (tests/conftest.py: ci 150 x 60, dev 30 x 25)."""
    run_state_machine_as_test(EpcMachine, settings=settings())


# -- long deterministic runs --------------------------------------------------------------


def run_random(seed: int, steps: int, capacity: int, memory: int | None, inline: bool = True) -> Driver:
    rng = random.Random(seed)
    chooser = RandomChooser(rng)
    driver = Driver(capacity, memory, seed=seed, inline=inline)
    names = [name for name, _ in Driver.OPS]
    weights = [weight for _, weight in Driver.OPS]
    driver.verify()
    for step in range(steps):
        name = rng.choices(names, weights)[0]
        try:
            driver.run_op(name, chooser)
            driver.verify()
        except AssertionError as e:
            raise AssertionError(f"seed {seed}, step {step} ({name}): {e}") from e
    driver.teardown()
    return driver


@pytest.mark.slow  # 40 s of deterministic depth: CI runs them, the fast lane leaves them to it
@pytest.mark.parametrize(
    ("seed", "capacity", "memory", "inline"),
    [(5, 256, None, True), (2, 512, None, True), (3, 256, 160, False)],
)
def test_long_random_sequence(seed: int, capacity: int, memory: int | None, inline: bool) -> None:
    driver = run_random(seed, 3000, capacity, memory, inline)
    seen = driver.outcomes
    # the run must have reached the interesting places, or it checked little
    assert driver.host.pages_reclaimed > 0
    reached = ("add_pages", "access", "augment", "remove_pages", "einit", "release", "vepc_access", "rmdir")
    several = ("state: page young in several mms", "state: aged pages young in several mms", "access shared")
    stops = ("state: worker stopped stuck", "state: sync reclaim stuck")
    removed = "state: a removed cgroup's page written out"
    for outcome in (*reached, *stops, "access far", "state: sparse pages", removed, *several):
        assert seen[outcome] > 0, (outcome, seen)
    if inline:  # in process a fault that no reclaim helps stalls, and its retry too
        assert seen["fault stalled again"] > 0, seen

"""Every accounting invariant of the host, checked from scratch, in slices.

``check_steps(host)`` first copies what it needs at once (array slices, dict copies, a
small record per cgroup, enclave and vEPC: C speed, so the copy is consistent), then
checks the copy, yielding after every STEP items of work (pages, frames, cgroups), so
a driver can serve other requests in between; it raises InvariantError on the first
broken invariant.  ``check_host`` runs it to the end.
"""

from __future__ import annotations

import gc
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.enclave import (
    ABSENT,
    KIND_BITS,
    OWNER_BITS,
    OWNER_MASK,
    PCMD_SHIFT,
    PCMD_USERS_BITS,
    PCMD_USERS_MASK,
    SPARSE_ABSENT,
    SWAPPED,
    VA_SHIFT,
    Enclave,
)
from engine.epc import KIND_MASK, NIL, NR_FLAG_SLOTS, ON_LRU, YOUNG, YOUNG_BITS, YOUNG_MORE
from engine.sgx import SGX_VA_SLOT_COUNT, PageKind

if TYPE_CHECKING:
    from engine.cgroup import Cgroup
    from engine.host import Host

STEP = 4096  # items (pages, frames) checked between two yields: about a millisecond
_CGROUPS_PER_STEP = STEP // 32  # a cgroup is some 30 items of work
_KINDS = bytes(b & KIND_MASK for b in range(256))  # flags.translate(_KINDS): the PageKind of each frame
_ON_LRU = bytes(1 if b & ON_LRU else 0 for b in range(256))
_YOUNG_MORE = bytes(1 if b & YOUNG_MORE else 0 for b in range(256))
_PAGE_KINDS = bytes(k in (PageKind.REG, PageKind.TCS, PageKind.TRIM) for k in range(256))  # an enclave page's
_FREE, _SECS, _VA, _VEPC = PageKind.FREE, PageKind.SECS, PageKind.VA, PageKind.VEPC
_NONE: frozenset[int] = frozenset()


class InvariantError(AssertionError):
    """An accounting invariant of the host is broken: a bug of the core, never the caller's."""


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise InvariantError(message)


def check_host(host: Host) -> None:
    """Verify every invariant at once; InvariantError on the first broken one."""
    for _ in check_steps(host):
        pass


def check_steps(host: Host) -> Iterator[None]:
    """The check of ``host`` as it is now, in slices: copies the state at once, then checks
    the copy, yielding every STEP items; InvariantError on the first broken invariant."""
    return _check(_snapshot(host))


# -- the copy -------------------------------------------------------------------------


@dataclass(slots=True)
class _Cg:
    """A cgroup's counters and links, as they were."""

    id: int
    path: str
    parent: int  # -1 at root
    children: list[int]
    dying: bool
    misc: tuple[int, int, int, int, int]  # usage, peak, events, events_local, events_freed
    mem: tuple[int, int]  # usage, peak
    mem_events: tuple[list[int], list[int], list[int]]  # hierarchical, local, freed
    work_queued: bool
    cursor: int  # -1: the cursor is not the cgroup registered under its id
    procs: frozenset[int]
    nonempty_lrus: int
    lru: tuple[int, int, int]  # head, tail, size


@dataclass(slots=True)
class _Encl:
    """An enclave's page table, VA pages and backing, as they were."""

    id: int
    size_pages: int
    pages: array[int]
    types: bytes
    sparse: dict[int, int]
    sparse_keys: frozenset[int]
    secs_frame: int
    secs_child_cnt: int
    page_cnt: int
    initialized: bool
    dying: bool
    nr_swapped: int
    pcmd: dict[int, int]
    va_frames: list[int]
    va_fresh: list[int]
    va_freed: list[list[int]]
    va_used: list[int]
    va_head: int
    va_next: list[int]
    mms: list[int]
    mm_slot: dict[int, int]


@dataclass(slots=True)
class _Snapshot:
    capacity_pages: int
    nr_free: int
    owner: array[int]
    index: array[int]
    cg: array[int]
    flags: bytes
    prev: array[int]
    next: array[int]
    free: array[int]
    young_more: dict[int, int]
    enclaves: list[_Encl]
    vepcs: list[tuple[int, dict[int, int], int]]  # id, page index -> frame, nr_present
    cgroups: list[_Cg]  # by id order: a parent before its children
    live: bytearray  # 1 for every cgroup id still registered
    nr_cgroups: int
    tasks: dict[int, int]  # pid -> cgroup id
    moved: frozenset[int]  # the tasks a cgroup.procs write placed
    work: frozenset[int]
    task_mem: dict[int, int]
    backing_owners: list[tuple[int, int]]  # (memory cgroup id, payer)
    backing_refs: list[int]
    owner_ids: dict[tuple[int, int], int]  # the registered backing owners
    free_owner_ids: list[int]


def _snapshot(host: Host) -> _Snapshot:
    """The copy, with the cyclic collector paused: it would walk every new record, many times."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _copy_host(host)
    finally:
        if enabled:
            gc.enable()


def _copy_host(host: Host) -> _Snapshot:
    epc, tree = host.epc, host.tree
    live = bytearray(len(tree.by_id))
    for cg in tree.by_id:
        if cg is not None:
            live[cg.id] = 1
    return _Snapshot(
        epc.capacity_pages, epc.nr_free, epc.owner[:], epc.index[:], epc.cg[:], bytes(epc.flags),
        epc.prev[:], epc.next[:], epc._free[:], dict(epc.young_more),
        [_copy_enclave(e) for e in host.enclaves.values()],
        [(v.id, dict(v.pages), v.nr_present) for v in host.vepcs.values()],
        [_copy_cgroup(cg, tree.by_id[cg.next_cg.id] is cg.next_cg) for cg in tree.all()],
        live, tree.nr_cgroups, {pid: cg.id for pid, cg in tree.tasks.items()}, frozenset(tree.moved),
        frozenset(host.work),
        dict(host.task_mem), [(cg.id, payer) for cg, payer in host.backing_owners], host.backing_refs[:],
        {(cg.id, payer): owner_id for (cg, payer), owner_id in host._backing_owner_ids.items()},
        host._free_owner_ids[:],
    )  # fmt: skip


def _copy_enclave(e: Enclave) -> _Encl:
    return _Encl(
        e.id, e.size_pages, e.pages[:], bytes(e.types), dict(e.sparse), frozenset(e.sparse_keys), e.secs_frame,
        e.secs_child_cnt, e.page_cnt, e.initialized, e.dying, e.nr_swapped, dict(e.pcmd), e.va_frames[:],
        e.va_fresh[:], [freed[:] for freed in e.va_freed], e.va_used[:], e.va_head, e.va_next[:], e.mms[:],
        dict(e.mm_slot),
    )  # fmt: skip


def _copy_cgroup(cg: Cgroup, cursor_registered: bool) -> _Cg:
    parent, lru = cg.parent, cg.lru
    return _Cg(
        cg.id, cg.path, -1 if parent is None else parent.id, [c.id for c in cg.children], cg.dying,
        (cg.misc_usage, cg.misc_peak, cg.misc_events, cg.misc_events_local, cg.misc_events_freed),
        (cg.mem_usage, cg.mem_peak), (cg.mem_events[:], cg.mem_events_local[:], cg.mem_events_freed[:]),
        cg.work_queued, cg.next_cg.id if cursor_registered else -1, frozenset(cg.procs) if cg.procs else _NONE,
        cg.nonempty_lrus, (lru.head, lru.tail, lru.size),
    )  # fmt: skip


# -- the checks -----------------------------------------------------------------------


class _Tally:
    """What the page walks count, for the cgroup and frame totals."""

    __slots__ = ("own", "owner_pages", "referenced")

    def __init__(self, nr_cgroup_ids: int, nr_owners: int) -> None:
        self.own = [0] * nr_cgroup_ids  # frames charged to each cgroup id
        self.owner_pages = [0] * nr_owners  # backing pages charged to each backing owner
        self.referenced = 0  # frames named by a page, SECS, VA page or guest page


def _check(snap: _Snapshot) -> Iterator[None]:
    yield from _check_frames(snap)
    tally = _Tally(len(snap.live), len(snap.backing_owners))
    for encl in snap.enclaves:
        yield from _check_enclave(snap, encl, tally)
    yield from _check_young_more(snap)
    yield from _check_vepcs(snap, tally)
    nr_used = len(snap.flags) - snap.flags.translate(_KINDS).count(_FREE)
    referenced = tally.referenced
    _require(referenced == nr_used, f"{referenced} frames referenced by enclaves and vEPC, {nr_used} in use")
    yield from _check_lrus(snap)
    yield from _check_cgroups(snap, tally, nr_used)


def _check_frames(snap: _Snapshot) -> Iterator[None]:
    """The free stack and the frame counts."""
    flags, free = snap.flags, snap.free
    nr_frames = len(flags)
    _require(len(set(free)) == len(free), "a frame is on the free stack twice")
    for start in range(0, len(free), STEP):
        chunk = free[start : start + STEP]
        _require(all(0 <= f < nr_frames and flags[f] == _FREE for f in chunk), "a frame on the free stack is in use")
        yield
    nr_used = nr_frames - flags.translate(_KINDS).count(_FREE)
    _require(
        nr_used + len(free) == nr_frames and nr_frames <= snap.capacity_pages,
        f"free + in-use frames != capacity: {nr_used} + {snap.nr_free} vs {snap.capacity_pages}",
    )
    _require(snap.nr_free == snap.capacity_pages - nr_used, "the free-frame count drifted")


def _frame(snap: _Snapshot, frame: int, owner: int, index: int, kind: int, what: str) -> None:
    """A frame named by a SECS, VA or guest page: it is that page's, off every LRU, never accessed."""
    nr_frames = len(snap.flags)
    _require(0 <= frame < nr_frames, f"{what} names frame {frame}, outside the EPC")
    _require(snap.owner[frame] == owner and snap.index[frame] == index, f"frame {frame} is not {what}")
    _require(snap.flags[frame] & KIND_MASK == kind, f"frame {frame} ({what}) has the wrong kind")
    _require(not snap.flags[frame] & (ON_LRU | YOUNG), f"frame {frame} ({what}) is on an LRU or accessed")
    _require(snap.live[snap.cg[frame]] == 1, f"frame {frame} charged to a freed cgroup")


class _Pages:
    """The per-enclave counts of one page-table walk."""

    __slots__ = ("resident", "swapped", "slots", "pcmd_dense", "pcmd_users")

    def __init__(self, nr_va: int, nr_dense: int) -> None:
        self.resident = 0
        self.swapped = 0
        self.slots = bytearray(nr_va * SGX_VA_SLOT_COUNT)  # VA slots named by swap entries
        self.pcmd_dense = [0] * ((nr_dense >> PCMD_SHIFT) + 1)  # swap entries per PCMD page of the prefix
        self.pcmd_users: dict[int, int] = {}  # ... and of the other pages

    def pcmd(self) -> dict[int, int]:
        """Swap entries per PCMD page."""
        users = {pcmd_no: n for pcmd_no, n in enumerate(self.pcmd_dense) if n}
        for pcmd_no, n in self.pcmd_users.items():
            users[pcmd_no] = users.get(pcmd_no, 0) + n
        return users


def _check_enclave(snap: _Snapshot, e: _Encl, tally: _Tally) -> Iterator[None]:
    name = f"enclave {e.id}"
    walk = _Pages(len(e.va_frames), len(e.pages))
    pages = e.pages
    _require(len(pages) == len(e.types) and len(pages) <= e.size_pages, f"{name}: page table longer than ELRANGE")
    _check_mms(e)
    for start in range(0, len(pages), STEP):
        _walk_dense(snap, e, walk, tally, start, min(start + STEP, len(pages)))
        yield
    _require(e.sparse.keys() <= e.sparse_keys, f"{name}: a sparse page is missing from the fold heap")
    items = list(e.sparse.items())
    for start in range(0, len(items), STEP):
        for index, packed in items[start : start + STEP]:
            _require(len(pages) <= index < e.size_pages, f"{name}: sparse page {index} outside its place")
            _require(packed != SPARSE_ABSENT, f"{name}: sparse page {index} reserved but never placed")
            _page(snap, e, walk, tally, index, packed >> KIND_BITS, packed & ((1 << KIND_BITS) - 1))
        yield
    _check_secs_and_va(snap, e, walk, tally)
    _check_slots(e, walk)
    yield


def _walk_dense(snap: _Snapshot, e: _Encl, walk: _Pages, tally: _Tally, start: int, end: int) -> None:
    """Pages start..end-1 of the dense prefix; the common cases inline, _page() for the rest."""
    owner, index_of, flags, cgs, live, own = snap.owner, snap.index, snap.flags, snap.cg, snap.live, tally.own
    pages, types, eid, page_kinds = e.pages, e.types, e.id, _PAGE_KINDS
    slots, pcmd_dense, owner_pages = walk.slots, walk.pcmd_dense, tally.owner_pages
    nr_frames, nr_slots, nr_owners = len(flags), len(slots), len(owner_pages)
    lru = 0 if e.dying else ON_LRU  # the reclaimer lets the pages of a dying enclave go
    stray = _stray_young(e)
    resident = swapped = 0
    for index in range(start, end):
        entry = pages[index]
        kind = types[index]
        if entry >= 0:
            if (
                entry < nr_frames
                and owner[entry] == eid
                and index_of[entry] == index
                and flags[entry] & KIND_MASK == kind
                and page_kinds[kind]
                and flags[entry] & lru == lru
                and not flags[entry] & stray
                and live[cgs[entry]]
            ):
                own[cgs[entry]] += 1
                resident += 1
                continue
        elif entry <= SWAPPED:
            payload = SWAPPED - entry
            slot = payload >> OWNER_BITS
            owner_id = payload & OWNER_MASK
            if slot < nr_slots and not slots[slot] and owner_id < nr_owners and page_kinds[kind]:
                slots[slot] = 1
                pcmd_dense[index >> PCMD_SHIFT] += 1
                owner_pages[owner_id] += 1
                swapped += 1
                continue
        elif not kind:
            continue
        _page(snap, e, walk, tally, index, entry, kind)  # says what is wrong, or counts it
    walk.resident += resident
    walk.swapped += swapped


def _page(snap: _Snapshot, e: _Encl, walk: _Pages, tally: _Tally, index: int, entry: int, kind: int) -> None:
    """One page that exists: resident (its frame is its own) or written out (its VA slot and backing)."""
    name = f"enclave {e.id}"
    _require(bool(_PAGE_KINDS[kind]), f"{name}: page {index} has kind {kind}")
    if entry >= 0:
        _require(entry < len(snap.flags), f"{name}: page {index} names frame {entry}, outside the EPC")
        flags = snap.flags[entry]
        _require(snap.owner[entry] == e.id and snap.index[entry] == index, f"frame {entry} is not page {index}")
        _require(flags & KIND_MASK == kind, f"frame {entry} has the wrong page type")
        _require(e.dying or bool(flags & ON_LRU), f"frame {entry} ({PageKind(kind).name}) LRU flag")
        _require(not flags & _stray_young(e), f"frame {entry} is young in an mm that does not map {name}")
        _require(snap.live[snap.cg[entry]] == 1, f"frame {entry} charged to a freed cgroup")
        tally.own[snap.cg[entry]] += 1
        walk.resident += 1
        return
    _require(entry <= SWAPPED, f"{name}: page {index} has entry {entry}")
    _require(entry != ABSENT or not kind, f"{name}: absent page {index} has a type")
    _swap_entry(snap, e, walk, tally, index, entry)
    walk.swapped += 1


def _check_mms(e: _Encl) -> None:
    """Each mm is on the enclave's mm list once, with a slot of its own for its accessed bits."""
    name = f"enclave {e.id}"
    _require(len(set(e.mms)) == len(e.mms), f"{name}: an mm is on its mm list twice")
    _require(set(e.mm_slot) == set(e.mms), f"{name}: mm slots {e.mm_slot} for the mm list {e.mms}")
    slots = list(e.mm_slot.values())
    _require(len(set(slots)) == len(slots) and min(slots, default=0) >= 0, f"{name}: mm slots {e.mm_slot}")


def _stray_young(e: _Encl) -> int:
    """The young bits of the flags that no mm of the enclave owns (none may be set)."""
    owned = 0
    for slot in e.mm_slot.values():
        owned |= YOUNG_BITS[slot] if slot < NR_FLAG_SLOTS else YOUNG_MORE
    return YOUNG & ~owned


def _check_young_more(snap: _Snapshot) -> Iterator[None]:
    """The young bits of mm slots past the flags: exactly the frames flagged YOUNG_MORE hold
    some, and only of slots their enclave's mms have."""
    flags, owner = snap.flags, snap.owner
    more = snap.young_more
    _require(flags.translate(_YOUNG_MORE).count(1) == len(more), "YOUNG_MORE flags and young_more differ")
    slots = {e.id: {s for s in e.mm_slot.values() if s >= NR_FLAG_SLOTS} for e in snap.enclaves}
    items = list(more.items())
    for start in range(0, len(items), STEP):
        for frame, mask in items[start : start + STEP]:
            _require(0 <= frame < len(flags) and bool(flags[frame] & YOUNG_MORE), f"frame {frame} in young_more")
            owned = sum(1 << (s - NR_FLAG_SLOTS) for s in slots.get(owner[frame], ()))
            _require(mask > 0 and not mask & ~owned, f"frame {frame} is young in an mm that does not map it")
        yield


def _swap_entry(snap: _Snapshot, e: _Encl, walk: _Pages, tally: _Tally, index: int, entry: int) -> None:
    """A page (or the SECS) written out: its VA slot is its alone, its backing is charged."""
    payload = SWAPPED - entry
    slot, owner_id = payload >> OWNER_BITS, payload & OWNER_MASK
    name = f"enclave {e.id}"
    _require(slot < len(walk.slots), f"{name}: page {index} names VA slot {slot} of no VA page")
    _require(not walk.slots[slot], f"{name}: two pages share a VA slot")
    walk.slots[slot] = 1
    pcmd_no = index >> PCMD_SHIFT
    walk.pcmd_users[pcmd_no] = walk.pcmd_users.get(pcmd_no, 0) + 1
    _backing(tally, owner_id, name)


def _backing(tally: _Tally, owner_id: int, name: str) -> None:
    _require(owner_id < len(tally.owner_pages), f"{name}: backing charged to unknown owner {owner_id}")
    tally.owner_pages[owner_id] += 1


def _check_secs_and_va(snap: _Snapshot, e: _Encl, walk: _Pages, tally: _Tally) -> None:
    name = f"enclave {e.id}"
    tally.referenced += walk.resident
    if e.secs_frame >= 0:
        _frame(snap, e.secs_frame, e.id, -1, _SECS, f"enclave {e.id}'s SECS")
        tally.own[snap.cg[e.secs_frame]] += 1
        tally.referenced += 1
    else:
        _require(e.secs_frame <= SWAPPED, f"{name}: SECS neither resident nor swapped")
        _require(not walk.resident and e.initialized, f"{name}: SECS swapped with children resident or before EINIT")
        _swap_entry(snap, e, walk, tally, e.size_pages, e.secs_frame)
    for ordinal, frame in enumerate(e.va_frames):
        _frame(snap, frame, e.id, ordinal, _VA, f"VA page {ordinal} of {e.id}")
        tally.own[snap.cg[frame]] += 1
    tally.referenced += len(e.va_frames)
    for pcmd in e.pcmd.values():
        _require(pcmd & PCMD_USERS_MASK > 0, f"{name}: an empty PCMD page is still charged")
        _backing(tally, pcmd >> PCMD_USERS_BITS, name)
    users = {k: v & PCMD_USERS_MASK for k, v in e.pcmd.items()}
    _require(walk.pcmd() == users, f"{name}: PCMD users")
    swapped = walk.swapped + (e.secs_frame <= SWAPPED)
    _require(e.secs_child_cnt == walk.resident, f"{name}: secs_child_cnt {e.secs_child_cnt} != {walk.resident}")
    _require(e.nr_swapped == swapped, f"{name}: {e.nr_swapped} counted swapped, {swapped} found")
    _require(len(e.va_frames) * SGX_VA_SLOT_COUNT >= e.page_cnt, f"{name}: too few VA pages")
    _require(e.page_cnt == 1 + walk.resident + walk.swapped, f"{name}: page_cnt {e.page_cnt} drifted")


def _check_slots(e: _Encl, walk: _Pages) -> None:
    """The VA slots in use are exactly those the swap entries name; the VA list is whole."""
    name = f"enclave {e.id}"
    for ordinal, fresh in enumerate(e.va_fresh):
        freed = e.va_freed[ordinal]
        _require(len(set(freed)) == len(freed) and all(s < fresh for s in freed), f"{name}: VA page {ordinal} heap")
        expected = bytearray(b"\x01" * fresh + bytes(SGX_VA_SLOT_COUNT - fresh))
        for slot in freed:
            expected[slot] = 0
        base = ordinal << VA_SHIFT
        _require(
            walk.slots[base : base + SGX_VA_SLOT_COUNT] == expected,
            f"{name}: VA slots in use differ from the pages swapped out",
        )
        used = fresh - len(freed)
        _require(e.va_used[ordinal] == used, f"{name}: VA page {ordinal} counts {e.va_used[ordinal]} != {used}")
    order: list[int] = []
    ordinal = e.va_head
    while ordinal != -1 and len(order) <= len(e.va_frames):
        order.append(ordinal)
        ordinal = e.va_next[ordinal]
    _require(sorted(order) == list(range(len(e.va_frames))), f"{name}: VA list broken")


def _check_vepcs(snap: _Snapshot, tally: _Tally) -> Iterator[None]:
    for vid, pages, nr_present in snap.vepcs:
        _require(nr_present == len(pages), f"vEPC {vid}: present count drifted")
        items = list(pages.items())
        for start in range(0, len(items), STEP):
            for index, frame in items[start : start + STEP]:
                _frame(snap, frame, vid, index, _VEPC, f"page {index} of vEPC {vid}")
                tally.own[snap.cg[frame]] += 1
            yield
        tally.referenced += len(pages)


def _check_lrus(snap: _Snapshot) -> Iterator[None]:
    """Each LRU's links, and every ON_LRU frame on exactly its cgroup's list."""
    nxt, prev, cgs, flags = snap.next, snap.prev, snap.cg, snap.flags
    seen = bytearray(len(flags))
    walked = 0
    for visited, cg in enumerate(snap.cgroups, 1):
        head, tail, size = cg.lru
        frame, last, count = head, NIL, 0
        while frame != NIL and count <= size:
            _require(0 <= frame < len(flags), f"{cg.path}: LRU link to frame {frame}, outside the EPC")
            _require(not seen[frame], f"frame {frame} on two LRUs")
            seen[frame] = 1
            _require(prev[frame] == last, f"{cg.path}: broken LRU back link at frame {frame}")
            _require(cgs[frame] == cg.id, f"frame {frame} on {cg.path}'s LRU but charged elsewhere")
            _require(bool(flags[frame] & ON_LRU), f"frame {frame} on {cg.path}'s LRU without its ON_LRU flag")
            last, frame = frame, nxt[frame]
            count += 1
            if count % STEP == 0:
                yield
        _require(count == size, f"{cg.path}: LRU size {size} but {count} linked")
        _require(tail == last, f"{cg.path}: LRU tail is wrong")
        walked += count
        if visited % _CGROUPS_PER_STEP == 0:
            yield
    _require(walked == flags.translate(_ON_LRU).count(1), "an ON_LRU frame is on no LRU")
    yield


def _check_cgroups(snap: _Snapshot, tally: _Tally, nr_used: int) -> Iterator[None]:
    """Hierarchical misc and memory usage, events, cursors and tasks of every cgroup."""
    by_id = {cg.id: cg for cg in snap.cgroups}
    own_mem = [0] * len(snap.live)  # backing pages charged to each memory cgroup id
    paid: dict[int, int] = {}  # payer -> backing pages
    for (memcg_id, payer), pages in zip(snap.backing_owners, tally.owner_pages, strict=True):
        own_mem[memcg_id] += pages
        if payer and pages:
            paid[payer] = paid.get(payer, 0) + pages
    _require(paid == snap.task_mem, "per-task backing accounting drifted")
    _check_backing_owners(snap, tally)
    _require(snap.nr_cgroups == len(snap.cgroups) - 1, "the cgroup count drifted")
    for n, cg in enumerate(reversed(snap.cgroups), 1):
        _check_cgroup(snap, tally.own, own_mem, by_id, cg)
        if n % _CGROUPS_PER_STEP == 0:
            yield
    _require(sum(len(cg.procs) for cg in snap.cgroups) == len(snap.tasks), "cgroup.procs and the task table differ")
    _require(snap.moved <= snap.tasks.keys(), "a task placed by a write is not in the task table")
    root = snap.cgroups[0]
    _require(root.misc[0] == nr_used, "root misc usage != frames in use")
    _require(root.misc[0] <= snap.capacity_pages, "usage above capacity")
    yield


def _check_cgroup(snap: _Snapshot, own: list[int], own_mem: list[int], by_id: dict[int, _Cg], cg: _Cg) -> None:
    kids = [by_id[c] for c in cg.children]
    usage, peak, events, events_local, events_freed = cg.misc
    below = own[cg.id] + sum(c.misc[0] for c in kids)
    _require(usage == below, f"{cg.path}: misc usage {usage} != own + children {below}")
    mem = own_mem[cg.id] + sum(c.mem[0] for c in kids)
    _require(cg.mem[0] == mem, f"{cg.path}: memory usage {cg.mem[0]} != backing charged {mem}")
    _require(peak >= usage, f"{cg.path}: misc.peak below misc.current")
    _require(cg.mem[1] >= cg.mem[0], f"{cg.path}: memory.peak below memory.current")
    # a freed child's events stay counted in its ancestors
    if cg.parent == -1:  # misc_cg_event() counts no hierarchical event at root
        _require(events == 0, "root counts hierarchical misc events")
    else:
        _require(events == events_local + events_freed + sum(c.misc[2] for c in kids), f"{cg.path}: misc.events sum")
    if cg.parent != -1:
        hierarchical, local, freed = cg.mem_events
        for i, count in enumerate(hierarchical):
            beneath = local[i] + freed[i] + sum(c.mem_events[0][i] for c in kids)
            _require(count == beneath, f"{cg.path}: memory.events is not the sum of local events beneath")
    _require(cg.work_queued == (cg.id in snap.work), f"{cg.path}: work_queued disagrees with the queue")
    _require(cg.cursor != -1, f"{cg.path}: reclaim cursor on a freed cgroup")
    level = cg.cursor
    while level != -1 and level != cg.id:
        level = by_id[level].parent
    _require(level == cg.id, f"{cg.path}: reclaim cursor outside its subtree")
    for pid in cg.procs:
        _require(snap.tasks.get(pid) == cg.id, f"{cg.path}: task {pid} listed but placed elsewhere")
    # dying cgroups included: every reclaim walk sees an offline cgroup's LRU
    nonempty = sum(c.nonempty_lrus for c in kids) + (cg.lru[2] > 0)
    _require(cg.nonempty_lrus == nonempty, f"{cg.path}: non-empty LRU count drifted")
    _require(not cg.dying or bool(usage or cg.mem[0] or kids), f"{cg.path}: dying but holds nothing")


def _check_backing_owners(snap: _Snapshot, tally: _Tally) -> None:
    """Each backing owner id counts the backing pages charged under it; an id in use is
    registered under its own (memory cgroup, payer), and only a free one is not."""
    _require(snap.backing_refs == tally.owner_pages, "backing pages per owner id drifted")
    registered = set(snap.owner_ids.values())
    free = set(snap.free_owner_ids)
    _require(len(registered) == len(snap.owner_ids), "two backing owners share an id")
    _require(len(free) == len(snap.free_owner_ids) and not free & registered, "a backing owner id is free twice")
    _require(len(registered) + len(free) == len(snap.backing_owners), "a backing owner id is lost")
    for owner_id in registered:
        key = snap.backing_owners[owner_id]
        memcg_id = key[0]
        _require(snap.owner_ids[key] == owner_id, f"backing owner {owner_id} is registered under another key")
        _require(not snap.backing_refs[owner_id] or snap.live[memcg_id] == 1, f"backing of a freed cgroup {memcg_id}")
    _require(all(not snap.backing_refs[i] for i in free), "a free backing owner id still has pages")

"""The invariants of enclaves and vEPC instances: their page tables, SECS, VA pages, backing
and the frames they name, checked on the copy (engine.check_copy), a slice at a time."""

from __future__ import annotations

from collections.abc import Iterator

from engine.backing import OWNER_BITS, OWNER_MASK, PCMD_SHIFT, PCMD_USERS_BITS, PCMD_USERS_MASK
from engine.check_copy import STEP, EnclaveCopy, Snapshot, Tally, require
from engine.enclave import ABSENT, KIND_BITS, SPARSE_ABSENT, SWAPPED, VA_SHIFT
from engine.epc import KIND_MASK, NR_FLAG_SLOTS, ON_LRU, YOUNG, YOUNG_BITS, YOUNG_MORE
from engine.sgx import SGX_VA_SLOT_COUNT, PageKind

_YOUNG_MORE = bytes(1 if b & YOUNG_MORE else 0 for b in range(256))
_PAGE_KINDS = bytes(k in (PageKind.REG, PageKind.TCS, PageKind.TRIM) for k in range(256))  # an enclave page's
_SECS, _VA, _VEPC = PageKind.SECS, PageKind.VA, PageKind.VEPC


def frame_of(snap: Snapshot, frame: int, owner: int, index: int, kind: int, what: str) -> None:
    """A frame named by a SECS, VA or guest page: it is that page's, off every LRU, never accessed."""
    nr_frames = len(snap.flags)
    require(0 <= frame < nr_frames, f"{what} names frame {frame}, outside the EPC")
    require(snap.owner[frame] == owner and snap.index[frame] == index, f"frame {frame} is not {what}")
    require(snap.flags[frame] & KIND_MASK == kind, f"frame {frame} ({what}) has the wrong kind")
    require(not snap.flags[frame] & (ON_LRU | YOUNG), f"frame {frame} ({what}) is on an LRU or accessed")
    require(snap.live[snap.cg[frame]] == 1, f"frame {frame} charged to a freed cgroup")


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


def check_enclave(snap: Snapshot, e: EnclaveCopy, tally: Tally) -> Iterator[None]:
    name = f"enclave {e.id}"
    walk = _Pages(len(e.va_frames), len(e.pages))
    pages = e.pages
    require(len(pages) == len(e.types) and len(pages) <= e.size_pages, f"{name}: page table longer than ELRANGE")
    _check_mms(e)
    for start in range(0, len(pages), STEP):
        _walk_dense(snap, e, walk, tally, start, min(start + STEP, len(pages)))
        yield
    require(e.sparse.keys() <= e.sparse_keys, f"{name}: a sparse page is missing from the fold heap")
    items = list(e.sparse.items())
    for start in range(0, len(items), STEP):
        for index, packed in items[start : start + STEP]:
            require(len(pages) <= index < e.size_pages, f"{name}: sparse page {index} outside its place")
            require(packed != SPARSE_ABSENT, f"{name}: sparse page {index} reserved but never placed")
            _page(snap, e, walk, tally, index, packed >> KIND_BITS, packed & ((1 << KIND_BITS) - 1))
        yield
    _check_secs_and_va(snap, e, walk, tally)
    _check_slots(e, walk)
    yield


def _walk_dense(snap: Snapshot, e: EnclaveCopy, walk: _Pages, tally: Tally, start: int, end: int) -> None:
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


def _page(snap: Snapshot, e: EnclaveCopy, walk: _Pages, tally: Tally, index: int, entry: int, kind: int) -> None:
    """One page that exists: resident (its frame is its own) or written out (its VA slot and backing)."""
    name = f"enclave {e.id}"
    require(bool(_PAGE_KINDS[kind]), f"{name}: page {index} has kind {kind}")
    if entry >= 0:
        require(entry < len(snap.flags), f"{name}: page {index} names frame {entry}, outside the EPC")
        flags = snap.flags[entry]
        require(snap.owner[entry] == e.id and snap.index[entry] == index, f"frame {entry} is not page {index}")
        require(flags & KIND_MASK == kind, f"frame {entry} has the wrong page type")
        require(e.dying or bool(flags & ON_LRU), f"frame {entry} ({PageKind(kind).name}) LRU flag")
        require(not flags & _stray_young(e), f"frame {entry} is young in an mm that does not map {name}")
        require(snap.live[snap.cg[entry]] == 1, f"frame {entry} charged to a freed cgroup")
        tally.own[snap.cg[entry]] += 1
        walk.resident += 1
        return
    require(entry <= SWAPPED, f"{name}: page {index} has entry {entry}")
    require(entry != ABSENT or not kind, f"{name}: absent page {index} has a type")
    _swap_entry(snap, e, walk, tally, index, entry)
    walk.swapped += 1


def _check_mms(e: EnclaveCopy) -> None:
    """Each mm is on the enclave's mm list once, with a slot of its own for its accessed bits."""
    name = f"enclave {e.id}"
    require(len(set(e.mms)) == len(e.mms), f"{name}: an mm is on its mm list twice")
    require(set(e.mm_slot) == set(e.mms), f"{name}: mm slots {e.mm_slot} for the mm list {e.mms}")
    slots = list(e.mm_slot.values())
    require(len(set(slots)) == len(slots) and min(slots, default=0) >= 0, f"{name}: mm slots {e.mm_slot}")


def _stray_young(e: EnclaveCopy) -> int:
    """The young bits of the flags that no mm of the enclave owns (none may be set)."""
    owned = 0
    for slot in e.mm_slot.values():
        owned |= YOUNG_BITS[slot] if slot < NR_FLAG_SLOTS else YOUNG_MORE
    return YOUNG & ~owned


def check_young_more(snap: Snapshot) -> Iterator[None]:
    """The young bits of mm slots past the flags: exactly the frames flagged YOUNG_MORE hold
    some, and only of slots their enclave's mms have."""
    flags, owner = snap.flags, snap.owner
    more = snap.young_more
    require(flags.translate(_YOUNG_MORE).count(1) == len(more), "YOUNG_MORE flags and young_more differ")
    slots = {e.id: {s for s in e.mm_slot.values() if s >= NR_FLAG_SLOTS} for e in snap.enclaves}
    items = list(more.items())
    for start in range(0, len(items), STEP):
        for frame, mask in items[start : start + STEP]:
            require(0 <= frame < len(flags) and bool(flags[frame] & YOUNG_MORE), f"frame {frame} in young_more")
            owned = sum(1 << (s - NR_FLAG_SLOTS) for s in slots.get(owner[frame], ()))
            require(mask > 0 and not mask & ~owned, f"frame {frame} is young in an mm that does not map it")
        yield


def _swap_entry(snap: Snapshot, e: EnclaveCopy, walk: _Pages, tally: Tally, index: int, entry: int) -> None:
    """A page (or the SECS) written out: its VA slot is its alone, its backing is charged."""
    payload = SWAPPED - entry
    slot, owner_id = payload >> OWNER_BITS, payload & OWNER_MASK
    name = f"enclave {e.id}"
    require(slot < len(walk.slots), f"{name}: page {index} names VA slot {slot} of no VA page")
    require(not walk.slots[slot], f"{name}: two pages share a VA slot")
    walk.slots[slot] = 1
    pcmd_no = index >> PCMD_SHIFT
    walk.pcmd_users[pcmd_no] = walk.pcmd_users.get(pcmd_no, 0) + 1
    _backing(tally, owner_id, name)


def _backing(tally: Tally, owner_id: int, name: str) -> None:
    require(owner_id < len(tally.owner_pages), f"{name}: backing charged to unknown owner {owner_id}")
    tally.owner_pages[owner_id] += 1


def _check_secs_and_va(snap: Snapshot, e: EnclaveCopy, walk: _Pages, tally: Tally) -> None:
    name = f"enclave {e.id}"
    tally.referenced += walk.resident
    if e.secs_frame >= 0:
        frame_of(snap, e.secs_frame, e.id, -1, _SECS, f"enclave {e.id}'s SECS")
        tally.own[snap.cg[e.secs_frame]] += 1
        tally.referenced += 1
    else:
        require(e.secs_frame <= SWAPPED, f"{name}: SECS neither resident nor swapped")
        require(not walk.resident and e.initialized, f"{name}: SECS swapped with children resident or before EINIT")
        _swap_entry(snap, e, walk, tally, e.size_pages, e.secs_frame)
    for ordinal, frame in enumerate(e.va_frames):
        frame_of(snap, frame, e.id, ordinal, _VA, f"VA page {ordinal} of {e.id}")
        tally.own[snap.cg[frame]] += 1
    tally.referenced += len(e.va_frames)
    for pcmd in e.pcmd.values():
        require(pcmd & PCMD_USERS_MASK > 0, f"{name}: an empty PCMD page is still charged")
        _backing(tally, pcmd >> PCMD_USERS_BITS, name)
    users = {k: v & PCMD_USERS_MASK for k, v in e.pcmd.items()}
    require(walk.pcmd() == users, f"{name}: PCMD users")
    swapped = walk.swapped + (e.secs_frame <= SWAPPED)
    require(e.secs_child_cnt == walk.resident, f"{name}: secs_child_cnt {e.secs_child_cnt} != {walk.resident}")
    require(e.nr_swapped == swapped, f"{name}: {e.nr_swapped} counted swapped, {swapped} found")
    require(len(e.va_frames) * SGX_VA_SLOT_COUNT >= e.page_cnt, f"{name}: too few VA pages")
    require(e.page_cnt == 1 + walk.resident + walk.swapped, f"{name}: page_cnt {e.page_cnt} drifted")


def _check_slots(e: EnclaveCopy, walk: _Pages) -> None:
    """The VA slots in use are exactly those the swap entries name; the VA list is whole."""
    name = f"enclave {e.id}"
    for ordinal, fresh in enumerate(e.va_fresh):
        freed = e.va_freed[ordinal]
        require(len(set(freed)) == len(freed) and all(s < fresh for s in freed), f"{name}: VA page {ordinal} heap")
        expected = bytearray(b"\x01" * fresh + bytes(SGX_VA_SLOT_COUNT - fresh))
        for slot in freed:
            expected[slot] = 0
        base = ordinal << VA_SHIFT
        require(
            walk.slots[base : base + SGX_VA_SLOT_COUNT] == expected,
            f"{name}: VA slots in use differ from the pages swapped out",
        )
        used = fresh - len(freed)
        require(e.va_used[ordinal] == used, f"{name}: VA page {ordinal} counts {e.va_used[ordinal]} != {used}")
    order: list[int] = []
    ordinal = e.va_head
    while ordinal != -1 and len(order) <= len(e.va_frames):
        order.append(ordinal)
        ordinal = e.va_next[ordinal]
    require(sorted(order) == list(range(len(e.va_frames))), f"{name}: VA list broken")


def check_vepcs(snap: Snapshot, tally: Tally) -> Iterator[None]:
    for vid, pages, nr_present, charged in snap.vepcs:
        require(nr_present == len(pages), f"vEPC {vid}: present count drifted")
        items = list(pages.items())
        by_cgroup: dict[int, int] = {}
        for start in range(0, len(items), STEP):
            for index, frame in items[start : start + STEP]:
                frame_of(snap, frame, vid, index, _VEPC, f"page {index} of vEPC {vid}")
                cg_id = snap.cg[frame]
                tally.own[cg_id] += 1
                by_cgroup[cg_id] = by_cgroup.get(cg_id, 0) + 1
            yield
        tally.referenced += len(pages)
        require(by_cgroup == charged, f"vEPC {vid}: its pages per cgroup are {by_cgroup}, it counts {charged}")

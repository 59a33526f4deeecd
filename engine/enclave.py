"""Enclaves, their VA pages and backing store, and guest vEPC instances (mirrors encl.h).

An enclave's pages are numbered by offset / PAGE_SIZE.  Each page's *entry* says where
it is, in one 64-bit slot: the EPC frame holding it (>= 0), ABSENT when it was never
added (or was removed), or, at or below SWAPPED, a *swap entry* when EWB wrote it out:
which VA slot holds its version and which backing owner (memory cgroup and paying task)
pays for its backing page (engine.backing encodes them).  ``secs_frame`` says the same of the SECS.

The page table is sparse, as the kernel's xarray is: a dense prefix (``pages``, an
array("q"), and ``types``) where EADD and EAUG append, grown only while it stays within
twice the pages the enclave has (plus DENSE_SLACK), and ``sparse`` for pages beyond it
(index -> entry << KIND_BITS | kind), folded into the prefix when it grows over them.
So a page costs 9 bytes in the prefix, about 120 in the dict, and an access far into a
big ELRANGE costs one entry, not the whole way there.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from heapq import heapify, heappop, heappush

from engine.epcm import Modified
from engine.sgx import SGX_VA_SLOT_COUNT

ABSENT = -1
SWAPPED = -2  # entries are <= SWAPPED: swap entries (engine.backing)
VA_SHIFT = SGX_VA_SLOT_COUNT.bit_length() - 1  # slot id = VA ordinal << VA_SHIFT | slot
KIND_BITS = 3  # sparse[i] = entry << KIND_BITS | PageKind
KIND_MASK = (1 << KIND_BITS) - 1
SPARSE_ABSENT = ABSENT << KIND_BITS  # a slot reserve() made for a page not placed yet
DENSE_SLACK = SGX_VA_SLOT_COUNT  # the dense prefix may reach this far past twice the pages


class Enclave:
    """Mirrors struct sgx_encl: its SECS, pages, VA pages and backing."""

    __slots__ = (
        "id", "pid", "size_pages", "pages", "types", "sparse", "sparse_keys", "next_index", "secs_frame",
        "secs_child_cnt",
        "page_cnt", "initialized", "dying", "mms", "mm_slot", "nr_swapped", "pcmd",
        "modified",
        "va_frames", "va_fresh", "va_freed", "va_used", "va_prev", "va_next", "va_head", "va_tail",
    )  # fmt: skip

    def __init__(self, encl_id: int, pid: int, size_pages: int) -> None:
        self.id = encl_id
        self.pid = pid  # the creating task
        self.size_pages = size_pages
        self.pages = array("q")  # the dense prefix: frame, ABSENT or swap entry of each page
        self.types = bytearray()  # PageKind of each page of the prefix (REG, TCS, TRIM), 0 when absent
        self.sparse: dict[int, int] = {}  # pages beyond the prefix: index -> entry << KIND_BITS | kind
        self.sparse_keys: list[int] = []  # a heap of the sparse indexes (removed ones linger)
        self.next_index = 0  # where ADD_PAGES and EAUG append
        self.secs_frame = ABSENT  # frame or swap entry of the SECS
        self.secs_child_cnt = 0  # resident child pages
        self.page_cnt = 0  # SECS + pages ever added, minus removed (drives VA growth)
        self.initialized = False
        self.dying = False
        self.mms = [pid]  # tasks whose mm maps the enclave, newest first
        self.mm_slot = {pid: 0}  # each mm's slot for its accessed bits (Epc.make_young)
        self.nr_swapped = 0  # swap entries, the SECS's included
        self.pcmd: dict[int, int] = {}  # PCMD page number -> owner << 6 | users
        self.modified: Modified | None = None  # pages MODIFY_TYPES changed, not yet EACCEPTed
        # VA pages by ordinal: never-used slots start at va_fresh, freed ones wait in a
        # heap, so the lowest free slot (find_first_zero_bit) is cheap; list order is
        # kept by intrusive links, head first.
        self.va_frames: list[int] = []
        self.va_fresh: list[int] = []
        self.va_freed: list[list[int]] = []
        self.va_used: list[int] = []
        self.va_prev: list[int] = []
        self.va_next: list[int] = []
        self.va_head = -1
        self.va_tail = -1

    @property
    def secs_index(self) -> int:
        """The backing index of the SECS: right after the enclave's pages."""
        return self.size_pages

    # -- the mm list -------------------------------------------------------------

    def mm_add(self, pid: int) -> int:
        """``pid``'s mm maps the enclave: it goes first on the mm list and takes the lowest
        free slot for its accessed bits, which it returns.  Mirrors sgx_encl_mm_add()."""
        used = set(self.mm_slot.values())
        slot = 0
        while slot in used:
            slot += 1
        self.mm_slot[pid] = slot
        self.mms.insert(0, pid)
        return slot

    def mm_remove(self, pid: int) -> int:
        """``pid``'s mm exits: it leaves the mm list; returns its slot, whose accessed bits
        the caller clears.  Mirrors sgx_mmu_notifier_release()."""
        self.mms.remove(pid)
        return self.mm_slot.pop(pid)

    def mm_slots(self) -> list[int]:
        """The slots of the mms in mm-list order (newest first), as sgx_reclaimer_age() walks them."""
        return [self.mm_slot[pid] for pid in self.mms]

    # -- the page table --------------------------------------------------------

    def page(self, index: int) -> int:
        """The entry of page ``index``: its frame, ABSENT or its swap entry."""
        if index < len(self.pages):
            return self.pages[index]
        packed = self.sparse.get(index)
        return ABSENT if packed is None else packed >> KIND_BITS

    __getitem__ = page  # encl[index] reads like pages[index], wherever the page is kept

    def kind(self, index: int) -> int:
        """The PageKind of page ``index`` (REG, TCS or TRIM), FREE (0) when absent."""
        if index < len(self.types):
            return self.types[index]
        packed = self.sparse.get(index)
        return 0 if packed is None else packed & KIND_MASK

    def set_entry(self, index: int, entry: int) -> None:
        """A page that exists changes place (loaded or written out); its kind stays."""
        if index < len(self.pages):
            self.pages[index] = entry
        else:
            self.sparse[index] = entry << KIND_BITS | self.sparse[index] & KIND_MASK

    __setitem__ = set_entry

    def set_kind(self, index: int, kind: int) -> None:
        """A page that exists changes type (MODIFY_TYPES to TRIM)."""
        if index < len(self.types):
            self.types[index] = kind
        else:
            self.sparse[index] = self.sparse[index] & ~KIND_MASK | kind

    def reserve(self, index: int) -> None:
        """Make room for a new page at ``index``, absent until place().

        The one step of adding a page that allocates: after a MemoryError nothing changed.
        The dense prefix grows to cover ``index`` while that keeps it within twice the
        enclave's pages plus DENSE_SLACK; beyond, the page goes to ``sparse``.
        """
        if index < len(self.pages) or index in self.sparse:
            return
        if index < 2 * self.page_cnt + DENSE_SLACK:
            self._grow_dense(index + 1)
            return
        self.sparse[index] = SPARSE_ABSENT
        try:
            heappush(self.sparse_keys, index)
        except BaseException:
            del self.sparse[index]
            raise

    def unreserve(self, index: int) -> None:
        """Undo reserve() for a page that was not placed after all (its allocation failed)."""
        if index >= len(self.pages):
            if self.sparse.get(index) == SPARSE_ABSENT:
                del self.sparse[index]
        elif index == len(self.pages) - 1 and self.pages[index] == ABSENT:
            del self.pages[index]
            del self.types[index]

    def place(self, index: int, entry: int, kind: int) -> None:
        """Page ``index`` (reserved) now exists as ``entry``, of ``kind``; allocates nothing."""
        if index < len(self.pages):
            self.pages[index] = entry
            self.types[index] = kind
        else:
            self.sparse[index] = entry << KIND_BITS | kind

    def clear(self, index: int) -> None:
        """Page ``index`` is gone (EREMOVE or release): absent again."""
        if index < len(self.pages):
            self.pages[index] = ABSENT
            self.types[index] = 0
            return
        del self.sparse[index]
        if len(self.sparse_keys) > 2 * len(self.sparse) + DENSE_SLACK:  # drop the removed indexes
            self.sparse_keys = list(self.sparse)
            heapify(self.sparse_keys)

    def _grow_dense(self, length: int) -> None:
        """Extend the prefix to ``length`` entries and fold in the sparse pages it now covers."""
        start = len(self.pages)
        missing = length - start
        try:
            self.pages.extend(array("q", [ABSENT]) * missing)
            self.types.extend(bytes(missing))
        except BaseException:
            del self.pages[start:]
            del self.types[start:]
            raise
        keys, sparse, pages, types = self.sparse_keys, self.sparse, self.pages, self.types
        while keys and keys[0] < length:
            index = heappop(keys)
            packed = sparse.pop(index, None)
            if packed is not None:
                pages[index] = packed >> KIND_BITS
                types[index] = packed & KIND_MASK

    def entries(self) -> Iterator[tuple[int, int]]:
        """(index, entry) of every page that exists, resident or written out, in index order
        within the prefix, then the sparse pages."""
        for index, entry in enumerate(self.pages):
            if entry != ABSENT:
                yield index, entry
        for index, packed in self.sparse.items():
            if packed != SPARSE_ABSENT:
                yield index, packed >> KIND_BITS

    def swapped_indexes(self) -> list[int]:
        """Indexes of the pages written out (the SECS not included)."""
        out = [i for i, value in enumerate(self.pages) if value <= SWAPPED]
        out += [i for i, packed in self.sparse.items() if packed >> KIND_BITS <= SWAPPED]
        return out

    def resident_frames(self) -> list[int]:
        """The EPC frames holding the enclave's pages (not its SECS or VA pages)."""
        out = [frame for frame in self.pages if frame >= 0]
        out += [packed >> KIND_BITS for packed in self.sparse.values() if packed >= 0]
        return out

    def resident_indexes(self) -> list[int]:
        """Indexes of the pages that hold an EPC frame."""
        out = [i for i, value in enumerate(self.pages) if value >= 0]
        out += [i for i, packed in self.sparse.items() if packed >= 0]
        return out

    # -- EPCM.MODIFIED: pages whose type MODIFY_TYPES changed, not yet EACCEPTed --------

    def mark_modified(self, index: int) -> None:
        """EMODT changed page ``index``'s type: it is MODIFIED until the enclave EACCEPTs it."""
        modified = self.modified
        if modified is None:
            modified = Modified()
        modified.add(index, len(self.pages))
        self.modified = modified

    def is_modified(self, index: int) -> bool:
        return self.modified is not None and index in self.modified

    def accept(self, first: int, end: int) -> None:
        """EACCEPT of pages first..end-1: none of them is MODIFIED any more."""
        modified = self.modified
        if modified is not None:
            modified.accept(first, end)
            if not modified.count:
                self.modified = None

    # -- VA pages (mirrors sgx_alloc_va_slot / sgx_free_va_slot and their list moves) --

    def va_add(self, frame: int) -> None:
        """A new VA page goes to the head of the list (as sgx_encl_grow's list_add).

        After a MemoryError nothing changed.
        """
        ordinal = len(self.va_frames)
        lists: tuple[list[int], ...] = (self.va_frames, self.va_fresh, self.va_used, self.va_prev, self.va_next)
        try:
            self.va_freed.append([])
            for values, value in zip(lists, (frame, 0, 0, -1, -1), strict=True):
                values.append(value)
        except BaseException:
            del self.va_freed[ordinal:]
            for values in lists:
                del values[ordinal:]
            raise
        self._va_link_head(ordinal)

    def va_alloc_slot(self) -> int:
        """Take the lowest free slot of the head VA page; returns its slot id.

        A page that fills moves to the tail.  Mirrors sgx_alloc_va_slot() and the list
        move in sgx_encl_ewb().
        """
        ordinal = self.va_head
        freed = self.va_freed[ordinal]
        if freed:
            slot = heappop(freed)
        else:
            slot = self.va_fresh[ordinal]
            if slot == SGX_VA_SLOT_COUNT:
                raise AssertionError(f"enclave {self.id}: no free VA slot")
            self.va_fresh[ordinal] = slot + 1
        used = self.va_used[ordinal] + 1
        self.va_used[ordinal] = used
        if used == SGX_VA_SLOT_COUNT and ordinal != self.va_tail:
            self._va_unlink(ordinal)
            self._va_link_tail(ordinal)
        return ordinal << VA_SHIFT | slot

    def va_alloc_slots(self, count: int) -> list[int]:
        """``count`` va_alloc_slot() calls at once: a range when the head page has them fresh.

        No kernel counterpart: N of sgx_alloc_va_slot() at once.
        """
        ordinal = self.va_head
        fresh = self.va_fresh[ordinal]
        if self.va_freed[ordinal] or fresh + count >= SGX_VA_SLOT_COUNT:
            return [self.va_alloc_slot() for _ in range(count)]
        self.va_fresh[ordinal] = fresh + count
        self.va_used[ordinal] += count
        base = ordinal << VA_SHIFT
        return list(range(base + fresh, base + fresh + count))

    def va_free_slot(self, slot_id: int) -> None:
        """Give a slot back and move its VA page to the head (ELDU's list_move)."""
        ordinal = slot_id >> VA_SHIFT
        heappush(self.va_freed[ordinal], slot_id & (SGX_VA_SLOT_COUNT - 1))
        self.va_used[ordinal] -= 1
        if ordinal != self.va_head:
            self._va_unlink(ordinal)
            self._va_link_head(ordinal)

    def va_slots_in_use(self, ordinal: int) -> set[int]:
        return set(range(self.va_fresh[ordinal])) - set(self.va_freed[ordinal])

    def va_order(self) -> list[int]:
        out: list[int] = []
        ordinal = self.va_head
        while ordinal != -1 and len(out) <= len(self.va_frames):
            out.append(ordinal)
            ordinal = self.va_next[ordinal]
        return out

    def _va_link_head(self, ordinal: int) -> None:
        self.va_prev[ordinal] = -1
        self.va_next[ordinal] = self.va_head
        if self.va_head != -1:
            self.va_prev[self.va_head] = ordinal
        else:
            self.va_tail = ordinal
        self.va_head = ordinal

    def _va_link_tail(self, ordinal: int) -> None:
        self.va_next[ordinal] = -1
        self.va_prev[ordinal] = self.va_tail
        if self.va_tail != -1:
            self.va_next[self.va_tail] = ordinal
        else:
            self.va_head = ordinal
        self.va_tail = ordinal

    def _va_unlink(self, ordinal: int) -> None:
        prev, nxt = self.va_prev[ordinal], self.va_next[ordinal]
        if prev == -1:
            self.va_head = nxt
        else:
            self.va_next[prev] = nxt
        if nxt == -1:
            self.va_tail = prev
        else:
            self.va_prev[nxt] = prev


class Vepc:
    """A guest's virtual EPC (/dev/sgx_vepc mapping): pages charged on first touch, never reclaimed."""

    __slots__ = ("id", "pid", "size_pages", "pages", "nr_present", "charged")

    def __init__(self, vepc_id: int, pid: int, size_pages: int) -> None:
        self.id = vepc_id
        self.pid = pid
        self.size_pages = size_pages
        self.pages: dict[int, int] = {}  # page index -> frame, for touched pages
        self.nr_present = 0
        # cgroup id -> present pages charged to it (the faulting task's, which may move): lets a
        # cgroup's listing of its unreclaimable pages (engine.views) pass over other cgroups' guests
        self.charged: dict[int, int] = {}

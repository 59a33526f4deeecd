"""Enclaves, their VA pages and backing store, and guest vEPC instances (mirrors encl.h).

An enclave's pages are numbered by offset / PAGE_SIZE.  ``pages[i]`` says where page i
is, in one 64-bit slot: the EPC frame holding it (>= 0), ABSENT when it was never added
(or was removed), or, at or below SWAPPED, a *swap entry* when EWB wrote it out: which
VA slot holds its version and which backing owner (memory cgroup and paying task)
pays for its backing page.  ``secs_frame`` says the same of the SECS.  Packing the
entry into the array keeps a resident page at 30 bytes and a swapped one at 8, with
nothing for the garbage collector to walk.
"""

from __future__ import annotations

from array import array
from heapq import heappop, heappush

from engine.sgx import SGX_PCMD_PER_PAGE, SGX_VA_SLOT_COUNT

ABSENT = -1
SWAPPED = -2  # entries are <= SWAPPED
OWNER_BITS = 24  # backing owners (memory cgroup, payer) pairs a host can have
OWNER_MASK = (1 << OWNER_BITS) - 1
VA_SHIFT = SGX_VA_SLOT_COUNT.bit_length() - 1  # slot id = VA ordinal << VA_SHIFT | slot
PCMD_SHIFT = SGX_PCMD_PER_PAGE.bit_length() - 1  # index >> PCMD_SHIFT: its PCMD page
PCMD_USERS_BITS = 6  # pcmd[n] = owner << PCMD_USERS_BITS | entries in use (<= 32)
PCMD_USERS_MASK = (1 << PCMD_USERS_BITS) - 1


def swap_entry(slot_id: int, owner: int) -> int:
    """The value stored for a page written out to VA slot ``slot_id``, its backing paid by ``owner``."""
    return SWAPPED - (slot_id << OWNER_BITS | owner)


def swap_fields(entry: int) -> tuple[int, int]:
    """(VA slot id, backing owner) of a swap entry."""
    payload = SWAPPED - entry
    return payload >> OWNER_BITS, payload & OWNER_MASK


def pcmd_fields(value: int) -> tuple[int, int]:
    """(backing owner, entries in use) of a PCMD page."""
    return value >> PCMD_USERS_BITS, value & PCMD_USERS_MASK


class Enclave:
    """Mirrors struct sgx_encl: its SECS, pages, VA pages and backing."""

    __slots__ = (
        "id", "pid", "size_pages", "pages", "types", "next_index", "secs_frame", "secs_child_cnt",
        "page_cnt", "initialized", "dying", "mms", "nr_swapped", "pcmd",
        "va_frames", "va_fresh", "va_freed", "va_used", "va_prev", "va_next", "va_head", "va_tail",
    )  # fmt: skip

    def __init__(self, encl_id: int, pid: int, size_pages: int) -> None:
        self.id = encl_id
        self.pid = pid  # the creating task
        self.size_pages = size_pages
        self.pages = array("q")  # frame, ABSENT or swap entry; grows as pages are added
        self.types = bytearray()  # PageKind of each page (REG, TCS, TRIM), 0 when absent
        self.next_index = 0  # where ADD_PAGES and EAUG append
        self.secs_frame = ABSENT  # frame or swap entry of the SECS
        self.secs_child_cnt = 0  # resident child pages
        self.page_cnt = 0  # SECS + pages ever added, minus removed (drives VA growth)
        self.initialized = False
        self.dying = False
        self.mms = [pid]  # tasks whose mm maps the enclave, newest first
        self.nr_swapped = 0  # swap entries, the SECS's included
        self.pcmd: dict[int, int] = {}  # PCMD page number -> owner << 6 | users
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

    def ensure_index(self, index: int) -> None:
        """Grow the page arrays to cover ``index``."""
        missing = index + 1 - len(self.pages)
        if missing > 0:
            self.pages.extend(array("q", [ABSENT]) * missing)
            self.types.extend(bytes(missing))

    def swapped_indexes(self) -> list[int]:
        """Indexes of the pages written out (the SECS not included)."""
        return [i for i, value in enumerate(self.pages) if value <= SWAPPED]

    def page(self, index: int) -> int:
        return self.pages[index] if index < len(self.pages) else ABSENT

    # -- VA pages (mirrors sgx_alloc_va_slot / sgx_free_va_slot and their list moves) --

    def va_add(self, frame: int) -> None:
        """A new VA page goes to the head of the list (as sgx_encl_grow's list_add)."""
        ordinal = len(self.va_frames)
        self.va_frames.append(frame)
        self.va_fresh.append(0)
        self.va_freed.append([])
        self.va_used.append(0)
        self.va_prev.append(-1)
        self.va_next.append(-1)
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
        """``count`` va_alloc_slot() calls at once: a range when the head page has them fresh."""
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

    __slots__ = ("id", "pid", "size_pages", "pages", "nr_present")

    def __init__(self, vepc_id: int, pid: int, size_pages: int) -> None:
        self.id = vepc_id
        self.pid = pid
        self.size_pages = size_pages
        self.pages: dict[int, int] = {}  # page index -> frame, for touched pages
        self.nr_present = 0

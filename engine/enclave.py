"""Enclaves, their VA pages and backing store, and guest vEPC instances (mirrors encl.h).

An enclave's pages are numbered by offset / PAGE_SIZE.  ``pages[i]`` is the EPC frame
holding page i, ABSENT when the page was never added (or was removed), or SWAPPED
when it was written out to backing by EWB; a swapped page owns one VA slot and one
backing page, charged to a memory cgroup and paid by a task.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass

from engine.sgx import SGX_PCMD_PER_PAGE, SGX_VA_SLOT_COUNT

ABSENT = -1
SWAPPED = -2
_FULL = (1 << SGX_VA_SLOT_COUNT) - 1


# Where a written-out page went: (VA page ordinal, slot in it, id of the memory cgroup
# charged for its backing page, pid whose mm paid or 0).  A plain tuple: one per
# swapped page, made on the reclaim hot path.
SwapEntry = tuple[int, int, int, int]
SWAP_VA, SWAP_SLOT, SWAP_MEMCG, SWAP_PAYER = range(4)
PCMD_SHIFT = SGX_PCMD_PER_PAGE.bit_length() - 1  # index >> PCMD_SHIFT: its PCMD page


@dataclass(slots=True)
class PcmdPage:
    """One backing page of 32 PCMD entries, charged while any entry is in use."""

    users: int
    memcg: int
    payer: int


class Enclave:
    """Mirrors struct sgx_encl: its SECS, pages, VA pages and backing."""

    __slots__ = (
        "id", "pid", "size_pages", "pages", "types", "next_index", "secs_frame", "secs_child_cnt",
        "page_cnt", "initialized", "dying", "mms", "swapped", "pcmd",
        "va_frames", "va_slots", "va_used", "va_prev", "va_next", "va_head", "va_tail",
    )  # fmt: skip

    def __init__(self, encl_id: int, pid: int, size_pages: int) -> None:
        self.id = encl_id
        self.pid = pid  # the creating task; first on the mm list
        self.size_pages = size_pages
        self.pages = array("i")  # grows as pages are added: start-up costs nothing
        self.types = bytearray()  # PageKind of each page (REG, TCS, TRIM), 0 when absent
        self.next_index = 0  # where ADD_PAGES and EAUG append
        self.secs_frame = ABSENT
        self.secs_child_cnt = 0  # resident child pages
        self.page_cnt = 0  # SECS + pages ever added, minus removed (drives VA growth)
        self.initialized = False
        self.dying = False
        self.mms = [pid]  # tasks that map the enclave
        self.swapped: dict[int, SwapEntry] = {}  # page index (size_pages = SECS) -> entry
        self.pcmd: dict[int, PcmdPage] = {}  # PCMD page number -> users
        # VA pages by ordinal, and their list order (head first) as intrusive links.
        self.va_frames: list[int] = []
        self.va_slots: list[int] = []  # bitmap of used slots
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
            self.pages.extend(array("i", [ABSENT]) * missing)
            self.types.extend(bytes(missing))

    def page(self, index: int) -> int:
        return self.pages[index] if index < len(self.pages) else ABSENT

    # -- VA pages (mirrors sgx_alloc_va_slot / sgx_free_va_slot and their list moves) --

    def va_add(self, frame: int) -> None:
        """A new VA page goes to the head of the list (as sgx_encl_grow's list_add)."""
        ordinal = len(self.va_frames)
        self.va_frames.append(frame)
        self.va_slots.append(0)
        self.va_used.append(0)
        self.va_prev.append(-1)
        self.va_next.append(-1)
        self._va_link_head(ordinal)

    def va_alloc_slot(self) -> tuple[int, int]:
        """Take the first free slot of the head VA page; a page that fills moves to the tail."""
        ordinal = self.va_head
        bits = self.va_slots[ordinal]
        if bits == _FULL:
            raise AssertionError(f"enclave {self.id}: no free VA slot")
        slot = (~bits & (bits + 1)).bit_length() - 1
        self.va_slots[ordinal] = bits | (1 << slot)
        self.va_used[ordinal] += 1
        if self.va_used[ordinal] == SGX_VA_SLOT_COUNT and ordinal != self.va_tail:
            self._va_unlink(ordinal)
            self._va_link_tail(ordinal)
        return ordinal, slot

    def va_free_slot(self, ordinal: int, slot: int) -> None:
        """Give a slot back and move its VA page to the head (ELDU's list_move)."""
        self.va_slots[ordinal] &= ~(1 << slot)
        self.va_used[ordinal] -= 1
        if ordinal != self.va_head:
            self._va_unlink(ordinal)
            self._va_link_head(ordinal)

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

    @staticmethod
    def pcmd_page(index: int) -> int:
        """The PCMD backing page that holds page ``index``'s entry (32 to a page)."""
        return index >> PCMD_SHIFT


class Vepc:
    """A guest's virtual EPC (/dev/sgx_vepc mapping): pages charged on first touch, never reclaimed."""

    __slots__ = ("id", "pid", "size_pages", "pages", "nr_present")

    def __init__(self, vepc_id: int, pid: int, size_pages: int) -> None:
        self.id = vepc_id
        self.pid = pid
        self.size_pages = size_pages
        self.pages: dict[int, int] = {}  # page index -> frame, for touched pages
        self.nr_present = 0

"""EPC frames and the per-cgroup LRU lists (mirrors struct sgx_epc_page, sgx_epc_lru_list).

Page state lives in flat arrays indexed by frame number, and the LRU is intrusive
(prev/next arrays), so every operation is O(1) and a resident page costs 21 bytes
here.  Frames are handed out from a free stack, then from a bump pointer, so
building an EPC of any size costs nothing until its frames are used.

The accessed bit is per mm: each mm that maps an enclave has its own PTE, young or
not, for each page.  An enclave gives each of its mms a slot (Enclave.mm_slot); the
young bits of slots 0-2 live in the frame's flags byte (slot 0 is ACCESSED, so an
enclave with one mm costs nothing more), those of higher slots in ``young_more``
(frame -> bit mask), which YOUNG_MORE in the flags says to look at.
"""

from __future__ import annotations

from array import array
from typing import Protocol

from engine.sgx import PageKind

KIND_MASK = 0x07
ACCESSED = 0x08  # the page's PTE is young in the enclave's mm of slot 0 (its only mm, mostly)
ON_LRU = 0x10  # SGX_EPC_PAGE_RECLAIMER_TRACKED: the page sits on its cgroup's LRU
YOUNG_BITS = (ACCESSED, 0x20, 0x40)  # young in the mm of slot 0, 1, 2
YOUNG_MORE = 0x80  # young in some mm of slot 3 or beyond: see Epc.young_more
YOUNG = ACCESSED | 0x20 | 0x40 | YOUNG_MORE  # young in some mm
ONE_MM_YOUNG = frozenset(YOUNG_BITS)  # flags & YOUNG when the page is young in one mm, of slot 0-2
NR_FLAG_SLOTS = len(YOUNG_BITS)
NIL = -1


class LruOwner(Protocol):
    def lru_became_nonempty(self) -> None: ...
    def lru_became_empty(self) -> None: ...


class Lru:
    """Mirrors struct sgx_epc_lru_list: the reclaimable pages of one cgroup, oldest first."""

    __slots__ = ("head", "tail", "size", "owner")

    def __init__(self, owner: LruOwner) -> None:
        self.head = NIL
        self.tail = NIL
        self.size = 0
        self.owner = owner


class Epc:
    """All EPC frames of the host: who holds each one, its flags and its LRU links."""

    __slots__ = (
        "capacity_pages", "owner", "index", "cg", "flags", "prev", "next", "_free", "nr_free", "young_more", "fast",
    )  # fmt: skip

    def __init__(self, capacity_pages: int, fast: bool = True) -> None:
        """``fast=False``: the batch methods (take_run, put_many, lru_add_tail_many) go one frame
        at a time through take(), put() and lru_add_tail(), for tests that compare the two."""
        self.capacity_pages = capacity_pages
        self.fast = fast
        self.owner = array("i")  # enclave or vEPC id holding the frame
        self.index = array("i")  # page index in the owner (SECS: -1, VA: its ordinal)
        self.cg = array("i")  # id of the misc cgroup the frame is charged to
        self.flags = bytearray()  # PageKind | ON_LRU | young bits (YOUNG)
        self.prev = array("i")
        self.next = array("i")  # LRU links
        self._free = array("i")  # freed frames, a stack (never-used ones lie past len(flags))
        self.nr_free = capacity_pages
        self.young_more: dict[int, int] = {}  # frame -> young bits of mm slots 3.. (bit 0: slot 3)

    @property
    def nr_used(self) -> int:
        return self.capacity_pages - self.nr_free

    def take(self, kind: PageKind, owner: int, index: int, cg: int) -> int:
        """Take a free frame for ``owner``; the caller made sure one is free (the charge did).
        Mirrors __sgx_alloc_epc_page().

        Any error (a value the 32-bit tables cannot hold, MemoryError) leaves every table
        as it was.
        """
        if self._free:
            frame = self._free[-1]
            try:
                self.owner[frame] = owner
                self.index[frame] = index
                self.cg[frame] = cg
            except BaseException:
                self.owner[frame] = NIL
                raise
            self.flags[frame] = kind
            self._free.pop()
        else:
            frame = len(self.flags)
            if frame >= self.capacity_pages:
                raise AssertionError("EPC frame taken with none free")
            try:
                self.owner.append(owner)
                self.index.append(index)
                self.cg.append(cg)
                self.prev.append(NIL)
                self.next.append(NIL)
                self.flags.append(kind)
            except BaseException:
                self._truncate(frame)
                raise
        self.nr_free -= 1
        return frame

    def _tables(self) -> tuple[array[int], ...]:
        return (self.owner, self.index, self.cg, self.prev, self.next)

    def _truncate(self, length: int) -> None:
        """Drop the never-used frames from ``length`` on (undoing a failed take)."""
        for table in self._tables():
            del table[length:]
        del self.flags[length:]

    def put(self, frame: int) -> None:
        """Return a frame (already off every LRU) to the free stack; its PTEs went with the page.

        Mirrors the free-list half of sgx_free_epc_page().
        """
        if self.flags[frame] & YOUNG_MORE:
            del self.young_more[frame]
        self.flags[frame] = PageKind.FREE
        self.owner[frame] = NIL
        self._free.append(frame)
        self.nr_free += 1

    def free_frames(self) -> list[int]:
        """The frames on the free stack, the next one taken first."""
        return self._free[::-1].tolist()

    # -- accessed bits, one per mm slot --------------------------------------------

    def make_young(self, frame: int, slot: int) -> None:
        """An access through the mm of ``slot``: the page's PTE there is young."""
        if slot < NR_FLAG_SLOTS:
            self.flags[frame] |= YOUNG_BITS[slot]
        else:
            self.flags[frame] |= YOUNG_MORE
            more = self.young_more
            more[frame] = more.get(frame, 0) | 1 << (slot - NR_FLAG_SLOTS)

    def test_and_clear_young(self, frame: int, slot: int) -> bool:
        """Whether the page's PTE in the mm of ``slot`` is young; clears it.

        Mirrors sgx_encl_test_and_clear_young().
        """
        flags = self.flags
        if slot < NR_FLAG_SLOTS:
            bit = YOUNG_BITS[slot]
            if not flags[frame] & bit:
                return False
            flags[frame] ^= bit
            return True
        bit = 1 << (slot - NR_FLAG_SLOTS)
        if not flags[frame] & YOUNG_MORE or not self.young_more[frame] & bit:
            return False
        self._clear_more(frame, bit)
        return True

    def clear_young(self, frame: int) -> None:
        """The page's PTEs are gone from every mm: no mm sees it young."""
        if self.flags[frame] & YOUNG_MORE:
            del self.young_more[frame]
        self.flags[frame] &= ~YOUNG & 0xFF

    def clear_young_slot(self, frames: list[int], slot: int) -> None:
        """The mm of ``slot`` is gone (its task exited): its young bits on ``frames`` go with it."""
        flags = self.flags
        if slot < NR_FLAG_SLOTS:
            keep = ~YOUNG_BITS[slot] & 0xFF
            for frame in frames:
                flags[frame] &= keep
            return
        bit = 1 << (slot - NR_FLAG_SLOTS)
        more = self.young_more
        for frame in frames:
            if flags[frame] & YOUNG_MORE and more[frame] & bit:
                self._clear_more(frame, bit)

    def _clear_more(self, frame: int, bit: int) -> None:
        mask = self.young_more[frame] & ~bit
        if mask:
            self.young_more[frame] = mask
        else:
            del self.young_more[frame]
            self.flags[frame] &= ~YOUNG_MORE & 0xFF

    def young_slots(self, frame: int) -> list[int]:
        """The mm slots in which the page's PTE is young, lowest first."""
        flags = self.flags[frame]
        slots = [slot for slot, bit in enumerate(YOUNG_BITS) if flags & bit]
        if flags & YOUNG_MORE:
            mask = self.young_more[frame]
            slots += [NR_FLAG_SLOTS + n for n in range(mask.bit_length()) if mask >> n & 1]
        return slots

    # -- LRU ------------------------------------------------------------------

    def lru_add_tail(self, lru: Lru, frame: int) -> None:
        """Put the page at the tail of its cgroup's LRU.  Mirrors sgx_mark_page_reclaimable()."""
        tail = lru.tail
        self.prev[frame] = tail
        self.next[frame] = NIL
        if tail == NIL:
            lru.head = frame
            lru.owner.lru_became_nonempty()
        else:
            self.next[tail] = frame
        lru.tail = frame
        lru.size += 1
        self.flags[frame] |= ON_LRU

    def lru_del(self, lru: Lru, frame: int) -> None:
        """Take the page off its cgroup's LRU.  Mirrors sgx_unmark_page_reclaimable()."""
        prev = self.prev[frame]
        nxt = self.next[frame]
        if prev == NIL:
            lru.head = nxt
        else:
            self.next[prev] = nxt
        if nxt == NIL:
            lru.tail = prev
        else:
            self.prev[nxt] = prev
        lru.size -= 1
        self.flags[frame] &= ~ON_LRU
        if lru.size == 0:
            lru.owner.lru_became_empty()

    def lru_isolate(self, lru: Lru, count: int) -> list[int]:
        """Take up to ``count`` frames off the head of ``lru`` in one splice; returns them oldest first.

        Mirrors the isolation loop at the top of sgx_reclaim_pages().
        """
        nxt, flags = self.next, self.flags
        out: list[int] = []
        frame = lru.head
        for _ in range(min(count, lru.size)):
            out.append(frame)
            flags[frame] &= ~ON_LRU
            frame = nxt[frame]
        if not out:
            return out
        lru.head = frame
        if frame == NIL:
            lru.tail = NIL
        else:
            self.prev[frame] = NIL
        lru.size -= len(out)
        if lru.size == 0:
            lru.owner.lru_became_empty()
        return out

    def take_run(self, kind: PageKind, owner: int, first_index: int, cg: int, count: int) -> list[int]:
        """Take ``count`` free frames for pages first_index.. of ``owner``; returns them in order.

        Any error leaves every table as it was, as take() does.  No kernel counterpart: N of
        __sgx_alloc_epc_page() (take()) at once.
        """
        if not self.fast:
            return self._take_each(kind, owner, first_index, cg, count)
        free = self._free
        reuse = min(count, len(free))
        frames = free[len(free) - reuse :][::-1].tolist()  # as many pops
        start = len(self.flags)
        bump = count - reuse
        if start + bump > self.capacity_pages:
            raise AssertionError("EPC frames taken with none free")
        try:
            self._take_reused(frames, kind, owner, first_index, cg)
            if bump:
                index = first_index + reuse
                frames.extend(range(start, start + bump))
                self.owner.extend(array("i", [owner]) * bump)
                self.index.extend(array("i", range(index, index + bump)))
                self.cg.extend(array("i", [cg]) * bump)
                self.prev.extend(array("i", [NIL]) * bump)
                self.next.extend(array("i", [NIL]) * bump)
                self.flags.extend(bytes([kind]) * bump)
        except BaseException:
            self._truncate(start)
            for frame in frames[:reuse]:
                self.flags[frame] = PageKind.FREE
                self.owner[frame] = NIL
            raise
        del free[len(free) - reuse :]
        self.nr_free -= count
        return frames

    def _take_each(self, kind: PageKind, owner: int, first_index: int, cg: int, count: int) -> list[int]:
        """take_run() one take() at a time; an error gives back the frames taken."""
        frames: list[int] = []
        try:
            for index in range(first_index, first_index + count):
                frames.append(self.take(kind, owner, index, cg))
        except BaseException:
            for frame in reversed(frames):
                self.put(frame)
            raise
        return frames

    def _take_reused(self, frames: list[int], kind: PageKind, owner: int, first_index: int, cg: int) -> None:
        owners, indexes, cgs, flags = self.owner, self.index, self.cg, self.flags
        index = first_index
        for frame in frames:
            owners[frame] = owner
            indexes[frame] = index
            cgs[frame] = cg
            flags[frame] = kind
            index += 1

    def put_many(self, frames: list[int]) -> None:
        """Return frames (already off every LRU) to the free stack, in order.

        No kernel counterpart: N of put() at once.
        """
        if not self.fast:
            for frame in frames:
                self.put(frame)
            return
        flags, owner = self.flags, self.owner
        if self.young_more:
            for frame in frames:
                if flags[frame] & YOUNG_MORE:
                    del self.young_more[frame]
        for frame in frames:
            flags[frame] = PageKind.FREE
            owner[frame] = NIL
        self._free.extend(frames)
        self.nr_free += len(frames)

    def lru_add_tail_many(self, lru: Lru, frames: list[int]) -> None:
        """Append ``frames`` to the tail of ``lru`` in order.

        No kernel counterpart: N of sgx_mark_page_reclaimable() (lru_add_tail()) at once.
        """
        if not self.fast:
            for frame in frames:
                self.lru_add_tail(lru, frame)
            return
        if not frames:
            return
        prev, nxt, flags = self.prev, self.next, self.flags
        tail = lru.tail
        if tail == NIL:
            lru.head = frames[0]
        else:
            nxt[tail] = frames[0]
        for frame in frames:
            prev[frame] = tail
            flags[frame] |= ON_LRU
            if tail != NIL:
                nxt[tail] = frame
            tail = frame
        nxt[tail] = NIL
        was_empty = lru.size == 0
        lru.tail = tail
        lru.size += len(frames)
        if was_empty:
            lru.owner.lru_became_nonempty()

    def lru_frames(self, lru: Lru) -> list[int]:
        """The frames on ``lru`` from head to tail (for invariant checks and tests)."""
        out: list[int] = []
        frame = lru.head
        while frame != NIL and len(out) <= lru.size:
            out.append(frame)
            frame = self.next[frame]
        return out


def reclaimer_age(epc: Epc, frame: int, slots: list[int]) -> bool:
    """Whether the page is old (was not accessed since the last scan), from its young bits.

    ``slots``: the enclave's mms in mm-list order, newest first.  Each mm's PTE is tested
    and cleared in turn, and the walk stops at the first young one: the mms after it keep
    their bits, so a page touched through two mms survives two scans.  Mirrors
    sgx_reclaimer_age().
    """
    return not any(epc.test_and_clear_young(frame, slot) for slot in slots)  # any() stops at the first

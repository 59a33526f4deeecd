"""The EPCM's MODIFIED state of an enclave's pages (SGX2): EMODT (MODIFY_TYPES) changed their
type and the enclave has not EACCEPTed them yet.  Enclave.modified holds one while any page is."""

from __future__ import annotations


class Modified:
    """The pages of one enclave in the EPCM's MODIFIED state: EMODT (MODIFY_TYPES) changed
    their type and the enclave has not EACCEPTed them yet.

    An enclave keeps one only while some page is MODIFIED: a byte per page of the dense
    prefix as long as it was when a page was marked (``near``), a set for pages beyond
    it (``far``), so marking a whole heap costs a byte a page and nothing stays after.
    """

    __slots__ = ("near", "far", "count")

    def __init__(self) -> None:
        self.near = bytearray()
        self.far: set[int] = set()
        self.count = 0

    def __contains__(self, index: int) -> bool:
        return (index < len(self.near) and self.near[index] == 1) or index in self.far

    def add(self, index: int, dense_len: int) -> None:
        """Mark page ``index``; ``dense_len`` is the length of the enclave's dense prefix.

        After a MemoryError nothing changed.
        """
        if index in self:
            return
        if index < dense_len:
            if index >= len(self.near):
                self.near.extend(bytes(dense_len - len(self.near)))
            self.near[index] = 1
        else:
            self.far.add(index)
        self.count += 1

    def next(self, first: int, end: int) -> int:
        """The lowest marked index in first..end-1, or ``end`` when there is none."""
        near = self.near
        hit = near.find(1, first, min(end, len(near))) if first < len(near) else -1
        best = end if hit < 0 else hit
        for index in self.far:
            if first <= index < best:
                best = index
        return best

    def accept(self, first: int, end: int) -> None:
        """Unmark pages first..end-1."""
        near = self.near
        if first < len(near):
            stop = min(end, len(near))
            marked = near.count(1, first, stop)
            if marked:
                near[first:stop] = bytes(stop - first)
                self.count -= marked
        if self.far:
            gone = [index for index in self.far if first <= index < end]
            self.far.difference_update(gone)
            self.count -= len(gone)

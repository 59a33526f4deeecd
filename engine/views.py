"""Read-only views of the core for displays and reviewers: a cgroup's LRU, and the EPC frame map.

No kernel counterpart: the kernel shows neither (a reviewer reads them with a debugger).
Nothing here changes any state: no accessed bit is cleared, no page moves, no counter
counts, no event goes out.  Each costs what it lists, not what the host holds:

- ``lru_view`` walks the intrusive LRU from its nearer end to ``offset`` (O(offset),
  O(size - offset) from the tail), then lists ``limit`` pages; the cgroup's unreclaimable
  pages come from its enclaves' SECS and VA pages (O(enclaves + VA pages), a VA page per
  512 enclave pages) and the guests that hold pages charged to it (``Vepc.charged``; a
  guest all of whose pages are charged there is skipped to ``offset`` at C speed).
- ``frame_map`` reads the frame tables a step of STEP_FRAMES at a time: per cell a few
  C-level passes (bytes compared and counted), and a tally in Python only where a cell's
  used frames are charged to more than one cgroup.
"""

from __future__ import annotations

import errno
from array import array
from collections import Counter
from collections.abc import Generator, Iterable
from dataclasses import dataclass, field
from itertools import compress, islice

from engine.cgroup import Cgroup
from engine.epc import KIND_MASK, NR_FLAG_SLOTS, YOUNG, YOUNG_BITS, YOUNG_MORE, Epc
from engine.sgx import PageKind
from engine.state import HostState

KIND_NAMES = tuple(kind.name for kind in PageKind)  # by PageKind value: FREE, SECS, REG, TCS, TRIM, VA, VEPC
_KINDS = bytes(b & KIND_MASK for b in range(256))  # flags.translate(_KINDS): each frame's PageKind
_LOW_YOUNG = tuple(sum(1 << slot for slot, bit in enumerate(YOUNG_BITS) if b & bit) for b in range(256))

# What the next reclaim batch does with a page it isolates (reclaim._age_and_get_backing()).
ROTATE = "rotate"  # young in some mm: the batch clears one accessed bit and puts it back at the tail
WRITE = "write"  # old: the batch charges its backing and writes it out (EWB), unless that charge fails
DROP = "drop"  # its enclave is being released: taken off the list, not counted


@dataclass(slots=True)
class LruView:
    """A page of one cgroup's LRU, head (scanned next) to tail, and of its unreclaimable pages.

    ``pages``: (frame, owner enclave, page index, kind name, young, mark) from position
    ``offset`` on; ``young`` has bit n set when the page is young in the mm of slot n
    (``mms`` maps an enclave's slots to pids); ``mark`` is what the next batch on this LRU
    does with the page (ROTATE, WRITE, DROP), "" for a page it does not reach.
    ``batch``: how many of the next batch's pages (the host's first ``nr_to_scan``) it would
    rotate and write, wherever ``offset`` is.  ``unreclaimable``: (frame, owner, index,
    kind name) of its own SECS, VA and guest pages from ``unreclaimable_offset`` on, each
    enclave's SECS and VA pages in creation order, then each guest's pages in the order
    they were faulted; ``nr_unreclaimable`` counts them all.  ``next_cg``: where the
    cgroup's own reclaim cursor points (the next turn of a walk rooted here).
    """

    cgroup: str
    size: int
    offset: int
    pages: list[tuple[int, int, int, str, int, str]]
    batch: dict[str, int]
    nr_unreclaimable: int
    unreclaimable_offset: int
    unreclaimable: list[tuple[int, int, int, str]]
    mms: list[tuple[int, list[tuple[int, int]]]]  # (enclave, [(pid, slot), ...] in mm-list order), listed ones
    next_cg: str


def lru_view(state: HostState, path: str, offset: int, limit: int, unreclaimable_offset: int = 0) -> LruView:
    """The LRU of the live cgroup at ``path`` from ``offset``, at most ``limit`` pages, and its
    unreclaimable pages from ``unreclaimable_offset``, as many.  OSError(ENOENT) for no such
    cgroup, OSError(EINVAL) for a ``limit`` below 1 or a negative offset.  Changes nothing."""
    if limit < 1 or offset < 0 or unreclaimable_offset < 0:
        raise OSError(errno.EINVAL, "give offset >= 0 and limit >= 1")
    cg = state.tree.lookup(path)
    epc = state.epc
    frames = _lru_slice(epc, cg, offset, limit)
    nr_to_scan = state.nr_to_scan
    first_batch = frames[:nr_to_scan] if offset == 0 and limit >= nr_to_scan else _lru_slice(epc, cg, 0, nr_to_scan)
    marks = [_mark(state, frame) for frame in first_batch]
    flags, owners, indexes = epc.flags, epc.owner, epc.index
    pages = []
    for position, frame in enumerate(frames, offset):
        mark = marks[position] if position < len(marks) else ""
        kind = KIND_NAMES[flags[frame] & KIND_MASK]
        pages.append((frame, owners[frame], indexes[frame], kind, young_mask(epc, frame), mark))
    mms = []
    for eid in dict.fromkeys(owners[frame] for frame in frames):
        encl = state.enclaves[eid]
        mms.append((eid, [(pid, encl.mm_slot[pid]) for pid in encl.mms]))
    own = cg.misc_usage - sum(child.misc_usage for child in cg.children)
    return LruView(
        cg.path, cg.lru.size, offset, pages, {ROTATE: marks.count(ROTATE), WRITE: marks.count(WRITE)},
        own - cg.lru.size, unreclaimable_offset, _unreclaimable(state, cg, unreclaimable_offset, limit),
        mms, cg.next_cg.path,
    )  # fmt: skip


def young_mask(epc: Epc, frame: int) -> int:
    """The mm slots in which the page is young, as bits (bit n: slot n), as Epc keeps them."""
    flags = epc.flags[frame]
    mask = _LOW_YOUNG[flags]
    if flags & YOUNG_MORE:
        mask |= epc.young_more[frame] << NR_FLAG_SLOTS
    return mask


def _mark(state: HostState, frame: int) -> str:
    """What the next batch does with the page at ``frame``, by the rule of reclaim._age_and_get_backing()."""
    epc = state.epc
    if state.enclaves[epc.owner[frame]].dying:
        return DROP
    return ROTATE if epc.flags[frame] & YOUNG else WRITE


def _lru_slice(epc: Epc, cg: Cgroup, offset: int, limit: int) -> list[int]:
    """Frames ``offset``..``offset + limit - 1`` of ``cg``'s LRU (head first), walked from its nearer end."""
    lru = cg.lru
    if offset >= lru.size:
        return []
    nxt = epc.next
    if offset <= lru.size // 2:
        frame = lru.head
        for _ in range(offset):
            frame = nxt[frame]
    else:
        prev = epc.prev
        frame = lru.tail
        for _ in range(lru.size - 1 - offset):
            frame = prev[frame]
    out = []
    for _ in range(min(limit, lru.size - offset)):
        out.append(frame)
        frame = nxt[frame]
    return out


def _unreclaimable(state: HostState, cg: Cgroup, offset: int, limit: int) -> list[tuple[int, int, int, str]]:
    """``limit`` of ``cg``'s own pages that no LRU holds, from ``offset``: SECS and VA pages, then guests'."""
    epc = state.epc
    cgs = epc.cg
    cg_id = cg.id
    frames: list[int] = []
    skip = offset
    for encl in state.enclaves.values():
        for frame in (encl.secs_frame, *encl.va_frames):
            if frame >= 0 and cgs[frame] == cg_id:
                if skip:
                    skip -= 1
                else:
                    frames.append(frame)
                    if len(frames) == limit:
                        return _rows(epc, frames)
    for guest in state.vepcs.values():
        charged = guest.charged.get(cg_id, 0)
        if skip >= charged:
            skip -= charged  # none of its pages here, or all before offset
            continue
        if charged == guest.nr_present:  # every page of it is cg's: straight to the first one wanted
            frames += islice(guest.pages.values(), skip, skip + limit - len(frames))
            skip = 0
        else:
            for frame in guest.pages.values():
                if cgs[frame] == cg_id:
                    if skip:
                        skip -= 1
                    else:
                        frames.append(frame)
                        if len(frames) == limit:
                            break
        if len(frames) == limit:
            break
    return _rows(epc, frames)


def _rows(epc: Epc, frames: list[int]) -> list[tuple[int, int, int, str]]:
    flags, owners, indexes = epc.flags, epc.owner, epc.index
    return [(frame, owners[frame], indexes[frame], KIND_NAMES[flags[frame] & KIND_MASK]) for frame in frames]


# -- the EPC frame map ------------------------------------------------------------------------

STEP_FRAMES = 1 << 16  # frames a step of frame_map_steps() reads (about a millisecond at most)


@dataclass(slots=True)
class FrameMap:
    """``count`` cells of ``group`` frames each from frame ``first`` (the last one may be shorter).

    Per cell: ``free`` frames; ``owner``, the index in ``cgroups`` (paths) of the cgroup
    most of its used frames are charged to (-1: all free); ``kind``, the PageKind value
    most of its used frames hold (0, FREE: all free); ``counts``, with ``group`` > 1 only,
    its used frames per kind, (SECS, REG, TCS, TRIM, VA, VEPC).  ``dying``: the indexes in
    ``cgroups`` of removed cgroups that still hold frames.  Ties go to the lower cgroup id
    and the lower kind.  Treat it as read-only: cells of one kind share their ``counts``.
    """

    first: int
    group: int
    count: int
    frames: int  # frames covered: first .. first + frames - 1
    capacity: int  # frames of the EPC
    cgroups: list[str] = field(default_factory=list)
    dying: list[int] = field(default_factory=list)
    owner: list[int] = field(default_factory=list)
    kind: list[int] = field(default_factory=list)
    free: list[int] = field(default_factory=list)
    counts: list[tuple[int, ...]] = field(default_factory=list)


def frame_map(state: HostState, first: int, count: int, group: int) -> FrameMap:
    """The frame map of ``count`` cells of ``group`` frames from frame ``first``, clipped at the
    end of the EPC.  OSError(EINVAL) for ``first`` past the EPC, or ``count`` or ``group``
    below 1.  Changes nothing."""
    steps = frame_map_steps(state, first, count, group)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


def frame_map_steps(
    state: HostState, first: int, count: int, group: int, step_frames: int = STEP_FRAMES
) -> Generator[None, None, FrameMap]:
    """frame_map() a step at a time: it yields after each ``step_frames`` frames (whole cells, at
    least one) and returns the FrameMap.  A cell shows the frames as they were when its step
    ran.  Raises as frame_map() before the first step."""
    capacity = state.epc.capacity_pages
    if count < 1 or group < 1:
        raise OSError(errno.EINVAL, "give count >= 1 and group >= 1")
    if not 0 <= first < capacity:
        last = f"give first from 0 to {capacity - 1}" if capacity else "this host has no EPC"
        raise OSError(errno.EINVAL, f"frame {first} is past the EPC's {capacity} frames: {last}")
    return _frame_map_steps(state, first, min(capacity, first + count * group), group, step_frames)


def _frame_map_steps(
    state: HostState, first: int, end: int, group: int, step_frames: int
) -> Generator[None, None, FrameMap]:
    out = FrameMap(first, group, 0, end - first, state.epc.capacity_pages)
    table = _Owners(state, out)
    chunk = max(1, step_frames // group) * group
    for start in range(first, end, chunk):
        if start > first:
            yield
        if group == 1:
            _single_frames(state, table, out, start, min(end, start + chunk))
        else:
            _cells(state, table, out, start, min(end, start + chunk), group)
    out.count = len(out.free)
    return out


def _tables(state: HostState, start: int, end: int) -> tuple[bytes | bytearray, array[int]]:
    """The kinds (a byte a frame) and cgroup ids of frames start..end-1 that were ever used
    (frames past len(flags) never were: free)."""
    epc = state.epc
    touched = min(end, len(epc.flags))
    if start >= touched:
        return b"", array("i")
    return epc.flags[start:touched].translate(_KINDS), epc.cg[start:touched]


def _single_frames(state: HostState, table: _Owners, out: FrameMap, start: int, end: int) -> None:
    """Cells of one frame each: its kind, and its cgroup unless it is free."""
    kinds, cgs = _tables(state, start, end)
    kind = list(kinds) + [0] * (end - start - len(kinds))
    out.kind += kind
    out.free += [0 if k else 1 for k in kind]
    at = {cg_id: table.index(cg_id) for cg_id in dict.fromkeys(compress(cgs, kinds))}
    out.owner += [at[cg_id] if k else -1 for cg_id, k in zip(cgs, kinds, strict=True)]
    out.owner += [-1] * (end - start - len(kinds))


def _cells(state: HostState, table: _Owners, out: FrameMap, start: int, end: int, group: int) -> None:
    """Cells of ``group`` frames: a few C-level passes each (bytes compared and counted), a tally
    in Python only for a cell whose used frames are charged to more than one cgroup."""
    kinds, cgs = _tables(state, start, end)
    cg_bytes = cgs.tobytes()  # 4 bytes a frame: a run of one owner compares at C speed
    width = cgs.itemsize
    one_kind = [tuple(group if n == k else 0 for n in range(1, 7)) for k in range(7)]
    owner, kind, free, counts = out.owner, out.kind, out.free, out.counts
    for at in range(0, end - start, group):
        size = min(group, end - start - at)
        cell = kinds[at : at + size]
        if len(cell) == size and cell == cell[:1] * size:  # one kind throughout: most cells
            k = cell[0]
            free.append(0 if k else size)
            kind.append(k)
            counts.append(one_kind[k] if size == group else tuple(size if n == k else 0 for n in range(1, 7)))
            if not k:
                owner.append(-1)
                continue
        else:
            nfree = size - len(cell) + cell.count(0)
            free.append(nfree)
            if nfree == size:
                owner.append(-1)
                kind.append(0)
                counts.append(one_kind[0])
                continue
            per_kind = tuple(cell.count(k) for k in range(1, 7))
            counts.append(per_kind)
            kind.append(per_kind.index(max(per_kind)) + 1)
        ids = cg_bytes[at * width : (at + len(cell)) * width]
        if ids == ids[:width] * len(cell):  # one cgroup's throughout (a free frame keeps its last one)
            owner.append(table.index(cgs[at]))
        else:
            owner.append(table.index(_main_owner(compress(cgs[at : at + len(cell)], cell))))


def _main_owner(ids: Iterable[int]) -> int:
    """The cgroup id most of ``ids`` are (the lowest of those that tie)."""
    tally = Counter(ids)
    top = max(tally.values())
    return min(cg_id for cg_id, n in tally.items() if n == top)


class _Owners:
    """The cgroups a frame map names, in order of first appearance, each once (by object: an id
    freed and reused between two steps names another cgroup)."""

    __slots__ = ("by_id", "at", "out")

    def __init__(self, state: HostState, out: FrameMap) -> None:
        self.by_id = state.tree.by_id
        self.at: dict[Cgroup, int] = {}
        self.out = out

    def index(self, cg_id: int) -> int:
        cg = self.by_id[cg_id]
        assert cg is not None, f"a used frame charged to freed cgroup {cg_id}"
        at = self.at.get(cg)
        if at is None:
            at = self.at[cg] = len(self.out.cgroups)
            self.out.cgroups.append(cg.path)
            if cg.dying:
                self.out.dying.append(at)
        return at

"""Every accounting invariant of the host, checked from scratch, in slices.

``check_steps(host)`` first copies what it needs at once (engine.check_copy), then checks
the copy, yielding after every STEP items of work (pages, frames, cgroups), so a driver
can serve other requests in between; it raises InvariantError on the first broken
invariant.  ``check_host`` runs it to the end.  The frames, LRUs, cgroups and backing
owners are checked here, the enclaves and vEPC instances in engine.check_enclaves.
"""

from __future__ import annotations

from collections.abc import Iterator

from engine.check_copy import STEP, CgroupCopy, InvariantError, Snapshot, Tally, require, snapshot
from engine.check_enclaves import check_enclave, check_vepcs, check_young_more
from engine.epc import KIND_MASK, NIL, ON_LRU
from engine.sgx import PageKind
from engine.state import HostState

__all__ = ["STEP", "InvariantError", "check_host", "check_steps"]

_CGROUPS_PER_STEP = STEP // 32  # a cgroup is some 30 items of work
_KINDS = bytes(b & KIND_MASK for b in range(256))  # flags.translate(_KINDS): the PageKind of each frame
_ON_LRU = bytes(1 if b & ON_LRU else 0 for b in range(256))
_FREE = PageKind.FREE


def check_host(host: HostState) -> None:
    """Verify every invariant at once; InvariantError on the first broken one."""
    for _ in check_steps(host):
        pass


def check_steps(host: HostState) -> Iterator[None]:
    """The check of ``host`` as it is now, in slices: copies the state at once, then checks
    the copy, yielding every STEP items; InvariantError on the first broken invariant."""
    return _check(snapshot(host))


# -- the checks -----------------------------------------------------------------------


def _check(snap: Snapshot) -> Iterator[None]:
    yield from _check_frames(snap)
    tally = Tally(len(snap.live), len(snap.backing_owners))
    for encl in snap.enclaves:
        yield from check_enclave(snap, encl, tally)
    yield from check_young_more(snap)
    yield from check_vepcs(snap, tally)
    nr_used = len(snap.flags) - snap.flags.translate(_KINDS).count(_FREE)
    referenced = tally.referenced
    require(referenced == nr_used, f"{referenced} frames referenced by enclaves and vEPC, {nr_used} in use")
    yield from _check_lrus(snap)
    yield from _check_cgroups(snap, tally, nr_used)


def _check_frames(snap: Snapshot) -> Iterator[None]:
    """The free stack and the frame counts."""
    flags, free = snap.flags, snap.free
    nr_frames = len(flags)
    require(len(set(free)) == len(free), "a frame is on the free stack twice")
    for start in range(0, len(free), STEP):
        chunk = free[start : start + STEP]
        require(all(0 <= f < nr_frames and flags[f] == _FREE for f in chunk), "a frame on the free stack is in use")
        yield
    nr_used = nr_frames - flags.translate(_KINDS).count(_FREE)
    require(
        nr_used + len(free) == nr_frames and nr_frames <= snap.capacity_pages,
        f"free + in-use frames != capacity: {nr_used} + {snap.nr_free} vs {snap.capacity_pages}",
    )
    require(snap.nr_free == snap.capacity_pages - nr_used, "the free-frame count drifted")


def _check_lrus(snap: Snapshot) -> Iterator[None]:
    """Each LRU's links, and every ON_LRU frame on exactly its cgroup's list."""
    nxt, prev, cgs, flags = snap.next, snap.prev, snap.cg, snap.flags
    seen = bytearray(len(flags))
    walked = 0
    for visited, cg in enumerate(snap.cgroups, 1):
        head, tail, size = cg.lru
        frame, last, count = head, NIL, 0
        while frame != NIL and count <= size:
            require(0 <= frame < len(flags), f"{cg.path}: LRU link to frame {frame}, outside the EPC")
            require(not seen[frame], f"frame {frame} on two LRUs")
            seen[frame] = 1
            require(prev[frame] == last, f"{cg.path}: broken LRU back link at frame {frame}")
            require(cgs[frame] == cg.id, f"frame {frame} on {cg.path}'s LRU but charged elsewhere")
            require(bool(flags[frame] & ON_LRU), f"frame {frame} on {cg.path}'s LRU without its ON_LRU flag")
            last, frame = frame, nxt[frame]
            count += 1
            if count % STEP == 0:
                yield
        require(count == size, f"{cg.path}: LRU size {size} but {count} linked")
        require(tail == last, f"{cg.path}: LRU tail is wrong")
        walked += count
        if visited % _CGROUPS_PER_STEP == 0:
            yield
    require(walked == flags.translate(_ON_LRU).count(1), "an ON_LRU frame is on no LRU")
    yield


def _check_cgroups(snap: Snapshot, tally: Tally, nr_used: int) -> Iterator[None]:
    """Hierarchical misc and memory usage, events, cursors and tasks of every cgroup."""
    by_id = {cg.id: cg for cg in snap.cgroups}
    own_mem = [0] * len(snap.live)  # backing pages charged to each memory cgroup id
    paid: dict[int, int] = {}  # payer -> backing pages
    for (memcg_id, payer), pages in zip(snap.backing_owners, tally.owner_pages, strict=True):
        own_mem[memcg_id] += pages
        if payer and pages:
            paid[payer] = paid.get(payer, 0) + pages
    require(paid == snap.task_mem, "per-task backing accounting drifted")
    _check_backing_owners(snap, tally)
    require(snap.nr_cgroups == len(snap.cgroups) - 1, "the cgroup count drifted")
    for n, cg in enumerate(reversed(snap.cgroups), 1):
        _check_cgroup(snap, tally.own, own_mem, by_id, cg)
        if n % _CGROUPS_PER_STEP == 0:
            yield
    require(sum(len(cg.procs) for cg in snap.cgroups) == len(snap.tasks), "cgroup.procs and the task table differ")
    require(snap.moved <= snap.tasks.keys(), "a task placed by a write is not in the task table")
    root = snap.cgroups[0]
    require(root.misc[0] == nr_used, "root misc usage != frames in use")
    require(root.misc[0] <= snap.capacity_pages, "usage above capacity")
    yield


def _check_cgroup(
    snap: Snapshot, own: list[int], own_mem: list[int], by_id: dict[int, CgroupCopy], cg: CgroupCopy
) -> None:
    kids = [by_id[c] for c in cg.children]
    usage, peak, events, events_local, events_freed = cg.misc
    below = own[cg.id] + sum(c.misc[0] for c in kids)
    require(usage == below, f"{cg.path}: misc usage {usage} != own + children {below}")
    mem = own_mem[cg.id] + sum(c.mem[0] for c in kids)
    require(cg.mem[0] == mem, f"{cg.path}: memory usage {cg.mem[0]} != backing charged {mem}")
    require(peak >= usage, f"{cg.path}: misc.peak below misc.current")
    require(cg.mem[1] >= cg.mem[0], f"{cg.path}: memory.peak below memory.current")
    # a freed child's events stay counted in its ancestors
    if cg.parent == -1:  # misc_cg_event() counts no hierarchical event at root
        require(events == 0, "root counts hierarchical misc events")
    else:
        require(events == events_local + events_freed + sum(c.misc[2] for c in kids), f"{cg.path}: misc.events sum")
    if cg.parent != -1:
        hierarchical, local, freed = cg.mem_events
        for i, count in enumerate(hierarchical):
            beneath = local[i] + freed[i] + sum(c.mem_events[0][i] for c in kids)
            require(count == beneath, f"{cg.path}: memory.events is not the sum of local events beneath")
    require(cg.work_queued == (cg.id in snap.work), f"{cg.path}: work_queued disagrees with the queue")
    require(cg.cursor != -1, f"{cg.path}: reclaim cursor on a freed cgroup")
    level = cg.cursor
    while level != -1 and level != cg.id:
        level = by_id[level].parent
    require(level == cg.id, f"{cg.path}: reclaim cursor outside its subtree")
    for pid in cg.procs:
        require(snap.tasks.get(pid) == cg.id, f"{cg.path}: task {pid} listed but placed elsewhere")
    # dying cgroups included: every reclaim walk sees an offline cgroup's LRU
    nonempty = sum(c.nonempty_lrus for c in kids) + (cg.lru[2] > 0)
    require(cg.nonempty_lrus == nonempty, f"{cg.path}: non-empty LRU count drifted")
    require(not cg.dying or bool(usage or cg.mem[0] or kids), f"{cg.path}: dying but holds nothing")


def _check_backing_owners(snap: Snapshot, tally: Tally) -> None:
    """Each backing owner id counts the backing pages charged under it; an id in use is
    registered under its own (memory cgroup, payer), and only a free one is not."""
    require(snap.backing_refs == tally.owner_pages, "backing pages per owner id drifted")
    registered = set(snap.owner_ids.values())
    free = set(snap.free_owner_ids)
    require(len(registered) == len(snap.owner_ids), "two backing owners share an id")
    require(len(free) == len(snap.free_owner_ids) and not free & registered, "a backing owner id is free twice")
    require(len(registered) + len(free) == len(snap.backing_owners), "a backing owner id is lost")
    for owner_id in registered:
        key = snap.backing_owners[owner_id]
        memcg_id = key[0]
        require(snap.owner_ids[key] == owner_id, f"backing owner {owner_id} is registered under another key")
        require(not snap.backing_refs[owner_id] or snap.live[memcg_id] == 1, f"backing of a freed cgroup {memcg_id}")
    require(all(not snap.backing_refs[i] for i in free), "a free backing owner id still has pages")

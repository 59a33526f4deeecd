"""Every accounting invariant of the host, checked from scratch (O(pages); for tests)."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from engine.enclave import ABSENT, PCMD_SHIFT, SWAPPED, VA_SHIFT, Enclave, pcmd_fields, swap_fields
from engine.epc import ACCESSED, KIND_MASK, NIL, ON_LRU
from engine.sgx import RECLAIMABLE_KINDS, SGX_VA_SLOT_COUNT, PageKind

if TYPE_CHECKING:
    from engine.host import Host


class InvariantError(AssertionError):
    pass


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise InvariantError(message)


def check_host(host: Host) -> None:
    epc = host.epc
    tree = host.tree
    nr_frames = len(epc.flags)
    free = epc.free_frames()
    _require(len(set(free)) == len(free), "a frame is on the free stack twice")
    _require(all(epc.flags[f] == PageKind.FREE for f in free), "a frame on the free stack is in use")
    used = [f for f in range(nr_frames) if epc.flags[f] & KIND_MASK != PageKind.FREE]
    _require(
        len(used) + len(free) + (epc.capacity_pages - nr_frames) == epc.capacity_pages,
        f"free + in-use frames != capacity: {len(used)} + {epc.nr_free} vs {epc.capacity_pages}",
    )
    _require(epc.nr_free == epc.capacity_pages - len(used), "the free-frame count drifted")

    # Every used frame belongs to exactly the page that names it.
    owners: Counter[tuple[int, int, int]] = Counter()
    for frame in used:
        kind = epc.flags[frame] & KIND_MASK
        owner = epc.owner[frame]
        if kind == PageKind.VEPC:
            vepc = host.vepcs.get(owner)
            _require(vepc is not None and vepc.pages.get(epc.index[frame]) == frame, f"stray vEPC frame {frame}")
        else:
            encl = host.enclaves.get(owner)
            _require(encl is not None, f"frame {frame} belongs to no enclave")
            assert encl is not None
            if kind == PageKind.SECS:
                _require(encl.secs_frame == frame, f"frame {frame} is not enclave {owner}'s SECS")
            elif kind == PageKind.VA:
                _require(encl.va_frames[epc.index[frame]] == frame, f"frame {frame} is not a VA page of {owner}")
            else:
                _require(encl.page(epc.index[frame]) == frame, f"frame {frame} is not page {epc.index[frame]}")
                _require(encl.types[epc.index[frame]] == kind, f"frame {frame} has the wrong page type")
        owners[(owner, kind, epc.index[frame])] += 1
        on_lru = bool(epc.flags[frame] & ON_LRU)
        dropped = kind in RECLAIMABLE_KINDS and host.enclaves[owner].dying  # the reclaimer let it go
        _require(on_lru == (kind in RECLAIMABLE_KINDS) or dropped, f"frame {frame} ({PageKind(kind).name}) LRU flag")
        _require(not epc.flags[frame] & ACCESSED or kind in RECLAIMABLE_KINDS, f"accessed bit on frame {frame}")
        _require(tree.by_id[epc.cg[frame]] is not None, f"frame {frame} charged to a freed cgroup")
    _require(max(owners.values(), default=1) == 1, "two frames hold the same page")
    referenced = sum(
        sum(1 for f in e.pages if f >= 0) + (e.secs_frame >= 0) + sum(1 for f in e.va_frames if f >= 0)
        for e in host.enclaves.values()
    ) + sum(len(v.pages) for v in host.vepcs.values())
    _require(referenced == len(used), f"{referenced} frames referenced by enclaves and vEPC, {len(used)} in use")
    for vepc in host.vepcs.values():
        _require(vepc.nr_present == len(vepc.pages), f"vEPC {vepc.id}: present count drifted")

    # LRUs: each reclaimable frame on exactly its cgroup's list, links consistent.
    seen: set[int] = set()
    for cg in tree.all():
        lru = cg.lru
        frames = epc.lru_frames(lru)
        _require(len(frames) == lru.size, f"{cg.path}: LRU size {lru.size} but {len(frames)} linked")
        prev = NIL
        for frame in frames:
            _require(frame not in seen, f"frame {frame} on two LRUs")
            seen.add(frame)
            _require(epc.prev[frame] == prev, f"{cg.path}: broken LRU back link at frame {frame}")
            _require(epc.cg[frame] == cg.id, f"frame {frame} on {cg.path}'s LRU but charged elsewhere")
            prev = frame
        _require(lru.tail == prev, f"{cg.path}: LRU tail is wrong")
    _require(seen == {f for f in used if epc.flags[f] & ON_LRU}, "an ON_LRU frame is on no LRU")

    # Hierarchical misc usage, events and memory usage.
    own = Counter(epc.cg[f] for f in used)
    own_mem: Counter[int] = Counter()
    paid: Counter[int] = Counter()
    for encl in host.enclaves.values():
        charged = [swap_fields(e)[1] for e in _entries(encl).values()]
        for pcmd in encl.pcmd.values():
            owner_id, users = pcmd_fields(pcmd)
            _require(users > 0, f"enclave {encl.id}: an empty PCMD page is still charged")
            charged.append(owner_id)
        for owner_id in charged:
            memcg_cg, payer = host.backing_owners[owner_id]
            own_mem[memcg_cg.id] += 1
            if payer:
                paid[payer] += 1
    _require(dict(paid) == host.task_mem, "per-task backing accounting drifted")
    for cg in reversed(tree.all()):
        kids = cg.children
        usage = own[cg.id] + sum(c.misc_usage for c in kids)
        _require(cg.misc_usage == usage, f"{cg.path}: misc usage {cg.misc_usage} != own + children {usage}")
        mem = own_mem[cg.id] + sum(c.mem_usage for c in kids)
        _require(cg.mem_usage == mem, f"{cg.path}: memory usage {cg.mem_usage} != backing charged {mem}")
        _require(cg.misc_peak >= cg.misc_usage, f"{cg.path}: misc.peak below misc.current")
        _require(cg.mem_peak >= cg.mem_usage, f"{cg.path}: memory.peak below memory.current")
        events = cg.misc_events_local + sum(c.misc_events for c in kids)
        events += cg.misc_events_freed  # a freed child's events stay counted in its ancestors
        _require(cg.misc_events == events, f"{cg.path}: misc.events is not the sum of local events beneath")
        if cg.parent is not None:
            for i, count in enumerate(cg.mem_events):
                below = cg.mem_events_local[i] + cg.mem_events_freed[i] + sum(c.mem_events[i] for c in kids)
                _require(count == below, f"{cg.path}: memory.events is not the sum of local events beneath")
        _require(cg.work_queued == (cg.id in host.work), f"{cg.path}: work_queued disagrees with the queue")
        if not cg.dying:
            cursor = cg.next_cg
            _require(tree.by_id[cursor.id] is cursor, f"{cg.path}: reclaim cursor on a freed cgroup")
            _require(cg in cursor.ancestors(), f"{cg.path}: reclaim cursor outside its subtree")
        for pid in cg.procs:
            _require(tree.tasks.get(pid) is cg, f"{cg.path}: task {pid} listed but placed elsewhere")
        live_lrus = sum(c.nonempty_lrus for c in kids if not c.dying) + (cg.lru.size > 0 and not cg.dying)
        _require(cg.dying or cg.nonempty_lrus == live_lrus, f"{cg.path}: non-empty LRU count drifted")
        _require(not cg.dying or bool(cg.misc_usage or cg.mem_usage or kids), f"{cg.path}: dying but holds nothing")
    _require(sum(len(cg.procs) for cg in tree.all()) == len(tree.tasks), "cgroup.procs and the task table differ")
    _require(tree.root.misc_usage == len(used), "root misc usage != frames in use")
    _require(tree.root.misc_usage <= host.capacity_pages, "usage above capacity")

    for encl in host.enclaves.values():
        _check_enclave(host, encl)


def _entries(encl: Enclave) -> dict[int, int]:
    """Backing index -> swap entry, for every page written out (the SECS at secs_index)."""
    out = {i: encl.pages[i] for i in encl.swapped_indexes()}
    if encl.secs_frame <= SWAPPED:
        out[encl.secs_index] = encl.secs_frame
    return out


def _check_enclave(host: Host, encl: Enclave) -> None:
    resident = [i for i, f in enumerate(encl.pages) if f >= 0]
    swapped = encl.swapped_indexes()
    entries = _entries(encl)
    name = f"enclave {encl.id}"
    _require(encl.secs_child_cnt == len(resident), f"{name}: secs_child_cnt {encl.secs_child_cnt} != {len(resident)}")
    _require(encl.nr_swapped == len(entries), f"{name}: {encl.nr_swapped} counted swapped, {len(entries)} found")
    if encl.secs_frame <= SWAPPED:
        _require(not resident and encl.initialized, f"{name}: SECS swapped with children resident or before EINIT")
    else:
        _require(encl.secs_frame >= 0, f"{name}: SECS neither resident nor swapped")
    in_use = {
        ordinal << VA_SHIFT | slot for ordinal in range(len(encl.va_frames)) for slot in encl.va_slots_in_use(ordinal)
    }
    taken = [swap_fields(e)[0] for e in entries.values()]
    _require(len(set(taken)) == len(taken), f"{name}: two pages share a VA slot")
    _require(set(taken) == in_use, f"{name}: VA slots in use differ from the pages swapped out")
    for ordinal in range(len(encl.va_frames)):
        used = len(encl.va_slots_in_use(ordinal))
        _require(encl.va_used[ordinal] == used, f"{name}: VA page {ordinal} counts {encl.va_used[ordinal]} != {used}")
    _require(sorted(encl.va_order()) == list(range(len(encl.va_frames))), f"{name}: VA list broken")
    _require(len(encl.va_frames) * SGX_VA_SLOT_COUNT >= encl.page_cnt, f"{name}: too few VA pages")
    _require(encl.page_cnt == 1 + len(resident) + len(swapped), f"{name}: page_cnt {encl.page_cnt} drifted")
    for index in resident + swapped:
        _require(encl.types[index] != PageKind.FREE, f"{name}: page {index} has no type")
    _require(all(encl.types[i] == PageKind.FREE for i, f in enumerate(encl.pages) if f == ABSENT), f"{name}: type")
    pcmd_users = Counter(i >> PCMD_SHIFT for i in entries)
    _require(pcmd_users == Counter({k: pcmd_fields(v)[1] for k, v in encl.pcmd.items()}), f"{name}: PCMD users")

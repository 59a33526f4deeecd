"""Backing store: swap entries, PCMD pages and their memory-cgroup charges (mirrors the backing
helpers of sgx/encl.c).

A page written out by EWB keeps, in its page-table entry, a *swap entry*: which VA slot
holds its version and which *backing owner* pays for its backing page.  A backing owner
is a (memory cgroup, paying task) pair interned under a small id (at most OWNER_MASK + 1
at once); the 32 pages that share a PCMD page share one charge for it, paid by the owner
of the page that brought it.  Charges go to the memory controller (engine.memcg); one
above memory.max runs the OOM killer and fails.
"""

from __future__ import annotations

from collections.abc import Sequence

from engine import memcg
from engine.cgroup import Cgroup
from engine.enclave import SWAPPED, Enclave
from engine.sgx import SGX_PCMD_PER_PAGE
from engine.state import HostState

OWNER_BITS = 24  # backing owners (memory cgroup, payer) pairs a host can have
OWNER_MASK = (1 << OWNER_BITS) - 1
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


# -- backing owners -------------------------------------------------------------------


def owner_id(state: HostState, memcg_cg: Cgroup, payer: int) -> int:
    """The small id that swap entries use for (memory cgroup, paying pid); -1 when all
    OWNER_MASK + 1 ids are charged (the backing charge then fails as memory.max would).

    No kernel counterpart: the kernel's shmem page knows its memcg; a swap entry here holds
    the id instead.
    """
    key = (memcg_cg, payer)
    found = state.backing_owner_ids.get(key)
    if found is not None:
        return found
    if state.free_owner_ids:
        new = state.free_owner_ids.pop()
        state.backing_owners[new] = key
    elif len(state.backing_owners) <= OWNER_MASK:
        new = len(state.backing_owners)
        state.backing_owners.append(key)
        state.backing_refs.append(0)
    else:
        return -1
    state.backing_owner_ids[key] = new
    return new


def owner_put(state: HostState, owner: int) -> None:
    """Free id ``owner`` for reuse if no backing page is charged under it any more."""
    if owner >= 0 and not state.backing_refs[owner]:
        key = state.backing_owners[owner]
        if state.backing_owner_ids.get(key) == owner:
            del state.backing_owner_ids[key]
            state.free_owner_ids.append(owner)


# -- charge and uncharge ----------------------------------------------------------------


def alloc_backing(state: HostState, encl: Enclave, index: int, owner: int) -> bool:
    """Charge the backing page of ``index`` (and its PCMD page, if new) to backing owner ``owner``.

    False when memory.max refused (the OOM killer ran).  Mirrors sgx_encl_alloc_backing()
    with the V17 memcg choice made by the caller.
    """
    memcg_cg, payer = state.backing_owners[owner]
    pcmd_no = index >> PCMD_SHIFT
    new_pcmd = pcmd_no not in encl.pcmd
    pages = 2 if new_pcmd else 1
    over = memcg.try_charge(memcg_cg, pages)
    if over is not None:
        memcg.out_of_memory(state, over)
        return False
    if new_pcmd:
        encl.pcmd[pcmd_no] = owner << PCMD_USERS_BITS
    state.backing_refs[owner] += pages
    if payer:
        task_mem = state.task_mem
        task_mem[payer] = task_mem.get(payer, 0) + pages
    return True


def free_backing_page(state: HostState, encl: Enclave, index: int, entry: int) -> int:
    """Drop the backing of page ``index`` (swap ``entry``), and its PCMD page when that
    empties; returns the VA slot id the page held.  Used by ELDU (truncate after the
    load) and by release.  Mirrors sgx_encl_truncate_backing_page() and the PCMD
    truncation of __sgx_encl_eldu().
    """
    slot_id, owner = swap_fields(entry)
    pcmd = encl.pcmd
    pcmd_no = index >> PCMD_SHIFT
    value = pcmd[pcmd_no] - 1
    encl.nr_swapped -= 1
    if value & PCMD_USERS_MASK:
        pcmd[pcmd_no] = value
        uncharge_backing(state, owner, 1)
        return slot_id
    del pcmd[pcmd_no]  # its last entry: the PCMD page goes too
    pcmd_owner = value >> PCMD_USERS_BITS
    if pcmd_owner == owner:
        uncharge_backing(state, owner, 2)
    else:
        uncharge_backing(state, owner, 1)
        uncharge_backing(state, pcmd_owner, 1)
    return slot_id


def free_backing_run(state: HostState, encl: Enclave, first_index: int, entries: Sequence[int]) -> list[int]:
    """free_backing_page() for pages first_index.. at once; returns their VA slot ids.

    No kernel counterpart: N of free_backing_page(), the memory cgroup uncharges summed per
    backing owner first (the same counts).
    """
    if not state.fast_paths:
        return [free_backing_page(state, encl, index, entry) for index, entry in enumerate(entries, first_index)]
    slot_ids: list[int] = []
    uncharges: dict[int, int] = {}
    pcmd = encl.pcmd
    for index, entry in enumerate(entries, first_index):
        payload = SWAPPED - entry  # swap_fields(), inlined for speed
        slot_ids.append(payload >> OWNER_BITS)
        owner = payload & OWNER_MASK
        uncharges[owner] = uncharges.get(owner, 0) + 1
        pcmd_no = index >> PCMD_SHIFT
        value = pcmd[pcmd_no] - 1
        if value & PCMD_USERS_MASK:
            pcmd[pcmd_no] = value
        else:  # its last entry: the PCMD page goes too
            del pcmd[pcmd_no]
            owner = value >> PCMD_USERS_BITS
            uncharges[owner] = uncharges.get(owner, 0) + 1
    encl.nr_swapped -= len(entries)
    for owner, pages in uncharges.items():
        uncharge_backing(state, owner, pages)
    return slot_ids


def uncharge_backing(state: HostState, owner: int, pages: int) -> None:
    """``pages`` backing pages of owner ``owner`` are gone: its memory cgroup and payer are uncharged.

    Mirrors the memcg uncharge of a truncated shmem page (mem_cgroup_uncharge()).
    """
    cg, payer = state.backing_owners[owner]
    memcg.uncharge(cg, pages)
    state.backing_refs[owner] -= pages
    if not state.backing_refs[owner]:
        owner_put(state, owner)
    task_mem = state.task_mem
    if payer in task_mem:
        left = task_mem[payer] - pages
        if left:
            task_mem[payer] = left
        else:
            del task_mem[payer]
    if cg.dying:
        state.release_dying(cg)


class BackingRun:
    """The backing charges of one reclaim batch: pages that fit under every memory.max are
    charged together when the payer changes (the same counters, no events).

    No kernel counterpart: N of sgx_encl_alloc_backing() that memcg.room() said fit.  With
    the host's fast paths off, ``room`` stays 0 and each page takes alloc_backing().
    """

    __slots__ = ("state", "memcg_cg", "payer", "owner", "room", "pending")

    def __init__(self, state: HostState) -> None:
        self.state = state
        self.memcg_cg = state.tree.root
        self.payer = -1
        self.owner = -1
        self.room = 0  # pages that may still be charged at once (callers may take one inline)
        self.pending = 0

    def alloc(self, encl: Enclave, index: int, payer: int) -> int:
        """Charge page ``index``'s backing (and a new PCMD page) for ``payer``.

        Returns the backing owner id, or -1 when memory.max refused (or no owner id is left).
        """
        state = self.state
        if payer != self.payer:
            self.put()
            tree = state.tree
            self.memcg_cg = tree.task_cgroup(payer).memory_css() if payer else tree.root
            self.payer = payer
            self.owner = owner_id(state, self.memcg_cg, payer)
            self.room = self._room()
        if self.owner < 0:
            return -1
        pcmd_no = index >> PCMD_SHIFT
        new_pcmd = pcmd_no not in encl.pcmd
        need = 2 if new_pcmd else 1
        if need <= self.room:
            self.room -= need
            self.pending += need
            if new_pcmd:
                encl.pcmd[pcmd_no] = self.owner << PCMD_USERS_BITS
            return self.owner
        self.flush()
        ok = alloc_backing(state, encl, index, self.owner)
        self.room = self._room()
        return self.owner if ok else -1

    def _room(self) -> int:
        if self.owner < 0 or not self.state.fast_paths:
            return 0
        return memcg.room(self.memcg_cg)

    def put(self) -> None:
        """Charge what is pending, and let go of the owner id if nothing is charged under it."""
        self.flush()
        owner_put(self.state, self.owner)

    def flush(self) -> None:
        pending = self.pending
        if pending:
            state = self.state
            state.backing_refs[self.owner] += pending
            memcg.charge(self.memcg_cg, pending)
            if self.payer:
                task_mem = state.task_mem
                task_mem[self.payer] = task_mem.get(self.payer, 0) + pending
            self.pending = 0

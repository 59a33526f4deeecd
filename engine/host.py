"""The emulated SGX host: its driver API (ioctls, faults, cgroup files) over the core.

``Host`` owns every piece of state (EPC frames, cgroup tree, enclaves, vEPC, backing
accounting, the async work queue) and offers the calls a process would make of a
kernel with the SGX EPC cgroup series V17.  It never sleeps and never reads the wall
clock: time comes from the clock it is given.
"""

from __future__ import annotations

import errno
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from common.units import parse_size
from engine import files, reclaim
from engine.cgroup import Cgroup, CgroupTree
from engine.clock import Clock, VirtualClock
from engine.enclave import ABSENT, OWNER_MASK, SWAPPED, Enclave, Vepc
from engine.epc import KIND_MASK, NR_FLAG_SLOTS, ON_LRU, YOUNG_BITS, YOUNG_MORE, Epc
from engine.events import (
    CgroupCreated,
    CgroupFreed,
    CgroupRemoved,
    EnclaveCreated,
    EnclaveReleased,
    Event,
    EventSink,
    FileWritten,
    SigBusRaised,
)
from engine.misc import room as misc_room
from engine.reclaim import (
    alloc_epc_page,
    alloc_epc_run,
    free_backing_page,
    free_backing_run,
    free_epc_page,
    free_epc_run,
    reclaim_direct,
)
from engine.sgx import (
    DO_RECLAIM,
    ERESTARTSYS,
    MAX_OWNER_ID,
    MAX_SIZE,
    NO_RECLAIM,
    PAGE_SIZE,
    SGX_VA_SLOT_COUNT,
    Blocked,
    IoctlError,
    PageKind,
    SgxReclaim,
    SigBus,
    errno_name,
)

if TYPE_CHECKING:
    from engine.reclaim import WorkState

EVENT_BACKLOG = 65536
MAX_CGROUPS = 10_000  # cgroups a host may have besides root, dying ones included
T = TypeVar("T")


class Host:
    """An SGX host with ``capacity`` bytes of EPC and ``memory`` bytes of RAM for backing (None: unlimited).

    ``inline_work``: a fault that gets EBUSY runs the queued reclaim work itself and
    retries (the in-process core); with False it raises Blocked and the caller (the
    engine) lets its async workers run first.  Events go to ``event_sink``, or are kept
    (the last 65536) for ``take_events()``.  ``max_cgroups``: how many cgroups besides
    root may exist at once, dying ones included (beyond, mkdir is EAGAIN).  ValueError
    for a capacity that is not whole pages or is over MAX_PAGES of them.
    """

    def __init__(
        self,
        capacity: int | str = "128MiB",
        memory: int | str | None = None,
        seed: int = 0,
        *,
        clock: Clock | None = None,
        event_sink: EventSink | None = None,
        inline_work: bool = True,
        max_cgroups: int = MAX_CGROUPS,
    ) -> None:
        capacity_bytes = parse_size(capacity)
        if capacity_bytes % PAGE_SIZE:
            raise ValueError(f"EPC capacity {capacity_bytes} is not a whole number of 4 KiB pages")
        if capacity_bytes > MAX_SIZE:
            raise ValueError(f"EPC capacity {capacity_bytes} is over the {MAX_SIZE} bytes (8 TiB) a host can hold")
        self.capacity_bytes: int = capacity_bytes
        self.capacity_pages: int = capacity_bytes // PAGE_SIZE
        self.seed = seed  # drivers derive their workloads' random streams from it
        self.clock: Clock = clock if clock is not None else VirtualClock()
        self.inline_work = inline_work
        self.epc = Epc(self.capacity_pages)
        self.tree = CgroupTree(max_cgroups)
        if memory is not None:
            self.tree.root.mem_max_pages = parse_size(memory) // PAGE_SIZE
        self.enclaves: dict[int, Enclave] = {}
        self.vepcs: dict[int, Vepc] = {}
        self._next_id = 1
        self.signals: set[int] = set()  # pids with a fatal signal pending
        self.oom_victims: set[int] = set()  # killed by the OOM killer, not yet exited
        self.task_mem: dict[int, int] = {}  # pid -> backing pages it paid for, still charged
        # who pays for a backing page: (memory cgroup, paying pid or 0), interned under a small
        # id that swap entries hold in OWNER_BITS; an id no backing page is charged under any
        # more is reused, so live ids stay few
        self.backing_owners: list[tuple[Cgroup, int]] = []
        self.backing_refs: list[int] = []  # backing pages charged under each id
        self._backing_owner_ids: dict[tuple[Cgroup, int], int] = {}
        self._free_owner_ids: list[int] = []
        self.work: dict[int, None] = {}  # queued cgroup work items (ids, in order)
        self.work_in_flight: WorkState | None = None
        self.ksgxd_woken = False
        self.progress = 0  # pages freed, rotated or dropped by reclaim: "did anything move"
        self.pages_reclaimed = 0
        self.events: deque[Event] = deque(maxlen=EVENT_BACKLOG)
        self.emit: EventSink = event_sink if event_sink is not None else self.events.append

    def take_events(self) -> list[Event]:
        """The kept events, oldest first, and forget them."""
        out = list(self.events)
        self.events.clear()
        return out

    # -- cgroup filesystem ----------------------------------------------------

    def mkdir(self, path: str) -> None:
        """Create a cgroup.  OSError: ENOENT (no parent), ENAMETOOLONG (a name over 255 bytes),
        EEXIST, EINVAL (a bad name), EAGAIN (the host has ``max_cgroups`` already)."""
        cg = self.tree.mkdir(path, files.FILE_NAMES)
        self.emit(CgroupCreated(self.clock.now_ns(), cg.path))

    def rmdir(self, path: str) -> None:
        """Remove a cgroup.  OSError: ENOENT, EBUSY (children, tasks, root).

        One still holding charges lives on dying until its last page goes.
        """
        cg = self.tree.rmdir(path)
        freed = self.tree.release_if_unused(cg)
        self.emit(CgroupRemoved(self.clock.now_ns(), cg.path, dying=not freed))
        self._forget_freed(freed, 1)

    def read(self, path: str) -> str:
        """A cgroup file's contents, e.g. ``read("/a/misc.current") == "sgx_epc 0\\n"``."""
        cg, f = files.resolve(self, path)
        return f.show(self, cg)

    def write(self, path: str, value: str, pid: int | None = None) -> None:
        """Write a cgroup file as ``pid`` would (``pid`` stands for ``0`` in cgroup.procs).

        OSError with the kernel's errno (EINVAL, ERANGE, ENOENT, EACCES, EBUSY, ESRCH, E2BIG
        for more than 4096 bytes); a failed write changes nothing.
        """
        cg, f = files.resolve(self, path)
        files.write(self, cg, f, value, pid)
        self.emit(FileWritten(self.clock.now_ns(), f"{cg.path.rstrip('/')}/{f.name}", value.strip()))

    def listdir(self, path: str = "/") -> list[str]:
        return files.listdir(self, path)

    def cgroups(self) -> list[str]:
        """Paths of the live cgroups, in pre-order."""
        return [cg.path for cg in self.tree.live()]

    def cgroup(self, path: str) -> Cgroup:
        return self.tree.lookup(path)

    # -- tasks ----------------------------------------------------------------

    def move_task(self, pid: int, cg: Cgroup) -> None:
        """Move task ``pid`` into ``cg``; its later allocations charge there."""
        self.tree.move_task(pid, cg)

    def task_cgroup(self, pid: int) -> str:
        return self.tree.task_cgroup(pid).path

    def signal(self, pid: int) -> None:
        """A fatal signal is pending for ``pid``: its charges now fail with ERESTARTSYS."""
        self.signals.add(pid)

    def exit_task(self, pid: int) -> None:
        """Task ``pid`` is gone: its mm leaves every enclave's mm list, taking its accessed
        bits with it; an enclave no task maps any more is released (its last reference),
        its vEPC too, and it leaves its cgroup.  Mirrors sgx_mmu_notifier_release() and the
        last fput() of its enclave and vEPC files (sgx_release(), sgx_vepc_release()).
        """
        for encl in list(self.enclaves.values()):
            if pid in encl.mm_slot:
                slot = encl.mm_remove(pid)
                if not encl.mms:
                    self.release(encl.id)
                else:
                    self.epc.clear_young_slot(encl.resident_frames(), slot)
        for vepc in [v for v in self.vepcs.values() if v.pid == pid]:
            self.vepc_release(vepc.id)
        self.tree.forget_task(pid)
        self.signals.discard(pid)
        self.oom_victims.discard(pid)

    # -- enclave ioctls -------------------------------------------------------

    def ecreate(self, pid: int, size: int | str) -> int:
        """ECREATE: a VA page, then the SECS, both DO_RECLAIM; returns the enclave id.

        The driver checks no size itself: ENCLS[ECREATE] refuses a SECS whose size is not
        a power of two of at least two pages, after both pages were charged, and the ioctl
        then frees them and fails with OSError(EIO) (misc.peak saw the two pages, and
        misc.events any charge that hit a limit).  Sizes over MAX_SIZE (8 TiB), more than
        this host holds, are EINVAL before anything is charged.  Allocation errors as
        add_pages.  Mirrors sgx_encl_create().
        """
        size_bytes = parse_size(size)
        if size_bytes > MAX_SIZE:
            raise OSError(errno.EINVAL, f"enclave size {size_bytes} is over the {MAX_SIZE} bytes (8 TiB) a host takes")
        encl = Enclave(self._new_id(), pid, size_bytes // PAGE_SIZE)
        self.enclaves[encl.id] = encl
        cg = self._misc_cgroup(pid)
        try:
            self._grow(encl, cg, pid, DO_RECLAIM, "ECREATE")
            encl.secs_frame = alloc_epc_page(self, cg, PageKind.SECS, encl.id, -1, DO_RECLAIM, pid, "ECREATE")
            if size_bytes < 2 * PAGE_SIZE or size_bytes & (size_bytes - 1):  # ENCLS[ECREATE] faults: -EIO
                raise OSError(
                    errno.EIO,
                    f"ECREATE refused the SECS: enclave size {size_bytes} is not a power of two of at least "
                    "8 KiB (its VA page and SECS were charged, then freed)",
                )
        except BaseException:
            self._free_enclave_frames(encl)
            del self.enclaves[encl.id]
            raise
        self.emit(EnclaveCreated(self.clock.now_ns(), encl.id, pid, size_bytes))
        return encl.id

    def add_pages(self, pid: int, eid: int, count: int, kind: str = "REG") -> int:
        """EADD ``count`` pages (REG or TCS) after the last one added; returns how many.

        Each page is allocated DO_RECLAIM, then a VA page when one is due; it goes on
        its cgroup's LRU with its accessed bit clear.  IoctlError(ENOMEM) when the
        cgroup is full of unreclaimable pages, (ERESTARTSYS) for a signal before the
        first page (a later signal stops early and returns the count), EINVAL after
        EINIT or past the enclave's size; Blocked while reclaim cannot progress.
        Mirrors sgx_ioc_enclave_add_pages().
        """
        encl = self._enclave(eid)
        page_kind = PageKind.TCS if kind == "TCS" else PageKind.REG
        if kind not in ("REG", "TCS"):
            raise OSError(errno.EINVAL, f"EADD page type must be REG or TCS, not {kind!r}")
        if encl.initialized:
            raise OSError(errno.EINVAL, f"enclave {eid} is initialised: EADD is over, use augment")
        if count <= 0 or encl.next_index + count > encl.size_pages:
            raise OSError(errno.EINVAL, f"{count} pages: give at least one that fits in enclave {eid}")
        cg = self._misc_cgroup(pid)
        done = 0
        try:
            while done < count:
                if pid in self.signals:  # only reclaim (the OOM killer) raises one mid-call
                    if done == 0:
                        raise OSError(ERESTARTSYS, "interrupted by a signal")
                    return done
                done += self._eadd_run(encl, page_kind, cg, count - done) or self._eadd(encl, page_kind, cg, pid)
        except Blocked as e:
            raise Blocked(done, str(e)) from None
        except OSError as e:
            raise IoctlError(e.errno or errno.EIO, e.strerror or "", done) from None
        return count

    def _eadd_run(self, encl: Enclave, kind: PageKind, cg: Cgroup, count: int) -> int:
        """EADD as many of ``count`` pages as fit without reclaim and before a VA page is due.

        The same result as that many _eadd() calls; returns how many (0: take _eadd()).
        """
        due = encl.page_cnt % SGX_VA_SLOT_COUNT
        if due == 0:
            return 0
        index = encl.next_index
        frames = alloc_epc_run(self, cg, kind, encl.id, index, min(count, SGX_VA_SLOT_COUNT - due))
        run = len(frames)
        if run:
            assert index == len(encl.pages), "EADD appends: no holes before EINIT"
            try:
                encl.pages.extend(frames)
                encl.types.extend(bytes([kind]) * run)
            except BaseException:
                del encl.pages[index:]
                del encl.types[index:]
                free_epc_run(self, cg, frames)
                raise
            encl.next_index = index + run
            encl.page_cnt += run
            encl.secs_child_cnt += run
            self.epc.lru_add_tail_many(cg.lru, frames)
        return run

    def _eadd(self, encl: Enclave, kind: PageKind, cg: Cgroup, pid: int) -> int:
        """Mirrors sgx_encl_add_page(): the data page, then the VA page if due.  Returns 1.

        Any error leaves nothing charged and the page absent.
        """
        index = encl.next_index
        encl.reserve(index)
        frame = ABSENT
        try:
            frame = alloc_epc_page(self, cg, kind, encl.id, index, DO_RECLAIM, pid, "EADD")
            self._grow(encl, cg, pid, DO_RECLAIM, "EADD")
        except BaseException:
            if frame != ABSENT:
                free_epc_page(self, frame)
            encl.unreserve(index)
            raise
        encl.place(index, frame, kind)
        encl.next_index = index + 1
        encl.secs_child_cnt += 1
        self.epc.lru_add_tail(cg.lru, frame)
        return 1

    def _grow(self, encl: Enclave, cg: Cgroup, pid: int, mode: SgxReclaim, op: str) -> None:
        """A new VA page when page_cnt reaches a multiple of 512, then page_cnt + 1.  Mirrors sgx_encl_grow().

        Any error leaves nothing charged.
        """
        if encl.page_cnt % SGX_VA_SLOT_COUNT == 0:
            frame = alloc_epc_page(self, cg, PageKind.VA, encl.id, len(encl.va_frames), mode, pid, op)
            try:
                encl.va_add(frame)
            except BaseException:
                free_epc_page(self, frame)
                raise
        encl.page_cnt += 1

    def einit(self, pid: int, eid: int) -> None:
        """EINIT: the enclave is initialised; from now on its SECS can be written out.

        OSError(EINVAL) if already initialised.  Mirrors sgx_ioc_enclave_init() (launch
        control is not modelled).
        """
        encl = self._enclave(eid)
        if encl.initialized:
            raise OSError(errno.EINVAL, f"enclave {eid} is already initialised")
        encl.initialized = True

    def access(self, pid: int, eid: int, first: int, count: int, write: bool = False) -> int:
        """Touch pages ``first..first+count-1``; returns how many faulted.

        A resident page gets its accessed bit in ``pid``'s mm (only there: each mm has
        its own PTE); a swapped one is loaded back (its SECS first), charged to ``pid``'s
        cgroup now, NO_RECLAIM; an absent one in an initialised enclave is EAUG'd (SGX2).
        Raises SigBus when a fault cannot be served (ENOMEM: nothing on the requesting
        cgroup's LRUs), Blocked with the faults served so far when one stalls (EBUSY that
        no reclaim helps), OSError(EFAULT) outside the enclave.  Mirrors sgx_vma_fault().
        """
        encl = self._enclave(eid)
        self._check_range(encl.size_pages, first, count)
        if encl.modified is not None and not encl.modified.accepting and count:
            return self._eaccept(encl, pid, first, count, write)
        slot = self._map(encl, pid)
        more = slot >= NR_FLAG_SLOTS  # the mm's bits are kept beside the flags
        bit = YOUNG_MORE if more else YOUNG_BITS[slot]
        pages = encl.pages
        epc = self.epc
        flags = epc.flags
        nr_pages = len(pages)
        faults = 0
        end = first + count
        index = first
        while index < end:
            frame = pages[index] if index < nr_pages else encl.page(index)
            if frame >= 0:
                if more:
                    epc.make_young(frame, slot)
                else:
                    flags[frame] |= bit
                index += 1
                continue
            loaded = self._eldu_run(encl, index, end, pid) if frame <= SWAPPED else 0
            if not loaded:
                try:
                    self._fault(encl, index, pid, index - first)
                except Blocked as e:
                    e.faults = faults
                    raise
                loaded = 1
            faults += loaded
            index += loaded
            pages = encl.pages
            nr_pages = len(pages)
        return faults

    def _eldu_run(self, encl: Enclave, index: int, end: int, pid: int) -> int:
        """Fault back a run of swapped pages from ``index`` that fits without reclaim; returns
        how many (0: take _fault()).  The same result as that many faults of sgx_vma_fault():
        each page is young in ``pid``'s mm alone (reclaim zapped every other mm's PTE).
        """
        if encl.secs_frame < 0:
            return 0
        pages = encl.pages
        run = index
        while run < end and run < len(pages) and pages[run] <= SWAPPED:
            run += 1
        if run - index < 2:
            return 0
        cg = self._misc_cgroup(pid)
        if misc_room(cg, self.capacity_pages) < 2:
            return 0
        frames = alloc_epc_run(self, cg, PageKind.REG, encl.id, index, run - index)
        slot_ids = free_backing_run(self, encl, index, pages[index : index + len(frames)])
        epc, types = self.epc, encl.types
        flags, slot = epc.flags, encl.mm_slot[pid]
        bit = YOUNG_BITS[slot] if slot < NR_FLAG_SLOTS else 0
        for i, (frame, slot_id) in enumerate(zip(frames, slot_ids, strict=True), index):
            encl.va_free_slot(slot_id)
            pages[i] = frame
            flags[frame] = types[i] | bit
            if not bit:
                epc.make_young(frame, slot)
        encl.secs_child_cnt += len(frames)
        self.epc.lru_add_tail_many(cg.lru, frames)
        return len(frames)

    def augment(self, pid: int, eid: int, count: int) -> int:
        """Grow an initialised enclave by ``count`` pages through EAUG faults (SGX2).

        Each page: the SECS back if needed, the page, a VA page if due, all NO_RECLAIM.
        SigBus and Blocked as access(); OSError(EFAULT) past the enclave's size.  Mirrors
        sgx_encl_eaug_page().
        """
        encl = self._enclave(eid)
        self._check_range(encl.size_pages, encl.next_index, count)
        self._map(encl, pid)
        for done in range(count):
            self._fault(encl, encl.next_index, pid, done)
        return count

    def _fault(self, encl: Enclave, index: int, pid: int, done: int) -> None:
        """Serve one enclave fault: ELDU a swapped page, EAUG an absent one.  Mirrors sgx_vma_fault()."""
        if encl.page(index) <= SWAPPED:
            self._serve_fault(lambda: self._load(encl, index, pid, accessed=True), pid, "fault", done)
        else:
            self._serve_fault(lambda: self._eaug(encl, index, pid), pid, "fault", done)

    def _serve_fault(self, attempt: Callable[[], T], pid: int, op: str, done: int) -> T:
        """Run one fault's allocation, retrying on EBUSY as VM_FAULT_NOPAGE would.

        EBUSY never means SIGBUS: the task would fault again for as long as nothing frees
        the limiting cgroup, so a fault that no reclaim helps raises Blocked (it stalls).
        Any other error (ENOMEM: nothing on the requesting cgroup's LRUs) raises SigBus.
        Mirrors the error handling of sgx_vma_fault() and sgx_vepc_fault().
        """
        while True:
            try:
                return attempt()
            except OSError as e:
                if e.errno != errno.EBUSY:
                    raise self._sigbus(pid, e.errno or errno.EIO, op, str(e.strerror)) from None
                self._wait_for_reclaim(done)

    def _wait_for_reclaim(self, done: int) -> None:
        """After EBUSY: run the queued work inline and return if it moved anything; else raise Blocked.

        Blocked when the work moved nothing: the retry would fail the same way, and the
        kernel's task would re-fault until something outside the fault (a task's exit, a
        release, a limit raised, an OOM victim freeing its backing) makes room.  Without
        inline work (the engine) at once: the caller lets its async workers run first.
        """
        if not self.inline_work:
            raise Blocked(done, "waiting for async reclaim")
        progress = self.progress
        self.run_pending_work()
        if self.progress == progress:
            waiting_for = "an OOM victim to exit" if self.oom_victims else "something to free the limiting cgroup"
            raise Blocked(done, f"stalled: no reclaim can help this fault; waiting for {waiting_for}")

    def _sigbus(self, pid: int, code: int, op: str, message: str) -> SigBus:
        self.emit(SigBusRaised(self.clock.now_ns(), pid, self.tree.task_cgroup(pid).path, op, errno_name(code)))
        return SigBus(pid, code, message)

    def _load(self, encl: Enclave, index: int, pid: int, accessed: bool) -> None:
        """ELDU the SECS if it is out, then the page.  Mirrors sgx_encl_load_page()."""
        cg = self._misc_cgroup(pid)
        if encl.secs_frame <= SWAPPED:
            self._eldu(encl, encl.secs_index, cg, pid, accessed=False)
        self._eldu(encl, index, cg, pid, accessed)

    def _eldu(self, encl: Enclave, index: int, cg: Cgroup, pid: int, accessed: bool) -> None:
        """Load one page back, NO_RECLAIM, charged to ``pid``'s cgroup; free its VA slot and backing.

        ``accessed``: a fault through ``pid``'s mm, whose access then makes the page young
        there alone (sgx_vma_fault() clears the bit of the PTE it inserts; the retried
        access sets it); an EDMM ioctl's load maps nothing.  Mirrors sgx_encl_eldu().
        """
        secs = index == encl.secs_index
        kind = PageKind.SECS if secs else PageKind(encl.kind(index))
        frame = alloc_epc_page(self, cg, kind, encl.id, -1 if secs else index, NO_RECLAIM, pid, "ELDU")
        entry = encl.secs_frame if secs else encl.page(index)
        encl.va_free_slot(free_backing_page(self, encl, index, entry))
        if secs:
            encl.secs_frame = frame
            return
        encl.set_entry(index, frame)
        encl.secs_child_cnt += 1
        if accessed:
            self.epc.make_young(frame, self._map(encl, pid))
        self.epc.lru_add_tail(cg.lru, frame)

    def _eaug(self, encl: Enclave, index: int, pid: int) -> None:
        """EAUG a page on a fault at an absent address.  Mirrors sgx_encl_eaug_page().

        The page is young in ``pid``'s mm alone (the PTE the fault inserts).  Any error
        leaves nothing charged and the page absent (the SECS may stay loaded).
        """
        if not encl.initialized:
            raise OSError(errno.EFAULT, "fault on a page that was never added, before EINIT")
        cg = self._misc_cgroup(pid)
        if encl.secs_frame <= SWAPPED:
            self._eldu(encl, encl.secs_index, cg, pid, accessed=False)
        encl.reserve(index)
        frame = ABSENT
        try:
            frame = alloc_epc_page(self, cg, PageKind.REG, encl.id, index, NO_RECLAIM, pid, "EAUG")
            self._grow(encl, cg, pid, NO_RECLAIM, "EAUG")
        except BaseException:
            if frame != ABSENT:
                free_epc_page(self, frame)
            encl.unreserve(index)
            raise
        encl.place(index, frame, PageKind.REG)
        encl.next_index = max(encl.next_index, index + 1)
        encl.secs_child_cnt += 1
        self.epc.make_young(frame, self._map(encl, pid))
        self.epc.lru_add_tail(cg.lru, frame)

    def _eaccept(self, encl: Enclave, pid: int, first: int, count: int, write: bool) -> int:
        """access() of a range while some page of the enclave is MODIFIED: the enclave's access
        of such a page is its EACCEPT, so each is unmarked once the access has reached it.

        The range goes through access() in runs: a run with no MODIFIED page, a run of
        resident pages (no fault, so nothing can stop it halfway), or one swapped page, so a
        SigBus or Blocked leaves exactly the pages before it accepted.  Same result otherwise.
        """
        modified = encl.modified
        assert modified is not None
        end = first + count
        at = first
        faults = 0
        modified.accepting = True
        try:
            while at < end:
                stop = modified.next(at, end)
                marked = stop == at
                if marked:
                    stop = at + 1
                    if encl.page(at) >= 0:
                        while stop < end and encl.page(stop) >= 0:
                            stop += 1
                try:
                    faults += self.access(pid, encl.id, at, stop - at, write)
                except Blocked as e:
                    e.done += at - first
                    e.faults += faults
                    raise
                if marked:
                    encl.accept(at, stop)
                at = stop
        finally:
            modified.accepting = False
        return faults

    def remove_pages(self, pid: int, eid: int, first: int, count: int) -> int:
        """Trim and remove pages (SGX2 EDMM) as test_sgx's _remove test does: MODIFY_TYPES to
        TRIM, the enclave EACCEPTs each page (an access), REMOVE_PAGES.  Returns the pages removed.

        Their charges and backing go; VA pages stay.  Errors as modify_types() and
        remove_trimmed(); an IoctlError(EAGAIN) carries the pages its ioctl had done: the
        caller may go on from there, as the selftest does, with trim_pages(), access() and
        remove_trimmed().
        """
        self.modify_types(pid, eid, first, count, "TRIM")
        self.access(pid, eid, first, count)  # the enclave EACCEPTs each page
        return self.remove_trimmed(pid, eid, first, count)

    def trim_pages(self, pid: int, eid: int, first: int, count: int) -> None:
        """MODIFY_TYPES to TRIM: modify_types(pid, eid, first, count, "TRIM")."""
        self.modify_types(pid, eid, first, count, "TRIM")

    def modify_types(self, pid: int, eid: int, first: int, count: int, kind: str) -> None:
        """SGX_IOC_ENCLAVE_MODIFY_TYPES of pages first..first+count-1 to ``kind``, TCS or TRIM.

        Each page in turn: direct reclaim, the page loaded back if it was written out
        (NO_RECLAIM), then EMODT: REG becomes TCS (the page leaves its LRU and goes back at
        the tail, its PTEs zapped) or TRIM, TCS becomes TRIM.  The page is then MODIFIED
        until the enclave EACCEPTs it (an access).  OSError(EINVAL) before EINIT, for a
        range that is empty or reaches outside the enclave, or a kind other than TCS or
        TRIM; IoctlError with the pages done: EFAULT for a page never added or one still
        MODIFIED (EMODT's SGX_PAGE_NOT_MODIFIABLE), EAGAIN when a load gets EBUSY, EINVAL
        for any change but REG->TCS, REG->TRIM and TCS->TRIM (a TRIM page again).
        Mirrors sgx_ioc_enclave_modify_types() and sgx_enclave_modify_types().
        """
        encl = self.validate_edmm(eid, first, count)
        if kind not in ("TCS", "TRIM"):
            raise OSError(errno.EINVAL, f"MODIFY_TYPES makes pages TCS or TRIM, not {kind!r}")
        new = PageKind.TCS if kind == "TCS" else PageKind.TRIM
        epc = self.epc
        flags = epc.flags
        for done, index in enumerate(range(first, first + count)):
            frame = self._edmm_load(encl, index, pid, done)
            old = encl.kind(index)
            if not (old == PageKind.REG or (old == PageKind.TCS and new == PageKind.TRIM)):
                raise IoctlError(
                    errno.EINVAL,
                    f"page {index} of enclave {eid} is {PageKind(old).name}: MODIFY_TYPES changes REG to TCS "
                    f"or TRIM and TCS to TRIM, not to {kind}",
                    done,
                )
            if old == PageKind.REG and new == PageKind.TCS and flags[frame] & ON_LRU:
                # sgx_unmark_page_reclaimable(), sgx_zap_enclave_ptes(), sgx_mark_page_reclaimable()
                lru = self._lru_cgroup(frame).lru
                epc.lru_del(lru, frame)
                self._zap_enclave_ptes(frame)
                epc.lru_add_tail(lru, frame)
            if encl.is_modified(index):
                raise IoctlError(
                    errno.EFAULT,
                    f"page {index} of enclave {eid} is not modifiable: the enclave has not EACCEPTed its "
                    "last type change (EMODT: SGX_PAGE_NOT_MODIFIABLE)",
                    done,
                )
            encl.mark_modified(index)
            encl.set_kind(index, new)
            flags[frame] = flags[frame] & ~KIND_MASK | new

    def restrict_permissions(self, pid: int, eid: int, first: int, count: int) -> None:
        """SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS of pages first..first+count-1 (EMODPR).

        Each page in turn: direct reclaim, the page loaded back if it was written out
        (NO_RECLAIM), then EMODPR, which only REG pages take.  The core keeps no page
        permissions, so what shows is the reclaim and the loads.  OSError(EINVAL) before
        EINIT or for a range that is empty or reaches outside the enclave; IoctlError with
        the pages done: EFAULT for a page never added, EAGAIN when a load gets EBUSY,
        EINVAL for a page that is not REG.  (EMODPR would fail on a MODIFIED or PENDING
        page, but a REG page is neither here: EMODT makes TCS or TRIM, and an EAUG'd page is
        accepted by the access that added it.)  Mirrors sgx_ioc_enclave_restrict_permissions()
        and sgx_enclave_restrict_permissions().
        """
        encl = self.validate_edmm(eid, first, count)
        for done, index in enumerate(range(first, first + count)):
            self._edmm_load(encl, index, pid, done)
            kind = encl.kind(index)
            if kind != PageKind.REG:
                raise IoctlError(
                    errno.EINVAL,
                    f"page {index} of enclave {eid} is {PageKind(kind).name}: only REG pages have permissions "
                    "to restrict",
                    done,
                )

    def remove_trimmed(self, pid: int, eid: int, first: int, count: int) -> int:
        """SGX_IOC_ENCLAVE_REMOVE_PAGES of trimmed pages the enclave has EACCEPTed; returns ``count``.

        Each page in turn: direct reclaim, the page loaded back if it was written out
        (NO_RECLAIM: charged, its backing truncated), then it must be TRIM and accepted
        (the driver's EMODPR probe faults): it leaves its LRU, is freed and uncharged;
        VA pages stay.  OSError(EINVAL) before EINIT or for a range that is empty or
        reaches outside the enclave; IoctlError with the pages done: EFAULT for a page
        never added, EAGAIN when a load gets EBUSY, EPERM for a page that is not TRIM or
        that the enclave has not EACCEPTed.  Mirrors sgx_ioc_enclave_remove_pages() and
        sgx_encl_remove_pages().
        """
        encl = self.validate_edmm(eid, first, count)
        for done, index in enumerate(range(first, first + count)):
            frame = self._edmm_load(encl, index, pid, done)
            if encl.kind(index) != PageKind.TRIM:
                raise IoctlError(errno.EPERM, f"page {index} of enclave {eid} is not trimmed", done)
            if encl.is_modified(index):
                raise IoctlError(errno.EPERM, f"page {index} of enclave {eid} is trimmed but not EACCEPTed", done)
            if self.epc.flags[frame] & ON_LRU:
                self.epc.lru_del(self._lru_cgroup(frame).lru, frame)
            free_epc_page(self, frame)
            encl.clear(index)
            encl.secs_child_cnt -= 1
            encl.page_cnt -= 1
        return count

    def validate_edmm(self, eid: int, first: int, count: int) -> Enclave:
        """The enclave of an EDMM ioctl over pages first..first+count-1, which must lie in it.

        OSError(EINVAL) for no such enclave, one not initialised, or a range that is empty
        or reaches outside the enclave.  Mirrors sgx_ioc_sgx2_ready() and
        sgx_validate_offset_length().
        """
        encl = self._enclave(eid)
        if not encl.initialized:
            raise OSError(errno.EINVAL, f"enclave {eid} is not initialised: EDMM comes after EINIT")
        if first < 0 or count <= 0 or first + count > encl.size_pages:
            raise OSError(
                errno.EINVAL,
                f"pages {first}..{first + count - 1} are not a range of at least one page inside enclave "
                f"{eid} (0..{encl.size_pages - 1})",
            )
        return encl

    def _edmm_load(self, encl: Enclave, index: int, pid: int, done: int) -> int:
        """sgx_reclaim_direct(), then the page resident for an EDMM step; returns its frame.

        IoctlError(EAGAIN) at once when the load gets EBUSY (the caller may retry),
        EFAULT for any other load error or a page never added.  Mirrors
        sgx_encl_load_page().
        """
        reclaim_direct(self, pid)
        page = encl.page(index)
        if page == ABSENT:
            raise IoctlError(errno.EFAULT, f"page {index} of enclave {encl.id} was never added", done)
        if page >= 0:
            return page
        try:
            self._load(encl, index, pid, accessed=False)
        except OSError as e:
            code = errno.EAGAIN if e.errno == errno.EBUSY else errno.EFAULT
            raise IoctlError(code, str(e.strerror), done) from None
        return encl.page(index)

    def _zap_enclave_ptes(self, frame: int) -> None:
        """Every mm's PTE of the page goes, and with it its accessed bit in every mm.  Mirrors
        sgx_zap_enclave_ptes()."""
        self.epc.clear_young(frame)

    def release(self, eid: int) -> None:
        """The enclave's last reference is gone: free and uncharge every page, VA and SECS
        included, then drop its backing.  Mirrors sgx_encl_release().
        """
        encl = self._enclave(eid)
        encl.dying = True
        freed = self._free_enclave_frames(encl)
        backing = encl.nr_swapped
        for index in encl.swapped_indexes():
            free_backing_page(self, encl, index, encl.page(index))
            encl.clear(index)
        if encl.secs_frame <= SWAPPED:
            free_backing_page(self, encl, encl.secs_index, encl.secs_frame)
            encl.secs_frame = ABSENT
        del self.enclaves[eid]
        self.emit(EnclaveReleased(self.clock.now_ns(), eid, encl.pid, freed, backing * PAGE_SIZE))

    def _free_enclave_frames(self, encl: Enclave) -> int:
        epc = self.epc
        freed = 0
        for index in encl.resident_indexes():
            frame = encl.page(index)
            if epc.flags[frame] & ON_LRU:
                epc.lru_del(self._lru_cgroup(frame).lru, frame)
            free_epc_page(self, frame)
            encl.clear(index)
            freed += 1
        if encl.secs_frame >= 0:
            free_epc_page(self, encl.secs_frame)
            encl.secs_frame = ABSENT
            freed += 1
        for ordinal, frame in enumerate(encl.va_frames):
            if frame >= 0:
                free_epc_page(self, frame)
                encl.va_frames[ordinal] = ABSENT
                freed += 1
        return freed

    def _lru_cgroup(self, frame: int) -> Cgroup:
        cg = self.tree.by_id[self.epc.cg[frame]]
        assert cg is not None
        return cg

    # -- guest vEPC -----------------------------------------------------------

    def vepc_open(self, pid: int, size: int | str) -> int:
        """Open a guest's virtual EPC of ``size`` bytes (a page multiple up to MAX_SIZE); returns its id.

        OSError(EINVAL) for any other size.  Mirrors sgx_vepc_open() and the mmap() that sizes it.
        """
        size_bytes = parse_size(size)
        if size_bytes <= 0 or size_bytes % PAGE_SIZE:
            raise OSError(errno.EINVAL, f"vEPC size {size_bytes} is not a positive multiple of 4 KiB")
        if size_bytes > MAX_SIZE:
            raise OSError(errno.EINVAL, f"vEPC size {size_bytes} is over the {MAX_SIZE} bytes (8 TiB) a host takes")
        self._misc_cgroup(pid)
        vepc = Vepc(self._new_id(), pid, size_bytes // PAGE_SIZE)
        self.vepcs[vepc.id] = vepc
        return vepc.id

    def vepc_access(self, pid: int, vid: int, first: int, count: int) -> int:
        """Touch guest pages; a first touch allocates NO_RECLAIM.  Returns the faults.

        EBUSY retries (retry allowed), Blocked (with the faults served) when it stalls;
        anything else (ENOMEM: nothing reclaimable) raises SigBus.
        Mirrors sgx_vepc_fault().
        """
        vepc = self._vepc(vid)
        self._check_range(vepc.size_pages, first, count)
        cg = self._misc_cgroup(pid)
        faults = 0
        for index in range(first, first + count):
            if index in vepc.pages:
                continue

            def alloc(index: int = index) -> int:
                return alloc_epc_page(self, cg, PageKind.VEPC, vid, index, NO_RECLAIM, pid, "vEPC fault")

            try:
                frame = self._serve_fault(alloc, pid, "vEPC fault", index - first)
            except Blocked as e:
                e.faults = faults
                raise
            try:
                vepc.pages[index] = frame
            except BaseException:
                free_epc_page(self, frame)
                raise
            vepc.nr_present += 1
            faults += 1
        return faults

    def vepc_release(self, vid: int) -> None:
        """The guest's vEPC file is released: every page freed and uncharged.  Mirrors sgx_vepc_release()."""
        vepc = self._vepc(vid)
        for frame in vepc.pages.values():
            free_epc_page(self, frame)
        del self.vepcs[vid]

    # -- async work -----------------------------------------------------------

    def run_work_step(self) -> bool:
        """One batch of queued cgroup work or ksgxd; False when there is nothing to do."""
        return reclaim.run_work_step(self)

    def run_pending_work(self) -> int:
        """Run queued cgroup work items and ksgxd until idle; returns the batches run."""
        steps = 0
        while reclaim.run_work_step(self):
            steps += 1
        return steps

    # -- memory controller ----------------------------------------------------

    def memory_over_max(self, cg: Cgroup) -> None:
        """memory.max was set below usage: backing cannot be reclaimed, so the OOM killer runs."""
        reclaim.oom(self, cg)

    # -- invariants -----------------------------------------------------------

    def check(self) -> None:
        """Verify every accounting invariant; raise AssertionError on the first broken one."""
        from engine.check import check_host

        check_host(self)

    # -- helpers --------------------------------------------------------------

    def release_dying(self, cg: Cgroup) -> None:
        self._forget_freed(self.tree.release_if_unused(cg))

    def _forget_freed(self, freed: list[Cgroup], announced: int = 0) -> None:
        """Freed cgroups leave the work queue (their ids are reused); CgroupFreed for all but the
        first ``announced``."""
        for n, gone in enumerate(freed):
            self.work.pop(gone.id, None)
            if n >= announced:
                self.emit(CgroupFreed(self.clock.now_ns(), gone.path))

    def _map(self, encl: Enclave, pid: int) -> int:
        """``pid``'s mm maps the enclave: newest first on its mm list (sgx_encl_mm_add()).

        Returns the mm's slot for its accessed bits.
        """
        slot = encl.mm_slot.get(pid)
        if slot is None:
            self._misc_cgroup(pid)
            slot = encl.mm_add(pid)
        return slot

    def backing_owner_id(self, memcg_cg: Cgroup, payer: int) -> int:
        """The small id that swap entries use for (memory cgroup, paying pid); -1 when all
        OWNER_MASK + 1 ids are charged (the backing charge then fails as memory.max would)."""
        key = (memcg_cg, payer)
        owner_id = self._backing_owner_ids.get(key)
        if owner_id is None:
            if self._free_owner_ids:
                owner_id = self._free_owner_ids.pop()
                self.backing_owners[owner_id] = key
            elif len(self.backing_owners) <= OWNER_MASK:
                owner_id = len(self.backing_owners)
                self.backing_owners.append(key)
                self.backing_refs.append(0)
            else:
                return -1
            self._backing_owner_ids[key] = owner_id
        return owner_id

    def backing_owner_put(self, owner_id: int) -> None:
        """Free ``owner_id`` for reuse if no backing page is charged under it any more."""
        if owner_id >= 0 and not self.backing_refs[owner_id]:
            key = self.backing_owners[owner_id]
            if self._backing_owner_ids.get(key) == owner_id:
                del self._backing_owner_ids[key]
                self._free_owner_ids.append(owner_id)

    def _misc_cgroup(self, pid: int) -> Cgroup:
        """The cgroup whose misc counters ``pid``'s allocations charge now (``pid`` becomes known).

        Mirrors sgx_get_current_cg().
        """
        cg = self.tree.register_task(pid)
        return cg if cg.misc_on else cg.misc_css()

    def _new_id(self) -> int:
        """The next enclave or vEPC id not in use; ids wrap around at MAX_OWNER_ID, as pids do."""
        while True:
            new = self._next_id
            self._next_id = new + 1 if new < MAX_OWNER_ID else 1
            if new not in self.enclaves and new not in self.vepcs:
                return new

    def _enclave(self, eid: int) -> Enclave:
        encl = self.enclaves.get(eid)
        if encl is None:
            raise OSError(errno.EINVAL, f"no enclave {eid}")
        return encl

    def _vepc(self, vid: int) -> Vepc:
        vepc = self.vepcs.get(vid)
        if vepc is None:
            raise OSError(errno.EINVAL, f"no vEPC {vid}")
        return vepc

    @staticmethod
    def _check_range(size_pages: int, first: int, count: int) -> None:
        """OSError(EFAULT) unless pages first..first+count-1 lie in 0..size_pages-1 (sizes are at most MAX_PAGES)."""
        if first < 0 or count < 0 or first + count > size_pages:
            raise OSError(errno.EFAULT, f"pages {first}..{first + count - 1} lie outside 0..{size_pages - 1}")

"""The host's state: what the kernel keeps in the globals of sgx/main.c, and a few helpers.

``HostState`` holds every piece of state of an emulated host (EPC frames, the cgroup
tree, enclaves and vEPC instances, the backing owners, the work queue, pending signals)
and the helpers every part of the core calls: free a frame, release a dying cgroup, an
id for a new enclave.  The modules that mirror the kernel's files (charge, reclaim,
backing, work, ioctl, fault, vepc, files, check) are functions over a HostState;
``engine.host.Host`` adds the driver API on top.  It never sleeps and never reads the
wall clock: time comes from the clock it is given.
"""

from __future__ import annotations

import errno
from collections import deque

from common.costs import OPS
from common.knobs import V17, Knobs
from common.units import parse_size
from engine import misc
from engine.cgroup import Cgroup, CgroupTree
from engine.clock import Clock, VirtualClock
from engine.enclave import Enclave, Vepc
from engine.epc import Epc
from engine.events import CgroupFreed, Event, EventSink
from engine.sgx import MAX_OWNER_ID, MAX_SIZE, PAGE_SIZE

EVENT_BACKLOG = 65536
MAX_CGROUPS = 10_000  # cgroups a host may have besides root, dying ones included


class WorkState:
    """Progress of the work item (or ksgxd run) in flight, for its WorkRun event."""

    __slots__ = ("cg", "batches", "written")

    def __init__(self, cg: Cgroup | None) -> None:
        self.cg = cg  # None: ksgxd
        self.batches = 0
        self.written = 0


class HostState:
    """An SGX host with ``capacity`` bytes of EPC and ``memory`` bytes of RAM for backing (None: unlimited).

    ``inline_work``: a fault that gets EBUSY runs the queued reclaim work itself and
    retries (the in-process core); with False it waits and the caller (the engine) lets
    its async workers run first.  Events go to ``event_sink``, or are kept (the last
    65536) for ``take_events()``.  ``max_cgroups``: how many cgroups besides root may
    exist at once, dying ones included (beyond, mkdir is EAGAIN).  ``fast_paths=False``
    turns every batch path off, so each page goes its one-page way (the same results:
    tests compare the two).  ``knobs``: the series' constants (common.knobs.Knobs, V17's by
    default), bound here once as plain attributes (``nr_to_scan``, ``low_pages``,
    ``high_pages``, ``cg_margin``, ``cg_low_limit``, ``async_reclaim``) that the core reads
    where the kernel reads its constants.  ValueError for a capacity that is not whole
    pages or is over MAX_PAGES of them.
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
        fast_paths: bool = True,
        knobs: Knobs = V17,
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
        self.fast_paths = fast_paths
        self.knobs = knobs
        self.nr_to_scan = knobs.nr_to_scan
        self.low_pages = knobs.low_pages
        self.high_pages = knobs.high_pages
        self.cg_margin = knobs.cg_margin
        self.cg_low_limit = knobs.cg_low_limit
        self.async_reclaim = knobs.async_reclaim
        self.epc = Epc(self.capacity_pages, fast_paths)
        self.tree = CgroupTree(max_cgroups)
        if memory is not None:
            self.tree.root.mem_max_pages = parse_size(memory) // PAGE_SIZE
        self.enclaves: dict[int, Enclave] = {}
        self.vepcs: dict[int, Vepc] = {}
        self._next_id = 1
        self.signals: set[int] = set()  # pids with a fatal signal pending
        self.oom_victims: set[int] = set()  # killed by the OOM killer, not yet exited
        self.task_mem: dict[int, int] = {}  # pid -> backing pages it paid for, still charged
        # Who pays for a backing page: (memory cgroup, paying pid or 0), interned under a small
        # id that swap entries hold in OWNER_BITS (engine.backing); an id no backing page is
        # charged under any more is reused, so live ids stay few.
        self.backing_owners: list[tuple[Cgroup, int]] = []
        self.backing_refs: list[int] = []  # backing pages charged under each id
        self.backing_owner_ids: dict[tuple[Cgroup, int], int] = {}
        self.free_owner_ids: list[int] = []
        self.work: dict[int, None] = {}  # queued cgroup work items (ids, in order)
        self.work_in_flight: WorkState | None = None
        self.ksgxd_woken = False
        self.progress = 0  # pages freed, rotated or dropped by reclaim: "did anything move"
        self.pages_reclaimed = 0
        # SGX operations performed, ever, indexed by common.costs.OP_*: the Session reads them around a
        # call to charge its cost (a count per run of pages, never per-page work)
        self.ops: list[int] = [0] * len(OPS)
        self.events: deque[Event] = deque(maxlen=EVENT_BACKLOG)
        self.emit: EventSink = event_sink if event_sink is not None else self.events.append

    # -- frames and cgroups ---------------------------------------------------

    def free_epc_page(self, frame: int) -> None:
        """Uncharge the frame's cgroup and free the frame (off any LRU already).  Mirrors sgx_free_epc_page()."""
        cg = self.tree.by_id[self.epc.cg[frame]]
        assert cg is not None
        misc.uncharge(cg)
        self.epc.put(frame)
        if cg.dying:
            self.release_dying(cg)

    def free_epc_run(self, cg: Cgroup, frames: list[int]) -> None:
        """free_epc_page() for frames (off every LRU) all charged to ``cg``.

        No kernel counterpart: N of sgx_free_epc_page() at once, the same counters.
        """
        if not self.fast_paths:
            for frame in frames:
                self.free_epc_page(frame)
            return
        self.epc.put_many(frames)
        misc.uncharge(cg, len(frames))
        if cg.dying:
            self.release_dying(cg)

    def lru_cgroup(self, frame: int) -> Cgroup:
        """The cgroup a frame is charged to, whose LRU it sits on if it is reclaimable."""
        cg = self.tree.by_id[self.epc.cg[frame]]
        assert cg is not None
        return cg

    def release_dying(self, cg: Cgroup) -> None:
        """Free ``cg`` (dying) once it holds nothing, and its dying ancestors likewise.  Mirrors the
        css_put() of a removed cgroup's last charge, which ends in sgx_cgroup_free()."""
        self.forget_freed(self.tree.release_if_unused(cg))

    def forget_freed(self, freed: list[Cgroup], announced: int = 0) -> None:
        """Freed cgroups leave the work queue (their ids are reused); CgroupFreed for all but the
        first ``announced``."""
        for n, gone in enumerate(freed):
            self.work.pop(gone.id, None)
            if n >= announced:
                self.emit(CgroupFreed(self.clock.now_ns(), gone.path))

    def get_current_cg(self, pid: int) -> Cgroup:
        """The cgroup whose misc counters ``pid``'s allocations charge now; ``pid`` becomes a
        known task (listed in root's cgroup.procs) if it was not.  Mirrors sgx_get_current_cg()."""
        cg = self.tree.tasks.get(pid)
        if cg is None:
            cg = self.tree.register_task(pid)
        return cg if cg.misc_on else cg.misc_css()

    # -- objects by id --------------------------------------------------------

    def new_id(self) -> int:
        """The next enclave or vEPC id not in use; ids wrap around at MAX_OWNER_ID, as pids do."""
        while True:
            new = self._next_id
            self._next_id = new + 1 if new < MAX_OWNER_ID else 1
            if new not in self.enclaves and new not in self.vepcs:
                return new

    def enclave(self, eid: int) -> Enclave:
        """The enclave ``eid``; OSError(EINVAL) if there is none."""
        encl = self.enclaves.get(eid)
        if encl is None:
            raise OSError(errno.EINVAL, f"no enclave {eid}")
        return encl

    def vepc(self, vid: int) -> Vepc:
        """The vEPC ``vid``; OSError(EINVAL) if there is none."""
        vepc = self.vepcs.get(vid)
        if vepc is None:
            raise OSError(errno.EINVAL, f"no vEPC {vid}")
        return vepc

    def take_events(self) -> list[Event]:
        """The kept events, oldest first, and forget them."""
        out = list(self.events)
        self.events.clear()
        return out

"""The emulated SGX host: its driver API (ioctls, faults, cgroup files) over the core.

``Host`` is HostState (engine.state: every piece of state, the kernel's globals) plus the
calls a process would make of a kernel with the SGX EPC cgroup series V17 (the README's
"The core in a few lines").  Each call is a thin delegation to the module that mirrors the kernel's file:
ioctl (sgx/ioctl.c), fault (sgx/encl.c), vepc (sgx/virt.c), work (ksgxd and the cgroup
work items), files (the cgroup files), check (the invariants).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence

from engine import check, fault, files, ioctl, vepc, views, work
from engine.cgroup import Cgroup
from engine.events import CgroupCreated, CgroupRemoved, FileWritten
from engine.fault import Touched
from engine.state import HostState
from engine.views import FrameMap, LruView


class Host(HostState):
    """An SGX host with ``capacity`` bytes of EPC and ``memory`` bytes of RAM for backing (None: unlimited).

    ``Host(capacity="128MiB", memory=None, seed=0, *, clock=None, event_sink=None,
    inline_work=True, max_cgroups=10_000, fast_paths=True, knobs=V17)``: see HostState.  With
    ``inline_work`` a fault that gets EBUSY runs the queued reclaim work itself and
    retries (the in-process core); with False it waits (touch() says so, access() raises
    Blocked) and the caller (the engine) lets its async workers run first.
    """

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
        self.forget_freed(freed, 1)

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
                    ioctl.release(self, encl.id)
                else:
                    self.epc.clear_young_slot(encl.resident_frames(), slot)
        for guest in [v for v in self.vepcs.values() if v.pid == pid]:
            vepc.vepc_release(self, guest.id)
        self.tree.forget_task(pid)
        self.signals.discard(pid)
        self.oom_victims.discard(pid)

    # -- enclave ioctls (engine.ioctl) ----------------------------------------

    def ecreate(self, pid: int, size: int | str) -> int:
        """ECREATE: a VA page and the SECS, DO_RECLAIM; returns the enclave id.  See ioctl.ecreate()."""
        return ioctl.ecreate(self, pid, size)

    def add_pages(self, pid: int, eid: int, count: int, kind: str = "REG") -> int:
        """EADD ``count`` pages (REG or TCS), DO_RECLAIM; returns how many.  IoctlError(ENOMEM,
        ERESTARTSYS) with the pages done, OSError(EINVAL), Blocked.  See ioctl.add_pages()."""
        return ioctl.add_pages(self, pid, eid, count, kind)

    def einit(self, pid: int, eid: int) -> None:
        """EINIT.  OSError(EINVAL) if already initialised.  See ioctl.einit()."""
        ioctl.einit(self, eid)

    def modify_types(self, pid: int, eid: int, first: int, count: int, kind: str) -> None:
        """SGX_IOC_ENCLAVE_MODIFY_TYPES to TCS or TRIM.  See ioctl.modify_types()."""
        ioctl.modify_types(self, pid, eid, first, count, kind)

    def trim_pages(self, pid: int, eid: int, first: int, count: int) -> None:
        """MODIFY_TYPES to TRIM: modify_types(pid, eid, first, count, "TRIM")."""
        ioctl.modify_types(self, pid, eid, first, count, "TRIM")

    def restrict_permissions(self, pid: int, eid: int, first: int, count: int) -> None:
        """SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS (EMODPR).  See ioctl.restrict_permissions()."""
        ioctl.restrict_permissions(self, pid, eid, first, count)

    def remove_trimmed(self, pid: int, eid: int, first: int, count: int) -> int:
        """SGX_IOC_ENCLAVE_REMOVE_PAGES of trimmed, EACCEPTed pages.  See ioctl.remove_trimmed()."""
        return ioctl.remove_trimmed(self, pid, eid, first, count)

    def remove_pages(self, pid: int, eid: int, first: int, count: int) -> int:
        """Trim and remove pages (SGX2 EDMM) as test_sgx's _remove test does: MODIFY_TYPES to
        TRIM, the enclave EACCEPTs each page (an access), REMOVE_PAGES.  Returns the pages removed.

        Their charges and backing go; VA pages stay.  Errors as modify_types(), access() and
        remove_trimmed(); an IoctlError(EAGAIN) carries the pages its ioctl had done: the
        caller may go on from there, as the selftest does, with trim_pages(), access() and
        remove_trimmed().
        """
        self.modify_types(pid, eid, first, count, "TRIM")
        self.access(pid, eid, first, count)  # the enclave EACCEPTs each page
        return self.remove_trimmed(pid, eid, first, count)

    def validate_edmm(self, eid: int, first: int, count: int) -> None:
        """OSError(EINVAL) unless an EDMM ioctl over pages first..first+count-1 of ``eid`` may run."""
        ioctl.validate_edmm(self, eid, first, count)

    def release(self, eid: int) -> None:
        """The enclave's last reference is gone: free and uncharge everything.  See ioctl.release()."""
        ioctl.release(self, eid)

    # -- faults (engine.fault) ------------------------------------------------

    def touch(
        self, pid: int, eid: int, ranges: Sequence[tuple[int, int]], write: bool = False, limit: int | None = None
    ) -> Touched:
        """Touch the pages of ``ranges`` ((first, count) pairs) in order, at most ``limit`` pages.

        Returns Touched(pages, faults, waiting): the pages served (resume from there), the
        faults among them, and whether it stopped because a fault must wait (EBUSY with the
        work not run inline, or that the work could not help).  ``write`` is accepted for
        the wire's sake and changes nothing (the core keeps no dirty bits).  SigBus when a
        fault cannot be served; OSError(EINVAL) for no such enclave, OSError(EFAULT) for a
        range outside it, before any page.  See fault.touch().
        """
        return Touched(*fault.touch(self, pid, eid, ranges, limit))

    def access(self, pid: int, eid: int, first: int, count: int, write: bool = False) -> int:
        """Touch pages ``first..first+count-1``; returns how many faulted.

        touch() of one range, raising Blocked (with the pages done and the faults served)
        where touch() says it waits.
        """
        pages, faults, waiting = fault.touch(self, pid, eid, ((first, count),))
        if waiting:
            raise fault.blocked(self, pages, faults)
        return faults

    def augment(self, pid: int, eid: int, count: int) -> int:
        """EAUG ``count`` pages through faults (SGX2), NO_RECLAIM.  See fault.augment()."""
        return fault.augment(self, pid, eid, count)

    # -- guest vEPC (engine.vepc) ---------------------------------------------

    def vepc_open(self, pid: int, size: int | str) -> int:
        """Open a guest's virtual EPC of ``size`` bytes; returns its id.  See vepc.vepc_open()."""
        return vepc.vepc_open(self, pid, size)

    def vepc_touch(self, pid: int, vid: int, ranges: Sequence[tuple[int, int]], limit: int | None = None) -> Touched:
        """touch() for guest pages: a first touch allocates NO_RECLAIM.  See vepc.vepc_touch()."""
        return Touched(*vepc.vepc_touch(self, pid, vid, ranges, limit))

    def vepc_access(self, pid: int, vid: int, first: int, count: int) -> int:
        """Touch guest pages; returns the faults.  Blocked (with the faults served) where
        vepc_touch() says it waits; SigBus for ENOMEM."""
        pages, faults, waiting = vepc.vepc_touch(self, pid, vid, ((first, count),))
        if waiting:
            raise fault.blocked(self, pages, faults)
        return faults

    def vepc_release(self, vid: int) -> None:
        """The guest's vEPC file is released: every page freed and uncharged."""
        vepc.vepc_release(self, vid)

    # -- async work (engine.work) ---------------------------------------------

    def run_work_step(self) -> bool:
        """One batch of queued cgroup work or ksgxd; False when there is nothing to do."""
        return work.run_work_step(self)

    def run_pending_work(self) -> int:
        """Run queued cgroup work items and ksgxd until idle; returns the batches run."""
        return work.run_pending_work(self)

    # -- views (engine.views): read-only, for displays ------------------------

    def lru_view(self, path: str, offset: int = 0, limit: int = 256, unreclaimable_offset: int = 0) -> LruView:
        """The cgroup's LRU from ``offset`` (head: scanned next), ``limit`` pages, each marked with what
        the next reclaim batch would do with it, and its unreclaimable pages.  See views.lru_view()."""
        return views.lru_view(self, path, offset, limit, unreclaimable_offset)

    def frame_map(self, first: int = 0, count: int = 4096, group: int = 1) -> FrameMap:
        """``count`` cells of ``group`` EPC frames from ``first``: free frames, main owner and kind.
        See views.frame_map()."""
        return views.frame_map(self, first, count, group)

    def frame_map_steps(self, first: int, count: int, group: int) -> Generator[None, None, FrameMap]:
        """frame_map() in steps of views.STEP_FRAMES frames; the FrameMap is the generator's value."""
        return views.frame_map_steps(self, first, count, group)

    # -- invariants -----------------------------------------------------------

    def check(self) -> None:
        """Verify every accounting invariant; raise InvariantError (an AssertionError) on the first broken one."""
        check.check_host(self)

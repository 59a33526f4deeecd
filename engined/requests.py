"""What each request does to the Host: the ops of wire.protocol, as the Session runs them.

An op returns its result, or a generator of steps (engined.session.Step) when it may
be long or may have to wait; it raises OSError (an errno) or SigBus to fail.  Who may
do what: a workload acts only on the enclaves and vEPCs it opened, and only a process
that said hello over ipc (the kernel told us its pid) is a workload.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Generator, Mapping
from typing import Any

from engine import Blocked, IoctlError
from engine.check import check_steps
from engine.enclave import Enclave, Vepc
from engine.fault import Touched
from engine.files import parse_pid
from engine.views import KIND_NAMES, FrameMap
from engined.calls import MORE, WAIT, Caller, Handler, Step
from engined.session import Session
from engined.stats import Workload
from wire.messages import (
    Created,
    Faulted,
    FrameCells,
    FreezeState,
    HistoryLog,
    HistorySamples,
    Info,
    LruListing,
    Opened,
    Ranges,
    StepResult,
)

CHECK_STEPS = 2  # check_steps() items per step of a `check` (each about a millisecond of work)


def _own_enclave(session: Session, pid: int, eid: int) -> None:
    _own(session.host.enclaves, eid, pid, "enclave")


def _own_vepc(session: Session, pid: int, vid: int) -> None:
    _own(session.host.vepcs, vid, pid, "vEPC")


def _own(table: Mapping[int, Enclave | Vepc], handle: int, pid: int, what: str) -> None:
    """EINVAL if there is no such enclave or vEPC, EPERM if ``pid`` did not open it (as the
    kernel's ioctls act only on the caller's own file)."""
    opened = table.get(handle)
    if opened is None:
        raise OSError(errno.EINVAL, f"no {what} {handle}")
    if opened.pid != pid:
        raise OSError(errno.EPERM, f"{what} {handle} is not yours")


# -- the engine and its clients ------------------------------------------------


def ping(session: Session, caller: Caller) -> Info:
    return session.info


def hello(
    session: Session,
    caller: Caller,
    pid: int,
    role: str,
    name: str = "",
    size: int = 0,
    pattern: str = "",
    passes: int | None = None,
    duration_ms: int | None = None,
    compute_ns: int | None = None,
) -> Info:
    """Register the sending process (only itself, as the kernel names it); it starts in the
    cgroup its nearest placed ancestor is in.  A client only says who it is.  A workload's
    plan (``size`` it asked for, ``pattern``, ``passes``, ``duration_ms``) goes on its record
    for displays; the engine acts on none of it."""
    if caller.pid and pid != caller.pid:
        raise OSError(errno.EPERM, f"hello names pid {pid}, but this connection is pid {caller.pid}'s")
    if role == "client":
        return {"cgroup": session.host.task_cgroup(pid) if caller.pid else "/", **session.info}
    if not caller.pid:
        raise OSError(errno.EPERM, "workloads register over ipc, where the kernel tells the engine their pid")
    session.register(caller, pid, role, name)
    workload = session.workloads[pid]
    workload.size_bytes, workload.pattern, workload.passes, workload.duration_ms = size, pattern, passes, duration_ms
    workload.compute_ns = compute_ns  # None: the cost profile's
    return {"cgroup": session.host.task_cgroup(pid), **session.info}


def bye(session: Session, caller: Caller, reason: str = "ok") -> None:
    """The workload is about to exit (its process exit does the releasing)."""
    session.note_exit_reason(caller.pid, reason)


def check(session: Session, caller: Caller) -> Step:
    """Verify every invariant of the host: "ok", or EIO naming the first broken one.  It runs in
    steps between other requests, one check at a time, on a copy of the state taken at its start."""
    while session.checking:
        yield MORE
    session.checking = True
    try:
        steps = check_steps(session.host)
        while True:
            try:
                for _ in range(CHECK_STEPS):
                    next(steps)
            except StopIteration:
                return "ok"
            except AssertionError as e:
                raise OSError(errno.EIO, f"invariant broken: {e}") from None
            yield MORE
    finally:
        session.checking = False


def snapshot(session: Session, caller: Caller) -> dict[str, Any]:
    return session.snapshot()


# -- the kernel's views (engine.views): read-only, open to every client, as snapshot is -----


def lru(
    session: Session, caller: Caller, cgroup: str, offset: int = 0, limit: int = 256, unreclaimable_offset: int = 0
) -> LruListing:
    """A page of the cgroup's LRU, head first, marked with what the next reclaim batch would do,
    and of its unreclaimable pages.  ENOENT for no such cgroup.  Changes nothing."""
    view = session.host.lru_view(cgroup, offset, limit, unreclaimable_offset)
    return {
        "cgroup": view.cgroup,
        "size": view.size,
        "offset": view.offset,
        "pages": view.pages,
        "nr_to_scan": session.host.nr_to_scan,
        "batch": view.batch,
        "mms": view.mms,
        "next_cg": view.next_cg,
        "nr_unreclaimable": view.nr_unreclaimable,
        "unreclaimable_offset": view.unreclaimable_offset,
        "unreclaimable": view.unreclaimable,
    }


def frames(session: Session, caller: Caller, count: int, first: int = 0, group: int = 1) -> Step:
    """The EPC frame map: ``count`` cells of ``group`` frames from ``first``, built in steps of
    65,536 frames between other requests.  EINVAL for ``first`` past the EPC."""
    steps = session.host.frame_map_steps(first, count, group)  # EINVAL now, before any step
    return _frame_steps(steps)


def _frame_steps(steps: Generator[None, None, FrameMap]) -> Step:
    while True:
        try:
            next(steps)
        except StopIteration as done:
            cells: FrameMap = done.value
            return FrameCells(
                first=cells.first, group=cells.group, count=cells.count, frames=cells.frames,
                capacity=cells.capacity, kinds=list(KIND_NAMES), cgroups=cells.cgroups, dying=cells.dying,
                owner=cells.owner, kind=cells.kind, free=cells.free, counts=cells.counts,
            )  # fmt: skip
        yield MORE


# -- the cgroup filesystem -----------------------------------------------------


def read(session: Session, caller: Caller, path: str) -> str:
    return session.host.read(path)


def listdir(session: Session, caller: Caller, path: str) -> list[str]:
    return session.host.listdir(path)


def mkdir(session: Session, caller: Caller, path: str) -> None:
    session.host.mkdir(path)


def rmdir(session: Session, caller: Caller, path: str) -> None:
    session.reap(session.host.cgroup(path).procs)
    session.host.rmdir(path)


def write(session: Session, caller: Caller, path: str, value: str) -> None:
    """Write a cgroup file as the calling process; a pid moved by cgroup.procs is followed from then on."""
    host, processes = session.host, session.processes
    if path.rstrip("/").endswith("/cgroup.procs") or path.strip("/") == "cgroup.procs":
        target = parse_pid(value, caller.pid or None)
        if not processes.watching(target) and not processes.alive(target):
            raise OSError(errno.ESRCH, f"no process {target}")
        host.write(path, value, pid=caller.pid or None)
        try:
            processes.watch(target)
        except OSError:
            session.reap([target])  # it exited in between: it leaves the cgroup again
    else:
        host.write(path, value, pid=caller.pid or None)
    session.something_freed()  # a limit raised, or a task moved, may let a stalled call go on


# -- enclaves ------------------------------------------------------------------


def ecreate(session: Session, caller: Caller, size: int) -> Created:
    workload = session.workload(caller.pid)
    session.may_open(workload)
    eid = session.host.ecreate(caller.pid, size)
    workload.eids.add(eid)
    workload.opened(session.host)  # its ELRANGE, kept for displays after the enclave goes
    return {"eid": eid}


def add_pages(session: Session, caller: Caller, eid: int, count: int, kind: str = "REG") -> Step:
    _own_enclave(session, caller.pid, eid)
    encl = session.host.enclaves[eid]
    if encl.initialized or count > encl.size_pages - encl.next_index:  # the whole range, before any page
        raise OSError(errno.EINVAL, f"{count} pages do not fit in enclave {eid} (or it is initialised)")
    return _in_steps(session, count, lambda chunk: session.host.add_pages(caller.pid, eid, chunk, kind))


def augment(session: Session, caller: Caller, eid: int, count: int) -> Step:
    _own_enclave(session, caller.pid, eid)
    encl = session.host.enclaves[eid]
    if count > encl.size_pages - encl.next_index:  # the whole range, before any page
        raise OSError(errno.EFAULT, f"{count} pages lie past the end of enclave {eid}")
    return _in_steps(session, count, lambda chunk: session.host.augment(caller.pid, eid, chunk))


def einit(session: Session, caller: Caller, eid: int) -> None:
    _own_enclave(session, caller.pid, eid)
    session.host.einit(caller.pid, eid)


def access(
    session: Session, caller: Caller, eid: int, ranges: Ranges, write: bool = False, compute_ns: int | None = None
) -> Faulted | Step:
    """Touch ``ranges`` of the caller's enclave; ``compute_ns`` (the call's compute, a trace's batch) is
    charged by the Session (submit), not here."""
    _own_enclave(session, caller.pid, eid)
    pid, host = caller.pid, session.host
    return _touch(session, session.workload(pid), ranges, lambda todo, limit: host.touch(pid, eid, todo, write, limit))


def release(session: Session, caller: Caller, eid: int) -> None:
    _own_enclave(session, caller.pid, eid)
    session.host.release(eid)
    session.workload(caller.pid).eids.discard(eid)
    session.something_freed()


def remove_pages(session: Session, caller: Caller, eid: int, first: int, count: int) -> Step:
    """What test_sgx's _remove test does: MODIFY_TYPES to TRIM and REMOVE_PAGES, each again from
    where it stopped while they say EAGAIN, with EACCEPT of every page between them."""
    host, pid = session.host, caller.pid
    _own_enclave(session, pid, eid)
    yield from _resumed(lambda at, n: host.modify_types(pid, eid, at, n, "TRIM"), first, count)
    accept = lambda todo, limit: host.touch(pid, eid, todo, limit=limit)  # noqa: E731  (EACCEPT, page by page)
    yield from _touch_steps(session, session.workload(pid), [(first, count)], accept, 0, waiting=False)
    yield from _resumed(lambda at, n: host.remove_trimmed(pid, eid, at, n), first, count)
    return {"removed": count}


def modify_types(session: Session, caller: Caller, eid: int, first: int, count: int, kind: str) -> Step:
    """SGX_IOC_ENCLAVE_MODIFY_TYPES to TCS or TRIM; the pages done on an error, as its count."""
    pid, host = caller.pid, session.host
    return _edmm_steps(session, eid, pid, first, count, lambda at, n: host.modify_types(pid, eid, at, n, kind))


def restrict_permissions(session: Session, caller: Caller, eid: int, first: int, count: int) -> Step:
    """SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS; the pages done on an error, as its count."""
    pid, host = caller.pid, session.host
    return _edmm_steps(session, eid, pid, first, count, lambda at, n: host.restrict_permissions(pid, eid, at, n))


def remove_trimmed(session: Session, caller: Caller, eid: int, first: int, count: int) -> Step:
    """SGX_IOC_ENCLAVE_REMOVE_PAGES of pages trimmed and EACCEPTed; the pages done on an error."""
    pid, host = caller.pid, session.host
    return _edmm_steps(session, eid, pid, first, count, lambda at, n: host.remove_trimmed(pid, eid, at, n))


# -- guests --------------------------------------------------------------------


def vepc_open(session: Session, caller: Caller, size: int) -> Opened:
    workload = session.workload(caller.pid)
    session.may_open(workload)
    vid = session.host.vepc_open(caller.pid, size)
    workload.vids.add(vid)
    workload.opened(session.host)
    return {"vid": vid}


def vepc_access(session: Session, caller: Caller, vid: int, ranges: Ranges) -> Faulted | Step:
    _own_vepc(session, caller.pid, vid)
    pid, host = caller.pid, session.host
    return _touch(session, session.workload(pid), ranges, lambda todo, limit: host.vepc_touch(pid, vid, todo, limit))


def vepc_release(session: Session, caller: Caller, vid: int) -> None:
    _own_vepc(session, caller.pid, vid)
    session.host.vepc_release(vid)
    session.workload(caller.pid).vids.discard(vid)
    session.something_freed()


# -- steps ---------------------------------------------------------------------


def _in_steps(session: Session, count: int, call: Callable[[int], int]) -> Step:
    """A request for ``count`` pages, chunk_pages a step, parked while the core says Blocked.

    A step that does less than asked (a signal stopped ADD_PAGES) ends it with the
    kernel's partial count; an IoctlError reports the pages done over all steps.
    """
    done = 0
    while done < count:
        chunk = min(session.chunk_pages, count - done)
        try:
            served = call(chunk)
        except Blocked as e:
            done += e.done
            session.pages_stepped += e.done
            yield WAIT
            continue
        except IoctlError as e:
            raise IoctlError(e.errno or errno.EIO, e.strerror or "", done + e.done) from None
        done += served
        session.pages_stepped += served
        if served < chunk:
            break
        if done < count:
            yield MORE
    return {"added": done}


Touch = Callable[[Ranges, int], Touched]
"""``touch(ranges, limit)``: the core's Host.touch or vepc_touch of one caller's enclave or vEPC."""


def _touch(session: Session, workload: Workload, ranges: Ranges, touch: Touch) -> Faulted | Step:
    """Fault a batch of page ranges: at once when it fits in a step and nothing waits (most do),
    else in steps of chunk_pages, parked while the core says it waits."""
    done = touch(ranges, session.chunk_pages)
    workload.faults += done.faults
    session.pages_stepped += done.pages
    if not done.waiting and done.pages == sum(count for _, count in ranges):
        return {"faults": done.faults}
    return _touch_steps(session, workload, _after(ranges, done.pages), touch, done.faults, waiting=done.waiting)


def _touch_steps(
    session: Session, workload: Workload, ranges: Ranges, touch: Touch, faults: int, *, waiting: bool
) -> Step:
    """The rest of a batch of page ranges, chunk_pages a step; parked while the core says it waits
    (at once with ``waiting``: the try before this one stopped so)."""
    if waiting:
        yield WAIT
    while ranges:
        done = touch(ranges, session.chunk_pages)
        faults += done.faults
        workload.faults += done.faults
        session.pages_stepped += done.pages
        ranges = _after(ranges, done.pages)
        if done.waiting:
            yield WAIT
        elif ranges:
            yield MORE  # a chunk's worth done: the others' turn
    return {"faults": faults}


def _after(ranges: Ranges, pages: int) -> Ranges:
    """What is left of ``ranges`` once their first ``pages`` pages are served."""
    for i, (first, count) in enumerate(ranges):
        if pages < count:
            return [(first + pages, count - pages), *ranges[i + 1 :]]
        pages -= count
    return []


def _edmm_steps(
    session: Session, eid: int, pid: int, first: int, count: int, ioctl: Callable[[int, int], object]
) -> Step:
    """One EDMM ioctl: the enclave and the whole range checked first (EINVAL, as the kernel
    checks offset and length before any page), then chunk_pages a step; an IoctlError
    reports the pages done over all steps."""
    _own_enclave(session, pid, eid)
    session.host.validate_edmm(eid, first, count)

    def steps() -> Step:
        done = 0
        while True:
            chunk = min(session.chunk_pages, count - done)
            try:
                ioctl(first + done, chunk)
            except IoctlError as e:
                raise IoctlError(e.errno or errno.EIO, e.strerror or "", done + e.done) from None
            done += chunk
            session.pages_stepped += chunk
            if done == count:
                return {"count": done}
            yield MORE

    return steps()


def _resumed(ioctl: Callable[[int, int], object], first: int, count: int) -> Step:
    """An EDMM ioctl over [first, first+count), called again from where it stopped after EAGAIN
    (or Blocked: its EACCEPT-free loads wait for reclaim like faults)."""
    done = 0
    while True:
        try:
            ioctl(first + done, count - done)
            return None
        except IoctlError as e:
            if e.errno != errno.EAGAIN:
                raise
            done += e.done
            yield WAIT
        except Blocked as e:
            done += e.done
            yield WAIT


# -- step mode and history ----------------------------------------------------


def _may_freeze(session: Session, caller: Caller) -> None:
    """Step mode is for clients of the engine's own uid over ipc (the kernel told us who they are)."""
    if not caller.pid:
        raise OSError(errno.EPERM, "step mode needs an ipc connection, where the kernel tells the engine who asks")
    if caller.uid != session.uid:
        raise OSError(errno.EPERM, f"only the engine's user (uid {session.uid}) may freeze it, not uid {caller.uid}")


def freeze(session: Session, caller: Caller) -> FreezeState:
    """Step mode: the engine runs nothing by itself until this connection thaws it, steps it,
    disconnects or its process exits."""
    _may_freeze(session, caller)
    return session.freeze(session.asking, caller.pid)


def step(session: Session, caller: Caller, what: str) -> StepResult:
    _may_freeze(session, caller)
    return session.step(session.asking, what)


def thaw(session: Session, caller: Caller) -> FreezeState:
    _may_freeze(session, caller)
    return session.thaw("asked", session.asking)


def history(session: Session, caller: Caller, what: str, after: int = 0) -> HistorySamples | HistoryLog:
    """A page of the engine's history: samples, events or pressure sums, from cursor ``after``."""
    if what == "samples":
        return session.history.samples_page(after)
    if what == "events":
        return session.history.events_page(after)
    return session.history.pressure_page(after)


HANDLERS: dict[str, Handler] = {
    "ping": ping,
    "hello": hello,
    "bye": bye,
    "check": check,
    "snapshot": snapshot,
    "lru": lru,
    "frames": frames,
    "read": read,
    "listdir": listdir,
    "mkdir": mkdir,
    "rmdir": rmdir,
    "write": write,
    "ecreate": ecreate,
    "add_pages": add_pages,
    "augment": augment,
    "einit": einit,
    "access": access,
    "release": release,
    "remove_pages": remove_pages,
    "modify_types": modify_types,
    "restrict_permissions": restrict_permissions,
    "remove_trimmed": remove_trimmed,
    "vepc_open": vepc_open,
    "vepc_access": vepc_access,
    "vepc_release": vepc_release,
    # step mode and history
    "freeze": freeze,
    "step": step,
    "thaw": thaw,
    "history": history,
}

"""The engine process: the emulated host behind a ZeroMQ ROUTER (requests) and PUB (events, stats).

One asyncio loop owns the Host.  Requests are parsed and checked by engine.protocol,
then run as small steps: a long ADD_PAGES or a batch of faults is cut into chunks so
that other clients, process exits and the reclaim workers get their turn.  A step
that the core reports Blocked (a fault got EBUSY, or reclaim waits for an OOM victim
to exit) is parked and retried when the async reclaim work (cgroup work items and
ksgxd, run here as their own task) or an exit has changed something.

Liveness: every workload registers its pid with ``hello``; the engine watches it
through a pidfd, and when the process is gone, by any means, releases what it held,
exactly as the kernel does on the last reference.  The pids written to cgroup.procs
are watched the same way, so a shell that exits leaves its cgroup.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import faulthandler
import json
import logging
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import zmq

from engine import protocol
from engine.clock import MonotonicClock
from engine.events import Event, OomKill, ReclaimBatch
from engine.host import Host
from engine.protocol import ProtocolError
from engine.sgx import PAGE_COUNTER_MAX, PAGE_SIZE, Blocked, IoctlError, SigBus, errno_name

log = logging.getLogger("epc.engine")

# Pages per step of a long request.  Processes take turns a step at a time, so this is
# how finely concurrent ioctls interleave (about 3 ms of work under reclaim).
CHUNK_PAGES = 1024
WORK_SLICE_S = 0.002  # reclaim work run between request steps
STATS_INTERVAL_S = 0.25
FAULT_WAIT_S = 10.0  # a parked request gives up after this long
STOP_DEADLINE_S = 5.0
MORE, WAIT = "more", "wait"

Step = Generator[str, None, Any]


@dataclass(slots=True)
class Workload:
    """A registered process, alive or gone (kept for the TUI and scenario runner)."""

    pid: int
    role: str
    name: str
    cgroup: str
    started_ns: int
    state: str = "running"  # running | exited
    reason: str = ""  # ok | ENOMEM | SIGBUS | OOM | killed | failed | <errno name>
    faults: int = 0
    eids: set[int] = field(default_factory=set)
    vids: set[int] = field(default_factory=set)


@dataclass(slots=True)
class Pending:
    """A request being served in steps."""

    ident: bytes
    request_id: int
    pid: int
    steps: Step
    progress_seen: int = -1
    deadline: float = 0.0


class Engine:
    """Serves one Host on a ROUTER endpoint and publishes its events on a PUB endpoint."""

    def __init__(self, host: Host, endpoint: str, pub_endpoint: str, *, fault_wait_s: float = FAULT_WAIT_S) -> None:
        self.host = host
        self.endpoint = endpoint
        self.pub_endpoint = pub_endpoint
        self.fault_wait_s = fault_wait_s
        self.ctx = zmq.Context()
        self.router = self.ctx.socket(zmq.ROUTER)
        self.pub = self.ctx.socket(zmq.PUB)
        for sock in (self.router, self.pub):
            sock.linger = 0
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        # A subscriber that stalls for a moment (a TUI busy drawing) must not lose events:
        # PUB drops beyond this many queued messages, each a batch of events (seq shows gaps).
        self.pub.sndhwm = protocol.PUB_HWM
        self.sessions: dict[bytes, int] = {}  # routing id -> pid that said hello
        self.reclaimed: dict[str, int] = {}  # cgroup path -> pages reclaimed from its LRU (for stats)
        self.workloads: dict[int, Workload] = {}
        self.watched: dict[int, int] = {}  # pid -> pidfd
        self.ready: deque[Pending] = deque()
        self.waiting: list[Pending] = []
        self.events: list[Event] = []
        self.seq = 0
        self.kick = asyncio.Event()
        self.stopping = asyncio.Event()
        self.bad_frames = 0
        self.handlers: dict[str, Callable[..., Any]] = {op: getattr(self, f"op_{op}") for op in protocol.OPS}
        host.emit = self.events.append

    # -- running --------------------------------------------------------------

    async def serve(self) -> None:
        """Run until stop(); then tell everyone, close the sockets and return."""
        self.router.bind(self.endpoint)
        self.pub.bind(self.pub_endpoint)
        log.info("engine serving %s (events on %s), EPC %d pages", self.endpoint, self.pub_endpoint,
                 self.host.capacity_pages)  # fmt: skip
        loop = asyncio.get_running_loop()
        # The sockets are plain (blocking-style) zmq sockets driven from the loop: their FD
        # wakes us, and we drain with NOBLOCK; cheaper per request than zmq.asyncio futures.
        router_fd = int(self.router.getsockopt(zmq.FD))
        loop.add_reader(router_fd, self._drain)
        tasks = [
            asyncio.create_task(self._schedule(), name="schedule"),
            asyncio.create_task(self._stats(), name="stats"),
        ]
        self._drain()
        await self.stopping.wait()
        loop.remove_reader(router_fd)
        # The loops end by themselves once stopping is set; cancelling alone is not enough
        # on Python 3.11, whose wait_for can swallow a cancellation (the engine then hung).
        _, pending = await asyncio.wait(tasks, timeout=STATS_INTERVAL_S * 4)
        for task in pending:
            task.cancel()
        self._shutdown()

    def stop(self) -> None:
        """Stop serving.  Should the shutdown ever hang, the stacks go to stderr and the process exits 1."""
        if not self.stopping.is_set():
            faulthandler.dump_traceback_later(STOP_DEADLINE_S, exit=True)
        self.stopping.set()
        self.kick.set()

    def _shutdown(self) -> None:
        for pending in [*self.ready, *self.waiting]:
            self._reply(pending.ident, protocol.reply_err(pending.request_id, "ESHUTDOWN", "the engine stopped"))
        with contextlib.suppress(zmq.ZMQError):
            self.pub.send_multipart([protocol.TOPIC_ENGINE, protocol.encode({"event": "shutdown"})], flags=zmq.NOBLOCK)
        loop = asyncio.get_running_loop()
        for pid, fd in list(self.watched.items()):
            loop.remove_reader(fd)
            os.close(fd)
            del self.watched[pid]
        self.router.close(linger=0)
        self.pub.close(linger=0)
        self.ctx.term()

    def _drain(self) -> None:
        """Take every request waiting on the ROUTER (its FD is edge-triggered: read until empty)."""
        recv = self.router.recv_multipart
        while True:
            try:
                frames = recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            if len(frames) >= 2:
                self._accept(frames[0], frames[-1])
        if self.ready or self._work_due():
            self.kick.set()

    def _accept(self, ident: bytes, frame: bytes) -> None:
        try:
            request_id, op, args = protocol.decode_request(frame)
        except ProtocolError as e:
            self.bad_frames += 1
            if self.bad_frames <= 10 or self.bad_frames % 1000 == 0:
                log.warning("bad frame #%d from %r: %s", self.bad_frames, ident[:8], e.message)
            self._reply(ident, protocol.reply_err(e.request_id, e.code, e.message))
            return
        pid = self.sessions.get(ident, 0)
        try:
            result = self.handlers[op](ident, pid, **args)
        except Exception as e:
            self._reply(ident, self._error_reply(request_id, pid, e))
            return
        if isinstance(result, Generator):
            self._step(Pending(ident, request_id, pid, result))  # most finish in their first step
        else:
            self._reply(ident, protocol.reply_ok(request_id, result))
        self._publish_events()

    async def _schedule(self) -> None:
        """Run request steps and reclaim work in turns; park what is blocked."""
        host = self.host
        while not self.stopping.is_set():
            if not self.ready and not self._work_due():
                self._expire_waiting()
                self.kick.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.kick.wait(), timeout=0.1)
                continue
            for _ in range(len(self.ready)):
                self._step(self.ready.popleft())
                self._drain()  # a newcomer's request goes between two long ones, not after them all
            if self._work_due():
                progress = host.progress
                deadline = time.monotonic() + WORK_SLICE_S
                while host.run_work_step() and time.monotonic() < deadline:
                    pass
                if host.progress != progress:
                    self._wake_waiting()
            self._publish_events()
            self._expire_waiting()
            self._drain()
            await asyncio.sleep(0)

    def _work_due(self) -> bool:
        host = self.host
        return bool(host.work) or host.work_in_flight is not None or host.ksgxd_woken

    def _step(self, pending: Pending) -> None:
        if pending.pid and pending.pid not in self.watched:
            pending.steps.close()  # its process is gone: nobody to answer
            return
        try:
            state = next(pending.steps)
        except StopIteration as done:
            self._reply(pending.ident, protocol.reply_ok(pending.request_id, done.value))
            return
        except Exception as e:
            self._reply(pending.ident, self._error_reply(pending.request_id, pending.pid, e))
            return
        if state == WAIT:
            if pending.deadline == 0.0:
                pending.deadline = time.monotonic() + self.fault_wait_s
            if pending.progress_seen == self.host.progress and not self._anything_can_change():
                pending.steps.close()
                message = "no reclaimable EPC and nothing left to wait for"
                self._reply(pending.ident, self._error_reply(pending.request_id, pending.pid, _NoProgress(message)))
                return
            pending.progress_seen = self.host.progress
            self.waiting.append(pending)
        else:
            self.ready.append(pending)

    def _anything_can_change(self) -> bool:
        return self._work_due() or bool(self.host.oom_victims)

    def _wake_waiting(self) -> None:
        self.ready.extend(self.waiting)
        self.waiting.clear()

    def _expire_waiting(self) -> None:
        """Fail parked requests past their deadline; when nothing can unblock the rest, give
        each a last try (_step fails those still stuck)."""
        now = time.monotonic()
        expired = [p for p in self.waiting if now >= p.deadline]
        self.waiting = [p for p in self.waiting if now < p.deadline]
        for pending in expired:
            pending.steps.close()
            error = _NoProgress(f"still blocked after {self.fault_wait_s:g} s")
            self._reply(pending.ident, self._error_reply(pending.request_id, pending.pid, error))
        if self.waiting and not self._anything_can_change():
            self._wake_waiting()

    def _reply(self, ident: bytes, frame: bytes) -> None:
        self._publish_events()  # first: an OOM kill lands before the call returns, as in the kernel
        with contextlib.suppress(zmq.ZMQError):  # the peer went away, or is not reading
            self.router.send_multipart([ident, frame], flags=zmq.NOBLOCK)

    def _error_reply(self, request_id: int, pid: int, error: BaseException) -> bytes:
        if isinstance(error, SigBus | _NoProgress):
            self._note_exit_reason(pid, "SIGBUS")
            return protocol.reply_err(request_id, "SIGBUS", str(error))
        if isinstance(error, ProtocolError):
            return protocol.reply_err(request_id, error.code, error.message)
        if isinstance(error, OSError) and error.errno:
            name = errno_name(error.errno)
            message = error.strerror or name
            if isinstance(error, IoctlError) and error.done:
                message += f" (after {error.done} pages)"
            return protocol.reply_err(request_id, name, message)
        log.exception("internal error serving request %d", request_id, exc_info=error)
        return protocol.reply_err(request_id, "EIO", f"internal error: {type(error).__name__}: {error}")

    # -- events and stats -----------------------------------------------------

    def _publish_events(self) -> None:
        if not self.events:
            return
        events = self.events[:]
        self.events.clear()  # the same list: the host appends to it
        reclaimed = self.reclaimed
        for event in events:
            if isinstance(event, ReclaimBatch):
                reclaimed[event.cgroup] = reclaimed.get(event.cgroup, 0) + event.written
            elif isinstance(event, OomKill):
                self._oom_kill(event.pid)
        self._publish(*[event.to_dict() for event in events])

    def _publish(self, *messages: dict[str, Any]) -> None:
        """Events, numbered, as lists of maps (far cheaper than a message each): each run of pressure
        events (limit hits, reclaim) under TOPIC_EVENT_PRESSURE, each run of the others under
        TOPIC_EVENT_OTHER, in order, so a display can leave the pressure out and read its sums from stats."""
        runs: list[tuple[bytes, list[dict[str, Any]]]] = []
        for message in messages:
            self.seq += 1
            message["seq"] = self.seq
            topic = (
                protocol.TOPIC_EVENT_PRESSURE
                if message["kind"] in protocol.PRESSURE_KINDS
                else protocol.TOPIC_EVENT_OTHER
            )
            if runs and runs[-1][0] == topic:
                runs[-1][1].append(message)
            else:
                runs.append((topic, [message]))
        with contextlib.suppress(zmq.ZMQError):
            for topic, run in runs:
                self.pub.send_multipart([topic, protocol.encode(run)], flags=zmq.NOBLOCK)

    async def _stats(self) -> None:
        while not self.stopping.is_set():
            await asyncio.sleep(STATS_INTERVAL_S)
            snapshot = self.snapshot()
            with contextlib.suppress(zmq.ZMQError):
                self.pub.send_multipart([protocol.TOPIC_STATS, protocol.encode(snapshot)], flags=zmq.NOBLOCK)

    def snapshot(self) -> dict[str, Any]:
        """The whole state a client needs to draw: cgroups, workloads, EPC; O(cgroups + workloads)."""
        host = self.host
        swapped_by: dict[str, int] = {}  # EPC pages swapped out, by the cgroup of the enclave's creator
        for enclave in host.enclaves.values():
            if enclave.nr_swapped:
                path = host.task_cgroup(enclave.pid)
                swapped_by[path] = swapped_by.get(path, 0) + enclave.nr_swapped
        cgroups = []
        for cg in host.tree.live():
            own = cg.misc_usage - sum(child.misc_usage for child in cg.children)
            cgroups.append(
                {
                    "path": cg.path,
                    "misc_current": cg.misc_usage * PAGE_SIZE,
                    "misc_max": cg.misc_max_bytes if cg.parent is not None else None,
                    "misc_peak": cg.misc_peak * PAGE_SIZE,
                    "misc_events": cg.misc_events,
                    "misc_events_local": cg.misc_events_local,
                    "memory_current": cg.mem_usage * PAGE_SIZE,
                    "memory_max": _memory_bytes(cg.mem_max_pages),
                    "memory_events": list(cg.mem_events),
                    "reclaimable": cg.lru.size,  # its own pages on its LRU
                    "unreclaimable": own - cg.lru.size,  # its own VA, SECS and guest pages (and any isolated)
                    "swapped": swapped_by.get(cg.path, 0),
                    "reclaimed": self.reclaimed.get(cg.path, 0),  # pages written out from its LRU, ever
                    "procs": sorted(cg.procs),
                }
            )
        workloads = []
        for w in self.workloads.values():
            resident = swapped = size = 0
            for eid in w.eids:
                encl = host.enclaves.get(eid)
                if encl is not None:
                    resident += encl.secs_child_cnt
                    swapped += encl.nr_swapped
                    size += encl.size_pages
            for vid in w.vids:
                vepc = host.vepcs.get(vid)
                if vepc is not None:
                    resident += vepc.nr_present
                    size += vepc.size_pages
            workloads.append(
                {
                    "pid": w.pid,
                    "role": w.role,
                    "name": w.name,
                    "cgroup": host.task_cgroup(w.pid) if w.state == "running" else w.cgroup,
                    "state": w.state,
                    "reason": w.reason,
                    "faults": w.faults,
                    "resident": resident,
                    "swapped": swapped,
                    "size": size * PAGE_SIZE,  # ELRANGE of its enclaves and its virtual EPC
                }
            )
        return {
            "seq": self.seq,
            "t_ns": host.clock.now_ns(),
            "capacity": host.capacity_bytes,
            "memory": _memory_bytes(host.tree.root.mem_max_pages),  # host RAM for backing (None: unlimited)
            "free": host.epc.nr_free * PAGE_SIZE,
            "ksgxd": host.ksgxd_woken,
            "pub": self.pub_endpoint,
            "engine_pid": os.getpid(),
            "cgroups": cgroups,
            "workloads": workloads,
        }

    # -- processes ------------------------------------------------------------

    def _watch(self, pid: int) -> None:
        """Follow ``pid`` until it exits; OSError(ESRCH) if there is no such process."""
        if pid in self.watched:
            return
        fd = os.pidfd_open(pid)
        self.watched[pid] = fd
        asyncio.get_running_loop().add_reader(fd, self._exited, pid)

    def _exited(self, pid: int) -> None:
        """``pid`` is gone, however it went: release what it held, without its help."""
        fd = self.watched.pop(pid, None)
        if fd is not None:
            asyncio.get_running_loop().remove_reader(fd)
            os.close(fd)
        self.host.signal(pid)
        self.host.exit_task(pid)
        workload = self.workloads.get(pid)
        if workload is not None and workload.state == "running":
            workload.state = "exited"
            workload.reason = workload.reason or "killed"
            self._publish({"kind": "workload_exit", "pid": pid, "name": workload.name, "reason": workload.reason})
            log.info("workload %d (%s) exited: %s", pid, workload.name, workload.reason)
        for ident in [i for i, p in self.sessions.items() if p == pid]:
            del self.sessions[ident]
        self._publish_events()
        self._wake_waiting()
        self.kick.set()

    def _oom_kill(self, pid: int) -> None:
        """Deliver the OOM killer's SIGKILL to a workload (other processes are not ours to kill)."""
        self._note_exit_reason(pid, "OOM")
        if pid in self.workloads and pid in self.watched:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        else:
            log.warning("the OOM killer chose pid %d, which is not a workload: not killed", pid)
            self.host.oom_victims.discard(pid)

    def _note_exit_reason(self, pid: int, reason: str) -> None:
        workload = self.workloads.get(pid)
        if workload is not None and not workload.reason:
            workload.reason = reason

    def _cgroup_of_new_process(self, pid: int) -> str:
        """Where a new process belongs: the cgroup of its nearest ancestor in cgroup.procs, else root."""
        tasks = self.host.tree.tasks
        seen = 0
        ancestor = pid
        while ancestor > 1 and seen < 64:
            cg = tasks.get(ancestor)
            if cg is not None and cg is not self.host.tree.root:
                return cg.path
            ancestor = _parent_pid(ancestor)
            seen += 1
        return "/"

    # -- requests -------------------------------------------------------------

    def _require_pid(self, pid: int) -> int:
        if not pid:
            raise OSError(errno.EPERM, "say hello with your pid first")
        return pid

    def _own_enclave(self, pid: int, eid: int) -> None:
        encl = self.host.enclaves.get(eid)
        if encl is None:
            raise OSError(errno.EINVAL, f"no enclave {eid}")
        if encl.pid != pid:
            raise OSError(errno.EPERM, f"enclave {eid} belongs to pid {encl.pid}")

    def _own_vepc(self, pid: int, vid: int) -> None:
        vepc = self.host.vepcs.get(vid)
        if vepc is None:
            raise OSError(errno.EINVAL, f"no vEPC {vid}")
        if vepc.pid != pid:
            raise OSError(errno.EPERM, f"vEPC {vid} belongs to pid {vepc.pid}")

    def op_ping(self, ident: bytes, caller: int) -> dict[str, Any]:
        return {"engine_pid": os.getpid(), "pub": self.pub_endpoint, "capacity": self.host.capacity_bytes}

    def op_hello(self, ident: bytes, caller: int, pid: int, role: str, name: str = "") -> dict[str, Any]:
        """Register the sending process; it starts in the cgroup its nearest placed ancestor is in."""
        try:
            self._watch(pid)
        except OSError:
            raise OSError(errno.ESRCH, f"no process {pid} on the engine's host") from None
        if pid not in self.host.tree.tasks:
            self.host.write(f"{self._cgroup_of_new_process(pid).rstrip('/')}/cgroup.procs", str(pid))
        self.sessions[ident] = pid
        cgroup = self.host.task_cgroup(pid)
        if role != "client" and pid not in self.workloads:
            name = name or f"{role}-{pid}"
            self.workloads[pid] = Workload(pid, role, name, cgroup, self.host.clock.now_ns())
            self._publish({"kind": "workload_start", "pid": pid, "role": role, "name": name, "cgroup": cgroup})
        return {
            "cgroup": cgroup,
            "capacity": self.host.capacity_bytes,
            "engine_pid": os.getpid(),
            "pub": self.pub_endpoint,
        }

    def op_check(self, ident: bytes, caller: int) -> str:
        """Verify every invariant of the host now: "ok", or EIO naming the first broken one."""
        try:
            self.host.check()
        except AssertionError as e:
            raise OSError(errno.EIO, f"invariant broken: {e}") from None
        return "ok"

    def op_snapshot(self, ident: bytes, caller: int) -> dict[str, Any]:
        return self.snapshot()

    def op_read(self, ident: bytes, caller: int, path: str) -> str:
        return self.host.read(path)

    def op_listdir(self, ident: bytes, caller: int, path: str) -> list[str]:
        return self.host.listdir(path)

    def op_mkdir(self, ident: bytes, caller: int, path: str) -> None:
        self.host.mkdir(path)

    def op_rmdir(self, ident: bytes, caller: int, path: str) -> None:
        self._forget_dead_tasks()
        self.host.rmdir(path)

    def op_write(self, ident: bytes, caller: int, path: str, value: str) -> None:
        if path.rstrip("/").endswith("/cgroup.procs") or path.strip("/") == "cgroup.procs":
            text = value.strip()
            target = caller if text == "0" else int(text) if text.isdigit() else 0
            if target:
                try:
                    self._watch(target)
                except OSError:
                    raise OSError(errno.ESRCH, f"no process {target}") from None
        self.host.write(path, value, pid=caller or None)

    def _forget_dead_tasks(self) -> None:
        for task in list(self.host.tree.tasks):
            if task not in self.watched and not protocol.process_alive(task):
                self.host.exit_task(task)

    def op_ecreate(self, ident: bytes, caller: int, size: int) -> dict[str, int]:
        eid = self.host.ecreate(self._require_pid(caller), size)
        self._workload(caller).eids.add(eid)
        return {"eid": eid}

    def op_add_pages(self, ident: bytes, caller: int, eid: int, count: int, kind: str = "REG") -> Step:
        self._own_enclave(caller, eid)
        return self._in_steps(count, lambda chunk: self.host.add_pages(caller, eid, chunk, kind))

    def _in_steps(self, count: int, call: Callable[[int], int]) -> Step:
        """A request for ``count`` pages, CHUNK_PAGES a step, parked while the core says Blocked.

        A step that does less than asked (a signal stopped ADD_PAGES) ends it with the
        kernel's partial count; an IoctlError reports the pages done over all steps.
        """
        done = 0
        while done < count:
            chunk = min(CHUNK_PAGES, count - done)
            try:
                served = call(chunk)
            except Blocked as e:
                done += e.done
                yield WAIT
                continue
            except IoctlError as e:
                raise IoctlError(e.errno or errno.EIO, e.strerror or "", done + e.done) from None
            done += served
            if served < chunk:
                break
            if done < count:
                yield MORE
        return {"added": done}

    def op_einit(self, ident: bytes, caller: int, eid: int) -> None:
        self._own_enclave(caller, eid)
        self.host.einit(caller, eid)

    def op_access(
        self, ident: bytes, caller: int, eid: int, ranges: list[tuple[int, int]], write: bool = False
    ) -> dict[str, int] | Step:
        self._own_enclave(caller, eid)
        return self._touch(caller, ranges, lambda first, count: self.host.access(caller, eid, first, count, write))

    def op_vepc_access(
        self, ident: bytes, caller: int, vid: int, ranges: list[tuple[int, int]]
    ) -> dict[str, int] | Step:
        self._own_vepc(caller, vid)
        return self._touch(caller, ranges, lambda first, count: self.host.vepc_access(caller, vid, first, count))

    def _touch(
        self, pid: int, ranges: list[tuple[int, int]], touch: Callable[[int, int], int]
    ) -> dict[str, int] | Step:
        """Fault a batch of page ranges: at once when it is small and nothing blocks, else in steps."""
        workload = self._workload(pid)
        if sum(count for _, count in ranges) <= CHUNK_PAGES:
            faults = 0
            for i, (first, count) in enumerate(ranges):
                try:
                    faults += touch(first, count)
                except Blocked as e:
                    rest = [(first + e.done, count - e.done), *ranges[i + 1 :]]
                    workload.faults += faults + e.faults
                    return self._touch_steps(workload, rest, touch, faults + e.faults)
            workload.faults += faults
            return {"faults": faults}
        return self._touch_steps(workload, ranges, touch, 0)

    def _touch_steps(
        self, workload: Workload, ranges: list[tuple[int, int]], touch: Callable[[int, int], int], faults: int
    ) -> Step:
        """The rest of a batch, in chunks of CHUNK_PAGES; parked while the core says Blocked."""
        todo = deque(ranges)
        while todo:
            first, count = todo[0]
            chunk = min(count, CHUNK_PAGES)
            try:
                served = touch(first, chunk)
            except Blocked as e:
                faults += e.faults
                workload.faults += e.faults
                todo[0] = (first + e.done, count - e.done)
                yield WAIT
                continue
            faults += served
            workload.faults += served
            if chunk == count:
                todo.popleft()
            else:
                todo[0] = (first + chunk, count - chunk)
            if todo:
                yield MORE
        return {"faults": faults}

    def op_augment(self, ident: bytes, caller: int, eid: int, count: int) -> Step:
        self._own_enclave(caller, eid)
        return self._in_steps(count, lambda chunk: self.host.augment(caller, eid, chunk))

    def op_remove_pages(self, ident: bytes, caller: int, eid: int, first: int, count: int) -> Step:
        """What test_sgx's _remove test does: MODIFY_TYPES to TRIM and REMOVE_PAGES, each again from
        where it stopped while they say EAGAIN, with EACCEPT of every page between them."""
        host = self.host
        self._own_enclave(caller, eid)
        yield from self._resumed(lambda at, n: host.trim_pages(caller, eid, at, n), first, count)
        yield from self._touch_steps(
            self._workload(caller), [(first, count)], lambda at, n: host.access(caller, eid, at, n), 0
        )
        yield from self._resumed(lambda at, n: host.remove_trimmed(caller, eid, at, n), first, count)
        return {"removed": count}

    @staticmethod
    def _resumed(ioctl: Callable[[int, int], object], first: int, count: int) -> Step:
        """An EDMM ioctl over [first, first+count), called again from where it stopped after EAGAIN."""
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

    def op_release(self, ident: bytes, caller: int, eid: int) -> None:
        self._own_enclave(caller, eid)
        self.host.release(eid)
        self._workload(caller).eids.discard(eid)
        self._wake_waiting()

    def op_vepc_open(self, ident: bytes, caller: int, size: int) -> dict[str, int]:
        vid = self.host.vepc_open(self._require_pid(caller), size)
        self._workload(caller).vids.add(vid)
        return {"vid": vid}

    def op_vepc_release(self, ident: bytes, caller: int, vid: int) -> None:
        self._own_vepc(caller, vid)
        self.host.vepc_release(vid)
        self._workload(caller).vids.discard(vid)
        self._wake_waiting()

    def op_bye(self, ident: bytes, caller: int, reason: str = "ok") -> None:
        """The workload is about to exit (its process exit does the releasing)."""
        self._note_exit_reason(caller, reason)

    def _workload(self, pid: int) -> Workload:
        workload = self.workloads.get(self._require_pid(pid))
        if workload is None:
            raise OSError(errno.EPERM, f"pid {pid} is not a registered workload")
        return workload


def _memory_bytes(max_pages: int) -> int | None:
    """A memory.max in bytes, None for max."""
    return None if max_pages >= PAGE_COUNTER_MAX else max_pages * PAGE_SIZE


class _NoProgress(Exception):
    """A parked request that nothing will unblock: a fault then means SIGBUS."""


def _parent_pid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        return int(stat[stat.rindex(")") + 2 :].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


# -- the engine as a process ----------------------------------------------------


def _run(coroutine: Any) -> None:
    """asyncio.run, on uvloop when it is installed (about 10 us less per request)."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(coroutine)
        return
    uvloop.run(coroutine)


def default_endpoints(directory: str) -> tuple[str, str]:
    return f"ipc://{directory}/engine.sock", f"ipc://{directory}/events.sock"


def pub_endpoint_for(endpoint: str, directory: str) -> str:
    """Where events go for a given request endpoint: beside an ipc socket, the next tcp port."""
    if endpoint.startswith("ipc://"):
        return endpoint + ".events"
    if endpoint.startswith("tcp://"):
        host, _, port = endpoint[len("tcp://") :].rpartition(":")
        if port.isdigit():
            return f"tcp://{host}:{int(port) + 1}"
    raise ValueError(f"bad endpoint {endpoint!r}: use ipc://PATH or tcp://HOST:PORT")


def prepare_runtime_dir(directory: str) -> None:
    os.makedirs(directory, mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)


def run_engine(
    capacity: int | str,
    memory: int | str | None,
    endpoint: str | None,
    *,
    seed: int = 0,
    ready: Callable[[str], None] | None = None,
) -> int:
    """Run an engine in this process until SIGTERM or SIGINT; returns the exit status.

    Without ``endpoint`` it listens on ipc in the runtime directory and writes the
    runtime file there (refusing when a live engine already owns it).
    """
    directory = protocol.runtime_dir()
    runtime_file = None
    if endpoint is None:
        running = protocol.read_runtime_file(directory)
        if running is not None:
            raise RuntimeError(
                f"an engine is already running (pid {running['pid']}, {running['endpoint']}): "
                "stop it, or give this one --bind"
            )
        prepare_runtime_dir(directory)
        endpoint, pub = default_endpoints(directory)
        runtime_file = os.path.join(directory, protocol.RUNTIME_FILE)
    else:
        if endpoint.startswith("tcp://*") or endpoint.startswith("tcp://:"):
            endpoint = "tcp://127.0.0.1" + endpoint[endpoint.rindex(":") :]
        pub = pub_endpoint_for(endpoint, directory)
    host = Host(capacity, memory, seed, clock=MonotonicClock(), inline_work=False)
    engine = Engine(host, endpoint, pub)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, engine.stop)
        serving = asyncio.create_task(engine.serve())
        await asyncio.sleep(0.05)
        if runtime_file is not None:
            info = {"pid": os.getpid(), "endpoint": endpoint, "pub": pub, "capacity": host.capacity_bytes}
            tmp = runtime_file + ".tmp"
            with open(tmp, "w") as f:
                json.dump(info, f)
            os.replace(tmp, runtime_file)
        if ready is not None:
            ready(endpoint)
        await serving

    try:
        _run(main())
        faulthandler.cancel_dump_traceback_later()
    finally:
        if runtime_file is not None:
            info = protocol.read_runtime_file(directory)
            if info is not None and info.get("pid") == os.getpid():
                os.unlink(runtime_file)
        for ep in (endpoint, pub):
            if ep.startswith("ipc://"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(ep[len("ipc://") :])
    return 0

"""The engine process: the emulated host behind a ZeroMQ ROUTER (requests) and PUB (events, stats).

One asyncio loop owns the Host.  Requests are parsed and checked by wire.protocol,
then run as small steps: a long ADD_PAGES or a batch of faults is cut into chunks so
that other clients, process exits and the reclaim workers get their turn.  A step
that the core reports Blocked (a fault got EBUSY, or reclaim waits for an OOM victim
to exit) is parked and retried when the async reclaim work (cgroup work items and
ksgxd, run here as their own task) or an exit has changed something.  One that is
still blocked once that work has run dry, having moved nothing, stalls: as the
kernel's task faults again for as long as nothing frees the limiting cgroup, it is
retried STALL_RETRY_HZ times a second, and at once after a process exit, an enclave
or vEPC release or a cgroup file write; the workload shows as stalled until its call
goes on, and a signal ends it as on a real host.

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
import logging
import os
import select
import signal
import time
from collections import Counter, deque
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

import zmq

from engine import files
from engine.check import check_steps
from engine.clock import MonotonicClock
from engine.events import STALL_RETRY_HZ, Event, ReclaimBatch, Stalled, StallEnded
from engine.host import Host
from engine.sgx import Blocked, IoctlError, SigBus, errno_name
from engined import curve, runtime
from engined.stats import Stats, Workload
from wire import protocol
from wire.protocol import ProtocolError

log = logging.getLogger("epc.engine")

# Pages per step of a long request.  Processes take turns a step at a time, so this is
# how finely concurrent ioctls interleave (about 3 ms of work under reclaim).
CHUNK_PAGES = 1024
WORK_SLICE_S = 0.002  # reclaim work run between request steps
STATS_INTERVAL_S = 0.25
STOP_DEADLINE_S = 5.0
MORE, WAIT = "more", "wait"
FLUSH_INTERVAL_S = 0.005  # buffered events go out at least this often...
FLUSH_EVENTS = 256  # ...or when this many are waiting
CHECK_SLICE_S = 0.002  # a `check` runs in slices of this much between other requests
MAX_OPEN_PER_PID = 1024  # enclaves and vEPCs one process may hold open (the kernel: RLIMIT_NOFILE, EMFILE)
MAX_EXITED = 256  # exited workload records kept for displays; older ones are pruned
MAX_WATCHED = 65536  # processes the engine follows with a pidfd

Step = Generator[str, None, Any]


class Caller(NamedTuple):
    """Who sent a request, as the kernel told us (SO_PEERCRED of the ipc connection); (0, -1) over tcp."""

    pid: int
    uid: int


@dataclass(slots=True)
class Pending:
    """A request being served in steps."""

    ident: bytes
    request_id: int
    pid: int
    steps: Step
    op: str = ""
    progress_seen: int = -1
    idle_seen: bool = False  # woken because the reclaim work ran dry: still blocked means stalled
    stalled_ns: int = 0  # the host clock when it started to stall (0: it does not)
    retries: int = 0  # tries since it stalled
    retry_at: float = 0.0  # monotonic time of its next try while it stalls


class Subscriptions:
    """The topics PUB subscribers hold (XPUB_VERBOSER reports every subscribe and unsubscribe)."""

    def __init__(self) -> None:
        self.counts: Counter[bytes] = Counter()
        self._wants: dict[bytes, bool] = {}

    def take(self, message: bytes) -> None:
        topic = message[1:]
        if message[:1] == b"\x01":
            self.counts[topic] += 1
        elif message[:1] == b"\x00" and self.counts[topic] > 0:
            self.counts[topic] -= 1
        self.counts = +self.counts  # drop zeros
        self._wants.clear()

    def wants(self, topic: bytes) -> bool:
        """Whether any subscriber would receive ``topic``."""
        wanted = self._wants.get(topic)
        if wanted is None:
            wanted = self._wants[topic] = any(topic.startswith(prefix) for prefix in self.counts)
        return wanted


class Engine:
    """Serves one Host on a ROUTER endpoint and publishes its events on a PUB endpoint."""

    def __init__(
        self,
        host: Host,
        endpoint: str,
        pub_endpoint: str,
        *,
        keys: curve.ServerKeys | None = None,
    ) -> None:
        """``keys``: serve as CURVE, letting in only the clients whose keys are in ``keys.directory`` (tcp)."""
        self.host = host
        self.endpoint = endpoint
        self.pub_endpoint = pub_endpoint
        self.ipc = endpoint.startswith("ipc://")  # only ipc connections carry the peer's pid and uid
        self.uid = os.getuid()
        self.ctx = zmq.Context()
        self.router = self.ctx.socket(zmq.ROUTER)
        self.pub = self.ctx.socket(zmq.XPUB)  # a PUB that hears (un)subscriptions: see Subscribers
        for sock in (self.router, self.pub):
            sock.linger = 0
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.router.maxmsgsize = protocol.MAX_FRAME  # libzmq drops the peer before buffering more
        self.pub.setsockopt(zmq.XPUB_VERBOSER, 1)
        # A subscriber that stalls keeps at most PUB_HWM messages of at most PUB_MAX_BYTES each;
        # beyond that PUB drops for it (event and stats seq numbers show the gap).
        self.pub.sndhwm = protocol.PUB_HWM
        self.auth = curve.serve(self.ctx, (self.router, self.pub), keys) if keys is not None else None
        self.workloads: dict[int, Workload] = {}
        self.stats = Stats(host, self.workloads)
        self.subscriptions = Subscriptions()
        self.watched: dict[int, int] = {}  # pid -> pidfd
        self.ready: deque[Pending] = deque()
        self.waiting: list[Pending] = []
        self.stalled: list[Pending] = []  # calls that no reclaim can help, tried again now and then
        self.events: list[Event] = []
        self.seq = 0
        self.flush_at: asyncio.TimerHandle | None = None
        self.oom_sent: set[int] = set()  # OOM victims sent their SIGKILL, not yet exited
        self.checking = False
        self.kick = asyncio.Event()
        self.stopping = asyncio.Event()
        self.bad_frames = 0
        self._peers: dict[str, Caller] = {}
        self.handlers: dict[str, Callable[..., Any]] = {op: getattr(self, f"op_{op}") for op in protocol.OPS}
        host.emit = self.events.append

    # -- running --------------------------------------------------------------

    async def serve(self) -> None:
        """Run until stop(); then tell everyone, close the sockets and return."""
        self._bind()
        log.info("engine serving %s (events on %s), EPC %d pages", self.endpoint, self.pub_endpoint,
                 self.host.capacity_pages)  # fmt: skip
        loop = asyncio.get_running_loop()
        # The sockets are plain (blocking-style) zmq sockets driven from the loop: their FD
        # wakes us, and we drain with NOBLOCK; cheaper per request than zmq.asyncio futures.
        router_fd = int(self.router.getsockopt(zmq.FD))
        loop.add_reader(router_fd, self._drain)
        pub_fd = int(self.pub.getsockopt(zmq.FD))
        loop.add_reader(pub_fd, self._take_subscriptions)
        tasks = [
            asyncio.create_task(self._schedule(), name="schedule"),
            asyncio.create_task(self._stats(), name="stats"),
        ]
        self._drain()
        await self.stopping.wait()
        loop.remove_reader(router_fd)
        loop.remove_reader(pub_fd)
        # The loops end by themselves once stopping is set; cancelling alone is not enough
        # on Python 3.11, whose wait_for can swallow a cancellation (the engine then hung).
        _, pending = await asyncio.wait(tasks, timeout=STATS_INTERVAL_S * 4)
        for task in pending:
            task.cancel()
        self._shutdown()

    def _bind(self) -> None:
        """Listen on both endpoints; runtime.Refused, with everything closed, when one cannot be taken."""
        try:
            runtime.bind(self.router, self.endpoint)
            runtime.bind(self.pub, self.pub_endpoint)
        except runtime.Refused:
            self._close()
            raise

    def _close(self) -> None:
        self.router.close(linger=0)
        self.pub.close(linger=0)
        if self.auth is not None:
            self.auth.stop()
        self.ctx.term()

    def stop(self) -> None:
        """Stop serving.  Should the shutdown ever hang, the stacks go to stderr and the process exits 1."""
        if not self.stopping.is_set():
            faulthandler.dump_traceback_later(STOP_DEADLINE_S, exit=True)
        self.stopping.set()
        self.kick.set()

    def _shutdown(self) -> None:
        for pending in [*self.ready, *self.waiting, *self.stalled]:
            self._reply(pending.ident, protocol.reply_err(pending.request_id, "ESHUTDOWN", "the engine stopped"))
        self._flush_events()
        with contextlib.suppress(zmq.ZMQError):
            self.pub.send_multipart([protocol.TOPIC_ENGINE, protocol.encode({"event": "shutdown"})], flags=zmq.NOBLOCK)
        loop = asyncio.get_running_loop()
        for pid, fd in list(self.watched.items()):
            loop.remove_reader(fd)
            os.close(fd)
            del self.watched[pid]
        self._close()

    def _drain(self) -> None:
        """Take every request waiting on the ROUTER (its FD is edge-triggered: read until empty)."""
        recv = self.router.recv_multipart
        while True:
            try:
                frames = recv(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            except zmq.ZMQError as e:
                log.warning("receiving a request: %s", e)
                break
            try:
                self._accept(frames)
            except Exception:  # never lose the loop to one request
                log.exception("internal error taking a request")
        if self.ready or self._work_due():
            self.kick.set()

    def _accept(self, frames: list[zmq.Frame]) -> None:
        ident = frames[0].bytes
        try:
            if len(frames) != 2:
                raise ProtocolError("EPROTO", f"a request is one frame, not {len(frames) - 1}")
            request_id, op, args = protocol.decode_request(frames[1].bytes)
        except ProtocolError as e:
            self.bad_frames += 1
            if self.bad_frames <= 10 or self.bad_frames % 1000 == 0:
                log.warning("bad frame #%d from %r: %s", self.bad_frames, ident[:8], e.message)
            self._reply(ident, protocol.reply_err(e.request_id, e.code, e.message))
            return
        caller = self._peer(frames[1])
        handler = self.handlers[op]
        try:
            result = handler(caller, **args)
        except Blocked:  # an op that is not stepped waits like the others: asked again later
            result = self._again(lambda: handler(caller, **args))
        except Exception as e:
            self._reply(ident, self._error_reply(request_id, caller.pid, e))
            return
        if isinstance(result, Generator):
            self._step(Pending(ident, request_id, caller.pid, result, op))  # most finish in their first step
        else:
            self._reply(ident, protocol.reply_ok(request_id, result))
        self._events_due()

    def _peer(self, frame: zmq.Frame) -> Caller:
        """The sending process, from the kernel: libzmq's Peer-Address of an ipc connection is
        "localhost:UID:GID:PID", taken with SO_PEERCRED when the connection was made."""
        if not self.ipc:
            return NOBODY
        address = str(frame.get("Peer-Address"))
        caller = self._peers.get(address)
        if caller is None:
            try:
                _, uid, _, pid = address.rsplit(":", 3)
                caller = Caller(int(pid), int(uid))
            except ValueError:
                caller = NOBODY
            if len(self._peers) > 4096:
                self._peers.clear()
            self._peers[address] = caller
        return caller

    @staticmethod
    def _again(call: Callable[[], Any]) -> Step:
        """A request that is not stepped, asked again each time it might go through."""
        yield WAIT
        while True:
            try:
                return call()
            except Blocked:
                yield WAIT

    async def _schedule(self) -> None:
        """Run request steps and reclaim work in turns; park what is blocked.  Never dies of an error."""
        while not self.stopping.is_set():
            try:
                busy = self._schedule_round()
            except Exception:
                log.exception("internal error in the scheduler (it goes on)")
                busy = False
            if busy:
                await asyncio.sleep(0)
                continue
            self.kick.clear()
            timeout = 0.1
            if self.stalled:
                timeout = min(timeout, max(0.0, min(p.retry_at for p in self.stalled) - time.monotonic()))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.kick.wait(), timeout=timeout)

    def _schedule_round(self) -> bool:
        """One round: every ready step once, then a slice of reclaim work; False when idle."""
        host = self.host
        self._retry_stalled()
        if not self.ready and not self._work_due():
            self._expire_waiting()
            return False
        for _ in range(len(self.ready)):
            if not self.ready:
                break  # an exit taken in between dropped its calls
            self._step(self.ready.popleft())
            self._drain()  # a newcomer's request goes between two long ones, not after them all
        if self._work_due():
            progress = host.progress
            deadline = time.monotonic() + WORK_SLICE_S
            while host.run_work_step() and time.monotonic() < deadline:
                pass
            if host.progress != progress:
                self._wake_waiting()
        self._deliver_oom_kills()
        self._events_due()
        self._expire_waiting()
        self._drain()
        return True

    def _work_due(self) -> bool:
        host = self.host
        return bool(host.work) or host.work_in_flight is not None or host.ksgxd_woken

    def _step(self, pending: Pending) -> None:
        workload = self.workloads.get(pending.pid)
        if workload is not None and workload.state != "running":
            pending.steps.close()  # its process is gone: nobody to answer
            self._end_stall(pending, "exited")
            return
        try:
            state = next(pending.steps)
        except StopIteration as done:
            self._end_stall(pending, "resumed")
            self._reply(pending.ident, protocol.reply_ok(pending.request_id, done.value))
            return
        except Exception as e:
            self._end_stall(pending, _how(e))
            self._reply(pending.ident, self._error_reply(pending.request_id, pending.pid, e))
            return
        if state != WAIT:
            self._end_stall(pending, "resumed")
            self.ready.append(pending)
        elif pending.stalled_ns:
            pending.retries += 1
            self._park_stalled(pending)
        elif pending.idle_seen and pending.progress_seen == self.host.progress:
            self._start_stall(pending)  # the work it waited for ran dry and moved nothing
        else:
            pending.idle_seen = False
            pending.progress_seen = self.host.progress
            self.waiting.append(pending)

    def _anything_can_change(self) -> bool:
        return self._work_due() or bool(self.host.oom_victims)

    def _wake_waiting(self) -> None:
        self.ready.extend(self.waiting)
        self.waiting.clear()

    def _expire_waiting(self) -> None:
        """When nothing can unblock the parked requests any more (the reclaim work ran dry, no
        OOM victim is exiting), give each another try: one still blocked then stalls (_step)."""
        if self.waiting and not self._anything_can_change():
            for pending in self.waiting:
                pending.idle_seen = True
            self._wake_waiting()

    # -- stalls ---------------------------------------------------------------

    def _start_stall(self, pending: Pending) -> None:
        """The call stalls: the workload shows as stalled, a ``stall`` event says so once."""
        now = self.host.clock.now_ns()
        pending.stalled_ns = now
        pending.retries = 0
        workload = self.workloads.get(pending.pid)
        name = ""
        if workload is not None:
            name = workload.name
            workload.stalled_calls += 1
            workload.stalled_ns = workload.stalled_ns or now
        cgroup = self.host.task_cgroup(pending.pid)
        log.info("pid %d (%s) stalls in %s: %s that no reclaim can help", pending.pid, name, cgroup, pending.op)
        self._publish_now(Stalled(now, pending.pid, name, cgroup, pending.op))
        self._park_stalled(pending)

    def _park_stalled(self, pending: Pending) -> None:
        pending.retry_at = time.monotonic() + 1.0 / STALL_RETRY_HZ
        self.stalled.append(pending)

    def _end_stall(self, pending: Pending, how: str) -> None:
        """The stalled call went on (``resumed``), failed (an errno name) or its task is gone (``exited``)."""
        if not pending.stalled_ns:
            return
        now = self.host.clock.now_ns()
        workload = self.workloads.get(pending.pid)
        name = ""
        if workload is not None:
            name = workload.name
            workload.stalled_calls -= 1
            if not workload.stalled_calls:
                workload.stalled_ns = 0
        cgroup = workload.cgroup if workload is not None and workload.state != "running" else ""
        cgroup = cgroup or self.host.task_cgroup(pending.pid)
        elapsed = now - pending.stalled_ns
        pending.stalled_ns = 0
        self._publish_now(StallEnded(now, pending.pid, name, cgroup, pending.op, elapsed, pending.retries, how))

    def _retry_stalled(self) -> None:
        """Stalled calls whose time has come, back to the ready queue."""
        if not self.stalled:
            return
        now = time.monotonic()
        due = [p for p in self.stalled if p.retry_at <= now]
        if due:
            self.stalled = [p for p in self.stalled if p.retry_at > now]
            self.ready.extend(due)

    def _something_freed(self) -> None:
        """A process exited, an enclave or vEPC was released, or a cgroup file was written: every
        parked call, the stalled ones included, tries again now."""
        self.ready.extend(self.stalled)
        self.stalled.clear()
        self._wake_waiting()
        self.kick.set()

    def _publish_now(self, event: Event) -> None:
        """An engine event, after the core's buffered ones (so it follows the failed charges it is about)."""
        self._flush_events()
        self._publish(event.to_dict())

    def _reply(self, ident: bytes, frame: bytes) -> None:
        self._deliver_oom_kills()  # first: an OOM kill lands before the call returns, as in the kernel
        with contextlib.suppress(zmq.ZMQError):  # the peer went away, or is not reading
            self.router.send_multipart([ident, frame], flags=zmq.NOBLOCK)

    def _error_reply(self, request_id: int, pid: int, error: BaseException) -> bytes:
        if isinstance(error, SigBus):
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

    def _events_due(self) -> None:
        """Send the buffered events when enough are waiting, or soon."""
        if len(self.events) >= FLUSH_EVENTS:
            self._flush_events()
        elif self.events and self.flush_at is None:
            self.flush_at = asyncio.get_running_loop().call_later(FLUSH_INTERVAL_S, self._flush_events)

    def _flush_events(self) -> None:
        if self.flush_at is not None:
            self.flush_at.cancel()
            self.flush_at = None
        if not self.events:
            return
        events = self.events[:]
        self.events.clear()  # the same list: the host appends to it
        reclaimed = self.stats.reclaimed
        for event in events:
            if isinstance(event, ReclaimBatch):
                reclaimed[event.cgroup] = reclaimed.get(event.cgroup, 0) + event.written
        try:
            self._publish(*[event.to_dict() for event in events])
        except Exception:
            log.exception("internal error publishing %d events", len(events))

    def _publish(self, *messages: dict[str, Any]) -> None:
        """Events, numbered, as lists of maps (far cheaper than a message each): each run of pressure
        events (limit hits, reclaim) under TOPIC_EVENT_PRESSURE, each run of the others under
        TOPIC_EVENT_OTHER, in order, so a display can leave the pressure out and read its sums from stats.
        Runs nobody subscribes to are numbered and not sent; none is over PUB_MAX_BYTES."""
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
        self._take_subscriptions()
        for topic, run in runs:
            if self.subscriptions.wants(topic):
                self._send_events(topic, run)

    def _send_events(self, topic: bytes, run: list[dict[str, Any]]) -> None:
        payload = protocol.encode(run)
        if len(payload) > protocol.PUB_MAX_BYTES and len(run) > 1:
            half = len(run) // 2
            self._send_events(topic, run[:half])
            self._send_events(topic, run[half:])
            return
        with contextlib.suppress(zmq.ZMQError):
            self.pub.send_multipart([topic, payload], flags=zmq.NOBLOCK)

    def _take_subscriptions(self) -> None:
        """Read what the XPUB heard: subscribers coming and going."""
        while True:
            try:
                message = self.pub.recv(zmq.NOBLOCK)
            except zmq.ZMQError:  # Again, or closed
                return
            self.subscriptions.take(message)

    async def _stats(self) -> None:
        """Every STATS_INTERVAL_S, what changed, when anyone subscribes to stats.  Never dies of an error."""
        while not self.stopping.is_set():
            await asyncio.sleep(STATS_INTERVAL_S)
            try:
                self._take_subscriptions()
                if not self.subscriptions.wants(protocol.TOPIC_STATS):
                    continue
                self._flush_events()  # the stats come after the events they include
                ticks = self.stats.tick(
                    self.pub_endpoint, os.getpid(), self.seq, protocol.PUB_STATS_ROWS, protocol.PUB_MAX_BYTES
                )
                for message in ticks:
                    with contextlib.suppress(zmq.ZMQError):
                        self.pub.send_multipart([protocol.TOPIC_STATS, protocol.encode(message)], flags=zmq.NOBLOCK)
            except Exception:
                log.exception("internal error sending stats (they go on)")

    def snapshot(self) -> dict[str, Any]:
        """The whole state a client needs to draw: cgroups, workloads, EPC; O(cgroups + workloads)."""
        self._flush_events()  # so its seq covers every event whose effect it shows
        return self.stats.full(self.pub_endpoint, os.getpid(), self.seq)

    # -- processes ------------------------------------------------------------

    def _watch(self, pid: int) -> None:
        """Follow ``pid`` until it exits; OSError(ESRCH) if there is no such process."""
        if pid in self.watched:
            return
        if len(self.watched) >= MAX_WATCHED:
            raise OSError(errno.EAGAIN, f"the engine already follows {MAX_WATCHED} processes")
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            raise OSError(errno.ESRCH, f"no process {pid} on the engine's host") from None
        except OSError as e:
            raise OSError(errno.EAGAIN, f"cannot follow process {pid}: {e.strerror}") from None
        self.watched[pid] = fd
        asyncio.get_running_loop().add_reader(fd, self._exited, pid)

    def _gone(self, pid: int) -> bool:
        """Whether a followed process has exited although its pidfd was not read yet."""
        fd = self.watched.get(pid)
        return fd is not None and bool(select.select([fd], [], [], 0)[0])

    def _reap(self, pids: Iterable[int]) -> None:
        """Take the exits of these processes that already happened, before acting on their cgroups."""
        for pid in list(pids):
            if pid in self.watched:
                if self._gone(pid):
                    self._exited(pid)
            elif not runtime.process_alive(pid):
                self.host.exit_task(pid)

    def _exited(self, pid: int) -> None:
        """``pid`` is gone, however it went: release what it held, without its help."""
        try:
            self._release_process(pid)
        except Exception:
            log.exception("internal error releasing pid %d", pid)
        self._something_freed()

    def _release_process(self, pid: int) -> None:
        self._drop_calls(pid)
        fd = self.watched.pop(pid, None)
        if fd is not None:
            asyncio.get_running_loop().remove_reader(fd)
            os.close(fd)
        self.host.signal(pid)
        self.host.exit_task(pid)
        self.oom_sent.discard(pid)
        workload = self.workloads.get(pid)
        if workload is not None and workload.state == "running":
            workload.state = "exited"
            workload.reason = workload.reason or "killed"
            workload.exited_ns = self.host.clock.now_ns()
            self._publish({"kind": "workload_exit", "pid": pid, "name": workload.name, "reason": workload.reason})
            log.info("workload %d (%s) exited: %s", pid, workload.name, workload.reason)
            self._prune_exited()
        self._flush_events()

    def _drop_calls(self, pid: int) -> None:
        """The calls ``pid`` had parked or queued end with it (a stalled one says so), unanswered."""
        calls = [p for p in (*self.ready, *self.waiting, *self.stalled) if p.pid == pid]
        if not calls:
            return
        self.ready = deque(p for p in self.ready if p.pid != pid)
        self.waiting = [p for p in self.waiting if p.pid != pid]
        self.stalled = [p for p in self.stalled if p.pid != pid]
        for pending in calls:
            pending.steps.close()
            self._end_stall(pending, "exited")

    def _prune_exited(self) -> None:
        """Keep the newest MAX_EXITED exited records (dicts keep registration order)."""
        exited = [pid for pid, w in self.workloads.items() if w.state == "exited"]
        for pid in exited[: max(len(exited) - MAX_EXITED, 0)]:
            del self.workloads[pid]

    def _deliver_oom_kills(self) -> None:
        victims = self.host.oom_victims
        if victims and not victims <= self.oom_sent:
            for pid in sorted(victims - self.oom_sent):
                self._oom_kill(pid)

    def _oom_kill(self, pid: int) -> None:
        """Deliver the OOM killer's SIGKILL, only to a registered workload whose pid the kernel
        told us and whose uid is ours (or we are root); never to the engine itself."""
        workload = self.workloads.get(pid)
        fd = self.watched.get(pid)
        if workload is None or workload.state != "running" or fd is None or pid == os.getpid():
            why = "not a workload of this engine"
        elif self.uid != 0 and workload.uid != self.uid:
            why = f"owned by uid {workload.uid}, not the engine's {self.uid}"
        else:
            try:
                signal.pidfd_send_signal(fd, signal.SIGKILL)
            except ProcessLookupError:
                pass  # already on its way out
            except OSError as e:
                why = f"the kernel refused: {e.strerror}"
            else:
                self._note_exit_reason(pid, "OOM")
                self.oom_sent.add(pid)
                return
        log.warning("the OOM killer chose pid %d, %s: not killed", pid, why)
        self.host.oom_victims.discard(pid)
        self.host.signals.discard(pid)

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

    def _workload(self, pid: int) -> Workload:
        """The caller's workload record: it must have said hello (EPERM otherwise)."""
        workload = self.workloads.get(pid)
        if not pid or workload is None or workload.state != "running":
            raise OSError(errno.EPERM, f"pid {pid} is not a registered workload: say hello first (over ipc)")
        return workload

    def _own_enclave(self, pid: int, eid: int) -> None:
        encl = self.host.enclaves.get(eid)
        if encl is None:
            raise OSError(errno.EINVAL, f"no enclave {eid}")
        if encl.pid != pid:
            raise OSError(errno.EPERM, f"enclave {eid} is not yours")

    def _own_vepc(self, pid: int, vid: int) -> None:
        vepc = self.host.vepcs.get(vid)
        if vepc is None:
            raise OSError(errno.EINVAL, f"no vEPC {vid}")
        if vepc.pid != pid:
            raise OSError(errno.EPERM, f"vEPC {vid} is not yours")

    def _may_open(self, workload: Workload) -> None:
        if len(workload.eids) + len(workload.vids) >= MAX_OPEN_PER_PID:
            raise OSError(errno.EMFILE, f"pid {workload.pid} has {MAX_OPEN_PER_PID} enclaves and vEPCs open")

    def op_ping(self, caller: Caller) -> dict[str, Any]:
        return {"engine_pid": os.getpid(), "pub": self.pub_endpoint, "capacity": self.host.capacity_bytes}

    def op_hello(self, caller: Caller, pid: int, role: str, name: str = "") -> dict[str, Any]:
        """Register the sending process (only itself, as the kernel names it); it starts in the
        cgroup its nearest placed ancestor is in.  A client only says who it is."""
        info = {"capacity": self.host.capacity_bytes, "engine_pid": os.getpid(), "pub": self.pub_endpoint}
        if caller.pid and pid != caller.pid:
            raise OSError(errno.EPERM, f"hello names pid {pid}, but this connection is pid {caller.pid}'s")
        if role == "client":
            return {"cgroup": self.host.task_cgroup(pid) if caller.pid else "/", **info}
        if not caller.pid:
            raise OSError(errno.EPERM, "workloads register over ipc, where the kernel tells the engine their pid")
        if self._gone(pid):
            self._exited(pid)  # an earlier process of this pid: its exit first
        workload = self.workloads.get(pid)
        if workload is None or workload.state != "running":
            self._watch(pid)
            if pid not in self.host.tree.tasks:
                self.host.write(f"{self._cgroup_of_new_process(pid).rstrip('/')}/cgroup.procs", str(pid))
            cgroup = self.host.task_cgroup(pid)
            name = name or f"{role}-{pid}"
            self.workloads.pop(pid, None)  # a reused pid: a new record, at the end
            self.workloads[pid] = Workload(pid, role, name, cgroup, self.host.clock.now_ns(), caller.uid)
            self._publish({"kind": "workload_start", "pid": pid, "role": role, "name": name, "cgroup": cgroup})
        return {"cgroup": self.host.task_cgroup(pid), **info}

    def op_check(self, caller: Caller) -> Step:
        """Verify every invariant of the host: "ok", or EIO naming the first broken one.  It runs in
        slices between other requests, one check at a time, on a copy of the state taken at its start."""
        while self.checking:
            yield MORE
        self.checking = True
        try:
            steps = check_steps(self.host)
            while True:
                deadline = time.monotonic() + CHECK_SLICE_S
                try:
                    while time.monotonic() < deadline:
                        next(steps)
                except StopIteration:
                    return "ok"
                except AssertionError as e:
                    raise OSError(errno.EIO, f"invariant broken: {e}") from None
                yield MORE
        finally:
            self.checking = False

    def op_snapshot(self, caller: Caller) -> dict[str, Any]:
        return self.snapshot()

    def op_read(self, caller: Caller, path: str) -> str:
        return self.host.read(path)

    def op_listdir(self, caller: Caller, path: str) -> list[str]:
        return self.host.listdir(path)

    def op_mkdir(self, caller: Caller, path: str) -> None:
        self.host.mkdir(path)

    def op_rmdir(self, caller: Caller, path: str) -> None:
        self._reap(self.host.cgroup(path).procs)
        self.host.rmdir(path)

    def op_write(self, caller: Caller, path: str, value: str) -> None:
        """Write a cgroup file as the calling process; a pid moved by cgroup.procs is followed from then on."""
        if path.rstrip("/").endswith("/cgroup.procs") or path.strip("/") == "cgroup.procs":
            target = files.parse_pid(value, caller.pid or None)
            if target not in self.watched and not runtime.process_alive(target):
                raise OSError(errno.ESRCH, f"no process {target}")
            self.host.write(path, value, pid=caller.pid or None)
            try:
                self._watch(target)
            except OSError:
                self._reap([target])  # it exited in between: it leaves the cgroup again
            self._something_freed()
            return
        self.host.write(path, value, pid=caller.pid or None)
        self._something_freed()  # a limit raised may let a stalled call go on

    def op_ecreate(self, caller: Caller, size: int) -> dict[str, int]:
        workload = self._workload(caller.pid)
        self._may_open(workload)
        eid = self.host.ecreate(caller.pid, size)
        workload.eids.add(eid)
        return {"eid": eid}

    def op_add_pages(self, caller: Caller, eid: int, count: int, kind: str = "REG") -> Step:
        self._own_enclave(caller.pid, eid)
        encl = self.host.enclaves[eid]
        if encl.initialized or count > encl.size_pages - encl.next_index:  # the whole range, before any page
            raise OSError(errno.EINVAL, f"{count} pages do not fit in enclave {eid} (or it is initialised)")
        return self._in_steps(count, lambda chunk: self.host.add_pages(caller.pid, eid, chunk, kind))

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

    def op_einit(self, caller: Caller, eid: int) -> None:
        self._own_enclave(caller.pid, eid)
        self.host.einit(caller.pid, eid)

    def op_access(
        self, caller: Caller, eid: int, ranges: list[tuple[int, int]], write: bool = False
    ) -> dict[str, int] | Step:
        self._own_enclave(caller.pid, eid)
        pid = caller.pid
        return self._touch(pid, ranges, lambda first, count: self.host.access(pid, eid, first, count, write))

    def op_vepc_access(self, caller: Caller, vid: int, ranges: list[tuple[int, int]]) -> dict[str, int] | Step:
        self._own_vepc(caller.pid, vid)
        pid = caller.pid
        return self._touch(pid, ranges, lambda first, count: self.host.vepc_access(pid, vid, first, count))

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

    def op_augment(self, caller: Caller, eid: int, count: int) -> Step:
        self._own_enclave(caller.pid, eid)
        encl = self.host.enclaves[eid]
        if count > encl.size_pages - encl.next_index:  # the whole range, before any page
            raise OSError(errno.EFAULT, f"{count} pages lie past the end of enclave {eid}")
        return self._in_steps(count, lambda chunk: self.host.augment(caller.pid, eid, chunk))

    def op_remove_pages(self, caller: Caller, eid: int, first: int, count: int) -> Step:
        """What test_sgx's _remove test does: MODIFY_TYPES to TRIM and REMOVE_PAGES, each again from
        where it stopped while they say EAGAIN, with EACCEPT of every page between them."""
        host = self.host
        pid = caller.pid
        self._own_enclave(pid, eid)
        yield from self._resumed(lambda at, n: host.trim_pages(pid, eid, at, n), first, count)
        yield from self._touch_steps(
            self._workload(pid), [(first, count)], lambda at, n: host.access(pid, eid, at, n), 0
        )
        yield from self._resumed(lambda at, n: host.remove_trimmed(pid, eid, at, n), first, count)
        return {"removed": count}

    def op_modify_types(self, caller: Caller, eid: int, first: int, count: int, kind: str) -> Step:
        """SGX_IOC_ENCLAVE_MODIFY_TYPES to TCS or TRIM; the pages done on an error, as its count."""
        pid = caller.pid
        return self._edmm_steps(eid, pid, first, count, lambda at, n: self.host.modify_types(pid, eid, at, n, kind))

    def op_restrict_permissions(self, caller: Caller, eid: int, first: int, count: int) -> Step:
        """SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS; the pages done on an error, as its count."""
        pid = caller.pid
        return self._edmm_steps(eid, pid, first, count, lambda at, n: self.host.restrict_permissions(pid, eid, at, n))

    def op_remove_trimmed(self, caller: Caller, eid: int, first: int, count: int) -> Step:
        """SGX_IOC_ENCLAVE_REMOVE_PAGES of pages trimmed and EACCEPTed; the pages done on an error."""
        pid = caller.pid
        return self._edmm_steps(eid, pid, first, count, lambda at, n: self.host.remove_trimmed(pid, eid, at, n))

    def _edmm_steps(self, eid: int, pid: int, first: int, count: int, ioctl: Callable[[int, int], object]) -> Step:
        """One EDMM ioctl: the enclave and the whole range checked first (EINVAL, as the kernel
        checks offset and length before any page), then CHUNK_PAGES a step; an IoctlError
        reports the pages done over all steps."""
        self._own_enclave(pid, eid)
        self.host.validate_edmm(eid, first, count)

        def steps() -> Step:
            done = 0
            while True:
                chunk = min(CHUNK_PAGES, count - done)
                try:
                    ioctl(first + done, chunk)
                except IoctlError as e:
                    raise IoctlError(e.errno or errno.EIO, e.strerror or "", done + e.done) from None
                done += chunk
                if done == count:
                    return {"count": done}
                yield MORE

        return steps()

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

    def op_release(self, caller: Caller, eid: int) -> None:
        self._own_enclave(caller.pid, eid)
        self.host.release(eid)
        self._workload(caller.pid).eids.discard(eid)
        self._something_freed()

    def op_vepc_open(self, caller: Caller, size: int) -> dict[str, int]:
        workload = self._workload(caller.pid)
        self._may_open(workload)
        vid = self.host.vepc_open(caller.pid, size)
        workload.vids.add(vid)
        return {"vid": vid}

    def op_vepc_release(self, caller: Caller, vid: int) -> None:
        self._own_vepc(caller.pid, vid)
        self.host.vepc_release(vid)
        self._workload(caller.pid).vids.discard(vid)
        self._something_freed()

    def op_bye(self, caller: Caller, reason: str = "ok") -> None:
        """The workload is about to exit (its process exit does the releasing)."""
        self._note_exit_reason(caller.pid, reason)


def _how(error: BaseException) -> str:
    """How a stalled call ended when it failed: ``SIGBUS``, or its errno name."""
    if isinstance(error, SigBus):
        return "SIGBUS"
    if isinstance(error, OSError) and error.errno:
        return errno_name(error.errno)
    return "failed"


NOBODY = Caller(0, -1)


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


def run_engine(
    capacity: int | str,
    memory: int | str | None,
    endpoint: str | None,
    *,
    seed: int = 0,
    ready: Callable[[str], None] | None = None,
    allow_remote: bool = False,
) -> int:
    """Run an engine in this process until SIGTERM or SIGINT; returns the exit status.

    Without ``endpoint`` it listens on ipc in the runtime directory and writes the
    runtime file there.  tcp is CURVE, with keys made where missing, and loopback
    unless ``allow_remote``.  runtime.Refused (one line) when it must not or cannot listen.
    """
    endpoints = runtime.choose_endpoints(endpoint, allow_remote=allow_remote)
    keys = curve.server_keys() if endpoints.endpoint.startswith("tcp://") else None
    host = Host(capacity, memory, seed, clock=MonotonicClock(), inline_work=False)
    engine = Engine(host, endpoints.endpoint, endpoints.pub, keys=keys)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, engine.stop)
        serving = asyncio.create_task(engine.serve())
        await asyncio.sleep(0.05)
        if serving.done():
            await serving  # it could not listen: its Refused
        runtime.write_runtime_file(endpoints, host.capacity_bytes)
        if ready is not None:
            ready(endpoints.endpoint)
        await serving

    try:
        _run(main())
        faulthandler.cancel_dump_traceback_later()
    finally:
        runtime.remove_runtime_files(endpoints)
    return 0

"""The engine process: a Session (engined.session) behind a ZeroMQ ROUTER (requests) and PUB (events, stats).

One asyncio loop owns the Host.  Requests come in on the ROUTER, are checked by
wire.protocol and handed to the Session, which runs them as steps between slices of
the async reclaim work (cgroup work items and ksgxd); replies go back on the ROUTER.
Events go out on the PUB in numbered lists, split into a pressure topic and the rest;
stats go out four times a second as deltas, only while someone subscribes.

Who a caller is comes from the kernel: libzmq's Peer-Address of an ipc connection is
"localhost:UID:GID:PID", taken with SO_PEERCRED when the connection was made.  Every
registered workload is followed through a pidfd (engined.liveness), so a process that
dies by any means is released exactly as the kernel does on the last reference.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import logging
import os
import time
from collections.abc import Callable, Hashable

import zmq

from common.costs import Profile
from engine import Host
from engined import curve, runtime
from engined.calls import NOBODY, Caller, Reply
from engined.liveness import Pidfds
from engined.publisher import Publisher
from engined.requests import HANDLERS
from engined.session import Session
from wire import protocol
from wire.protocol import ProtocolError

log = logging.getLogger("epc.engine")

WORK_SLICE_S = 0.002  # reclaim work run between request steps
STATS_INTERVAL_S = 0.25
STOP_DEADLINE_S = 5.0
FLUSH_INTERVAL_S = 0.005  # buffered events go out at least this often...
FLUSH_EVENTS = 256  # ...or when this many are waiting
IDLE_WAIT_S = 0.1  # the scheduler looks again this often when nothing wakes it
PROBE_TICKS = 4  # while frozen, the holder's connection is checked every this many stats ticks (1 s)


class Engine:
    """Serves one Host on a ROUTER endpoint and publishes its events on a PUB endpoint."""

    def __init__(
        self,
        host: Host,
        endpoint: str,
        pub_endpoint: str,
        *,
        keys: curve.ServerKeys | None = None,
        profile: Profile | None = None,
    ) -> None:
        """``keys``: serve as CURVE, letting in only the clients whose keys are in ``keys.directory`` (tcp)."""
        self.host = host
        self.endpoint = endpoint
        self.pub_endpoint = pub_endpoint
        self.ipc = endpoint.startswith("ipc://")  # only ipc connections carry the peer's pid and uid
        self.ctx = zmq.Context()
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.linger = 0
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.router.maxmsgsize = protocol.MAX_FRAME  # libzmq drops the peer before buffering more
        self.publisher = Publisher(self.ctx)
        self.pub = self.publisher.sock
        self.auth = curve.serve(self.ctx, (self.router, self.pub), keys) if keys is not None else None
        self.processes = Pidfds(self._exited)
        self.session = Session(
            host,
            self.processes,
            HANDLERS,
            answer=self._reply,
            publish=self.publisher.events,
            wake=self._wake,
            engine_pid=os.getpid(),
            profile=profile,
            pub=pub_endpoint,
            uid=os.getuid(),
        )
        self.flush_at: asyncio.TimerHandle | None = None
        self.kick = asyncio.Event()
        self.stopping = asyncio.Event()
        self.bad_frames = 0
        self._peers: dict[str, Caller] = {}

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
        loop.add_reader(pub_fd, self.publisher.take_subscriptions)
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
        self.session.shutdown()
        self._flush_events()
        self.publisher.shutdown_notice()
        self.processes.close()
        self._close()

    # -- requests -------------------------------------------------------------

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
        if self.session.busy():
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
            self._send(ident, protocol.reply_err(e.request_id, e.code, e.message))
            return
        self.session.submit(ident, self._peer(frames[1]), request_id, op, args)
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

    def _reply(self, key: Hashable, reply: Reply) -> None:
        assert isinstance(key, bytes)
        if reply.err:
            self._send(key, protocol.reply_err(reply.request_id, reply.err, reply.msg))
        else:
            self._send(key, protocol.reply_ok(reply.request_id, reply.ok))

    def _send(self, ident: bytes, frame: bytes) -> None:
        with contextlib.suppress(zmq.ZMQError):  # the peer went away, or is not reading
            self.router.send_multipart([ident, frame], flags=zmq.NOBLOCK)

    def _exited(self, pid: int) -> None:
        """A followed process's pidfd says it is gone."""
        self.session.exited(pid)
        self._events_due()

    def _wake(self) -> None:
        self.kick.set()

    def _probe_holder(self) -> None:
        """Whether the connection holding the freeze is still there: a reply of id PROBE_ID (its
        client drops it), which ROUTER_MANDATORY refuses (EHOSTUNREACH) once the peer is gone."""
        key = self.session.holder()
        if not isinstance(key, bytes):
            return
        try:
            self.router.send_multipart([key, protocol.reply_ok(protocol.PROBE_ID, None)], flags=zmq.NOBLOCK)
        except zmq.ZMQError as e:
            if e.errno == zmq.EHOSTUNREACH:
                self.session.disconnected(key)
                self._events_due()

    # -- scheduling -----------------------------------------------------------

    async def _schedule(self) -> None:
        """Session rounds with slices of reclaim work, for as long as there is work; never dies of an error."""
        session, clock = self.session, self.host.clock
        while not self.stopping.is_set():
            self.kick.clear()  # before the round: a call that arrives during it or after sets it again
            try:
                busy = session.round(_work_slice, between=self._drain)
                self._events_due()
                self._drain()
            except Exception:
                log.exception("internal error in the scheduler (it goes on)")
                busy = False
            if busy:
                await asyncio.sleep(0)
                continue
            timeout = IDLE_WAIT_S
            retry_ns = session.next_retry_ns()
            if retry_ns is not None:
                timeout = min(timeout, max(0.0, (retry_ns - clock.now_ns()) / 1e9))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.kick.wait(), timeout=timeout)

    # -- events and stats -----------------------------------------------------

    def _events_due(self) -> None:
        """Send the buffered events when enough are waiting, or soon."""
        if len(self.session.events) >= FLUSH_EVENTS:
            self._flush_events()
        elif self.session.events and self.flush_at is None:
            self.flush_at = asyncio.get_running_loop().call_later(FLUSH_INTERVAL_S, self._flush_events)

    def _flush_events(self) -> None:
        if self.flush_at is not None:
            self.flush_at.cancel()
            self.flush_at = None
        try:
            self.session.flush_events()
        except Exception:
            log.exception("internal error publishing events")

    async def _stats(self) -> None:
        """Every STATS_INTERVAL_S a history sample, whoever listens, and what changed, when anyone
        subscribes to stats; while frozen, now and then, whether the holder is still connected.
        Never dies of an error."""
        session = self.session
        ticks = 0
        while not self.stopping.is_set():
            await asyncio.sleep(STATS_INTERVAL_S)
            ticks += 1
            try:
                session.sample_history()
                if ticks % PROBE_TICKS == 0:
                    self._probe_holder()
                if not self.publisher.wants(protocol.TOPIC_STATS):
                    continue
                self._flush_events()  # the stats come after the events they include
                self.publisher.stats(
                    session.stats.tick(
                        self.pub_endpoint, os.getpid(), session.seq, protocol.PUB_STATS_ROWS, protocol.PUB_MAX_BYTES
                    )
                )
            except Exception:
                log.exception("internal error sending stats (they go on)")


def _work_slice() -> Callable[[], bool]:
    """True for WORK_SLICE_S from now: a slice of reclaim work."""
    deadline = time.monotonic() + WORK_SLICE_S
    return lambda: time.monotonic() < deadline

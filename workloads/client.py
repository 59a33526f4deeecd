"""EngineClient: a blocking client of the engine, for workloads, the CLI and other tools.

It speaks wire.protocol over a DEALER socket.  Replies with ``err`` become
EngineError (with the errno name); an engine that is not there, or that goes away
while we wait, becomes NoEngine with one line that says what to do.

An engine that goes away is noticed within a second, over ipc and tcp alike: a
socket monitor on the DEALER reports its connection dropping (the kernel closes it
when the engine exits, is killed or stops serving), and a reply of ESHUTDOWN (the
engine stopped with our request in hand) means the same.  Over tcp libzmq also sends
ZMTP heartbeats on the connection, which the engine's I/O thread answers however busy
its loop is, so an engine whose host vanished without a word drops the connection
too.  Over ipc the engine's pid is checked as well (over tcp it is another host's).
"""

from __future__ import annotations

import errno
import itertools
import os
import socket
import time
from collections.abc import Mapping
from typing import Any, cast

import zmq
from zmq.utils.monitor import parse_monitor_message

from common.units import shown
from engined import curve, liveness, runtime
from wire import protocol
from wire.messages import FrameCells, FreezeState, HistoryLog, HistorySamples, LruListing, StepResult
from wire.protocol import EngineError as EngineError  # re-exported: the clients' name for it

POLL_SLICE_MS = 250  # a wait for a reply looks at the connection this often
HEARTBEAT_IVL_MS = 1000  # tcp: a ZMTP PING after a second without traffic
HEARTBEAT_TIMEOUT_MS = 3000  # tcp: no answer to it for this long drops the connection
FIRST_PING_S = 5.0  # a live engine that does not answer ping within this (it is stuck)
HISTORY_PAGES = 128  # pages of history read at most (the engine keeps 64 of samples, 4 of events)
WATCHED = (
    zmq.EVENT_CONNECTED
    | zmq.EVENT_CONNECT_RETRIED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)


class NoEngine(Exception):
    """No engine to talk to: none running, none listening at the endpoint, or it went away."""


class EngineClient:
    """Requests to one engine, one at a time.  ``timeout_s`` bounds each call (None: as long as the engine lives)."""

    def __init__(self, endpoint: str | None = None, *, timeout_s: float | None = 30.0) -> None:
        try:
            found = runtime.find_endpoint(endpoint)
        except runtime.Refused as e:  # a runtime directory or file that is not ours: never followed
            raise NoEngine(str(e)) from None
        if found is None:
            raise NoEngine(
                "no engine is running: start one with `epc-playground engine` "
                f"(or give --connect ENDPOINT or set ${runtime.ENDPOINT_ENV})"
            )
        if found.startswith("ipc://") and not os.path.exists(found[len("ipc://") :]):
            raise NoEngine(f"no engine listens at {found}: start one with `epc-playground engine`")
        self.endpoint = found
        self.timeout_s = timeout_s
        self.engine_pid = 0
        self._lost: str | None = None  # why the engine is gone, once we know
        self._next_check = 0.0  # monotonic time of the next check_engine() before a request
        # The process's one context: a client that is never closed then cannot hang a later
        # garbage collection in Context.term() (seen: a test run stuck in Context.__del__).
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.linger = 0
        self._sock.rcvtimeo = POLL_SLICE_MS
        self._monitor = self._watch_connection()
        self._ids = itertools.count(1)
        try:
            curve.connect(self._sock, found)  # tcp: with our CURVE keys
        except runtime.Refused as e:
            self.close()
            raise NoEngine(str(e)) from None
        except zmq.ZMQError as e:  # not an endpoint at all (libzmq: EINVAL, EPROTONOSUPPORT, ...)
            self.close()
            why = os.strerror(e.errno or errno.EINVAL)
            raise NoEngine(f"{found!r} is not an endpoint ({why}): give ipc://PATH or tcp://HOST:PORT") from None
        try:
            info = self.call("ping", _timeout_s=min(timeout_s or FIRST_PING_S, FIRST_PING_S))
        except BaseException:
            self.close()
            raise
        self.engine_pid = int(info["engine_pid"])
        self.pub_endpoint = str(info["pub"])
        self.capacity = int(info["capacity"])
        self.knobs = dict(info.get("knobs") or {})  # the engine's knobs not at V17's values (common.knobs)
        self.writable = frozenset(info.get("writable", ()))  # the cgroup files with a write handler

    def _watch_connection(self) -> zmq.Socket[bytes]:
        """The DEALER's socket monitor (set up before connect, so it sees the first connection); tcp heartbeats."""
        if self.endpoint.startswith("tcp://"):
            self._sock.heartbeat_ivl = HEARTBEAT_IVL_MS
            self._sock.heartbeat_timeout = HEARTBEAT_TIMEOUT_MS
        return self._sock.get_monitor_socket(WATCHED)

    def close(self) -> None:
        if self._monitor.closed:
            return
        self._sock.disable_monitor()
        self._monitor.close(linger=0)
        self._sock.close(linger=0)

    def __enter__(self) -> EngineClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- is the engine still there? ---------------------------------------------

    def check_engine(self) -> None:
        """Return if the engine may still be there; NoEngine (one line) once we know it is gone.

        Cheap (no request): what the socket monitor reported, and over ipc whether the
        engine's process exists.  Callers that wait without a request in flight (the
        scenario runner between steps, the mount) call it to notice a lost engine.
        """
        self._next_check = time.monotonic() + POLL_SLICE_MS / 1000
        while self._lost is None and self._monitor.poll(0):
            self._take_event(parse_monitor_message(self._monitor.recv_multipart()))
        local = self.endpoint.startswith("ipc://")
        if self._lost is None and self.engine_pid and local and not liveness.process_alive(self.engine_pid):
            self._lost = self._gone()
        if self._lost is not None:
            raise NoEngine(self._lost)

    def _take_event(self, event: Mapping[str, Any]) -> None:
        kind = event["event"]
        if kind == zmq.EVENT_CONNECT_RETRIED and not self.engine_pid:
            why = _why_refused(self.endpoint)
            self._lost = f"no engine listens at {self.endpoint}{why}: start one with `epc-playground engine`"
        elif kind == zmq.EVENT_DISCONNECTED:
            self._lost = self._gone()
        elif kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            self._lost = (
                f"the engine at {self.endpoint} refused this client (authentication failed, status {event['value']})"
            )
        elif kind in (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL):
            # An engine killed in the middle of our handshake fails it too: then nothing listens any more.
            if _went_away(self.endpoint):
                self._lost = self._gone()
            else:
                self._lost = f"what listens at {self.endpoint} does not speak this protocol (handshake failed)"

    def _gone(self) -> str:
        """The one line for a lost engine (before its first answer we know only where it was)."""
        return (
            f"the engine (pid {self.engine_pid}) is gone"
            if self.engine_pid
            else f"the engine at {self.endpoint} is gone"
        )

    def call(self, op: str, _timeout_s: float | None = None, **args: Any) -> Any:
        """Send one request and wait for its reply; its result, or EngineError / NoEngine.

        NoEngine when the engine is gone (noticed within POLL_SLICE_MS of its connection
        dropping, or from its ESHUTDOWN reply) or does not answer within the timeout.
        """
        if self._lost is not None or time.monotonic() >= self._next_check:
            self.check_engine()  # not on every call: it costs microseconds, a call tens of them
        request_id = next(self._ids)
        try:
            self._sock.send(protocol.request(op, request_id, **args), flags=zmq.NOBLOCK)
        except zmq.Again:
            self.check_engine()
            raise NoEngine(f"the engine at {self.endpoint} does not take requests") from None
        timeout = _timeout_s if _timeout_s is not None else self.timeout_s
        waited_ms = 0
        while True:
            try:
                reply = protocol.decode_reply(self._sock.recv())  # RCVTIMEO: wakes every POLL_SLICE_MS
            except zmq.Again:
                waited_ms += POLL_SLICE_MS
                self.check_engine()
                if timeout is not None and waited_ms >= timeout * 1000:
                    why = f"the engine at {self.endpoint} did not answer {op} within {timeout:g} s"
                    raise NoEngine(why + self._frozen(op)) from None
                continue
            if reply["id"] != request_id:
                continue  # a late answer to a request we gave up on
            if reply.get("err") == "ESHUTDOWN":  # the engine stopped with our request in hand
                self._lost = self._gone()
                raise NoEngine(self._lost)
            if "err" in reply:
                raise EngineError(str(reply["err"]), str(reply.get("msg", "")))
            return reply.get("ok")

    def _frozen(self, op: str) -> str:
        """After a call timed out: why, when the engine is frozen (it answers ping); else nothing."""
        if op == "ping":
            return ""
        try:
            frozen = self.call("ping", _timeout_s=POLL_SLICE_MS / 1000).get("frozen")
        except (NoEngine, EngineError):
            return ""
        return f": it is frozen (step mode), and your {op} waits in its queue for a step or the thaw" if frozen else ""

    # -- the cgroup files -----------------------------------------------------

    # Paths and values the wire cannot carry fail as the kernel's VFS and kernfs would fail them.

    def read(self, path: str) -> str:
        return str(self.call("read", path=_path(path)))

    def write(self, path: str, value: str) -> None:
        """Write ``value`` in one write(2); EngineError(E2BIG) above a page, as kernfs says for cgroup files.

        A value longer than the wire carries is refused here, with the errno the engine gives above a page.
        """
        if len(value.encode(errors="surrogateescape")) > protocol.MAX_VALUE:
            raise EngineError("E2BIG", f"one write to a cgroup file takes at most {protocol.PAGE_SIZE} bytes")
        self.call("write", path=_path(path), value=value)

    def mkdir(self, path: str) -> None:
        self.call("mkdir", path=_path(path))

    def rmdir(self, path: str) -> None:
        self.call("rmdir", path=_path(path))

    def listdir(self, path: str) -> list[str]:
        return list(self.call("listdir", path=_path(path)))

    def snapshot(self) -> dict[str, Any]:
        return dict(self.call("snapshot"))

    def hello(self, role: str, name: str = "", pid: int | None = None, **plan: Any) -> dict[str, Any]:
        """Register this process (or ``pid``) with the engine; returns its cgroup and the EPC size.

        ``plan``: what the workload was asked to do, for displays (``size``, ``pattern``,
        ``passes``, ``duration_ms``: see ``workloads.program.plan``)."""
        return dict(self.call("hello", pid=pid or os.getpid(), role=role, name=name, **plan))

    # -- the kernel's views (docs/protocol.md, "The views") -------------------------

    def lru(self, cgroup: str, offset: int = 0, limit: int = 256, unreclaimable_offset: int = 0) -> LruListing:
        """``limit`` pages of the cgroup's LRU from ``offset`` (0: the head, scanned next), each marked
        with what the next reclaim batch would do with it, and of its unreclaimable pages from
        ``unreclaimable_offset``.  EngineError: EINVAL for an argument out of range (nothing sent),
        ENOENT for no such cgroup."""
        args = _checked("lru", cgroup=cgroup, offset=offset, limit=limit, unreclaimable_offset=unreclaimable_offset)
        return cast(LruListing, self.call("lru", **args))

    def frames(self, count: int, first: int = 0, group: int = 1) -> FrameCells:
        """The EPC frame map: ``count`` cells of ``group`` frames from frame ``first``.  EngineError:
        EINVAL for an argument out of range (nothing sent) or ``first`` past the EPC."""
        return cast(FrameCells, self.call("frames", **_checked("frames", count=count, first=first, group=group)))

    # -- step mode and history ------------------------------------------------

    def freeze(self) -> FreezeState:
        """Step mode: the engine runs nothing by itself until thaw(), or until this client closes or
        its process exits (either thaws it).  Only over ipc, as the engine's user."""
        return cast(FreezeState, self.call("freeze"))

    def step(self, what: str = "request") -> StepResult:
        """One step of the frozen engine: ``request`` (the oldest ready request's next step) or
        ``reclaim`` (a round of the reclaim work); what it ran and the events it caused."""
        return cast(StepResult, self.call("step", what=what))

    def thaw(self) -> FreezeState:
        return cast(FreezeState, self.call("thaw"))

    def history_samples(self) -> tuple[list[int], dict[str, tuple[list[int], list[int]]]]:
        """The engine's samples, every page read: the sample times and, per cgroup, misc.current
        and pages reclaimed per sample (pages), oldest first, each ending at the first page's
        newest sample (pages read later are cut to it)."""
        first = cast(HistorySamples, self.call("history", what="samples"))
        tick, times = first["tick"], first["t_ns"]
        series: dict[str, tuple[list[int], list[int]]] = {}
        page, pages = first, 1
        while True:
            late = page["tick"] - tick  # samples taken since the first page: not ours
            for row in page["cgroups"]:
                usage, reclaimed = row["usage_pages"], row["reclaimed_pages"]
                kept = max(len(usage) - late, 0)
                series[row["path"]] = (usage[:kept], reclaimed[:kept])
            after = page["next"]
            if after is None or pages >= HISTORY_PAGES:
                return times, series
            page = cast(HistorySamples, self.call("history", what="samples", after=after))
            pages += 1

    def history_log(self, what: str = "events") -> list[dict[str, Any]]:
        """The engine's last ``events`` (of event/other) or ``pressure`` sums, oldest first, every
        page read (up to the entries there were at the first page)."""
        page = cast(HistoryLog, self.call("history", what=what))
        total = page["total"]
        entries = list(page["entries"])
        for _ in range(HISTORY_PAGES):
            after = page["next"]
            if after is None or after >= total:
                break
            page = cast(HistoryLog, self.call("history", what=what, after=after))
            entries += page["entries"]
        return entries


def _checked(op: str, **args: Any) -> dict[str, Any]:
    """``args`` checked as the engine will check them; EngineError(EINVAL), one line, for a bad one."""
    schema = protocol.SCHEMAS[op]
    for name, value in args.items():
        try:
            schema[name][0](value)
        except ValueError as e:
            raise EngineError("EINVAL", f"{op}: {name} must be {e}, not {shown(value)}") from None
    return args


def _path(path: str) -> str:
    """``path``, or EngineError(ENAMETOOLONG) when it is longer than PATH_MAX, as the VFS refuses it."""
    if len(path) > protocol.MAX_PATH:
        raise EngineError("ENAMETOOLONG", f"a path of {len(path)} characters is longer than {protocol.MAX_PATH}")
    return path


def _went_away(endpoint: str, tries: int = 3) -> bool:
    """After a failed handshake: whether nothing listens at ``endpoint`` any more (the engine died during it).

    A dying process closes its sockets one by one, so the listener may outlive the
    connection by a moment: a listener is believed only if it is still there 50 ms later.
    """
    for attempt in range(tries):
        if attempt:
            time.sleep(0.05)
        if not _accepts(endpoint):
            return True
    return False


def _accepts(endpoint: str) -> bool:
    """Whether a plain connect to ``endpoint`` (ipc or tcp) succeeds."""
    address: str | tuple[str, int]
    if endpoint.startswith("ipc://"):
        family, address = socket.AF_UNIX, endpoint[len("ipc://") :]
    else:
        host, _, port = endpoint[len("tcp://") :].rpartition(":")
        family, address = socket.AF_INET6 if host.startswith("[") else socket.AF_INET, (host.strip("[]"), int(port))
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(address)
        except OSError:
            return False
    return True


def _why_refused(endpoint: str) -> str:
    """For an ipc endpoint, why connecting fails (`` (Connection refused)``): the socket file is stale."""
    if not endpoint.startswith("ipc://"):
        return ""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(endpoint[len("ipc://") :])
        except OSError as e:
            return f" ({os.strerror(e.errno or errno.ECONNREFUSED)})"
    return ""

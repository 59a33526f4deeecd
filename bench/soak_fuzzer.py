"""Hostile frames for the soak: one lock-step DEALER process, every reply matched by its id.

``python -m bench.soak_fuzzer ENDPOINT INDEX SEED FRAMES`` sends FRAMES frames, one at
a time, each waiting up to LOST_S for its reply: random bytes, truncated MessagePack,
wrong types, huge ints, deep nesting, unknown ops, extra and missing arguments, wrong
versions, multipart and oversize frames, requests valid by schema with random values
(on its own enclaves and vEPCs, with large indexes and counts, and on other processes'
ids), hostile cgroup file writes and hostile mkdir/rmdir under /f.  It lives in
/f/fzINDEX (moved there before it says hello) and names no pid but its own: a frame
that would name another one is rewritten.  A frame over protocol.MAX_FRAME makes the
engine drop the connection without a reply (by design): the socket is made anew and
the frame counted as ``dropped``.

Every REPORT_EVERY frames, and at the end, one JSON line on stdout: the replies by
category and code, and the failures (lost replies, wrong ids, undecodable replies,
internal errors, broken invariants, foreign requests that succeeded).
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import msgpack
import zmq
from zmq.utils.monitor import parse_monitor_message

from bench import soak_frames as frames
from bench.soak_requests import State
from wire import protocol

LOST_S = 30.0  # a reply not back by then is lost
STALL_CHECK_S = 2.0  # a reply not back by then: is our call stalled?
REPORT_EVERY = 200
MAX_NOTES = 20  # failure descriptions kept per process
SLOWEST = 3


@dataclass(slots=True)
class Tally:
    """What one fuzzer process saw."""

    sent: int = 0
    codes: dict[str, Counter[str]] = field(default_factory=dict)
    lost: int = 0
    wrong_id: int = 0
    bad_reply: int = 0
    disconnected: int = 0  # the engine dropped a connection over a frame that was not oversize
    internal: int = 0  # EIO "internal error": an engine bug
    broken: int = 0  # EIO "invariant broken" from check
    foreign_ok: int = 0  # a request on another process's enclave or vEPC that succeeded
    setup: int = 0  # we could not move into our cgroup or say hello
    notes: list[str] = field(default_factory=list)
    slowest: list[tuple[float, str]] = field(default_factory=list)  # the longest waits for a reply, SLOWEST of them

    def timed(self, seconds: float, frame: frames.Frame) -> None:
        """The wait for this frame's reply: kept if it is among the longest."""
        if len(self.slowest) < SLOWEST or seconds > self.slowest[-1][0]:
            self.slowest = sorted([*self.slowest, (seconds, f"{frame.category} {frame.describe()}")], reverse=True)
            del self.slowest[SLOWEST:]

    def count(self, category: str, code: str) -> None:
        self.codes.setdefault(category, Counter())[code] += 1

    def fail(self, what: str, note: str) -> None:
        setattr(self, what, getattr(self, what) + 1)
        if len(self.notes) < MAX_NOTES:
            self.notes.append(f"{what}: {note}")

    def report(self, done: bool = False) -> str:
        return json.dumps({
            "pid": os.getpid(), "done": done, "sent": self.sent, "codes": self.codes,
            "lost": self.lost, "wrong_id": self.wrong_id, "bad_reply": self.bad_reply,
            "disconnected": self.disconnected, "internal": self.internal, "broken": self.broken,
            "foreign_ok": self.foreign_ok, "setup": self.setup, "notes": self.notes, "slowest": self.slowest,
        })  # fmt: skip


class Connection:
    """One DEALER to the engine and its socket monitor (which tells when the engine drops us)."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str) -> None:
        self.ctx, self.endpoint = ctx, endpoint
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        self.monitor = self.sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        self.sock.connect(endpoint)
        self.poller = zmq.Poller()
        self.poller.register(self.sock, zmq.POLLIN)
        self.poller.register(self.monitor, zmq.POLLIN)

    def send(self, parts: list[bytes]) -> None:
        self.sock.send_multipart(parts)

    def receive(self, timeout_s: float) -> bytes | None:
        """The reply to the request sent; None when the engine dropped the connection.
        TimeoutError when neither came in time."""
        deadline = time.monotonic() + timeout_s
        while True:
            ready = dict(self.poller.poll(max(0, int((deadline - time.monotonic()) * 1000))))
            if not ready:
                raise TimeoutError
            if self.sock in ready:
                return self.sock.recv()
            event = parse_monitor_message(self.monitor.recv_multipart())
            if event["event"] == zmq.EVENT_DISCONNECTED:
                return None

    def close(self) -> None:
        self.sock.disable_monitor()
        self.monitor.close(linger=0)
        self.sock.close(linger=0)


def run(endpoint: str, index: int, seed: int, total: int) -> Tally:
    rng = random.Random(seed)
    state = State(pid=os.getpid(), home=f"/f/fz{index}")
    tally = Tally()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    conn = Connection(ctx, endpoint)
    try:
        for frame in frames.settle(state):  # into our own cgroup, before anything is charged to us
            code = _send(conn, frame, state, tally)
            if not _settled(frame, code):
                tally.fail("setup", f"{frame.describe()} -> {code}")
                return tally
        while tally.sent < total:
            if _send(conn, frames.make(rng, state), state, tally) in ("dropped", "lost"):  # a late reply must not cross
                conn.close()
                conn = Connection(ctx, endpoint)
            if tally.sent % REPORT_EVERY == 0:
                print(tally.report(), flush=True)
    finally:
        conn.close()
        ctx.term()
    return tally


def _settled(frame: frames.Frame, code: str) -> bool:
    """Whether a setup step went through (a mkdir may find its cgroup there already)."""
    return code == "ok" or (code == "EEXIST" and frame.request is not None and frame.request["op"] == "mkdir")


def _send(conn: Connection, frame: frames.Frame, state: State, tally: Tally) -> str:
    """One frame and its reply, counted; the reply's code, or "lost", or "dropped" (make a new connection)."""
    tally.sent += 1
    start = time.monotonic()
    conn.send(frame.parts)
    try:
        try:
            reply = conn.receive(STALL_CHECK_S)
        except TimeoutError:
            if _unstall(conn, state):  # our own call stalls (our limits leave nothing reclaim can help)
                tally.count(frame.category, "stalled")
            reply = conn.receive(LOST_S - STALL_CHECK_S)
        tally.timed(time.monotonic() - start, frame)
    except TimeoutError:
        tally.count(frame.category, "lost")
        tally.fail("lost", f"{frame.category} {frame.describe()}: no reply in {LOST_S:g} s")
        return "lost"
    if reply is None:
        tally.count(frame.category, "dropped")
        if not frame.oversize:
            tally.fail("disconnected", f"{frame.category} {frame.describe()}: the engine dropped the connection")
        return "dropped"
    return _take_reply(frame, reply, state, tally)


def _unstall(conn: Connection, state: State) -> bool:
    """Whether the engine shows our call as stalled, as the kernel's task would re-fault for as
    long as nothing frees its cgroup (the hostile limits we write can make it so); if so, lift
    the limits an operator would (misc.max of our cgroup and its ancestors up to /f) so that it goes on.  A
    second connection: ours waits for its reply."""
    side = conn.ctx.socket(zmq.DEALER)
    side.linger = 0
    side.rcvtimeo = 5000
    side.connect(conn.endpoint)
    try:
        side.send(protocol.request("snapshot", 1))
        rows = protocol.decode_reply(side.recv()).get("ok", {}).get("workloads", [])
        if not any(row["pid"] == state.pid and row["state"] == "stalled" for row in rows):
            return False
        side.send(protocol.request("hello", 2, pid=state.pid, role="client"))
        path = str(protocol.decode_reply(side.recv()).get("ok", {}).get("cgroup", state.home))
        while path.startswith("/f"):  # from the cgroup we are in now up to /f: every limit of ours
            side.send(protocol.request("write", 3, path=f"{path}/misc.max", value="sgx_epc max"))
            side.recv()
            path = path.rpartition("/")[0]
        return True
    except zmq.Again:
        return False
    finally:
        side.close(linger=0)


def _take_reply(frame: frames.Frame, reply: bytes, state: State, tally: Tally) -> str:
    """Count a reply by its code; a wrong id, an internal error, a broken invariant or a foreign
    request that succeeded is a failure."""
    try:
        message = msgpack.unpackb(reply, raw=False)
        code = str(message["err"]) if "err" in message else "ok"
        reply_id = message["id"]
    except Exception as e:
        tally.count(frame.category, "bad_reply")
        tally.fail("bad_reply", f"{frame.category}: {type(e).__name__} on {reply[:64]!r}")
        return "bad_reply"
    tally.count(frame.category, code)
    text = f"{frame.category} {frame.describe()} -> {code} {str(message.get('msg', ''))[:200]}"
    if reply_id != frame.expect_id:
        tally.fail("wrong_id", f"{text} (id {reply_id!r}, sent {frame.expect_id})")
    if code == "EIO" and "internal error" in str(message.get("msg", "")):
        tally.fail("internal", text)
    elif code == "EIO" and "invariant" in str(message.get("msg", "")):
        tally.fail("broken", text)
    if frame.foreign and code == "ok":
        tally.fail("foreign_ok", text)
    if frame.request is not None:
        if code == "ok":
            state.took(frame.request, message.get("ok"))
        else:
            state.refused(frame.request, code)
    return code


def main(argv: list[str]) -> int:
    endpoint, index, seed, total = argv[0], int(argv[1]), int(argv[2]), int(argv[3])
    tally = run(endpoint, index, seed, total)
    print(tally.report(done=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

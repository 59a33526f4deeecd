"""A live view of an engine for displays: the latest stats, recent events and history.

Subscribes to the engine's PUB socket, keeps the newest stats snapshot, a bounded log
of events and, per cgroup, a history of usage and reclaim; it keeps recording whatever
the display does with it (pause included).  No textual here: the TUI draws from it.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import msgpack
import zmq

from engine import protocol
from workloads.client import EngineClient

HISTORY = 240  # samples per cgroup: a minute at 4 Hz
EVENTS = 2000


class FeedState:
    """What a display draws from: the newest stats, recent events, history; fed by take_stats/take_events."""

    connected = True

    def __init__(self, snapshot: dict[str, Any]) -> None:
        self.snapshot = snapshot
        self.seq = int(snapshot["seq"])
        self.events: deque[dict[str, Any]] = deque(maxlen=EVENTS)
        self.received = 0  # events ever taken: a display shows the last ``received - shown`` of ``events``
        self.dropped = 0  # events the engine numbered that never arrived (a subscriber far behind)
        self.usage: dict[str, deque[int]] = {}  # misc.current per cgroup, one sample per stats message
        self.reclaim: dict[str, deque[int]] = {}  # pages reclaimed per cgroup between stats messages
        self.fault_rate: dict[int, float] = {}  # faults per second of each workload, between the last two stats
        self._reclaimed_since: dict[str, int] = {}

    def take_events(self, events: list[dict[str, Any]]) -> None:
        self.received += len(events)
        for event in events:
            seq = int(event.get("seq", 0))
            if seq > self.seq + 1:
                self.dropped += seq - self.seq - 1
            self.seq = max(self.seq, seq)
            self.events.append(event)
            if event.get("kind") == "reclaim":
                path = str(event["cgroup"])
                self._reclaimed_since[path] = self._reclaimed_since.get(path, 0) + int(event["written"])

    def take_stats(self, snapshot: dict[str, Any]) -> None:
        seconds = (int(snapshot["t_ns"]) - int(self.snapshot["t_ns"])) / 1e9
        if seconds > 0:
            before = {w["pid"]: w["faults"] for w in self.snapshot["workloads"]}
            self.fault_rate = {
                w["pid"]: (w["faults"] - before.get(w["pid"], w["faults"])) / seconds for w in snapshot["workloads"]
            }
        self.snapshot = snapshot
        for cg in snapshot["cgroups"]:
            path = cg["path"]
            self.usage.setdefault(path, deque(maxlen=HISTORY)).append(int(cg["misc_current"]))
            self.reclaim.setdefault(path, deque(maxlen=HISTORY)).append(self._reclaimed_since.pop(path, 0))

    def poll(self) -> bool:
        """Take what arrived; True when the snapshot changed (nothing arrives by itself here)."""
        return False

    def close(self) -> None:
        pass


class EngineFeed(FeedState):
    """A FeedState kept up to date from one engine's PUB socket by poll()."""

    def __init__(self, endpoint: str | None = None) -> None:
        self.client = EngineClient(endpoint, timeout_s=10)
        self._ctx = zmq.Context()
        self._sub = self._ctx.socket(zmq.SUB)
        self._sub.linger = 0
        self._sub.rcvhwm = protocol.PUB_HWM
        self._sub.setsockopt(zmq.SUBSCRIBE, b"")
        self._sub.connect(self.client.pub_endpoint)
        super().__init__(self.client.snapshot())  # late joiner: a full snapshot first
        self.connected = True

    def poll(self) -> bool:
        changed = False
        try:
            while self._sub.poll(0):
                topic, payload = self._sub.recv_multipart()
                message = msgpack.unpackb(payload, raw=False)
                if topic == protocol.TOPIC_STATS:
                    self.take_stats(message)
                    changed = True
                elif topic == protocol.TOPIC_EVENT:
                    self.take_events(message)
                elif topic == protocol.TOPIC_ENGINE:
                    self.connected = False
        except zmq.ZMQError:
            self.connected = False
        if self.connected and not protocol.process_alive(self.client.engine_pid):
            self.connected = False
        return changed

    def close(self) -> None:
        self._sub.close(linger=0)
        self._ctx.term()
        self.client.close()

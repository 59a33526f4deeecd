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


class EngineFeed:
    """Everything a display needs from one engine, refreshed by poll()."""

    def __init__(self, endpoint: str | None = None) -> None:
        self.client = EngineClient(endpoint, timeout_s=10)
        self._ctx = zmq.Context()
        self._sub = self._ctx.socket(zmq.SUB)
        self._sub.linger = 0
        self._sub.setsockopt(zmq.SUBSCRIBE, b"")
        self._sub.connect(self.client.pub_endpoint)
        self.snapshot: dict[str, Any] = self.client.snapshot()  # late joiner: a full snapshot first
        self.events: deque[dict[str, Any]] = deque(maxlen=EVENTS)
        self.usage: dict[str, deque[int]] = {}
        self.reclaim: dict[str, deque[int]] = {}
        self._reclaimed_since: dict[str, int] = {}
        self.connected = True
        self.seq = int(self.snapshot["seq"])

    def poll(self) -> bool:
        """Take what arrived; True when the snapshot changed."""
        changed = False
        try:
            while self._sub.poll(0):
                topic, payload = self._sub.recv_multipart()
                message = msgpack.unpackb(payload, raw=False)
                if topic == protocol.TOPIC_STATS:
                    self._record(message)
                    changed = True
                elif topic == protocol.TOPIC_EVENT:
                    for event in message:
                        self.seq = max(self.seq, int(event.get("seq", 0)))
                        self.events.append(event)
                        if event.get("kind") == "reclaim":
                            path = str(event["cgroup"])
                            self._reclaimed_since[path] = self._reclaimed_since.get(path, 0) + int(event["written"])
                elif topic == protocol.TOPIC_ENGINE:
                    self.connected = False
        except zmq.ZMQError:
            self.connected = False
        if self.connected and not protocol.process_alive(self.client.engine_pid):
            self.connected = False
        return changed

    def _record(self, snapshot: dict[str, Any]) -> None:
        self.snapshot = snapshot
        for cg in snapshot["cgroups"]:
            path = cg["path"]
            self.usage.setdefault(path, deque(maxlen=HISTORY)).append(int(cg["misc_current"]))
            self.reclaim.setdefault(path, deque(maxlen=HISTORY)).append(self._reclaimed_since.pop(path, 0))

    def close(self) -> None:
        self._sub.close(linger=0)
        self._ctx.term()
        self.client.close()

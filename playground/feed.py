"""A live view of an engine for displays: the latest stats, recent events and history.

Subscribes to the engine's PUB socket, keeps the newest stats snapshot, a bounded log
of events and, per cgroup, a history of usage and reclaim; it keeps recording whatever
the display does with it (pause included).  No textual here: the TUI draws from it.
"""

from __future__ import annotations

from collections import deque
from typing import Any, cast

import zmq

from engined import liveness
from playground.scenario.backends.stream import Subscriber
from wire import protocol
from wire.snapshot import Snapshot, StatsDelta, merge_stats
from workloads.client import EngineClient

HISTORY = 240  # samples per cgroup: a minute at 4 Hz
EVENTS = 2000


class FeedState:
    """What a display draws from: the newest stats, recent events, history; fed by take_stats/take_events.

    Limit hits and reclaim come thousands a second under pressure; a display does not
    take them one by one but reads their sums from each stats message: a ``pressure``
    entry in ``events`` per cgroup that had any since the one before, and ``reclaim``.
    """

    connected = True

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.events: deque[dict[str, Any]] = deque(maxlen=EVENTS)
        self.received = 0  # entries ever taken: a display shows the last ``received - shown`` of ``events``
        self.usage: dict[str, deque[int]] = {}  # misc.current per cgroup, one sample per stats message
        self.reclaim: dict[str, deque[int]] = {}  # pages reclaimed per cgroup between stats messages
        self.fault_rate: dict[int, float] = {}  # faults per second of each workload, between the last two stats

    def take_events(self, events: list[dict[str, Any]]) -> None:
        self.received += len(events)
        self.events.extend(events)

    def take_stats(self, snapshot: Snapshot) -> None:
        before = self.snapshot
        seconds = (int(snapshot["t_ns"]) - int(before["t_ns"])) / 1e9
        if seconds > 0:
            faults = {w["pid"]: w["faults"] for w in before["workloads"]}
            self.fault_rate = {
                w["pid"]: (w["faults"] - faults.get(w["pid"], w["faults"])) / seconds for w in snapshot["workloads"]
            }
        earlier = {cg["path"]: cg for cg in before["cgroups"]}
        pressure = []
        for cg in snapshot["cgroups"]:
            path = cg["path"]
            was = earlier.get(path, cg)
            hits = cg["misc_events_local"] - was["misc_events_local"]
            reclaimed = cg["reclaimed"] - was["reclaimed"]
            if hits > 0 or reclaimed > 0:
                pressure.append({"kind": "pressure", "cgroup": path, "hits": max(hits, 0), "reclaimed": reclaimed})
            self.usage.setdefault(path, deque(maxlen=HISTORY)).append(int(cg["misc_current"]))
            self.reclaim.setdefault(path, deque(maxlen=HISTORY)).append(max(reclaimed, 0))
        self.snapshot = snapshot
        self.take_events(pressure)

    def poll(self) -> bool:
        """Take what arrived; True when the snapshot changed (nothing arrives by itself here)."""
        return False

    def close(self) -> None:
        pass


class EngineFeed(FeedState):
    """A FeedState kept up to date from one engine's PUB socket by poll()."""

    def __init__(self, endpoint: str | None = None) -> None:
        self.client = EngineClient(endpoint, timeout_s=10)
        # not the pressure events: their sums come with stats
        topics = (protocol.TOPIC_EVENT_OTHER, protocol.TOPIC_STATS, protocol.TOPIC_ENGINE)
        self.subscriber = Subscriber(self.client.pub_endpoint, topics, hwm=protocol.PUB_HWM, skipped=self._skipped)
        # a late joiner: the whole snapshot first, then the deltas after it
        snapshot = cast(Snapshot, self.client.snapshot())
        super().__init__(snapshot)
        self._merged = snapshot
        self._stats_seq = int(snapshot["stats_seq"])
        self.connected = True

    def poll(self) -> bool:
        changed: list[bool] = []
        try:
            self.subscriber.drain(lambda topic, message: changed.append(self._take_message(topic, message)))
        except zmq.ZMQError:
            self.connected = False
        if self.connected and not liveness.process_alive(self.client.engine_pid):
            self.connected = False
        return any(changed)

    def _skipped(self, topic: bytes, why: str) -> None:
        """A message we cannot read is skipped and said in the log, never a crash; after a bad stats
        message the next one finds a gap and asks for the whole snapshot."""
        if topic == protocol.TOPIC_STATS:
            self._stats_seq = -1
        self.take_events([{"kind": "malformed", "topic": topic.decode(errors="replace"), "error": why}])

    def _take_message(self, topic: bytes, message: Any) -> bool:
        """One PUB message; True when the snapshot changed."""
        if topic == protocol.TOPIC_STATS:
            return self._take_delta(cast(StatsDelta, message))
        if topic == protocol.TOPIC_EVENT_OTHER:
            if not isinstance(message, list) or not all(isinstance(e, dict) for e in message):
                raise TypeError(f"an event batch is a list of maps, not {type(message).__name__}")
            self.take_events(message)
        elif topic == protocol.TOPIC_ENGINE:
            self.connected = False
        return False

    def _take_delta(self, delta: StatsDelta) -> bool:
        """Apply one stats message; True at the end of a tick.  A gap in stats_seq (messages the
        engine dropped for us) asks for the whole snapshot again."""
        seq = int(delta["stats_seq"])
        if seq <= self._stats_seq:
            return False  # already in the snapshot we asked for
        if seq != self._stats_seq + 1:
            self._merged = cast(Snapshot, self.client.snapshot())
            self._stats_seq = int(self._merged["stats_seq"])
            self.take_stats(self._merged)
            return True
        self._stats_seq = seq
        self._merged = merge_stats(self._merged, delta)
        if delta["last"]:
            self.take_stats(self._merged)
            return True
        return False

    def close(self) -> None:
        self.subscriber.close()
        self.client.close()

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
TRACE = 20000  # reclaim batches kept while a display shows the reclaim trace (a second or two under pressure)


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
        # pages reclaimed from each cgroup's subtree (its own LRU and its descendants') between stats messages
        self.reclaim_subtree: dict[str, deque[int]] = {}
        # The reclaim trace: the engine's reclaim events, one per batch, received only while wanted (want_trace).
        self.tracing = False
        self.trace: deque[dict[str, Any]] = deque(maxlen=TRACE)
        self.trace_received = 0  # batches ever taken: a display takes the last ``trace_received - taken``

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
                pressure.append({"kind": "pressure", "t_ns": snapshot["t_ns"], "cgroup": path,
                                 "hits": max(hits, 0), "reclaimed": reclaimed})  # fmt: skip
            self.usage.setdefault(path, deque(maxlen=HISTORY)).append(int(cg["misc_current"]))
            self.reclaim.setdefault(path, deque(maxlen=HISTORY)).append(max(reclaimed, 0))
        self._take_subtree_reclaim(before, snapshot)
        self.snapshot = snapshot
        self.take_events(pressure)

    def _take_subtree_reclaim(self, before: Snapshot, snapshot: Snapshot) -> None:
        """One sample of pages reclaimed in each cgroup's subtree: each cgroup's own count goes to
        it and to every ancestor, walked only for the cgroups that reclaimed (cheap per tick)."""
        earlier = {cg["path"]: cg["reclaimed"] for cg in before["cgroups"]}
        sums: dict[str, int] = {}
        for cg in snapshot["cgroups"]:
            path = cg["path"]
            reclaimed = cg["reclaimed"] - earlier.get(path, cg["reclaimed"])
            while reclaimed > 0:
                sums[path] = sums.get(path, 0) + reclaimed
                if path == "/":
                    break
                path = path.rsplit("/", 1)[0] or "/"
        subtree = self.reclaim_subtree
        for cg in snapshot["cgroups"]:
            subtree.setdefault(cg["path"], deque(maxlen=HISTORY)).append(sums.get(cg["path"], 0))
        if len(subtree) > len(snapshot["cgroups"]):  # removed cgroups go
            live = {cg["path"] for cg in snapshot["cgroups"]}
            for path in [path for path in subtree if path not in live]:
                del subtree[path]

    def want_trace(self, on: bool) -> None:
        """Receive the engine's reclaim events (a batch each, thousands a second under pressure) or
        stop: a display asks for them only while it shows them."""
        self.tracing = on

    def take_trace(self, events: list[dict[str, Any]]) -> None:
        """Reclaim events for the trace (the other pressure events, limit hits, are in the stats' sums)."""
        batches = [e for e in events if e.get("kind") == "reclaim"]
        self.trace_received += len(batches)
        self.trace.extend(batches)

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

    def want_trace(self, on: bool) -> None:
        """Subscribe to the pressure topic while a display shows the reclaim trace, and only then:
        the engine sends nobody's batches while nobody subscribes."""
        if on != self.tracing:
            option = zmq.SUBSCRIBE if on else zmq.UNSUBSCRIBE
            self.subscriber.socket.setsockopt(option, protocol.TOPIC_EVENT_PRESSURE)
        super().want_trace(on)

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
        elif topic == protocol.TOPIC_EVENT_PRESSURE:
            if not isinstance(message, list) or not all(isinstance(e, dict) for e in message):
                raise TypeError(f"an event batch is a list of maps, not {type(message).__name__}")
            if self.tracing:  # not what came after we stopped wanting them
                self.take_trace(message)
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

"""A live view of an engine for displays: the latest stats, recent events and history.

Subscribes to the engine's PUB socket, keeps the newest stats snapshot, a bounded log
of events and, per cgroup, a history of usage and reclaim; it keeps recording whatever
the display does with it (pause included).  On connect it reads the engine's own history
(the ``history`` op), so a display that attaches late starts with the last 10 minutes.
No textual here: the TUI draws from it.
"""

from __future__ import annotations

from array import array
from collections import deque
from collections.abc import Iterator
from typing import Any, cast

import zmq

from common.limits import PAGE_SIZE
from engined import liveness
from playground.scenario.backends.stream import Subscriber
from wire import protocol
from wire.snapshot import Snapshot, StatsDelta, merge_stats
from workloads.client import EngineClient, EngineError

HISTORY = 2400  # samples per cgroup: 10 minutes at 4 Hz (9.6 KB a series: 19.2 MB for 1,000 cgroups)
EVENTS = 2000
TRACE = 20000  # reclaim batches kept while a display shows the reclaim trace (a second or two under pressure)


class Samples:
    """The last ``maxlen`` samples of a count, oldest first, in a flat ring of 4-byte units
    (``unit``: 4096 keeps bytes as pages); what a deque of ints would be, at 4 bytes a sample."""

    __slots__ = ("_ring", "_start", "maxlen", "unit")

    def __init__(self, maxlen: int = HISTORY, unit: int = 1) -> None:
        self._ring = array("I")
        self._start = 0  # once full: where the oldest is
        self.maxlen = maxlen
        self.unit = unit

    def append(self, value: int) -> None:
        self.append_units(value // self.unit)

    def append_units(self, units: int) -> None:
        units = min(max(units, 0), 0xFFFFFFFF)
        ring = self._ring
        if len(ring) < self.maxlen:
            ring.append(units)
        else:
            ring[self._start] = units
            self._start = (self._start + 1) % self.maxlen

    def extend_units(self, units: list[int]) -> None:
        units = units[-self.maxlen :]
        if not self._ring:
            try:
                self._ring = array("I", units)  # the engine's history: 4-byte counts already
                return
            except (OverflowError, TypeError):
                pass
        for value in units:
            self.append_units(value)

    def __len__(self) -> int:
        return len(self._ring)

    def __iter__(self) -> Iterator[int]:
        ring, start = self._ring, self._start
        values = ring[start:].tolist() + ring[:start].tolist() if start else ring.tolist()
        if self.unit != 1:
            values = [value * self.unit for value in values]
        return iter(values)


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
        self.usage: dict[str, Samples] = {}  # misc.current per cgroup (bytes), one sample per stats message
        self.reclaim: dict[str, Samples] = {}  # pages reclaimed per cgroup between stats messages
        self.fault_rate: dict[int, float] = {}  # faults per second of each workload, between the last two stats
        # pages reclaimed from each cgroup's subtree (its own LRU and its descendants') between stats messages
        self.reclaim_subtree: dict[str, Samples] = {}
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
            usage = self.usage.get(path)
            if usage is None:
                usage = self.usage[path] = Samples(HISTORY, PAGE_SIZE)
                self.reclaim[path] = Samples(HISTORY)
            usage.append(int(cg["misc_current"]))
            self.reclaim[path].append(max(reclaimed, 0))
        if len(self.usage) > len(snapshot["cgroups"]):  # removed cgroups' history goes
            live = {cg["path"] for cg in snapshot["cgroups"]}
            for path in [path for path in self.usage if path not in live]:
                del self.usage[path]
                self.reclaim.pop(path, None)
        self._take_subtree_reclaim(before, snapshot)
        self.snapshot = snapshot
        self.take_events(pressure)

    def take_history(self, samples: dict[str, tuple[list[int], list[int]]], log: list[dict[str, Any]]) -> None:
        """The engine's history, before anything else: per cgroup, misc.current and pages
        reclaimed per sample (pages, oldest first); and its last events and pressure sums."""
        for path, (usage, reclaimed) in samples.items():
            self.usage[path] = Samples(HISTORY, PAGE_SIZE)
            self.usage[path].extend_units(usage)
            self.reclaim[path] = Samples(HISTORY)
            self.reclaim[path].extend_units(reclaimed)
        subtree: dict[str, list[int]] = {}  # each series added into its ancestors', aligned at the newest sample
        for path, (_, reclaimed) in samples.items():
            if not any(reclaimed):
                continue  # most series: nothing to add anywhere
            while True:
                into = subtree.setdefault(path, [])
                if len(into) < len(reclaimed):
                    into[:0] = [0] * (len(reclaimed) - len(into))
                offset = len(into) - len(reclaimed)
                for i, value in enumerate(reclaimed):
                    into[offset + i] += value
                if path == "/":
                    break
                path = path.rsplit("/", 1)[0] or "/"
        for path, series in subtree.items():
            self.reclaim_subtree[path] = Samples(HISTORY)
            self.reclaim_subtree[path].extend_units(series)
        self.take_events(log)

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
            subtree.setdefault(cg["path"], Samples(HISTORY)).append(sums.get(cg["path"], 0))
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
        self._history_seq = 0  # events up to this seq came with the history: skip them on PUB
        self.connected = True
        self._read_history()

    def _read_history(self) -> None:
        """The engine's history, what happened before we attached (an engine without it: none)."""
        try:
            samples = self.client.history_samples()[1]
            events = self.client.history_log("events")
            pressure = self.client.history_log("pressure")
        except EngineError:
            return
        self._history_seq = max((int(e.get("seq", 0)) for e in events), default=0)
        log = sorted(events + pressure, key=lambda e: int(e.get("t_ns", 0)))  # stable: events first
        self.take_history(samples, log)

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
            if self._history_seq:  # the first batches may hold events the history gave already
                message = [e for e in message if int(e.get("seq", 0)) > self._history_seq]
                if message:
                    self._history_seq = 0
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

"""The engine's XPUB socket: numbered events in topic runs, stats deltas, and who subscribes."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterable
from typing import Any

import zmq

from wire import protocol


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


class Publisher:
    """Events and stats out on an XPUB, sent only for topics someone subscribes to."""

    def __init__(self, ctx: zmq.Context[Any]) -> None:
        self.sock = ctx.socket(zmq.XPUB)  # a PUB that hears (un)subscriptions: see Subscriptions
        self.sock.linger = 0
        self.sock.setsockopt(zmq.XPUB_VERBOSER, 1)
        # A subscriber that stalls keeps at most PUB_HWM messages of at most PUB_MAX_BYTES each;
        # beyond that PUB drops for it (event and stats seq numbers show the gap).
        self.sock.sndhwm = protocol.PUB_HWM
        self.subscriptions = Subscriptions()

    def events(self, messages: list[dict[str, Any]]) -> None:
        """Numbered events, as lists of maps (far cheaper than a message each): each run of pressure
        events (limit hits, reclaim) under TOPIC_EVENT_PRESSURE, each run of the others under
        TOPIC_EVENT_OTHER, in order, so a display can leave the pressure out and read its sums from stats.
        Runs nobody subscribes to are not sent; none is over PUB_MAX_BYTES."""
        runs: list[tuple[bytes, list[dict[str, Any]]]] = []
        for message in messages:
            pressure = message["kind"] in protocol.PRESSURE_KINDS
            topic = protocol.TOPIC_EVENT_PRESSURE if pressure else protocol.TOPIC_EVENT_OTHER
            if runs and runs[-1][0] == topic:
                runs[-1][1].append(message)
            else:
                runs.append((topic, [message]))
        self.take_subscriptions()
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
        self._send(topic, payload)

    def stats(self, messages: Iterable[dict[str, Any]]) -> None:
        for message in messages:
            self._send(protocol.TOPIC_STATS, protocol.encode(message))

    def shutdown_notice(self) -> None:
        self._send(protocol.TOPIC_ENGINE, protocol.encode({"event": "shutdown"}))

    def _send(self, topic: bytes, payload: bytes) -> None:
        with contextlib.suppress(zmq.ZMQError):  # a full queue for a slow subscriber: it sees the gap
            self.sock.send_multipart([topic, payload], flags=zmq.NOBLOCK)

    def wants(self, topic: bytes) -> bool:
        self.take_subscriptions()
        return self.subscriptions.wants(topic)

    def take_subscriptions(self) -> None:
        """Read what the XPUB heard: subscribers coming and going."""
        while True:
            try:
                message = self.sock.recv(zmq.NOBLOCK)
            except zmq.ZMQError:  # Again, or closed
                return
            self.subscriptions.take(message)

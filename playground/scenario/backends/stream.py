"""The one subscriber to an engine's PUB socket: the real backend's event reader and the TUI's feed use it.

The engine publishes ``[topic, MessagePack payload]``: event batches, stats deltas and its
own shutdown (``wire.protocol``'s topics).  ``Subscriber.drain`` hands each message that
has arrived, decoded, to a handler.  A message it cannot read, because it is not two frames
or not MessagePack or because the handler finds it is not what the schema says, is
skipped and said (``skipped(topic, why)``), never a crash: the reader goes on with the next.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import msgpack
import zmq

from engined import curve

UNREADABLE = (ValueError, TypeError, KeyError, AttributeError, IndexError, msgpack.UnpackException)
"""What reading a message that is not what it should be raises (a handler's checks included)."""

Handler = Callable[[bytes, Any], object]
"""Takes one message: its topic and its decoded payload."""


class Subscriber:
    """A SUB socket on ``pub_endpoint`` for ``topics`` (a prefix each, as zmq matches them).

    ``hwm``: messages held at our end while we do not read (0: no bound).  ``skipped``
    hears each message that could not be read: its topic and why, one line.
    """

    def __init__(
        self, pub_endpoint: str, topics: Iterable[bytes], *, hwm: int, skipped: Callable[[bytes, str], None]
    ) -> None:
        self._ctx = zmq.Context()
        self.socket = self._ctx.socket(zmq.SUB)
        self.socket.linger = 0
        self.socket.rcvhwm = hwm
        for topic in topics:
            self.socket.setsockopt(zmq.SUBSCRIBE, topic)
        self.skipped = skipped
        self.received = 0  # messages that arrived, readable or not
        try:
            curve.connect(self.socket, pub_endpoint)  # tcp: with our CURVE keys
        except BaseException:
            self.close()
            raise

    def drain(self, handle: Handler, timeout_ms: int = 0, limit: int | None = None) -> int:
        """Hand the messages that have arrived to ``handle(topic, payload)``, oldest first; how many came.

        Waits up to ``timeout_ms`` for the first, and takes at most ``limit`` (None: all
        there are).  zmq.ZMQError when the socket fails.
        """
        count = 0
        while (limit is None or count < limit) and self.socket.poll(timeout_ms if count == 0 else 0):
            frames = self.socket.recv_multipart()
            count += 1
            self.received += 1
            try:
                topic, payload = frames  # ValueError for any other number of frames
                handle(topic, msgpack.unpackb(payload, raw=False))
            except UNREADABLE as e:
                self.skipped(frames[0], f"{type(e).__name__}: {e}")
        return count

    def close(self) -> None:
        self.socket.close(linger=0)
        self._ctx.term()

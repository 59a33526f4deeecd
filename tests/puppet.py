"""A process of its own that talks to an engine for a test: requests in on stdin, replies out.

Tests need clients that are really other processes (the engine learns who a client is
from the kernel, so a test's own connections are all one pid).  Run as
``python -m tests.puppet ENDPOINT``; each stdin line is a JSON request map without
``v``/``id`` (they are added), or ``{"raw": BASE64}`` for a frame sent as it is; each
reply goes to stdout as one JSON line (``{"timeout": true}`` when none came in time).
The first line out is ``{"pid": N}``.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from typing import Any

import msgpack
import zmq

REPLY_TIMEOUT_MS = 60_000


def main(endpoint: str) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(endpoint)
    out = sys.stdout
    out.write(json.dumps({"pid": os.getpid()}) + "\n")
    out.flush()
    for request_id, line in enumerate(sys.stdin, 1):
        request = json.loads(line)
        if "raw" in request:
            sock.send(base64.b64decode(request["raw"]))
        else:
            sock.send(msgpack.packb({"v": 1, "id": request_id, **request}, use_bin_type=True))
        if not sock.poll(request.get("timeout_ms", REPLY_TIMEOUT_MS)):
            reply: Any = {"timeout": True}
        else:
            reply = msgpack.unpackb(sock.recv(), raw=False)
        out.write(json.dumps(reply, default=repr) + "\n")
        out.flush()
    sock.close()
    ctx.term()


class Puppet:
    """The test's end of one puppet process."""

    def __init__(self, endpoint: str, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.puppet", endpoint],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )
        self.pid = int(json.loads(self._line())["pid"])

    def _line(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise EOFError(f"puppet {self.process.pid} ended (status {self.process.poll()})")
        return line

    def send(self, op: str, **args: Any) -> dict[str, Any]:
        """One request; its reply map (``ok`` or ``err``)."""
        return self._exchange({"op": op, **args})

    def send_raw(self, frame: bytes, timeout_ms: int = REPLY_TIMEOUT_MS) -> dict[str, Any]:
        return self._exchange({"raw": base64.b64encode(frame).decode(), "timeout_ms": timeout_ms})

    def _exchange(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return dict(json.loads(self._line()))

    def ok(self, op: str, **args: Any) -> Any:
        reply = self.send(op, **args)
        assert "err" not in reply and "timeout" not in reply, (op, args, reply)
        return reply.get("ok")

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()

    def close(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> Puppet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    main(sys.argv[1])

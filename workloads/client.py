"""EngineClient: a blocking client of the engine, for workloads, the CLI and other tools.

It speaks engine.protocol over a DEALER socket.  Replies with ``err`` become
EngineError (with the errno name); an engine that is not there, or that goes away
while we wait, becomes NoEngine with one line that says what to do.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import zmq

from engine import protocol, runtime

POLL_SLICE_MS = 250


class EngineError(Exception):
    """The engine answered with an error: ``code`` is its errno name (ENOMEM, EINVAL, SIGBUS, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    @property
    def errno(self) -> int:
        return protocol.errno_code(self.code)


class NoEngine(Exception):
    """No engine to talk to (none running, or it went away)."""


class EngineClient:
    """Requests to one engine, one at a time.  ``timeout_s`` bounds each call (None: as long as the engine lives)."""

    def __init__(self, endpoint: str | None = None, *, timeout_s: float | None = 30.0) -> None:
        found = runtime.find_endpoint(endpoint)
        if found is None:
            raise NoEngine(
                "no engine is running: start one with `epc-playground engine` "
                f"(or give --connect ENDPOINT or set ${runtime.ENDPOINT_ENV})"
            )
        if found.startswith("ipc://") and not os.path.exists(found[len("ipc://") :]):
            raise NoEngine(f"no engine listens at {found}: start one with `epc-playground engine`")
        self.endpoint = found
        self.timeout_s = timeout_s
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.linger = 0
        self._sock.rcvtimeo = POLL_SLICE_MS
        self._sock.connect(found)
        self._ids = itertools.count(1)
        self.engine_pid = 0
        info = self.call("ping", _timeout_s=min(timeout_s or 5.0, 5.0))
        self.engine_pid = int(info["engine_pid"])
        self.pub_endpoint = str(info["pub"])
        self.capacity = int(info["capacity"])

    def close(self) -> None:
        self._sock.close(linger=0)
        self._ctx.term()

    def __enter__(self) -> EngineClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, op: str, _timeout_s: float | None = None, **args: Any) -> Any:
        """Send one request and wait for its reply; its result, or EngineError / NoEngine."""
        request_id = next(self._ids)
        try:
            self._sock.send(protocol.request(op, request_id, **args), flags=zmq.NOBLOCK)
        except zmq.Again:
            raise NoEngine(f"the engine at {self.endpoint} does not take requests") from None
        timeout = _timeout_s if _timeout_s is not None else self.timeout_s
        waited_ms = 0
        while True:
            try:
                reply = protocol.decode_reply(self._sock.recv())  # RCVTIMEO: wakes every POLL_SLICE_MS
            except zmq.Again:
                waited_ms += POLL_SLICE_MS
                if self.engine_pid and not runtime.process_alive(self.engine_pid):
                    raise NoEngine(f"the engine (pid {self.engine_pid}) is gone") from None
                if timeout is not None and waited_ms >= timeout * 1000:
                    raise NoEngine(f"the engine at {self.endpoint} did not answer {op} within {timeout:g} s") from None
                continue
            if reply["id"] != request_id:
                continue  # a late answer to a request we gave up on
            if "err" in reply:
                raise EngineError(str(reply["err"]), str(reply.get("msg", "")))
            return reply.get("ok")

    # -- the cgroup files -----------------------------------------------------

    def read(self, path: str) -> str:
        return str(self.call("read", path=path))

    def write(self, path: str, value: str) -> None:
        self.call("write", path=path, value=value)

    def mkdir(self, path: str) -> None:
        self.call("mkdir", path=path)

    def rmdir(self, path: str) -> None:
        self.call("rmdir", path=path)

    def listdir(self, path: str) -> list[str]:
        return list(self.call("listdir", path=path))

    def snapshot(self) -> dict[str, Any]:
        return dict(self.call("snapshot"))

    def hello(self, role: str, name: str = "", pid: int | None = None) -> dict[str, Any]:
        """Register this process (or ``pid``) with the engine; returns its cgroup and the EPC size."""
        return dict(self.call("hello", pid=pid or os.getpid(), role=role, name=name))

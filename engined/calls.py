"""What a call to the engine is, wherever it comes from: who made it, its steps, its answer."""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Generator
from typing import Any, NamedTuple, Protocol

from engine import Blocked, IoctlError, SigBus
from engine.sgx import errno_name
from wire.protocol import ProtocolError

log = logging.getLogger("epc.engine")


class Status(enum.Enum):
    """What a step of a request says when it is not finished."""

    MORE = "more"  # it did some: run its next step at its next turn
    WAIT = "wait"  # it could not go on: park it until something may have changed


MORE, WAIT = Status.MORE, Status.WAIT
Step = Generator[Status, None, Any]


class Caller(NamedTuple):
    """Who sent a request, as the kernel told the transport (SO_PEERCRED); NOBODY over tcp."""

    pid: int
    uid: int


NOBODY = Caller(0, -1)


class Reply(NamedTuple):
    """The answer to request ``request_id``: ``ok`` (its result), or ``err`` (an errno name, or SIGBUS)
    and ``msg``.  (A NamedTuple: a frozen dataclass costs a microsecond more per request.)"""

    request_id: int
    ok: Any = None
    err: str = ""
    msg: str = ""


Handler = Callable[..., Any]
"""An op: ``handler(session, caller, **args)`` -> its result, or a Step generator; OSError or SigBus to fail."""


class Processes(Protocol):
    """The processes of the host, as the Session needs them."""

    def watch(self, pid: int) -> None:
        """Follow ``pid`` until it exits, then call Session.exited; OSError(ESRCH) if there is no such process."""

    def watching(self, pid: int) -> bool: ...

    def gone(self, pid: int) -> bool:
        """Whether a followed process has exited although its exit was not taken yet."""

    def alive(self, pid: int) -> bool: ...

    def exit_status(self, pid: int) -> int | None:
        """How a followed process that exited ended, as waitpid gives it; None when it cannot be known."""

    def stopped(self, pid: int) -> bool:
        """Whether a followed process is stopped (SIGSTOP): it makes no calls until SIGCONT."""

    def forget(self, pid: int) -> None:
        """Stop following ``pid`` (it exited)."""

    def kill(self, pid: int) -> str | None:
        """The OOM killer's SIGKILL to ``pid``; why it was not sent, or None."""

    def parent(self, pid: int) -> int:
        """Its parent's pid (0 if unknown)."""


def error_reply(request_id: int, error: BaseException) -> Reply:
    """How a failed call is answered: SIGBUS, EPROTO, its errno name, or EIO for our own bug (logged)."""
    if isinstance(error, SigBus):
        return Reply(request_id, err="SIGBUS", msg=str(error))
    if isinstance(error, ProtocolError):
        return Reply(request_id, err=error.code, msg=error.message)
    if isinstance(error, OSError) and error.errno:
        name = errno_name(error.errno)
        message = error.strerror or name
        if isinstance(error, IoctlError) and error.done:
            message += f" (after {error.done} pages)"
        return Reply(request_id, err=name, msg=message)
    log.exception("internal error serving request %d", request_id, exc_info=error)
    return Reply(request_id, err="EIO", msg=f"internal error: {type(error).__name__}: {error}")


def again(call: Callable[[], Any]) -> Step:
    """A request that is not stepped, asked again each time it might go through."""
    yield WAIT
    while True:
        try:
            return call()
        except Blocked:
            yield WAIT


def how(error: BaseException) -> str:
    """How a stalled call ended when it failed: ``SIGBUS``, or its errno name."""
    if isinstance(error, SigBus):
        return "SIGBUS"
    if isinstance(error, OSError) and error.errno:
        return errno_name(error.errno)
    return "failed"

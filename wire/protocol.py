"""The wire protocol between the engine and its clients: MessagePack maps, validated.

One request per frame: ``{"v": 1, "op": NAME, "id": N, ...args}``.  A reply echoes
``id`` and carries ``ok`` (the result) or ``err`` (an errno name such as ``ENOMEM``,
``EINVAL``, ``EBUSY``; ``EPROTO`` for a malformed request; ``SIGBUS`` for a fault the
host could not serve) with ``msg``.  Events go out on the PUB socket as
``[b"event", list of maps]``, each map with its sequence number ``seq``; stats as
``[b"stats", map]``.

Pure: bytes in, checked dicts out, no sockets (imports only msgpack).  Every limit a
request can hit is here, so the server never sees a value it did not check.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from enum import StrEnum
from typing import Any

import msgpack

from common.limits import MAX_CALL_COMPUTE_NS as MAX_CALL_COMPUTE_NS
from common.limits import MAX_COMPUTE_NS as MAX_COMPUTE_NS
from common.limits import MAX_PAGES as MAX_PAGES  # re-exported: the bounds a request is checked against
from common.limits import MAX_SIZE as MAX_SIZE
from common.limits import PAGE_SIZE as PAGE_SIZE

VERSION = 1
MAX_FRAME = 1 << 20  # bytes in one request frame
MAX_RANGES = 4096  # (first, count) pairs in one access
MAX_PATH = 4096
MAX_VALUE = 65536  # a longer write is refused here; the core answers E2BIG above 4096 bytes, as kernfs
MAX_PID = 0x3FFFFFFF
MAX_ID = (1 << 63) - 1
MAX_LRU_LIMIT = 4096  # pages one `lru` reply lists (of each list)
MAX_CELLS = 65536  # cells one `frames` reply holds, and frames one cell sums up
MAX_PASSES = (1 << 31) - 1  # a workload's plan in hello: passes over its memory (clients clamp to it)
MAX_DURATION_MS = 1 << 40  # and how long it runs, in milliseconds (about 35 years)

PATTERNS = ("sequential", "random", "hotcold", "shifting")  # an enclave's access patterns (workloads/patterns.py)
SIGNALS = ("TERM", "KILL", "INT", "HUP")  # what a scenario's kill step sends, as SIG + name

TOPIC_EVENT = b"event"  # prefix of both event topics: subscribe to it for every event, in seq order
TOPIC_EVENT_PRESSURE = b"event/pressure"  # limit hits and reclaim: thousands a second under pressure
TOPIC_EVENT_OTHER = b"event/other"  # everything else: what a display's event log shows one by one
PRESSURE_KINDS = frozenset({"limit_hit", "reclaim", "work_queued", "work_run"})
TOPIC_STATS = b"stats"
TOPIC_ENGINE = b"engine"  # the engine itself: shutting down
# A subscriber that stops reading holds at most PUB_HWM messages of at most PUB_MAX_BYTES in the
# engine (and as many at its own end): events go out in batches of at most PUB_MAX_BYTES, flushed
# every few milliseconds, and stats as deltas of at most PUB_STATS_ROWS rows a message.
PUB_HWM = 1024
PUB_MAX_BYTES = 64 << 10
PUB_STATS_ROWS = 128


class Outcome(StrEnum):
    """How a workload ended, as the scenario runner and the TUI name it (docs/scenarios.md, Outcomes).

    An errno name (ENOMEM, EINTR, ...) is an outcome too, and stays a plain string.
    """

    OK = "ok"  # exit 0
    SIGBUS = "SIGBUS"  # killed by SIGBUS: a fault the host could not serve
    OOM = "OOM"  # killed by SIGKILL from the memory cgroup's OOM killer
    KILLED = "killed"  # killed by any other signal
    FAILED = "failed"  # any other end
    STALLED = "stalled"  # not an end: its call waits on a fault that no reclaim can help


class EngineError(Exception):
    """The engine answered with an errno: ``code`` is its name (ENOMEM, EINVAL, SIGBUS, ...).

    Clients raise it for an ``err`` reply, and the scenario backends for a cgroup file
    operation that failed, so a caller tells one engine refusal by ``code`` wherever it came from.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    @property
    def errno(self) -> int:
        """The errno number of ``code``; 0 for a name that is not one (SIGBUS)."""
        return errno_code(self.code)


class ProtocolError(Exception):
    """A request the engine cannot act on: answered with ``err`` = ``code`` and changes nothing."""

    def __init__(self, code: str, message: str, request_id: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id  # echoed in the error reply when it could be read


def _int(low: int, high: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if type(value) is not int or not low <= value <= high:
            raise ValueError(f"an integer in {low}..{high}")
        return value

    return check


def _str(limit: int) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if type(value) is not str or len(value) > limit:
            raise ValueError(f"a string of at most {limit} characters")
        return value

    return check


def _choice(*names: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in names:
            raise ValueError(f"one of {', '.join(names)}")
        return str(value)

    return check


def _bool(value: Any) -> bool:
    if type(value) is not bool:
        raise ValueError("true or false")
    return value


def _ranges(value: Any) -> list[tuple[int, int]]:
    """A list of [first, count] page ranges (count >= 1), at most MAX_RANGES of them."""
    if type(value) not in (list, tuple) or not 1 <= len(value) <= MAX_RANGES:
        raise ValueError(f"a list of 1..{MAX_RANGES} [first, count] pairs")
    out: list[tuple[int, int]] = []
    for pair in value:
        if type(pair) not in (list, tuple) or len(pair) != 2:
            raise ValueError("[first, count] pairs")
        first, count = pair
        if type(first) is not int or type(count) is not int or not (0 <= first < MAX_PAGES and 0 < count <= MAX_PAGES):
            raise ValueError(f"[first, count] pairs with 0 <= first < {MAX_PAGES} and 1 <= count <= {MAX_PAGES}")
        out.append((first, count))
    return out


PID = _int(1, MAX_PID)
HANDLE = _int(1, MAX_ID)
PAGES = _int(1, MAX_PAGES)
INDEX = _int(0, MAX_PAGES)
SIZE = _int(PAGE_SIZE, MAX_SIZE)
PATH = _str(MAX_PATH)
VALUE = _str(MAX_VALUE)

# op -> {argument: (checker, required)}
SCHEMAS: dict[str, dict[str, tuple[Callable[[Any], Any], bool]]] = {
    # a workload's plan (optional; the TUI shows it): the size it asked for (heap or guest EPC), how it runs
    "hello": {
        "pid": (PID, True),
        "role": (_choice("enclave", "vm", "client"), True),
        "name": (_str(64), False),
        "size": (SIZE, False),
        "pattern": (_choice(*PATTERNS), False),
        "passes": (_int(0, MAX_PASSES), False),
        "duration_ms": (_int(1, MAX_DURATION_MS), False),
        "compute_ns": (_int(0, MAX_COMPUTE_NS), False),  # its compute per page accessed (docs/costs.md)
    },
    "ecreate": {"size": (SIZE, True)},
    "add_pages": {"eid": (HANDLE, True), "count": (PAGES, True), "kind": (_choice("REG", "TCS"), False)},
    "einit": {"eid": (HANDLE, True)},
    "access": {
        "eid": (HANDLE, True),
        "ranges": (_ranges, True),
        "write": (_bool, False),
        "compute_ns": (_int(0, MAX_CALL_COMPUTE_NS), False),  # the call's compute, instead of per page (costs.md)
    },
    "augment": {"eid": (HANDLE, True), "count": (PAGES, True)},
    "remove_pages": {"eid": (HANDLE, True), "first": (INDEX, True), "count": (PAGES, True)},
    # the EDMM ioctls one by one (remove_pages is test_sgx's flow: trim, EACCEPT, remove); REG
    # is a page type the kernel takes and refuses (EINVAL), so it reaches the core
    "modify_types": {
        "eid": (HANDLE, True),
        "first": (INDEX, True),
        "count": (PAGES, True),
        "kind": (_choice("REG", "TCS", "TRIM"), True),
    },
    "restrict_permissions": {"eid": (HANDLE, True), "first": (INDEX, True), "count": (PAGES, True)},
    "remove_trimmed": {"eid": (HANDLE, True), "first": (INDEX, True), "count": (PAGES, True)},
    "release": {"eid": (HANDLE, True)},
    "vepc_open": {"size": (SIZE, True)},
    "vepc_access": {"vid": (HANDLE, True), "ranges": (_ranges, True)},
    "vepc_release": {"vid": (HANDLE, True)},
    "read": {"path": (PATH, True)},
    "write": {"path": (PATH, True), "value": (VALUE, True)},
    "mkdir": {"path": (PATH, True)},
    "rmdir": {"path": (PATH, True)},
    "listdir": {"path": (PATH, True)},
    "snapshot": {},
    "check": {},
    # the kernel's views, read-only: a cgroup's LRU a page at a time, the EPC frame map
    "lru": {
        "cgroup": (PATH, True),
        "offset": (INDEX, False),
        "limit": (_int(1, MAX_LRU_LIMIT), False),
        "unreclaimable_offset": (INDEX, False),
    },
    "frames": {"first": (INDEX, False), "count": (_int(1, MAX_CELLS), True), "group": (_int(1, MAX_CELLS), False)},
    "ping": {},
    "bye": {"reason": (_str(32), False)},
}

# -- step mode and history (docs/protocol.md, "Step mode" and "History") ------------------
STEP_WHAT = ("request", "reclaim")  # what one `step` runs: a request's step, or a round of reclaim work
HISTORY_WHAT = ("samples", "events", "pressure")  # the parts of the engine's history, each paged
SCHEMAS |= {
    "freeze": {},
    "step": {"what": (_choice(*STEP_WHAT), True)},
    "thaw": {},
    "history": {"what": (_choice(*HISTORY_WHAT), True), "after": (_int(0, MAX_ID), False)},
}
# The ops a frozen engine still answers at once, from anyone: they change nothing on the host
# (lru and frames too, where the engine has them), and the step mode's own.  Every other
# request waits in the queue until a step runs it, or the engine thaws.
READ_OPS = frozenset({"ping", "snapshot", "read", "listdir", "check", "history", "lru", "frames"})
STEP_OPS = frozenset({"freeze", "step", "thaw"})
PROBE_ID = 0  # while frozen, the engine checks the holder's connection with a reply of this id (ok: nil)

OPS = frozenset(SCHEMAS)
_ALLOWED = {op: frozenset(schema) | {"v", "op", "id"} for op, schema in SCHEMAS.items()}


def encode(message: Any) -> bytes:
    return msgpack.packb(message, use_bin_type=True)  # type: ignore[no-any-return]


def decode_request(frame: bytes) -> tuple[int, str, dict[str, Any]]:
    """(id, op, checked arguments) of one request frame.

    Raises ProtocolError(EPROTO) for anything malformed: not MessagePack, not a map,
    a wrong version, an unknown op, a missing, extra or ill-typed argument.  The id
    is kept on the error when it could be read, so the reply can echo it.
    """
    if len(frame) > MAX_FRAME:
        raise ProtocolError("EPROTO", f"frame of {len(frame)} bytes is over {MAX_FRAME}")
    try:
        message = msgpack.unpackb(frame, raw=False, strict_map_key=True)
    except Exception as e:  # msgpack raises several types for bad input
        raise ProtocolError("EPROTO", f"not a MessagePack frame: {type(e).__name__}") from None
    if not isinstance(message, dict):
        raise ProtocolError("EPROTO", "a request is a map")
    raw_id = message.get("id")
    request_id = raw_id if type(raw_id) is int and 0 <= raw_id <= MAX_ID else 0
    try:
        if type(message.get("v")) is not int or message["v"] != VERSION:
            raise ValueError(f"protocol version must be {VERSION}")
        if request_id != raw_id:
            raise ValueError(f"id must be an integer in 0..{MAX_ID}")
        op = message.get("op")
        if not isinstance(op, str) or op not in OPS:
            raise ValueError(f"unknown op {op!r}")
        schema = SCHEMAS[op]
        allowed = _ALLOWED[op]
        for key in message:
            if key not in allowed:
                raise ValueError(f"unknown argument {key!r} for {op}")
        args: dict[str, Any] = {}
        for name, (check, required) in schema.items():
            if name in message:
                try:
                    args[name] = check(message[name])
                except ValueError as e:
                    raise ValueError(f"{op}: {name} must be {e}") from None
            elif required:
                raise ValueError(f"{op}: missing {name}")
    except ValueError as e:
        raise ProtocolError("EPROTO", str(e), request_id) from None
    return request_id, str(op), args


def request(op: str, request_id: int, **args: Any) -> bytes:
    """One request frame (clients)."""
    return encode({"v": VERSION, "op": op, "id": request_id, **args})


def reply_ok(request_id: int, result: Any) -> bytes:
    return encode({"v": VERSION, "id": request_id, "ok": result})


def reply_err(request_id: int, code: str, message: str) -> bytes:
    return encode({"v": VERSION, "id": request_id, "err": code, "msg": message})


def decode_reply(frame: bytes) -> dict[str, Any]:
    """A reply map (clients); ProtocolError(EPROTO) if it is not one."""
    try:
        message = msgpack.unpackb(frame, raw=False)
    except Exception as e:
        raise ProtocolError("EPROTO", f"not a MessagePack reply: {type(e).__name__}") from None
    if not isinstance(message, dict) or message.get("v") != VERSION or "id" not in message:
        raise ProtocolError("EPROTO", "not a reply of this protocol version")
    return message


def errno_code(name: str) -> int:
    """errno number of an errno name (0 if unknown): for turning ``err`` back into OSError."""
    return int(getattr(errno, name, 0))

"""The soak fuzzer's requests valid by schema, and what it holds on the engine because of them.

valid() gives one request that passes wire.protocol's checks, with random values:
hello with our own pid, ECREATE of any size the wire takes (most a power of two),
ADD_PAGES, EINIT, accesses, EAUG, trims and vEPC touches on our own enclaves and vEPCs
with indexes anywhere below protocol.MAX_PAGES, file reads anywhere.  The work one request asks for stays
small (a few pages, or a count past the end that the engine refuses at once), so that
every reply can come back within the fuzzer's wait; what we hold stays small too (a few
enclaves and vEPCs, each released after some requests).  foreign() gives one on an id
that is not ours.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from wire import protocol

HELD_ENCLAVES = 4  # ours at a time: the next ecreate releases one first
HELD_VEPCS = 2
OPS_PER_ENCLAVE = 40  # requests on one enclave before it is released
OPS_PER_VEPC = 12  # on one vEPC (its pages cannot be reclaimed)
FILES = ["misc.max", "memory.max", "cgroup.procs", "cgroup.subtree_control", "misc.current", "misc.events",
         "memory.current", "misc.peak", "cgroup.events", "nonexistent", "", "misc.max/", "../misc.max"]  # fmt: skip
PATHS = ["/", "/f", "/k", "/k/a", "/k/a/misc.current", "/misc.current", "/k/m/memory.events", "/nope/misc.max", "",
         "//", "/f/../k", "/\x00", "/" + "p" * 5000, "/k/a/cgroup.procs", "misc.current", "/f/misc.events"]  # fmt: skip


@dataclass(slots=True)
class Enclave:
    """One enclave or vEPC of ours."""

    size_pages: int
    next_index: int = 0
    initialized: bool = False
    ops: int = 0


@dataclass(slots=True)
class State:
    """What this fuzzer holds on the engine, as its ok replies told it."""

    pid: int
    home: str  # our cgroup under /f
    request_id: int = 0
    registered: bool = False
    enclaves: dict[int, Enclave] = field(default_factory=dict)
    vepcs: dict[int, Enclave] = field(default_factory=dict)
    top_id: int = 0  # the highest enclave or vEPC id we have seen (ids are shared and counted up)
    made: list[str] = field(default_factory=list)

    def refused(self, request: dict[str, Any], code: str) -> None:
        """An error reply to ``request``: a release of what the engine does not hold for us forgets it."""
        if code in ("EINVAL", "EPERM") and request.get("op") == "release":
            self.enclaves.pop(request.get("eid"), None)  # type: ignore[arg-type]
        elif code in ("EINVAL", "EPERM") and request.get("op") == "vepc_release":
            self.vepcs.pop(request.get("vid"), None)  # type: ignore[arg-type]

    def next_id(self) -> int:
        self.request_id += 1
        return self.request_id

    def took(self, request: dict[str, Any], result: Any) -> None:
        """An ok reply to ``request``: what it changed for us."""
        op = request.get("op")
        eid = request.get("eid")
        if op == "hello" and request.get("role") in ("enclave", "vm"):
            self.registered = True
        elif op in ("ecreate", "vepc_open") and isinstance(result, dict):
            handle = int(result.get("eid") or result.get("vid") or 0)
            table = self.enclaves if op == "ecreate" else self.vepcs
            table[handle] = Enclave(int(request["size"]) // protocol.PAGE_SIZE)
            self.top_id = max(self.top_id, handle)
        elif op in ("add_pages", "augment") and eid in self.enclaves:
            added = result.get("added") if isinstance(result, dict) else None
            self.enclaves[eid].next_index += int(added if type(added) is int else request["count"])
        elif op == "einit" and eid in self.enclaves:
            self.enclaves[eid].initialized = True
        elif op == "release":
            self.enclaves.pop(eid, None)  # type: ignore[arg-type]
        elif op == "vepc_release":
            self.vepcs.pop(request.get("vid"), None)  # type: ignore[arg-type]
        elif op == "mkdir":
            self.made.append(str(request["path"]))
        elif op == "rmdir" and request.get("path") in self.made:
            self.made.remove(str(request["path"]))


def request(op: str, state: State, **args: Any) -> dict[str, Any]:
    """A request map with the next id."""
    return {"v": protocol.VERSION, "op": op, "id": state.next_id(), **args}


def _index(rng: random.Random, size_pages: int) -> int:
    """A page index: small, at the edges, anywhere inside, or past the end (EFAULT)."""
    last = size_pages - 1
    beyond = rng.randint(size_pages, protocol.MAX_PAGES - 1) if size_pages < protocol.MAX_PAGES else last
    return rng.choice([rng.randint(0, min(64, last)), last, size_pages // 2, rng.randint(0, last), beyond])


def _count(rng: random.Random, size_pages: int) -> int:
    """A page count: a few pages, or more than the whole enclave (refused at once, wherever it starts)."""
    few = rng.randint(1, 8)
    over = size_pages + rng.choice([1, 2, 1000, protocol.MAX_PAGES])
    return rng.choice([few, few, rng.randint(1, 64), over if over <= protocol.MAX_PAGES else few])


def _ranges(rng: random.Random, size_pages: int) -> list[list[int]]:
    if rng.random() < 0.01 and size_pages >= 512:  # one long run: stepped by the engine
        return [[rng.randint(0, size_pages - 512), rng.randint(256, 512)]]
    ranges = []
    for _ in range(rng.randint(1, 4)):
        first = _index(rng, size_pages)
        # Faults are served one by one up to the first page outside: a count past the end is
        # cheap only from near the end (or from outside).
        near_end = first >= size_pages - 64
        ranges.append([first, _count(rng, size_pages) if near_end and rng.random() < 0.3 else rng.randint(1, 8)])
    return ranges


def _pick(rng: random.Random, table: dict[int, Enclave], want: Callable[[Enclave], bool]) -> int | None:
    handles = [handle for handle, held in table.items() if want(held)]
    if not handles:
        return None
    handle = rng.choice(handles)
    table[handle].ops += 1
    return handle


def _worn(table: dict[int, Enclave], limit: int) -> int | None:
    return next((handle for handle, held in table.items() if held.ops >= limit), None)


def valid(rng: random.Random, state: State) -> dict[str, Any]:
    """One request that passes the schema, on what we hold where it names an enclave or vEPC."""
    if not state.registered:
        return request("hello", state, pid=state.pid, role="enclave")
    worn = _worn(state.enclaves, OPS_PER_ENCLAVE)
    if worn is not None or len(state.enclaves) > HELD_ENCLAVES:
        return request("release", state, eid=worn or next(iter(state.enclaves)))
    worn = _worn(state.vepcs, OPS_PER_VEPC)
    if worn is not None or len(state.vepcs) > HELD_VEPCS:
        return request("vepc_release", state, vid=worn or next(iter(state.vepcs)))
    op = rng.choices(_VALID_OPS, _VALID_WEIGHTS)[0]
    return _VALID[op][1](rng, state) or request("ping", state)


def _ecreate(rng: random.Random, state: State) -> dict[str, Any]:
    size = (
        1 << rng.randint(13, protocol.MAX_SIZE.bit_length())
        if rng.random() < 0.85
        else rng.randint(protocol.PAGE_SIZE, protocol.MAX_SIZE)
    )
    return request("ecreate", state, size=size)


def _add_pages(rng: random.Random, state: State) -> dict[str, Any] | None:
    eid = _pick(rng, state.enclaves, lambda e: not e.initialized)
    if eid is None:
        return _ecreate(rng, state)
    encl = state.enclaves[eid]
    args: dict[str, Any] = {"eid": eid, "count": _count(rng, encl.size_pages)}
    if rng.random() < 0.5:
        args["kind"] = rng.choice(["REG", "TCS"])
    return request("add_pages", state, **args)


def _einit(rng: random.Random, state: State) -> dict[str, Any] | None:
    eid = _pick(rng, state.enclaves, lambda e: e.next_index > 0 or rng.random() < 0.2)
    return None if eid is None else request("einit", state, eid=eid)


def _access(rng: random.Random, state: State) -> dict[str, Any] | None:
    eid = _pick(rng, state.enclaves, lambda e: True)
    if eid is None:
        return None
    args: dict[str, Any] = {"eid": eid, "ranges": _ranges(rng, state.enclaves[eid].size_pages)}
    if rng.random() < 0.5:
        args["write"] = rng.random() < 0.5
    return request("access", state, **args)


def _augment(rng: random.Random, state: State) -> dict[str, Any] | None:
    eid = _pick(rng, state.enclaves, lambda e: e.initialized)
    if eid is None:
        return None
    encl = state.enclaves[eid]
    return request("augment", state, eid=eid, count=_count(rng, encl.size_pages))


def _remove_pages(rng: random.Random, state: State) -> dict[str, Any] | None:
    eid = _pick(rng, state.enclaves, lambda e: e.initialized)
    if eid is None:
        return None
    size = state.enclaves[eid].size_pages
    first = rng.choice([0, rng.randint(0, 16), _index(rng, size)])
    return request("remove_pages", state, eid=eid, first=first, count=_count(rng, size))


def _release(rng: random.Random, state: State) -> dict[str, Any] | None:
    eid = _pick(rng, state.enclaves, lambda e: True)
    return None if eid is None else request("release", state, eid=eid)


def _vepc_open(rng: random.Random, state: State) -> dict[str, Any]:
    pages = rng.choice([1, rng.randint(1, 4096), rng.randint(1, protocol.MAX_SIZE // protocol.PAGE_SIZE)])
    size = pages * protocol.PAGE_SIZE if rng.random() < 0.9 else rng.randint(protocol.PAGE_SIZE, protocol.MAX_SIZE)
    return request("vepc_open", state, size=size)


def _vepc_access(rng: random.Random, state: State) -> dict[str, Any] | None:
    vid = _pick(rng, state.vepcs, lambda v: True)
    if vid is None:
        return _vepc_open(rng, state)
    size = state.vepcs[vid].size_pages
    ranges = [[first, rng.randint(1, 4)] for first in (_index(rng, size) for _ in range(rng.randint(1, 3)))]
    return request("vepc_access", state, vid=vid, ranges=ranges)


def _vepc_release(rng: random.Random, state: State) -> dict[str, Any] | None:
    vid = _pick(rng, state.vepcs, lambda v: True)
    return None if vid is None else request("vepc_release", state, vid=vid)


def _file_op(rng: random.Random, state: State) -> dict[str, Any]:
    op = rng.choice(["read", "read", "listdir"])
    path = rng.choice([*PATHS, f"{state.home}/{rng.choice(FILES)}", random_text(rng, 40)])
    return request(op, state, path=path)


def _hello(rng: random.Random, state: State) -> dict[str, Any]:
    args: dict[str, Any] = {"pid": state.pid, "role": rng.choice(["enclave", "vm", "client"])}
    if rng.random() < 0.5:
        args["name"] = random_text(rng, 64)
    return request("hello", state, **args)


Builder = Callable[[random.Random, State], "dict[str, Any] | None"]
# op -> (weight, builder); a builder that finds nothing to act on gives None (a ping goes instead)
_VALID: dict[str, tuple[int, Builder]] = {
    "ecreate": (10, _ecreate), "add_pages": (20, _add_pages), "einit": (6, _einit), "access": (30, _access),
    "augment": (8, _augment), "remove_pages": (6, _remove_pages), "release": (3, _release),
    "vepc_open": (4, _vepc_open), "vepc_access": (8, _vepc_access), "vepc_release": (2, _vepc_release),
    "file": (10, _file_op), "hello": (2, _hello),
    "snapshot": (2, lambda rng, state: request("snapshot", state)),
    "ping": (4, lambda rng, state: request("ping", state)),
    "check": (1, lambda rng, state: request("check", state)),
    "bye": (1, lambda rng, state: request("bye", state, reason=random_text(rng, 32))),
}  # fmt: skip
_VALID_OPS = list(_VALID)
_VALID_WEIGHTS = [weight for weight, _ in _VALID.values()]


_FOREIGN_ARGS: dict[str, Callable[[random.Random], dict[str, Any]]] = {
    "add_pages": lambda rng: {"count": rng.randint(1, 8)},
    "einit": lambda rng: {},
    "access": lambda rng: {"ranges": [[rng.randint(0, 4096), rng.randint(1, 8)]]},
    "augment": lambda rng: {"count": 1},
    "remove_pages": lambda rng: {"first": rng.randint(0, 64), "count": 1},
    "release": lambda rng: {},
    "vepc_access": lambda rng: {"ranges": [[rng.randint(0, 1024), 1]]},
    "vepc_release": lambda rng: {},
}


def foreign(rng: random.Random, state: State) -> dict[str, Any]:
    """A request valid by schema on an enclave or vEPC id that is not ours: mostly one made
    lately (ids are counted up), so that it is often another process's live one."""
    near = rng.randint(max(1, state.top_id - 64), state.top_id + 16)
    handle = near if rng.random() < 0.7 else rng.randint(1, state.top_id + 64)
    while handle in state.enclaves or handle in state.vepcs:
        handle += 1
    op = rng.choice(list(_FOREIGN_ARGS))
    key = "vid" if op.startswith("vepc") else "eid"
    return request(op, state, **{key: handle}, **_FOREIGN_ARGS[op](rng))


def random_text(rng: random.Random, limit: int) -> str:
    """Up to ``limit`` characters: slashes, dots, blanks, NUL, accents, an RTL override, an emoji."""
    alphabet = "abc/._- \t\n\x00\u00e9\u202e\U0001f642019"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, limit)))

"""The soak's hostile frames: what one fuzzer sends, each a Frame with the reply id it must get back.

make() picks a category and builds one: random bytes, truncated MessagePack, wrong
types, huge ints, deep nesting, unknown ops, extra and missing arguments, wrong
versions, not a map, empty, multipart, oversize and at-the-limit frames, requests valid
by schema with random values (bench.soak_requests: on our own enclaves and vEPCs, and
on other processes' ids), hostile cgroup file writes and hostile names for mkdir/rmdir.
Every map goes through sanitize() first, so that a frame never names a pid but ours,
never moves us out of /f and never touches /k, where the kill soak counts its pages.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from bench import soak_requests as requests
from bench.soak_requests import State
from engine import files
from wire import protocol

MADE_CGROUPS = 32

WRONG = [None, True, False, 1.5, float("nan"), "x", "", "1", b"\x00\x01", [], [1, 2], {}, {"a": 1}, -1,
         msgpack.ExtType(5, b"xx"), [[0, 1]] * 3, "9" * 40]  # fmt: skip
HUGE = [2**63 - 1, 2**63, 2**64 - 1, -(2**63), -1, 2**40, 2**40 - 1, 2**52, 2**52 + 1, protocol.MAX_PID + 1,
        2**31, 2**31 - 1, 2**32, 2**32 + 1, 0, float("inf"), -float("inf"), 1e308]  # fmt: skip
VERSIONS = [0, 2, -1, True, 1.0, "1", None, [1], 2**64 - 1, b"\x01", 1.5]
VALUES = ["sgx_epc 0", "sgx_epc max", "sgx_epc 1", "sgx_epc 4096", "sgx_epc 1048576", "sgx_epc 18446744073709551615",
          "sgx_epc 18446744073709551616", "sgx_epc -1", "sgx_epc 0x1000", "sgx_epc 1e9", "sgx_epc  4096",
          "sgx_epc\t4096", "tdx 1", "max", "0", "-1", "", " ", "\n", "\x00", "4096\x00junk", "\u00b2", "\u0661\u0662",
          "\uff11\uff12", "+misc", "-misc", "+memory -memory", "+cpu", "+nonsense", "sgx_epc " + "9" * 400,
          "18446744073709551615", "0x7fffffff", "+1", "1 2", "\U0001f642", "4096", "1", "08", "0" * 100,
          "x" * protocol.MAX_VALUE, "x" * (protocol.MAX_VALUE + 1), "sgx_epc 4096\nsgx_epc 8192"]  # fmt: skip
NAMES = ["", ".", "..", "a/b", "x\n", "\x00", "a\x00b", "n" * 255, "n" * 256, "n" * 4000, "misc.max", "cgroup.procs",
         " ", "\t", "\u202eevil", "\U0001f642", "-", "--help", "k", "fz0", "CON", "a" * 64]  # fmt: skip
# category -> weight; each has a builder below
WEIGHTS = {
    "valid": 300, "foreign": 80, "wrong_types": 100, "random_bytes": 80, "truncated": 70, "huge_ints": 60,
    "nested": 40, "wrong_version": 40, "unknown_op": 30, "missing_args": 30, "extra_args": 30, "multipart": 30,
    "not_a_map": 20, "empty": 10, "cgroup_write": 50, "mkdir_rmdir": 30, "oversize": 3, "at_limit": 2,
}  # fmt: skip


@dataclass(slots=True)
class Frame:
    category: str
    parts: list[bytes]
    expect_id: int  # the id its reply must carry (0 when the engine cannot read one)
    request: dict[str, Any] | None = None  # the map sent, when it is one
    foreign: bool = False  # names another process's enclave or vEPC: must not succeed
    oversize: bool = False  # over MAX_FRAME: the engine drops the connection instead of answering

    def describe(self) -> str:
        if self.request is not None:
            return repr({k: v for k, v in self.request.items() if k not in ("v", "id")})[:160]
        return f"{len(self.parts)} part(s) of {[len(p) for p in self.parts]} bytes, {self.parts[0][:24]!r}"


def settle(state: State) -> list[Frame]:
    """The first frames: our cgroup under /f, ourselves in it, then hello."""
    steps: list[dict[str, Any]] = [
        {"op": "mkdir", "path": "/f"},
        {"op": "mkdir", "path": state.home},
        {"op": "write", "path": f"{state.home}/cgroup.procs", "value": "0"},
        {"op": "hello", "pid": state.pid, "role": "enclave", "name": f"fuzzer-{state.home[3:]}"},
    ]
    return [_map_frame("setup", {"v": protocol.VERSION, "id": state.next_id(), **step}, state) for step in steps]


def make(rng: random.Random, state: State) -> Frame:
    """One hostile frame, of a category drawn by WEIGHTS."""
    category = rng.choices(_CATEGORIES, _WEIGHTS)[0]
    return _BUILDERS[category](rng, state)


# -- sanitizing: whom and where a frame may name --------------------------------


def sanitize(message: dict[Any, Any], state: State) -> dict[Any, Any]:
    """The map with every pid it names made ours, and every cgroup path it writes kept out of /k and root."""
    out = dict(message)
    op = out.get("op")
    pid = out.get("pid")
    if op == "hello" and type(pid) is int and pid != state.pid and 1 <= pid <= protocol.MAX_PID:
        out["pid"] = state.pid
    path = out.get("path")
    if op in ("write", "mkdir", "rmdir") and isinstance(path, str):
        out["path"] = path = _confined(path, state)
        value = out.get("value")
        if op == "write" and "cgroup.procs" in path and isinstance(value, str) and _names_pid(value, state):
            out["value"] = "0"
    return out


def _confined(path: str, state: State) -> str:
    """The path with /k made /f, and a root file or a cgroup beside /k and /f moved under our home."""
    names = [name for name in path.split("/") if name]
    if len(names) == 1 and names[0] != "f":
        return f"{state.home}/{names[0]}"
    if "k" not in names:
        return path
    return "/" + "/".join("f" if name == "k" else name for name in names)


def _names_pid(value: str, state: State) -> bool:
    """Whether a cgroup.procs value would name a pid other than ours."""
    try:
        return files.parse_pid(value, state.pid) != state.pid
    except OSError:
        return False


def _expect_id(parts: list[bytes]) -> int:
    """The id the engine can read from a frame (its reply echoes it), else 0."""
    if len(parts) != 1:
        return 0
    try:
        message = msgpack.unpackb(parts[0], raw=False, strict_map_key=True)
    except Exception:
        return 0
    if not isinstance(message, dict):
        return 0
    request_id = message.get("id")
    return request_id if type(request_id) is int and 0 <= request_id <= protocol.MAX_ID else 0


def _map_frame(category: str, message: dict[Any, Any], state: State, **flags: bool) -> Frame:
    message = sanitize(message, state)
    frame = msgpack.packb(message, use_bin_type=True)
    return Frame(category, [frame], _expect_id([frame]), message, **flags)


def _raw_frame(category: str, parts: list[bytes], state: State) -> Frame:
    """A frame of bytes as they are; should they decode to a map that names what we may not, that map sanitized."""
    message = None
    if len(parts) == 1:
        with contextlib.suppress(Exception):
            message = msgpack.unpackb(parts[0], raw=False, strict_map_key=True)
    if not isinstance(message, dict):
        return Frame(category, parts, _expect_id(parts))
    if sanitize(message, state) != message:
        return _map_frame(category, message, state)
    return Frame(category, parts, _expect_id(parts), message)


def _foreign(rng: random.Random, state: State) -> Frame:
    """A request valid by schema on an enclave or vEPC id that is not ours: it must not succeed."""
    return _map_frame("foreign", requests.foreign(rng, state), state, foreign=True)


# -- the other categories ---------------------------------------------------------


def _built(category: str, mutate: Callable[[random.Random, dict[Any, Any]], None]) -> Callable[..., Frame]:
    """A builder of frames of ``category``: a valid request, then ``mutate`` on its map."""

    def build(rng: random.Random, state: State) -> Frame:
        message: dict[Any, Any] = requests.valid(rng, state)
        mutate(rng, message)
        return _map_frame(category, message, state)

    return build


def _wrong_type(rng: random.Random, message: dict[Any, Any]) -> None:
    message[rng.choice(list(message))] = rng.choice(WRONG)


def _huge_int(rng: random.Random, message: dict[Any, Any]) -> None:
    message[rng.choice(list(message))] = rng.choice(HUGE)


def _missing(rng: random.Random, message: dict[Any, Any]) -> None:
    del message[rng.choice(list(message))]


def _extra(rng: random.Random, message: dict[Any, Any]) -> None:
    key = rng.choice(["pid", "eid", "vid", "size", "x", "", "op2", "V", "ID", requests.random_text(rng, 8), 7, b"op"])
    message[key] = rng.choice([*WRONG, *HUGE])


def _wrong_version(rng: random.Random, message: dict[Any, Any]) -> None:
    if rng.random() < 0.15:
        del message["v"]
    else:
        message["v"] = rng.choice(VERSIONS)


def _unknown_op(rng: random.Random, message: dict[Any, Any]) -> None:
    op = str(message["op"])
    message["op"] = rng.choice([op.upper(), op + " ", "_" + op, "op_" + op, "", "__init__", "shutdown", "kill",
                                requests.random_text(rng, 12), 7, None, [op], op.encode()])  # fmt: skip


def _random_bytes(rng: random.Random, state: State) -> Frame:
    length = rng.choice([rng.randint(1, 16), rng.randint(1, 128), rng.randint(1, 4096)])
    return _raw_frame("random_bytes", [rng.randbytes(length)], state)


def _truncated(rng: random.Random, state: State) -> Frame:
    whole = msgpack.packb(sanitize(requests.valid(rng, state), state), use_bin_type=True)
    return _raw_frame("truncated", [whole[: rng.randint(1, max(len(whole) - 1, 1))]], state)


def _nested(rng: random.Random, state: State) -> Frame:
    depth = rng.choice([10, 100, 600, 2000, 10_000, 100_000])
    inner = rng.choice([b"\x91" * depth + b"\xc0", b"\x81\xa1a" * depth + b"\xc0", b"\xdc\x00\x01" * depth + b"\x01"])
    if rng.random() < 0.5:
        return _raw_frame("nested", [inner], state)
    head = {"v": protocol.VERSION, "op": "read", "id": state.next_id()}
    packed = b"\x84" + b"".join(msgpack.packb(k) + msgpack.packb(v) for k, v in head.items())
    return _raw_frame("nested", [packed + msgpack.packb("path") + inner], state)


def _not_a_map(rng: random.Random, state: State) -> Frame:
    value = rng.choice(
        [[1, 2], 7, "ping", None, b"\x00", 1.5, [requests.valid(rng, state)], True, msgpack.ExtType(1, b"")]
    )
    return _raw_frame("not_a_map", [msgpack.packb(value, use_bin_type=True)], state)


def _empty(rng: random.Random, state: State) -> Frame:
    return _raw_frame("empty", [b""], state)


def _multipart(rng: random.Random, state: State) -> Frame:
    parts = [
        msgpack.packb(sanitize(requests.valid(rng, state), state), use_bin_type=True) for _ in range(rng.randint(1, 3))
    ]
    parts.insert(rng.randint(0, len(parts)), rng.choice([b"", b"\x80", rng.randbytes(8)]))
    return Frame("multipart", parts, 0)


def _oversize(rng: random.Random, state: State) -> Frame:
    length = protocol.MAX_FRAME + rng.choice([1, 2, rng.randint(1, 65536)])
    if rng.random() < 0.5:
        return Frame("oversize", [rng.randbytes(length)], 0, oversize=True)
    message = requests.request("write", state, path=f"{state.home}/misc.max", value="")
    base = len(msgpack.packb(message))
    message["value"] = "9" * (length - base - 4)  # str32 header: 5 bytes where the empty string took 1
    frame = msgpack.packb(message)
    return Frame("oversize", [frame], 0, message, oversize=True)


def _at_limit(rng: random.Random, state: State) -> Frame:
    """Exactly MAX_FRAME bytes: taken, and refused for its over-long value."""
    message = requests.request("write", state, path=f"{state.home}/misc.max", value="")
    message["value"] = "9" * (protocol.MAX_FRAME - len(msgpack.packb(message)) - 4)
    frame = msgpack.packb(message)
    assert len(frame) == protocol.MAX_FRAME, len(frame)
    return Frame("at_limit", [frame], message["id"], message)


def _cgroup_write(rng: random.Random, state: State) -> Frame:
    where = rng.choice([state.home, "/f", *state.made[-4:], f"{state.home}/nope"])
    name = rng.choice(requests.FILES)
    value = rng.choice([*VALUES, requests.random_text(rng, 30), str(rng.randint(0, 2**64))])
    if where == state.home and name == "memory.max" and rng.random() < 0.9:
        value = "max"  # now and then a limit that gets us OOM-killed (and replaced): not all the time
    message = requests.request("write", state, path=f"{where}/{name}", value=value)
    return _map_frame("cgroup_write", message, state)


def _mkdir_rmdir(rng: random.Random, state: State) -> Frame:
    if state.made and (len(state.made) >= MADE_CGROUPS or rng.random() < 0.4):
        path = rng.choice(state.made)
        return _map_frame("mkdir_rmdir", requests.request("rmdir", state, path=path), state)
    parent = rng.choice([state.home, "/f", *state.made[-4:]])
    name = rng.choice([*NAMES, requests.random_text(rng, 20)])
    op = "mkdir" if rng.random() < 0.8 else "rmdir"
    return _map_frame("mkdir_rmdir", requests.request(op, state, path=f"{parent}/{name}"), state)


_BUILDERS: dict[str, Callable[[random.Random, State], Frame]] = {
    "valid": lambda rng, state: _map_frame("valid", requests.valid(rng, state), state),
    "foreign": _foreign,
    "wrong_types": _built("wrong_types", _wrong_type),
    "random_bytes": _random_bytes,
    "truncated": _truncated,
    "huge_ints": _built("huge_ints", _huge_int),
    "nested": _nested,
    "wrong_version": _built("wrong_version", _wrong_version),
    "unknown_op": _built("unknown_op", _unknown_op),
    "missing_args": _built("missing_args", _missing),
    "extra_args": _built("extra_args", _extra),
    "multipart": _multipart,
    "not_a_map": _not_a_map,
    "empty": _empty,
    "cgroup_write": _cgroup_write,
    "mkdir_rmdir": _mkdir_rmdir,
    "oversize": _oversize,
    "at_limit": _at_limit,
}
_CATEGORIES = list(WEIGHTS)
_WEIGHTS = list(WEIGHTS.values())
assert set(_BUILDERS) == set(WEIGHTS)

"""The wire protocol: round trips, and rejection of every kind of bad frame."""

from __future__ import annotations

import contextlib
import random

import msgpack
import pytest

from wire import protocol
from wire.protocol import ProtocolError, decode_request, request


def test_a_request_round_trips_with_checked_arguments() -> None:
    frame = request("access", 7, eid=3, ranges=[[0, 16], [100, 4]], write=True)
    assert decode_request(frame) == (7, "access", {"eid": 3, "ranges": [(0, 16), (100, 4)], "write": True})
    assert decode_request(request("snapshot", 1)) == (1, "snapshot", {})


def test_the_edmm_ioctls_round_trip_each_as_an_op_of_its_own() -> None:
    frame = request("modify_types", 2, eid=3, first=5, count=4, kind="TCS")
    assert decode_request(frame) == (2, "modify_types", {"eid": 3, "first": 5, "count": 4, "kind": "TCS"})
    for op in ("restrict_permissions", "remove_trimmed"):
        assert decode_request(request(op, 4, eid=1, first=0, count=1)) == (4, op, {"eid": 1, "first": 0, "count": 1})


def test_replies_round_trip() -> None:
    assert protocol.decode_reply(protocol.reply_ok(5, {"eid": 2})) == {"v": 1, "id": 5, "ok": {"eid": 2}}
    err = protocol.decode_reply(protocol.reply_err(6, "ENOMEM", "full"))
    assert err["err"] == "ENOMEM" and err["msg"] == "full" and protocol.errno_code("ENOMEM") == 12


@pytest.mark.parametrize(
    ("message", "why"),
    [
        ({"op": "ping", "id": 1}, "version"),
        ({"v": 2, "op": "ping", "id": 1}, "version"),
        ({"v": 1, "op": "reboot", "id": 1}, "unknown op"),
        ({"v": 1, "op": "ping", "id": -1}, "id"),
        ({"v": 1, "op": "ping", "id": "x"}, "id"),
        ({"v": 1, "op": "ecreate", "id": 1}, "missing size"),
        ({"v": 1, "op": "ecreate", "id": 1, "size": 0}, "size must be"),
        ({"v": 1, "op": "ecreate", "id": 1, "size": True}, "size must be"),
        ({"v": 1, "op": "ecreate", "id": 1, "size": 1.5}, "size must be"),
        ({"v": 1, "op": "ecreate", "id": 1, "size": 8192, "color": "red"}, "unknown argument"),
        ({"v": 1, "op": "add_pages", "id": 1, "eid": 1, "count": 1, "kind": "SECS"}, "kind must be"),
        ({"v": 1, "op": "access", "id": 1, "eid": 1, "ranges": []}, "ranges must be"),
        ({"v": 1, "op": "access", "id": 1, "eid": 1, "ranges": [[0, 0]]}, "ranges must be"),
        ({"v": 1, "op": "access", "id": 1, "eid": 1, "ranges": [[0, 1, 2]]}, "ranges must be"),
        ({"v": 1, "op": "access", "id": 1, "eid": 1, "ranges": [[-1, 1]]}, "ranges must be"),
        ({"v": 1, "op": "access", "id": 1, "eid": 1, "ranges": [[0, 1]] * 5000}, "ranges must be"),
        ({"v": 1, "op": "write", "id": 1, "path": "/a/misc.max", "value": "x" * 70000}, "value must be"),
        ({"v": 1, "op": "hello", "id": 1, "pid": 0, "role": "enclave"}, "pid must be"),
        ({"v": 1, "op": "modify_types", "id": 1, "eid": 1, "first": 0, "count": 1}, "missing kind"),
        ({"v": 1, "op": "modify_types", "id": 1, "eid": 1, "first": 0, "count": 1, "kind": "SECS"}, "kind must be"),
        ({"v": 1, "op": "modify_types", "id": 1, "eid": 1, "first": -1, "count": 1, "kind": "TRIM"}, "first must be"),
        ({"v": 1, "op": "restrict_permissions", "id": 1, "eid": 1, "first": 0, "count": 0}, "count must be"),
        ({"v": 1, "op": "remove_trimmed", "id": 1, "eid": 1, "first": 0, "count": 1, "kind": "X"}, "unknown argument"),
    ],
)
def test_malformed_requests_are_eproto_with_a_reason(message: dict[str, object], why: str) -> None:
    with pytest.raises(ProtocolError) as e:
        decode_request(msgpack.packb(message))
    assert e.value.code == "EPROTO" and why in e.value.message


def test_the_id_is_kept_for_the_error_reply_when_readable() -> None:
    with pytest.raises(ProtocolError) as e:
        decode_request(msgpack.packb({"v": 1, "op": "nope", "id": 42}))
    assert e.value.request_id == 42


@pytest.mark.parametrize("frame", [b"", b"\xc1", b"\x92\x01\x02", msgpack.packb([1, 2]), msgpack.packb({1: 2})])
def test_non_maps_and_garbage_are_eproto(frame: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_request(frame)


def test_ten_thousand_mutated_frames_never_raise_anything_but_protocol_error() -> None:
    rng = random.Random(1)
    seeds = [request("access", 9, eid=1, ranges=[[0, 8]]), request("write", 3, path="/a/misc.max", value="sgx_epc 0")]
    for _ in range(10_000):
        frame = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            op = rng.random()
            pos = rng.randrange(len(frame) + 1)
            if op < 0.4 and frame:
                frame[min(pos, len(frame) - 1)] = rng.randrange(256)
            elif op < 0.7:
                frame.insert(pos, rng.randrange(256))
            elif frame:
                del frame[min(pos, len(frame) - 1)]
        with contextlib.suppress(ProtocolError):
            decode_request(bytes(frame))


def test_the_typed_requests_name_exactly_the_fields_the_schemas_check() -> None:
    from wire.messages import REQUESTS

    assert set(REQUESTS) == set(protocol.SCHEMAS)
    for op, schema in protocol.SCHEMAS.items():
        typed = REQUESTS[op]
        required = {name for name, (_, needed) in schema.items() if needed}
        optional = set(schema) - required
        assert typed.__required_keys__ == required, op  # type: ignore[attr-defined]
        assert typed.__optional_keys__ == optional, op  # type: ignore[attr-defined]

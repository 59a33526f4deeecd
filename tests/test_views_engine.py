"""The `lru` and `frames` ops over a real engine: what they list, their bad arguments, and that
listing changes nothing."""

from __future__ import annotations

import os
from typing import Any

import pytest

from wire.protocol import EngineError
from workloads.client import EngineClient

from .engine_fixture import RunningEngine

pytestmark = pytest.mark.slow
PAGE = 4096
FILES = ("misc.current", "misc.peak", "misc.events", "misc.events.local", "misc.max", "memory.current")


def build(client: EngineClient, path: str, young: list[int]) -> int:
    """This process moves to ``path`` and builds an enclave of 40 pages there, ``young`` accessed."""
    client.write(f"{path}/cgroup.procs", str(os.getpid()))
    eid = int(client.call("ecreate", size=64 * PAGE)["eid"])
    client.call("add_pages", eid=eid, count=40)
    client.call("einit", eid=eid)
    if young:
        client.call("access", eid=eid, ranges=[[index, 1] for index in young])
    return eid


def listing(client: EngineClient, path: str) -> list[tuple[int, str, int, str]]:
    """The LRU as an enclave sees it (no frame numbers): (index, kind, young, mark) head first."""
    view = client.lru(path, 0, 4096)
    return [(index, kind, young, mark) for _, _, index, kind, young, mark in view["pages"]]


def files(client: EngineClient, path: str) -> dict[str, str]:
    return {name: client.read(f"{path}/{name}") for name in FILES}


def row(client: EngineClient, path: str) -> dict[str, Any]:
    """The cgroup's snapshot row, but for what says where this process is (``swapped`` goes by it too,
    and the emulated time of the workloads in it)."""
    (found,) = [cg for cg in client.snapshot()["cgroups"] if cg["path"] == path]
    where = ("path", "procs", "nr_procs", "swapped", "runtime_ns", "paging_ns")
    return {key: value for key, value in found.items() if key not in where}


def test_the_lru_op_lists_the_lru_head_first_with_the_next_batch_marked(engine: RunningEngine) -> None:
    with engine.client() as client:
        client.mkdir("/v")
        client.hello("enclave", "lister")
        eid = build(client, "/v", [2, 5, 9])
        view = client.lru("/v")  # offset 0, limit 256
        assert (view["cgroup"], view["size"], view["offset"], view["nr_to_scan"]) == ("/v", 40, 0, 16)
        assert [page[2] for page in view["pages"]] == list(range(40))
        assert {(page[1], page[3]) for page in view["pages"]} == {(eid, "REG")}
        marks = {page[2]: page[5] for page in view["pages"]}
        assert [i for i in range(40) if marks[i] == "rotate"] == [2, 5, 9]
        assert [i for i in range(40) if marks[i] == "write"] == [i for i in range(16) if i not in (2, 5, 9)]
        assert view["batch"] == {"rotate": 3, "write": 13}
        assert view["mms"] == [[eid, [[os.getpid(), 0]]]]
        assert view["next_cg"] == "/v"
        assert view["nr_unreclaimable"] == 2  # the SECS and a VA page
        assert [(page[1], page[2], page[3]) for page in view["unreclaimable"]] == [(eid, -1, "SECS"), (eid, 0, "VA")]
        tail = client.lru("/v", 30, 20, unreclaimable_offset=1)
        assert [page[2] for page in tail["pages"]] == list(range(30, 40))
        assert all(page[5] == "" for page in tail["pages"]) and tail["batch"] == view["batch"]
        assert [page[3] for page in tail["unreclaimable"]] == ["VA"]
        assert client.lru("/", 0, 16)["size"] == 0
        client.write("/cgroup.procs", str(os.getpid()))


def test_the_frames_op_maps_the_epc_in_cells(engine: RunningEngine) -> None:
    with engine.client() as client:
        client.mkdir("/v")
        client.hello("enclave", "mapper")
        build(client, "/v", [])
        capacity = client.capacity // PAGE
        cells = client.frames(capacity)  # one cell a frame
        assert (cells["first"], cells["group"], cells["count"], cells["frames"]) == (0, 1, capacity, capacity)
        assert cells["kinds"] == ["FREE", "SECS", "REG", "TCS", "TRIM", "VA", "VEPC"]
        assert cells["cgroups"] == ["/v"] and cells["dying"] == [] and cells["counts"] == []
        assert cells["owner"].count(0) == 42 and cells["owner"].count(-1) == capacity - 42
        kinds = [cells["kinds"][k] for k in cells["kind"] if k]
        assert sorted(set(kinds)) == ["REG", "SECS", "VA"] and kinds.count("REG") == 40
        grouped = client.frames(64, first=0, group=64)
        assert sum(grouped["free"]) == capacity - 42 and grouped["frames"] == 64 * 64
        assert sum(sum(counts) for counts in grouped["counts"]) == 42
        assert grouped["owner"][0] == 0 and grouped["kind"][0] == 2  # /v, REG
        last = client.frames(100, first=capacity - 10, group=4)  # clipped at the end of the EPC
        assert (last["count"], last["frames"], last["free"]) == (3, 10, [4, 4, 2])
        client.write("/cgroup.procs", str(os.getpid()))


def test_bad_view_arguments_are_one_line_and_change_nothing(engine: RunningEngine) -> None:
    with engine.client() as client:
        client.mkdir("/v")
        before = files(client, "/v")
        bad: list[tuple[Any, str, str]] = [
            (lambda: client.lru("/nope"), "ENOENT", "no cgroup '/nope'"),
            (lambda: client.lru("/v", offset=-1), "EINVAL", "lru: offset must be an integer in 0..2147483648, not -1"),
            (lambda: client.lru("/v", limit=0), "EINVAL", "lru: limit must be an integer in 1..4096, not 0"),
            (lambda: client.lru("/v", limit=4097), "EINVAL", "limit must be an integer in 1..4096"),
            (lambda: client.lru("x" * 5000), "EINVAL", "cgroup must be a string of at most 4096 characters"),
            (lambda: client.frames(0), "EINVAL", "frames: count must be an integer in 1..65536, not 0"),
            (lambda: client.frames(1, group=65537), "EINVAL", "group must be an integer in 1..65536"),
            (lambda: client.frames(1, first=4096), "EINVAL", "frame 4096 is past the EPC's 4096 frames"),
            (lambda: client.call("lru", cgroup="/v", limit=5000), "EPROTO", "lru: limit must be an integer in 1..4096"),
            (lambda: client.call("lru", cgroup=7), "EPROTO", "lru: cgroup must be a string of at most 4096"),
            (lambda: client.call("frames", count=1, extra=1), "EPROTO", "unknown argument 'extra' for frames"),
            (lambda: client.call("frames"), "EPROTO", "frames: missing count"),
        ]
        for call, code, message in bad:
            with pytest.raises(EngineError) as e:
                call()
            assert e.value.code == code and message in e.value.message, (code, message, str(e.value))
            assert "\n" not in str(e.value) and len(str(e.value)) < 200
        assert files(client, "/v") == before
        assert client.call("check") == "ok"


def test_listing_changes_nothing_and_the_next_reclaim_is_the_same_as_without_it(engine: RunningEngine) -> None:
    """Two cgroups built alike; only /x is listed, again and again, /y never until the end.  Both stay
    alike, and when a charge over each one's limit reclaims, both reclaim the same pages, the same way
    (had a listing aged /x's young pages, its batch would write what /y's rotates)."""
    with engine.client() as client:
        client.hello("enclave", "twins")
        for path in ("/x", "/y"):
            client.mkdir(path)
            build(client, path, [1, 3, 20, 33])
        before = (files(client, "/x"), row(client, "/x"))
        assert before == (files(client, "/y"), row(client, "/y"))
        for offset in range(0, 48, 3):
            client.lru("/x", offset, 5, unreclaimable_offset=offset % 3)
        client.frames(client.capacity // PAGE)
        client.frames(64, group=64)
        assert (files(client, "/x"), row(client, "/x")) == before
        assert client.call("check") == "ok"
        for path in ("/x", "/y"):  # at the limit, then two more pages: ECREATE reclaims (sync), a batch
            client.write(f"{path}/misc.max", f"sgx_epc {int(files(client, path)['misc.current'].split()[1])}")
            client.write(f"{path}/cgroup.procs", str(os.getpid()))
            client.call("ecreate", size=2 * PAGE)
        assert row(client, "/x")["reclaimed"] > 0
        assert listing(client, "/y") == listing(client, "/x")
        young = {index: young for index, _, young, _ in listing(client, "/y")}
        assert (young[1], young[3], young[20], young[33]) == (0, 0, 1, 1)  # 1 and 3 rotated (aged), not written

        assert files(client, "/x") == files(client, "/y") and row(client, "/x") == row(client, "/y")
        assert client.call("check") == "ok"
        client.write("/cgroup.procs", str(os.getpid()))

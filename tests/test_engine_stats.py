"""Stats on PUB are deltas that rebuild the snapshot; PUB messages are bounded (issue 10: M3, M4)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

from playground.feed import EngineFeed
from wire import protocol
from wire.snapshot import merge_stats

from .engine_fixture import running_engine
from .puppet import Puppet

pytestmark = pytest.mark.slow
MiB = 1 << 20


def _comparable(snapshot: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    return [cg for cg in snapshot["cgroups"]], [w for w in snapshot["workloads"]]


def test_merge_stats_applies_changed_rows_and_removals() -> None:
    base = {
        "stats_seq": 4,
        "free": 10,
        "cgroups": [{"path": "/", "n": 1}, {"path": "/b", "n": 1}, {"path": "/b/x", "n": 1}],
        "workloads": [{"pid": 7, "state": "running"}, {"pid": 9, "state": "exited"}],
    }
    delta = {
        "stats_seq": 5, "free": 8, "last": True,
        "cgroups": [{"path": "/a", "n": 2}, {"path": "/b", "n": 3}], "removed": ["/b/x"],
        "workloads": [{"pid": 7, "state": "exited"}, {"pid": 11, "state": "running"}], "workloads_removed": [9],
    }  # fmt: skip
    merged = merge_stats(base, delta)
    assert merged["stats_seq"] == 5 and merged["free"] == 8 and "last" not in merged
    assert [c["path"] for c in merged["cgroups"]] == ["/", "/a", "/b"]  # pre-order, siblings by name
    assert [c["n"] for c in merged["cgroups"]] == [1, 2, 3]
    assert merged["workloads"] == [{"pid": 7, "state": "exited"}, {"pid": 11, "state": "running"}]
    assert base["cgroups"][1] == {"path": "/b", "n": 1}  # the old snapshot is left as it was


def test_a_feed_rebuilt_from_deltas_equals_the_engine_snapshot(tmp_path: Path) -> None:
    """With more cgroups than a tick re-sends, the merged deltas still give exactly the snapshot."""
    with running_engine(tmp_path, "--capacity", "16MiB") as engine, engine.client() as client:
        for i in range(150):
            client.mkdir(f"/c{i:03d}")
        feed = EngineFeed(engine.endpoint)
        try:
            with Puppet(engine.endpoint) as workload:
                workload.ok("write", path="/c042/cgroup.procs", value="0")
                workload.ok("hello", pid=workload.pid, role="enclave", name="w")
                eid = workload.ok("ecreate", size=1 << 22)["eid"]
                workload.ok("add_pages", eid=eid, count=512)
                client.write("/c007/misc.max", f"sgx_epc {MiB}")
                client.rmdir("/c149")
                client.mkdir("/c042/inner")
                time.sleep(1.0)  # four ticks
                feed.poll()
                snapshot = client.snapshot()
                assert feed.snapshot["stats_seq"] <= snapshot["stats_seq"]
                while feed.snapshot["stats_seq"] < snapshot["stats_seq"]:
                    feed.poll()
                    time.sleep(0.05)
                theirs, ours = _comparable(snapshot), _comparable(feed.snapshot)
                assert [c["path"] for c in ours[0]] == [c["path"] for c in theirs[0]]
                assert ours == theirs
            row = {c["path"]: c for c in feed.snapshot["cgroups"]}
            assert row["/c042"]["misc_current"] > 0 and "/c149" not in row and "/c042/inner" in row
        finally:
            feed.close()


def test_every_pub_message_is_bounded_in_bytes(tmp_path: Path) -> None:
    """Events go out in batches of at most PUB_MAX_BYTES, stats in deltas of at most PUB_STATS_ROWS rows."""
    with running_engine(tmp_path, "--capacity", "16MiB") as engine, engine.client() as client:
        for i in range(400):
            client.mkdir(f"/{'n' * 200}{i}")  # long names: big rows
        ctx = zmq.Context()
        sub = ctx.socket(zmq.SUB)
        sub.linger = 0
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(client.pub_endpoint)
        try:
            time.sleep(0.3)
            client.mkdir("/p")
            client.write("/p/misc.max", f"sgx_epc {MiB}")
            client.write("/p/cgroup.procs", "0")
            with Puppet(engine.endpoint) as workload:
                workload.ok("write", path="/p/cgroup.procs", value="0")
                workload.ok("hello", pid=workload.pid, role="enclave")
                eid = workload.ok("ecreate", size=1 << 24)["eid"]
                workload.ok("add_pages", eid=eid, count=3000)  # thousands of limit hits and reclaims
            sizes: dict[bytes, list[int]] = {}
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                if sub.poll(100):
                    topic, payload = sub.recv_multipart()
                    sizes.setdefault(topic, []).append(len(payload))
                    if topic == protocol.TOPIC_STATS:
                        assert len(msgpack.unpackb(payload)["cgroups"]) <= protocol.PUB_STATS_ROWS
        finally:
            sub.close()
            ctx.term()
        assert sizes[protocol.TOPIC_EVENT_PRESSURE] and len(sizes[protocol.TOPIC_STATS]) >= 4
        assert max(max(v) for v in sizes.values()) <= protocol.PUB_MAX_BYTES, {k: max(v) for k, v in sizes.items()}


def test_a_pub_message_the_feed_cannot_read_is_skipped_and_logged_not_a_crash(tmp_path: Path) -> None:
    """Review B4: EngineFeed.poll let a message msgpack cannot decode escape into the TUI's timer.
    Here the feed's SUB also listens to a PUB of the test's, which sends garbage on each topic;
    a bad stats message makes the feed ask for the whole snapshot again."""
    with running_engine(tmp_path, "--capacity", "16MiB") as engine, engine.client() as client:
        feed = EngineFeed(engine.endpoint)
        ctx = zmq.Context.instance()
        rogue = ctx.socket(zmq.PUB)
        try:
            address = f"ipc://{tmp_path}/rogue.sock"
            rogue.bind(address)
            feed.subscriber.socket.connect(address)
            bad = [
                [protocol.TOPIC_STATS, b"\xc1"],  # 0xc1: never valid msgpack
                [protocol.TOPIC_EVENT_OTHER, msgpack.packb({"not": "a list"})],
                [protocol.TOPIC_STATS, msgpack.packb({"stats_seq": 10**6})],  # no "last", no rows
                [protocol.TOPIC_EVENT_OTHER],  # one frame only
            ]
            deadline = time.monotonic() + 10
            malformed: list[dict[str, Any]] = []
            while len(malformed) < len(bad) and time.monotonic() < deadline:
                for frames in bad:
                    rogue.send_multipart(frames)
                time.sleep(0.05)
                feed.poll()  # must not raise
                malformed = [e for e in feed.events if e["kind"] == "malformed"]
            assert len(malformed) >= len(bad), list(feed.events)[-10:]
            client.mkdir("/after")
            deadline = time.monotonic() + 10
            while "/after" not in {c["path"] for c in feed.snapshot["cgroups"]} and time.monotonic() < deadline:
                feed.poll()
                time.sleep(0.05)
            assert "/after" in {c["path"] for c in feed.snapshot["cgroups"]}  # still follows the engine
            assert feed.connected
        finally:
            rogue.close(linger=0)
            feed.close()

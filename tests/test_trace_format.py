"""The trace format (workloads/trace.py, docs/traces.md): what is written is read back, the reader
streams, and a file that is not a whole trace is refused in one line."""

from __future__ import annotations

import struct
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workloads import trace
from workloads.trace import TraceError, TraceWriter

ACCESS = st.tuples(st.integers(0, (1 << 31) - 1), st.booleans(), st.integers(0, 1 << 40))


def _write(path: Path, accesses: list[tuple[int, bool, int]], compute: bool = True) -> None:
    with TraceWriter(path, compute=compute, meta={"command": ["x"], "regions": [["heap", 0, 3]]}) as writer:
        for page, write, ns in accesses:
            writer.add(page, write, ns)


def _read(path: Path) -> list[tuple[int, bool, int]]:
    return [
        (page, bool(write), ns)
        for pages, writes, times in trace.records(path)
        for page, write, ns in zip(pages, writes, times, strict=True)
    ]


@given(st.lists(ACCESS, max_size=300), st.booleans())
def test_a_trace_reads_back_what_was_written(tmp_path_factory: pytest.TempPathFactory, accesses, compute) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("t") / "a.trace"
    _write(path, accesses, compute)
    want = [(page, write, ns if compute else 0) for page, write, ns in accesses]
    assert _read(path) == want
    header = trace.verify(path)
    assert header.accesses == len(accesses)
    assert header.writes == sum(w for _, w, _ in accesses)
    assert header.pages == max((p for p, _, _ in accesses), default=-1) + 1
    assert header.compute_ns == (sum(ns for _, _, ns in accesses) if compute else 0)
    assert header.regions == [("heap", 0, 3)] and header.meta["command"] == ["x"]


def test_batches_merge_adjacent_pages_and_say_whether_any_access_writes(tmp_path: Path) -> None:
    path = tmp_path / "b.trace"
    _write(path, [(5, False, 1), (6, False, 2), (7, True, 3), (2, False, 4), (9, False, 5)])
    assert list(trace.batches(path, batch=3)) == [([[5, 3]], True, 6), ([[2, 1], [9, 1]], False, 9)]


def test_the_reader_streams_a_large_trace_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.trace"
    accesses = 1_000_000
    with TraceWriter(path) as writer:
        for i in range(accesses):
            writer.add((i * 7) % 40_000, i % 3 == 0)
    tracemalloc.start()
    try:
        seen = sum(len(ranges) and sum(c for _, c in ranges) for ranges, _, _ in trace.batches(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seen == accesses
    assert peak < 3 << 20, f"reading held {peak} bytes at once"  # xz's 1 MiB dictionary; a list of ints: 30 MB


def test_a_file_that_is_not_a_trace_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello\n")
    with pytest.raises(TraceError, match=r"notes.txt: not an epc-playground trace \(no EPCTRACE header\)") as e:
        trace.verify(path)
    assert "\n" not in str(e.value)


def test_a_newer_version_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "new.trace"
    _write(path, [(1, False, 0)])
    data = bytearray(path.read_bytes())
    struct.pack_into("<H", data, 8, trace.VERSION + 1)
    path.write_bytes(bytes(data))
    with pytest.raises(TraceError, match=r"trace version 2 is newer than this epc-playground reads \(1\): update it"):
        trace.read_header(path)


@pytest.mark.parametrize("keep", [3, 20, 70, -1], ids=["in-magic", "in-header", "in-meta", "in-body"])
def test_a_truncated_trace_is_refused_in_one_line(tmp_path: Path, keep: int) -> None:
    path = tmp_path / "cut.trace"
    _write(path, [(i * 13 % 1000, i % 2 == 0, i) for i in range(20_000)])
    data = path.read_bytes()
    path.write_bytes(data[:keep] if keep >= 0 else data[: len(data) // 2])
    with pytest.raises(TraceError, match=r"cut.trace: (truncated trace|not an epc-playground trace)") as e:
        trace.verify(path)
    assert "\n" not in str(e.value)
    with pytest.raises(TraceError):
        for _ in trace.records(path):
            pass


def test_an_unfinished_trace_reads_as_truncated(tmp_path: Path) -> None:
    """A writer that died before close() leaves counts of 0 in the header: never a valid, empty trace."""
    path = tmp_path / "dead.trace"
    writer = TraceWriter(path)
    for i in range(100_000):
        writer.add(i % 5000)
    writer.abandon()
    with pytest.raises(TraceError, match="truncated trace"):
        trace.verify(path)


def test_a_body_with_pages_beyond_its_headers_count_is_refused(tmp_path: Path) -> None:
    """A replay sizes its enclave from the header: a page past it would fault outside the enclave."""
    path = tmp_path / "lie.trace"
    _write(path, [(5, False, 0), (900, True, 0)])
    data = bytearray(path.read_bytes())
    struct.pack_into("<Q", data, 24, 100)  # pages: 100
    path.write_bytes(bytes(data))
    with pytest.raises(TraceError, match=r"lie.trace: damaged trace body \(a page outside the 100 its header gives\)"):
        list(trace.batches(path))

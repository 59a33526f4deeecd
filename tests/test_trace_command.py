"""`epc-playground trace record` (a real program under Valgrind) and `trace info` (the figures of a
trace whose reuse distances are known)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from playground.trace.info import summarize
from workloads import trace
from workloads.trace import TraceWriter

from .engine_fixture import ROOT

CLI = [sys.executable, "-m", "playground.cli"]


def _cli(*args: str, cwd: Path, path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if path is not None:
        env["PATH"] = path
    return subprocess.run([*CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def _cyclic(path: Path, pages: int, rounds: int) -> Path:
    with TraceWriter(path) as writer:
        for _ in range(rounds):
            for page in range(pages):
                writer.add(page, write=page % 4 == 0)
    return path


def test_info_gives_the_lru_pages_a_cyclic_trace_needs(tmp_path: Path) -> None:
    """Pages 0..63 a hundred times: every re-access needs all 64 pages (an LRU of 63 misses each); the
    trace is longer than the distance tree, so its times get renumbered on the way."""
    path = _cyclic(tmp_path / "c.trace", 64, 100)
    summary = summarize(path, window=100)
    assert summary.distinct == 64 and summary.reaccesses == 64 * 99
    assert [summary.percentile(p) for p in (50, 90, 99)] == [64, 64, 64]
    assert summary.held(63) == 0 and summary.held(64) == 64 * 99
    assert summary.windows == [64] * (64 * 100 // 100)
    done = _cli("trace", "info", str(path), "--window", "100", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "accesses     6,400 (4,800 reads, 1,600 writes: 25% writes)" in done.stdout
    assert "LRU pages    that hold a re-access: p50 64, p90 64, p99 64, max 64" in done.stdout
    assert "min 64, median 64, max 64" in done.stdout
    assert "          16 pages     64 KiB    0.0%" in done.stdout
    assert "          64 pages    256 KiB  100.0%" in done.stdout


def test_info_distances_hold_when_the_pages_outgrow_the_distance_tree(tmp_path: Path) -> None:
    """3,000 pages in a cycle, three times: more live pages than half the tree's first 4,096 slots."""
    summary = summarize(_cyclic(tmp_path / "w.trace", 3000, 3))
    assert summary.reaccesses == 6000 and summary.held(2999) == 0 and summary.held(3000) == 6000


def test_info_reuse_distance_counts_distinct_pages_not_accesses(tmp_path: Path) -> None:
    """0 1 1' 0: page 1 twice in between is one page, so 0's re-access needs 2 pages; a hot page
    between every other page needs 2, the others 1 000 pages apart (each page once) need none."""
    path = tmp_path / "d.trace"
    with TraceWriter(path) as writer:
        for page in range(1, 1001):
            writer.add(0)
            writer.add(page)
    summary = summarize(path)
    assert summary.reaccesses == 999 and summary.held(1) == 0 and summary.held(2) == 999
    assert summary.percentile(99) == 2


def test_info_of_a_file_that_is_not_a_trace_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("hello\n")
    done = _cli("trace", "info", "x.txt", cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert (
        done.stderr == "epc-playground trace info: x.txt: not an epc-playground trace (no EPCTRACE header); "
        "record one with `trace record`\n"
    )


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed (tools/setup installs it)")
def test_record_traces_a_real_sort_into_a_trace_with_heap_and_stack(tmp_path: Path) -> None:
    words = tmp_path / "words.txt"
    words.write_text("".join(f"{(i * 7919) % 1000:04d} line\n" for i in range(100)))
    done = _cli("trace", "record", "-o", "sort.trace", "--", "sort", str(words), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[:100] == sorted(words.read_text().splitlines())  # its output goes through
    assert done.stdout.splitlines()[-1].startswith("sort.trace: ")
    header = trace.verify(tmp_path / "sort.trace")
    assert header.meta["command"] == ["sort", str(words)]
    names = [name for name, _, _ in header.regions]
    assert names == ["static", "heap", "stack"], header.regions
    first, last = header.regions[0], header.regions[-1]
    assert first[1] == 0 and last[1] + last[2] == header.pages  # the layout has no holes
    assert header.accesses > 1_000 and 0 < header.writes < header.accesses and header.compute_ns > 0
    pages = set()
    previous = -1
    for chunk, _, _ in trace.records(tmp_path / "sort.trace"):
        for page in chunk:
            assert page != previous  # repeats of one page are collapsed
            previous = page
            pages.add(page)
    assert pages == set(range(header.pages))


@pytest.mark.parametrize(
    ("args", "path", "message"),
    [
        (["-o", "t.trace", "true"], None, "give the command after --: trace record -o FILE -- CMD ARGS"),
        (["-o", "t.trace", "--"], None, "give the command after --: trace record -o FILE -- CMD ARGS"),
        (["-o", "t.trace", "--", "true"], "/nonexistent", "valgrind is not installed: tools/setup installs it"),
        (["-o", "t.trace", "--", "no-such-program-here"], None, "no-such-program-here: no such command"),
        (["-o", "nodir/t.trace", "--", "true"], None, "-o nodir/t.trace: no such directory nodir"),
    ],
    ids=["no-dashes", "no-command", "no-valgrind", "no-such-command", "no-such-directory"],
)
def test_record_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, args: list[str], path: str | None, message: str
) -> None:
    done = _cli("trace", "record", *args, cwd=tmp_path, path=path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"epc-playground trace record: {message}") and done.stderr.count("\n") == 1
    assert not (tmp_path / "t.trace").exists()


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed (tools/setup installs it)")
def test_record_of_a_failing_program_writes_no_trace_and_exits_1(tmp_path: Path) -> None:
    done = _cli("trace", "record", "-o", "t.trace", "--", "false", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr == "epc-playground trace record: false exited with status 1: no trace written\n"
    assert not (tmp_path / "t.trace").exists()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed (tools/setup installs it)")
def test_record_shows_its_progress_on_a_terminal(tmp_path: Path) -> None:
    """Valgrind is slow: on a terminal, the accesses and pages seen so far, on one line, then cleared."""
    words = tmp_path / "words.txt"
    words.write_text("".join(f"{(i * 7919) % 10007:05d} some words\n" for i in range(4000)))
    master, slave = os.openpty()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LC_ALL": "C"}
    argv = [*CLI, "trace", "record", "-o", "t.trace", "--", "sort", str(words)]
    proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the process closed its end
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    assert proc.wait(timeout=120) == 0, seen
    assert b"\rrecording: " in seen and b" accesses, " in seen and b" pages " in seen, seen
    assert seen.endswith(b"\r" + b" " * 60 + b"\r"), seen[-100:]

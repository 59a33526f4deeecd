"""`trace record`: a real program's data accesses under Valgrind's lackey, folded into a trace.

Valgrind runs the program with ``--tool=lackey --trace-mem=yes`` (one line per
instruction fetch and per load, store or modify) and ``--trace-syscalls=yes`` (the
``brk`` and ``mmap`` results, which say where the heap is), its log on a pipe read as
it comes; ``-d -d`` makes it say where it put the main stack (``initial_SP`` and
``max_stack_size``, on its stderr).  Instruction fetches are dropped, but counted: the
instructions between two accesses are their compute time.  Loads, stores and modifies
are folded to 4 KiB pages, and repeats of one page in a row collapse into one access
(a write if any of them wrote).  The pages go to a first trace of absolute page
numbers; once the program has ended and every page is known, each is marked heap,
stack or static (everything else: the program's and its libraries' images, file
mappings) and given an offset in a compact enclave-like layout, static pages first,
then the heap, then the stack, each in address order with no holes; the second pass
writes the trace (docs/traces.md says all of it).
"""

from __future__ import annotations

import bisect
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from workloads.trace import TraceWriter, records

LACKEY = ["--tool=lackey", "--trace-mem=yes", "--trace-syscalls=yes", "--vgdb=no", "-d", "-d"]
NS_PER_INSTRUCTION = 0.3  # a 3.3 GHz core at one instruction a cycle: the default compute per instruction
MAP_FIXED, MAP_ANONYMOUS, MAP_STACK = 0x10, 0x20, 0x20000
REGIONS = ("static", "heap", "stack")  # the layout's order: as an enclave's image, heap, then stack
_SYSCALL = re.compile(rb"sys_(brk|mmap) \( ([^)]*) \).*Success\((0x[0-9a-fA-F]+)\)")
_STACK = re.compile(r"initial_SP=(0x[0-9a-fA-F]+) max_stack_size=(\d+)")
_DEBUG_LINE = re.compile(r"^--\d+(:\d+)?[:-]")  # valgrind's own lines on stderr: --PID-- and --PID:LEVEL:
PROGRESS_EVERY = 1 << 16  # lackey lines between two looks at the clock


class RecordError(Exception):
    """What keeps a recording from being made, in one line (valgrind missing, no such command, ...)."""


@dataclass(slots=True)
class Recorded:
    """What a recording saw: the trace's counts, and the lackey lines read."""

    accesses: int = 0  # after collapsing repeats
    raw_accesses: int = 0  # loads, stores and modifies
    instructions: int = 0
    pages: int = 0
    regions: dict[str, int] = field(default_factory=dict)  # pages per region
    exit_status: int = 0


@dataclass(slots=True)
class _Ranges:
    """Address ranges [start, end) of one kind, looked up by bisection."""

    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    brk_start: int = -1  # the heap's brk segment, for the heap's ranges
    brk_end: int = -1

    def add(self, start: int, end: int) -> None:
        i = bisect.bisect_left(self.starts, start)
        self.starts.insert(i, start)
        self.ends.insert(i, end)

    def holds(self, address: int) -> bool:
        if self.brk_start <= address < self.brk_end:
            return True
        i = bisect.bisect_right(self.starts, address) - 1
        return i >= 0 and address < max(self.ends[: i + 1])


def find_valgrind() -> str:
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise RecordError("valgrind is not installed: tools/setup installs it (or: sudo apt-get install valgrind)")
    return valgrind


def record(
    command: list[str],
    out: Path,
    *,
    ns_per_instruction: float = NS_PER_INSTRUCTION,
    progress: Callable[[Recorded], None] | None = None,
) -> Recorded:
    """Run ``command`` under lackey and write its trace to ``out``; RecordError (one line) when it cannot
    run or fails (its exit status is then in the message, and no trace is left)."""
    valgrind = find_valgrind()
    if shutil.which(command[0]) is None:
        raise RecordError(f"{command[0]}: no such command (give a program on PATH or a path to one)")
    seen = Recorded()
    with tempfile.TemporaryDirectory(prefix="epc-trace-") as tmp:
        raw_path = Path(tmp) / "raw.trace"
        err_path = Path(tmp) / "stderr"
        heap, stacks, pages = _Ranges(), _Ranges(), set[int]()
        read_fd, write_fd = os.pipe()
        with open(err_path, "wb") as err:
            proc = subprocess.Popen(
                [valgrind, *LACKEY, f"--log-fd={write_fd}", *command], pass_fds=(write_fd,), stderr=err
            )
        os.close(write_fd)
        try:
            with os.fdopen(read_fd, "rb", buffering=1 << 16) as log, TraceWriter(raw_path, compute=True) as raw:
                _fold(log, raw, seen, heap, stacks, pages, ns_per_instruction, progress)
        finally:
            seen.exit_status = proc.wait()
        stderr = err_path.read_text(errors="replace")
        _pass_on(stderr)
        if seen.exit_status != 0:
            raise RecordError(f"{' '.join(command)} exited with status {seen.exit_status}: no trace written")
        stack = _STACK.search(stderr)
        if stack is not None:
            sp, size = int(stack.group(1), 16), int(stack.group(2))
            stacks.add(sp - size, ((sp >> 12) + 1) << 12)
        elif pages:  # no word from valgrind: the highest page touched is on the stack
            stacks.add(max(pages) << 12, (max(pages) + 1) << 12)
        layout, regions = _layout(pages, heap, stacks)
        seen.pages, seen.regions = len(layout), {name: count for name, _, count in regions}
        meta = {
            "command": command,
            "recorder": "valgrind --tool=lackey --trace-mem=yes",
            "instruction_fetches": "dropped; counted as compute between accesses",
            "instructions": seen.instructions,
            "ns_per_instruction": ns_per_instruction,
            "page_size": 4096,
            "regions": [list(region) for region in regions],
        }
        with TraceWriter(out, compute=True, meta=meta) as writer:
            for chunk, writes, times in records(raw_path):
                for page, write, ns in zip(chunk, writes, times, strict=True):
                    writer.add(layout[page], bool(write), ns)
    return seen


def _fold(
    log: Iterable[bytes],
    raw: TraceWriter,
    seen: Recorded,
    heap: _Ranges,
    stacks: _Ranges,
    pages: set[int],
    ns_per_instruction: float,
    progress: Callable[[Recorded], None] | None,
) -> None:
    """Read lackey's log to its end: each run of accesses to one page is one access of ``raw``."""
    last_key = b""
    page = -1
    write = False
    insns = insns_before = 0  # instructions since the current page's run began; before it
    carry = 0.0
    lines = 0
    next_look = time.monotonic() + 0.25
    for line in log:
        lines += 1
        kind = line[:2]
        if kind == b"I ":
            insns += 1
            continue
        if kind in (b" L", b" S", b" M"):
            seen.raw_accesses += 1
            comma = line.find(b",", 3)
            key = line[3 : comma - 3]  # the address in hex without its last 3 digits: its page
            if key == last_key:
                write = write or kind != b" L"
                continue
            if page >= 0:
                carry += insns_before * ns_per_instruction
                ns = int(carry)
                carry -= ns
                raw.add(page, write, ns)
            last_key, page, write = key, int(key, 16), kind != b" L"
            pages.add(page)
            insns_before, insns = insns, 0
            seen.instructions += insns_before
            if lines >= PROGRESS_EVERY and progress is not None:
                lines = 0
                if time.monotonic() >= next_look:
                    next_look = time.monotonic() + 0.25
                    seen.accesses, seen.pages = raw.accesses, len(pages)
                    progress(seen)
            continue
        if line.startswith(b"SYSCALL"):
            _syscall(line, heap, stacks)
    if page >= 0:
        carry += insns_before * ns_per_instruction
        raw.add(page, write, int(carry))
    seen.instructions += insns
    seen.accesses = raw.accesses


def _syscall(line: bytes, heap: _Ranges, stacks: _Ranges) -> None:
    """The heap from brk's results (from its first to its highest), anonymous private mmaps (malloc's
    large blocks and arenas) as heap too, and MAP_STACK ones (threads' stacks) as stack."""
    m = _SYSCALL.search(line)
    if m is None:
        return
    call, args, result = m.group(1), m.group(2).split(b","), int(m.group(3), 16)
    if call == b"brk":  # brk(0) first says where the heap starts; later calls move its end
        if heap.brk_start < 0:
            heap.brk_start = result
        heap.brk_end = max(heap.brk_end, result)
        return
    try:
        length, flags = int(args[1], 0), int(args[3], 0)
    except (IndexError, ValueError):
        return
    if flags & MAP_ANONYMOUS and not flags & MAP_FIXED:
        end = result + ((length + 4095) & ~4095)
        (stacks if flags & MAP_STACK else heap).add(result, end)


def _layout(pages: set[int], heap: _Ranges, stacks: _Ranges) -> tuple[dict[int, int], list[tuple[str, int, int]]]:
    """Each page's offset: static pages first, then heap, then stack, each in address order, no holes;
    and the regions as [name, first offset, pages]."""
    by_region: dict[str, list[int]] = {name: [] for name in REGIONS}
    for page in sorted(pages):
        address = page << 12
        name = "stack" if stacks.holds(address) else "heap" if heap.holds(address) else "static"
        by_region[name].append(page)
    layout: dict[int, int] = {}
    regions: list[tuple[str, int, int]] = []
    for name in REGIONS:
        first = len(layout)
        for page in by_region[name]:
            layout[page] = len(layout)
        if by_region[name]:
            regions.append((name, first, len(by_region[name])))
    return layout, regions


def _pass_on(stderr: str) -> None:
    """The program's own stderr, without valgrind's lines."""
    for line in stderr.splitlines():
        if not _DEBUG_LINE.match(line) and not line.startswith("=="):
            print(line, file=sys.stderr)

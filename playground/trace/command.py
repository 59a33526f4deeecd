"""`epc-playground trace record -o FILE -- CMD ARGS` and `trace info FILE` (docs/traces.md).

Exit status: 0 done; 1 the recorded program failed (no trace written); 2 a usage
error (no ``--``, no valgrind, no such command, a file that is not a whole trace).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from common.options import EXIT_USAGE, positive

EPILOG = """\
examples:
  epc-playground trace record -o sort.trace -- sort /tmp/words.txt
  epc-playground trace info sort.trace
  epc-playground enclave --trace sort.trace --cgroup /pod
"""


def _ns(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a number of nanoseconds from 0 to 1000")
    return value


def add_parser(sub: Any) -> None:
    trace = sub.add_parser(
        "trace",
        help="record a real program's page accesses (under Valgrind), or sum a trace up",
        description="Page-access traces of real programs, for `enclave --trace FILE` and a scenario spawn's "
        "`trace = FILE` (docs/traces.md has the format and how a recording is made).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = trace.add_subparsers(dest="action", metavar="ACTION", required=True)
    record = actions.add_parser(
        "record",
        help="run CMD under valgrind's lackey and write its page-access trace",
        usage="%(prog)s [-h] -o FILE [--ns-per-instruction NS] -- CMD [ARGS ...]",
        description="Run CMD under Valgrind (--tool=lackey --trace-mem=yes): its loads and stores are "
        "folded to 4 KiB pages (instruction fetches dropped, counted as compute time), repeats of one page "
        "in a row collapsed, the pages marked heap, stack or static and laid out as an enclave's, and the "
        "trace written to FILE. Valgrind makes the program 50 to 200 times slower: keep its input small.",
    )
    record.add_argument("-o", "--output", required=True, metavar="FILE", help="the trace file to write")
    record.add_argument(
        "--ns-per-instruction",
        type=_ns,
        default=None,
        metavar="NS",
        help="compute time per instruction between two accesses (0.3: 3.3 GHz at one instruction a cycle)",
    )
    record.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD ARGS")
    info = actions.add_parser(
        "info",
        help="a trace's size, accesses, pages, working set and reuse distances",
        description="Print a trace's size, accesses (reads and writes), pages, the working set over windows "
        "of accesses, and its reuse distances as LRU stack distances in pages: what EPC size would hold "
        "what share of its re-accesses.",
    )
    info.add_argument("file", metavar="FILE")
    info.add_argument("--window", type=positive, default=10_000, help="accesses per working-set window (10000)")
    trace.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.action == "record":
        return _record(args)
    return _info(args)


def _record(args: argparse.Namespace) -> int:
    from playground.trace.record import NS_PER_INSTRUCTION, Recorded, RecordError, record

    command: list[str] = args.command
    if not command or command[0] != "--" or len(command) == 1:
        print(
            "epc-playground trace record: give the command after --: trace record -o FILE -- CMD ARGS",
            file=sys.stderr,
        )
        return EXIT_USAGE
    out = Path(args.output)
    if not out.parent.is_dir():
        print(f"epc-playground trace record: -o {out}: no such directory {out.parent}", file=sys.stderr)
        return EXIT_USAGE
    terminal = sys.stderr.isatty()

    def progress(seen: Recorded) -> None:
        print(f"\rrecording: {seen.accesses:,} accesses, {seen.pages:,} pages ", end="", file=sys.stderr)

    try:
        seen = record(
            command[1:],
            out,
            ns_per_instruction=args.ns_per_instruction if args.ns_per_instruction is not None else NS_PER_INSTRUCTION,
            progress=progress if terminal else None,
        )
    except RecordError as e:
        if terminal:
            print(file=sys.stderr)
        print(f"epc-playground trace record: {e}", file=sys.stderr)
        return 1 if "exited with status" in str(e) else EXIT_USAGE
    except KeyboardInterrupt:
        out.unlink(missing_ok=True)
        print("\nepc-playground trace record: interrupted: no trace written", file=sys.stderr)
        return 130
    if terminal:
        print("\r" + " " * 60 + "\r", end="", file=sys.stderr)
    regions = ", ".join(f"{name} {count:,}" for name, count in seen.regions.items())
    print(
        f"{out}: {seen.accesses:,} accesses ({seen.raw_accesses:,} loads and stores), {seen.pages:,} pages "
        f"({regions}), {os.path.getsize(out):,} bytes"
    )
    return 0


def _info(args: argparse.Namespace) -> int:
    from playground.trace.info import report, summarize
    from workloads.trace import TraceError

    try:
        summary = summarize(args.file, args.window)
    except TraceError as e:
        print(f"epc-playground trace info: {e}", file=sys.stderr)
        return EXIT_USAGE
    print("\n".join(report(args.file, summary)))
    return 0

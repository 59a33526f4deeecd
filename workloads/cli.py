"""The workloads' command line: ``python -m workloads enclave|vm ...``, also ``epc-playground enclave|vm``.

``add_parsers(sub)`` adds the two commands, each with its handler, to a parser's
subcommands (``epc-playground``'s, or ``main``'s own).  Exit status as the README
gives it (``workloads/process.py``): 0 ok, 1 an errno, killed by SIGBUS or by
the OOM killer's SIGKILL, 2 usage or connection errors.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from common.options import EXIT_USAGE, SubcommandParser, compute, count, positive, seconds, size, whole
from common.units import format_size, shown
from wire import protocol
from workloads import program

if TYPE_CHECKING:  # the workload modules load zmq: only when one runs, not for --help
    from workloads.client import EngineClient


def _workload_size(text: str) -> int:
    """A workload's --size: at least one page (a size of 0 would build nothing and say ok)."""
    nbytes = size(text)
    if nbytes < protocol.PAGE_SIZE:
        raise argparse.ArgumentTypeError(f"{shown(text)} is less than one page ({protocol.PAGE_SIZE} bytes)")
    return nbytes


def _batch(text: str) -> int:
    return whole(text, 1, protocol.MAX_RANGES)  # a random pattern's batch can be that many ranges


def _checked(checker: Callable[[Any], Any], what: str) -> Callable[[str], str]:
    """An argparse type that applies a wire check (wire.protocol) to a string option."""

    def check(text: str) -> str:
        try:
            checker(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"{what} must be {e}") from None
        return text

    return check


def _workload_options(parser: argparse.ArgumentParser) -> None:
    """What every workload command takes: its name, where it runs, which engine."""
    hello_name = protocol.SCHEMAS["hello"]["name"][0]
    parser.add_argument(
        "--name", default="", type=_checked(hello_name, "a name"), help="a name to show in the TUI and events"
    )
    parser.add_argument(
        "--cgroup",
        default="",
        metavar="PATH",
        type=_checked(protocol.PATH, "a path"),
        help="move itself there first (default: stay put)",
    )
    parser.add_argument("--connect", metavar="EP", help="the engine's endpoint (default: discover it)")
    # Hidden: `epc-playground run` learns when the workload is placed, then lets it go (workloads/process.py).
    parser.add_argument("--hold", action="store_true", help=argparse.SUPPRESS)


def add_parsers(sub: Any) -> None:
    """The ``enclave`` and ``vm`` commands, into ``sub`` (what ``add_subparsers()`` returned)."""
    enclave = sub.add_parser(
        "enclave",
        help="one enclave workload, in the caller's cgroup",
        description="Build an enclave like the kernel selftest's (ECREATE, ADD_PAGES of a TCS, code and the "
        "heap, EINIT), touch its heap in a pattern, release it and exit. Exit status: 0 ok, 1 an errno "
        "(named on stderr, e.g. ENOMEM), killed by SIGBUS on a fault the host cannot serve, by SIGKILL "
        "when the OOM killer picks it, 2 for usage or connection errors (no engine, or it went away).",
    )
    enclave.add_argument(
        "--size", type=_workload_size, metavar="SIZE", help="heap size, e.g. 64MiB (with --trace: at least the trace's)"
    )
    enclave.add_argument(
        "--pattern", default=None, choices=protocol.PATTERNS, help="how to touch the heap (sequential)"
    )
    enclave.add_argument(
        "--trace",
        metavar="FILE",
        help="replay a recorded page-access trace (epc-playground trace record) instead of a pattern; "
        "the heap is the trace's size unless --size is larger",
    )
    enclave.add_argument(
        "--passes",
        type=count,
        default=1,
        help="times over the heap (1; 0: build and enter only, like test_sgx)",
    )
    enclave.add_argument("--duration", type=seconds, metavar="SECONDS", help="run this long instead of --passes")
    enclave.add_argument(
        "--compute",
        type=compute,
        metavar="TIME",
        help="its compute per page accessed on its emulated clock, e.g. 250ns or 2us (default: the cost "
        "profile's; a --trace recorded with compute times uses those unless this is given)",
    )
    enclave.add_argument("--seed", type=count, default=0, help="seed of the random patterns (0)")
    enclave.add_argument("--batch", type=_batch, default=256, help="pages per access request (256, at most 4096)")
    enclave.add_argument("--grow", type=size, default=0, metavar="SIZE", help="SGX2: grow by EAUG after EINIT")
    enclave.add_argument(
        "--trim", type=size, default=0, metavar="SIZE", help="SGX2: trim and remove this much of the heap at the end"
    )
    _workload_options(enclave)
    enclave.set_defaults(handler=run_enclave_command)

    vm = sub.add_parser(
        "vm",
        help="a guest VM holding virtual EPC (unreclaimable)",
        description="Open virtual EPC for a guest and touch it page by page; the host cannot reclaim it, so at "
        "the cgroup's limit the guest dies by SIGBUS. Exit status as for `enclave`.",
    )
    vm.add_argument("--size", type=_workload_size, required=True, metavar="SIZE", help="guest EPC size, e.g. 32MiB")
    vm.add_argument("--passes", type=positive, default=1, help="times over its EPC (1)")
    vm.add_argument("--duration", type=seconds, metavar="SECONDS", help="hold it this long")
    vm.add_argument(
        "--compute",
        type=compute,
        metavar="TIME",
        help="the guest's compute per page accessed on its emulated clock, e.g. 250ns (default: the profile's)",
    )
    _workload_options(vm)
    vm.set_defaults(handler=run_vm_command)


def run_enclave_command(args: argparse.Namespace) -> int:
    from workloads.enclave import EnclavePlan, run_enclave

    size_bytes = _enclave_size(args)
    if size_bytes is None:
        return EXIT_USAGE
    pattern = args.pattern or "sequential"
    plan = EnclavePlan(size_bytes, pattern, args.passes, args.duration, args.seed, args.batch, trace=args.trace or "")
    plan.compute_ns = args.compute
    plan.grow_pages = -(-args.grow // protocol.PAGE_SIZE)
    plan.trim_pages = -(-args.trim // protocol.PAGE_SIZE)
    problem = plan.too_large()
    if problem is not None:
        grow = f" --grow {format_size(args.grow)}" if args.grow else ""
        what = f"--trace {args.trace}" if args.size is None else f"--size {format_size(size_bytes)}"
        print(f"epc-playground enclave: {what}{grow}: {problem}", file=sys.stderr)
        return EXIT_USAGE
    if plan.trim_pages > plan.heap_pages:
        heap = f"--size {format_size(size_bytes)}" if args.size else f"the trace's heap of {format_size(size_bytes)}"
        print(
            f"epc-playground enclave: --trim {format_size(args.trim)}: more than the heap it trims, "
            f"{heap}; give at most that",
            file=sys.stderr,
        )
        return EXIT_USAGE
    said = program.plan(
        size_bytes, "" if args.trace else pattern, None if args.duration else args.passes, args.duration, args.compute
    )
    return _run_workload(args, "enclave", lambda client: run_enclave(client, plan), said)


def _enclave_size(args: argparse.Namespace) -> int | None:
    """The heap's bytes: --size, or with --trace the trace's own size (--size may make it larger, not
    smaller); None once it has said in one line what is wrong (no --size, --trace with --pattern, a
    file that is not a trace, a --size the trace does not fit in)."""
    if args.trace is None:
        if args.size is None:
            print("epc-playground enclave: give --size SIZE (the heap, e.g. 64MiB) or --trace FILE", file=sys.stderr)
        return args.size  # type: ignore[no-any-return]
    from workloads.trace import TraceError, replayable

    if args.pattern is not None:
        print("epc-playground enclave: give --pattern or --trace, not both", file=sys.stderr)
        return None
    try:
        trace_bytes = replayable(args.trace) * protocol.PAGE_SIZE
    except TraceError as e:
        print(f"epc-playground enclave: --trace: {e}", file=sys.stderr)
        return None
    if args.size is not None and args.size < trace_bytes:
        print(
            f"epc-playground enclave: --size {format_size(args.size)} is smaller than the trace {args.trace}, "
            f"which needs a heap of {format_size(trace_bytes)}: leave --size out or give at least that",
            file=sys.stderr,
        )
        return None
    return max(trace_bytes, args.size or 0)


def run_vm_command(args: argparse.Namespace) -> int:
    from workloads.vm import run_vm, vepc_bytes

    if vepc_bytes(args.size) > protocol.MAX_SIZE:
        print(
            f"epc-playground vm: --size {format_size(args.size)}: more than the largest guest EPC the host takes, "
            f"{format_size(protocol.MAX_SIZE)} ({protocol.MAX_SIZE} bytes)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    said = program.plan(args.size, "", args.passes, args.duration, args.compute)
    return _run_workload(
        args, "vm", lambda client: run_vm(client, args.size, passes=args.passes, duration_s=args.duration), said
    )


def _run_workload(
    args: argparse.Namespace, role: str, main: Callable[[EngineClient], None], plan: dict[str, Any]
) -> int:
    """A workload command's run, with the options _workload_options gave it; ``plan`` goes with its hello.
    The process takes its own name first, for ps and htop (``epc-playground: enclave db``)."""
    from workloads.process import name_process, run_workload

    name_process(role, args.name)

    return run_workload(
        main, endpoint=args.connect, role=role, name=args.name, cgroup=args.cgroup, hold=args.hold, plan=plan
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m workloads enclave|vm ...``: one workload in the foreground; its exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m workloads", description="One enclave or guest-VM workload of epc-playground."
    )
    add_parsers(parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=SubcommandParser))
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)

"""The ``epc-playground`` command line: it only dispatches.

Each command's module adds its own subparser, with its options, help and handler
(``args.handler``); with no command, the TUI runs.  What a command imports to do its
work it imports when it runs, so ``--help`` and the parser stay light.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version

from common.options import SubcommandParser
from playground import cg, mount, serve, test_sgx
from playground.scenario import command as run
from playground.sweep import command as sweep
from playground.trace import command as trace
from playground.tui import command as tui
from workloads import cli as workloads

DESCRIPTION = """\
epc-playground emulates an Intel SGX host whose Enclave Page Cache (EPC) is limited
per cgroup by the misc controller, page for page as the SGX EPC cgroup series (V17):
misc.max / misc.current / misc.events, per-cgroup LRUs, direct, async and global
reclaim, and ENOMEM or SIGBUS when nothing is left to reclaim.

Start an engine (the emulated host), then run workloads and read the cgroup files:

  epc-playground engine --capacity 128MiB &
  epc-playground cg mkdir /pod
  epc-playground cg write /pod/misc.max "sgx_epc 16777216"
  epc-playground cg write /pod/cgroup.procs $$      # this shell and what it starts
  epc-playground enclave --size 64MiB --pattern random --passes 3
  epc-playground cg read /pod/misc.events
  epc-playground cg tree

Sizes take bytes or IEC units: 4096, 64KiB, 128MiB, 1GiB (K, M, G too).
"""

EXIT_BROKEN_PIPE = 128 + 13  # as a process killed by SIGPIPE shows in a shell


def _version() -> str:
    try:
        return version("epc-playground")
    except PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="epc-playground", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=SubcommandParser)
    tui.add_parser(sub)
    serve.add_parsers(sub)  # engine, keys
    workloads.add_parsers(sub)  # enclave, vm: python -m workloads
    cg.add_parser(sub)
    run.add_parser(sub)
    sweep.add_parser(sub)
    mount.add_parser(sub)
    test_sgx.add_parser(sub)
    trace.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["tui"])
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except BrokenPipeError:  # `... | head` closed our stdout: stop quietly, as a shell's pipeline expects
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush cannot fail again
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())

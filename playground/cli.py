"""The ``epc-playground`` command line."""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import PackageNotFoundError, version

DESCRIPTION = """\
epc-playground emulates an Intel SGX host whose Enclave Page Cache (EPC) is limited
per cgroup by the misc controller, page for page as the SGX EPC cgroup series (V17):
misc.max / misc.current / misc.events, per-cgroup LRUs, direct, async and global
reclaim, and ENOMEM or SIGBUS when nothing is left to reclaim.

The emulated host's core is a Python library today:

  from engine import Host
  host = Host(capacity="128MiB")
  host.mkdir("/pod"); host.write("/pod/misc.max", "sgx_epc 1048576")
"""


def _version() -> str:
    try:
        return version("epc-playground")
    except PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="epc-playground",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.parse_args(argv)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())

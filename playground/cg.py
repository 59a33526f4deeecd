"""``epc-playground cg read|write|mkdir|rmdir|tree``: the cgroup files, as cat, echo >, mkdir and rmdir see them."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, cast

from common.options import EXIT_USAGE
from wire.protocol import EngineError
from wire.snapshot import NAME_COLUMN, Snapshot, format_tree


class _OneValue(argparse.Action):
    """``cg write PATH VALUE``: exactly one VALUE, which may start with '-' (``-misc``) without a ``--``."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: Any = None
    ) -> None:
        if len(values) != 1:
            raise argparse.ArgumentError(self, "give exactly one value; quote one with spaces: 'sgx_epc 16777216'")
        setattr(namespace, self.dest, values[0])


def add_parser(sub: Any) -> None:
    cg = sub.add_parser(
        "cg",
        help="read and write the cgroup files",
        description="The emulated host's cgroup files, as cat, echo >, mkdir and rmdir see them. "
        "Writing 0 to cgroup.procs moves the shell that runs this command.",
        epilog="examples:\n  epc-playground cg write /pod/misc.max 'sgx_epc 16777216'\n"
        "  epc-playground cg read /pod/misc.current\n  epc-playground cg tree",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cg.add_argument("--connect", metavar="EP", help="the engine's endpoint (default: discover it)")
    cg_sub = cg.add_subparsers(dest="action", metavar="ACTION", required=True)
    cg_sub.add_parser("read", help="print a file").add_argument("path")
    write = cg_sub.add_parser(
        "write",
        help="write a value to a file",
        usage="%(prog)s [-h] PATH VALUE",
        description="Write VALUE to the file PATH, as echo VALUE > PATH does. A VALUE that starts with '-' "
        "needs no '--': cg write /pod/cgroup.subtree_control -misc.",
    )
    write.add_argument("path")
    write.add_argument("value", nargs=argparse.REMAINDER, action=_OneValue, metavar="VALUE")
    cg_sub.add_parser("mkdir", help="create a cgroup").add_argument("path")
    cg_sub.add_parser("rmdir", help="remove a cgroup").add_argument("path")
    tree = cg_sub.add_parser(
        "tree",
        help="the cgroups with their usage and limits",
        description="The cgroups with their usage and limits, and the workloads whose call stalls. A name "
        f"longer than the name column ({NAME_COLUMN} characters with its indentation) is cut in the middle "
        "(kubepods-burst…4a3c21.slice); --wide shows every name whole.",
    )
    tree.add_argument("--wide", action="store_true", help="never cut a name")
    cg.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from workloads.client import EngineClient, NoEngine

    try:
        with EngineClient(args.connect) as client:
            if args.action == "read":
                sys.stdout.write(client.read(args.path))
            elif args.action == "write":
                value = args.value
                if args.path.rstrip("/").endswith("cgroup.procs") and value.strip() == "0":
                    value = str(os.getppid())  # the writer: the shell that ran us
                client.write(args.path, value)
            elif args.action == "mkdir":
                client.mkdir(args.path)
            elif args.action == "rmdir":
                client.rmdir(args.path)
            else:
                snapshot = cast(Snapshot, client.snapshot())
                sys.stdout.write(format_tree(snapshot, None if args.wide else NAME_COLUMN))
    except EngineError as e:
        strerror = os.strerror(e.errno) if e.errno else e.message
        path = getattr(args, "path", "")
        path = path if len(path) <= 100 else f"{path[:100]}..."
        why = f": {e.message}" if e.message and e.message != strerror else ""  # what the engine knows of it
        print(f"epc-playground cg {args.action} {path}: {strerror} ({e.code}){why}", file=sys.stderr)
        return 1
    except NoEngine as e:
        print(f"epc-playground cg: {e}", file=sys.stderr)
        return EXIT_USAGE
    return 0

"""``epc-playground mount DIR``: the engine's cgroup tree as a filesystem (FUSE); cgroupfs.py serves it.

The FUSE side (and zmq with it) is imported when the command runs, not to build the parser.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    mount = sub.add_parser(
        "mount",
        help="the cgroup tree as a real filesystem (FUSE), for cat, echo >, mkdir, find, watch",
        description="Show the engine's cgroup tree at DIR as a cgroup-v2-like filesystem until Ctrl-C or "
        "SIGTERM (which unmount it). Shell tools and scripts written for /sys/fs/cgroup work on it; a bad "
        "write fails with the kernel's errno; `echo 0 > cgroup.procs` moves the writing shell. Needs "
        "/dev/fuse and libfuse 3 (apt-get install fuse3).",
        epilog="example:\n  mkdir -p /tmp/cg && epc-playground mount /tmp/cg &\n"
        "  cat /tmp/cg/misc.capacity; mkdir /tmp/cg/pod; echo 'sgx_epc 16777216' > /tmp/cg/pod/misc.max\n"
        "  unshare -m sh -c 'mount --bind /tmp/cg /sys/fs/cgroup && ./script-for-the-real-tree.sh'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mount.add_argument("dir", metavar="DIR", help="an existing directory to mount on")
    mount.add_argument("--connect", metavar="EP", help="the engine's endpoint (default: discover it)")
    mount.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from playground.cgroupfs import mount

    return mount(args.dir, args.connect)

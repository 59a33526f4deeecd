"""The ``epc-playground`` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any, cast

from common.options import count, size
from common.units import format_size, parse_size
from wire.snapshot import Snapshot, format_tree
from workloads import cli as workload_cli

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

EXIT_USAGE = 2

RUN_DESCRIPTION = """\
Run a scenario file (TOML, the format below and in README) step by step and print KTAP: one
result per expect, `#` lines saying what was read and what was expected. Exit 0 when
all pass, 1 when anything fails (an expect, a step, the host's invariant check), 2
for a file that does not validate (nothing runs), no engine, or an engine that went
away during the run (one line: the engine (pid N) is gone).

By default the run starts an engine process of its own (or uses --connect) and runs
one `epc-playground enclave|vm` process per workload. --inproc runs the same file on
the in-process host with a virtual clock: fast, and the same file and seed give the
same KTAP and --events file, byte for byte.

Top-level keys: name, description, capacity (EPC), memory (host RAM for backing,
optional), seed. Steps, in order, one kind each ([[step]]):
  mkdir = "PATH"                       creates missing parents too
  rmdir = "PATH"
  write = { path, value, errno? }      with errno: the write must fail with it
  spawn = { name, cgroup?, kind? (enclave|vm), size, count?, pattern?, passes?,
            duration?, grow?, trim? }  count processes; passes = 0: build and enter only
  sleep = "500ms"
  kill  = { name, pick? (all|random) or index?, signal? (TERM|KILL|INT|HUP) }
  wait  = { name?, timeout? (60s) }      timed out with only stalled ones left: ends as stalled
  expect = { path, equals | matches | at_most | at_least, title? }
  expect = { name, exited, at_least | at_most | all | none, title? }
           exited: ok, ENOMEM (or another errno name), SIGBUS, OOM, killed, failed,
           stalled (still waiting on a fault that no reclaim can help)
  expect = { event, where? = { field = value }, at_least | at_most, title? }
           event: an engine event's kind (reclaim, limit_hit, sigbus, oom_kill, ...)
Sizes: 4096, 64KiB, 16MiB, or an expression over capacity and memory with + - * /
(integer division) and parentheses, e.g. size = "capacity/512"; in a write's value
and in equals, {...} is such an expression: "sgx_epc {4 * (capacity/512)}".
"""

RUN_EPILOG = """\
example (nested.toml):
  name = "nested limits"
  capacity = "16MiB"
  [[step]]
  mkdir = "t/parent/child"
  [[step]]
  write = { path = "t/parent/misc.max", value = "sgx_epc {capacity/8}" }
  [[step]]
  spawn = { name = "big", cgroup = "t/parent/child", size = "capacity/4" }
  [[step]]
  wait = { name = "big", timeout = "30s" }
  [[step]]
  expect = { name = "big", exited = "ok", all = true }
  [[step]]
  expect = { path = "t/parent/misc.events", matches = 'sgx_epc\\.max [1-9]' }
  [[step]]
  expect = { path = "t/parent/child/misc.events", equals = "sgx_epc.max 0" }

  epc-playground run nested.toml --events events.jsonl
  epc-playground run --inproc nested.toml
  epc-playground run --list                  # the bundled scenarios; run one by its name
"""


def _version() -> str:
    try:
        return version("epc-playground")
    except PackageNotFoundError:
        return "unknown"


class _OneValue(argparse.Action):
    """``cg write PATH VALUE``: exactly one VALUE, which may start with '-' (``-misc``) without a ``--``."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: Any = None
    ) -> None:
        if len(values) != 1:
            raise argparse.ArgumentError(self, "give exactly one value; quote one with spaces: 'sgx_epc 16777216'")
        setattr(namespace, self.dest, values[0])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="epc-playground", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    tui = sub.add_parser(
        "tui",
        help="the playground TUI (what `epc-playground` alone runs)",
        description="The cgroup tree with usage bars, details, workloads and events; create cgroups, set "
        "limits, spawn and kill workloads. Without --connect it starts an engine of its own and stops it "
        "on quit (or attaches to the default engine when one is running).",
    )
    tui.add_argument("--connect", metavar="EP", help="attach to a running engine and leave it running")
    tui.add_argument("--capacity", type=size, default=parse_size("128MiB"), metavar="SIZE", help="EPC of its engine")

    engine = sub.add_parser(
        "engine",
        help="run the emulated SGX host in the foreground",
        description="Run the emulated SGX host in the foreground; Ctrl-C or SIGTERM stops it cleanly. "
        "Without --bind it listens on ipc in its runtime directory, where workloads and "
        "`epc-playground cg` find it by themselves. tcp is always CURVE-authenticated, with the keys "
        "in the runtime directory's keys/ (made when missing; see `epc-playground keys`), and tcp "
        "clients cannot register processes. It exits 2 with one line when it cannot listen: "
        "another engine on the socket, a port in use, a runtime directory that is not yours.",
    )
    engine.add_argument("--capacity", type=size, default=parse_size("128MiB"), metavar="SIZE", help="EPC size (128MiB)")
    engine.add_argument("--memory", type=size, metavar="SIZE", help="host RAM for backing store (default: unlimited)")
    engine.add_argument(
        "--bind", metavar="EP", help="ipc://PATH or tcp://HOST:PORT (tcp: a loopback address unless --allow-remote)"
    )
    engine.add_argument(
        "--allow-remote", action="store_true", help="let --bind name a non-loopback address (other hosts, with keys)"
    )
    engine.add_argument("--seed", type=int, default=0, help="seed for anything random (0)")
    engine.add_argument("-v", "--verbose", action="store_true", help="log each warning and more")

    keys = sub.add_parser(
        "keys",
        help="make the CURVE keys that tcp needs",
        description="Make the server and client CURVE key pairs (zmq's certificate files, each 0600 in a 0700 "
        "directory) where missing; keys already there are kept. A tcp engine lets in every client whose "
        "public key (NAME.key) is in that directory when it starts; a tcp client uses server.key, "
        "client.key and client.key_secret from it.",
    )
    keys.add_argument("--dir", metavar="DIR", help="where (default: $EPC_PLAYGROUND_KEYS, else the runtime's keys/)")

    workload_cli.add_parsers(sub)  # enclave, vm

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
    cg_sub.add_parser("tree", help="the cgroups with their usage and limits")

    run = sub.add_parser(
        "run",
        help="a headless scenario from a TOML file: KTAP on stdout",
        description=RUN_DESCRIPTION,
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("file", nargs="?", metavar="FILE.toml", help="a scenario file, or a bundled scenario's name")
    run.add_argument("--list", action="store_true", help="list the bundled scenarios and exit")
    run.add_argument("--connect", metavar="EP", help="run on this running engine (default: start one for the run)")
    run.add_argument("--events", metavar="OUT.jsonl", help="write every engine event to this file as JSON Lines")
    run.add_argument("--seed", type=count, help="override the file's seed (workload patterns, random kills)")
    run.add_argument(
        "--inproc", action="store_true", help="the in-process host on a virtual clock: fast, byte-for-byte repeatable"
    )

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

    from playground import test_sgx

    sgx = sub.add_parser(
        "test-sgx",
        help="a stand-in for the kernel selftest binary test_sgx",
        description=test_sgx.DESCRIPTION + " Also installed as `test_sgx`.",
        epilog="example (what the selftest's ash_cgexec.sh does):\n"
        "  sh -c 'echo 0 > /sys/fs/cgroup/pod/cgroup.procs && exec test_sgx -t unclobbered_vdso_oversubscribed'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    test_sgx.add_arguments(sgx)
    handlers = {tui: cmd_tui, engine: cmd_engine, keys: cmd_keys, cg: cmd_cg, run: cmd_run, mount: cmd_mount}
    for command, handler in (*handlers.items(), (sgx, cmd_test_sgx)):
        command.set_defaults(handler=handler)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["tui"])
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)


def cmd_tui(args: argparse.Namespace) -> int:
    import os

    from engined import runtime
    from playground.launch import drain_output, start_engine_process
    from playground.tui.app import EpcApp

    engine = None
    endpoint = args.connect
    if endpoint is None:
        try:
            running = runtime.read_runtime_file()
        except runtime.Refused as e:
            print(f"epc-playground: {e}", file=sys.stderr)
            return EXIT_USAGE
        if running is not None:
            endpoint = str(running["endpoint"])
        else:
            try:
                engine, endpoint = start_engine_process(["--capacity", str(args.capacity)], dict(os.environ))
            except RuntimeError as e:
                print(f"epc-playground: {e}", file=sys.stderr)
                return EXIT_USAGE
            drain_output(engine)  # nobody reads its pipes while the TUI runs: it must never block on them
    app = EpcApp(endpoint, owns_engine=engine)
    app.capacity = str(args.capacity)
    try:
        app.run()
    finally:
        if engine is not None and engine.poll() is None:
            engine.terminate()
            engine.wait(10)
    return 0


def cmd_engine(args: argparse.Namespace) -> int:
    from engined.server import run_engine

    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )

    def ready(endpoint: str) -> None:
        print(f"epc-playground engine: serving {endpoint} (EPC {format_size(args.capacity)}); stop with Ctrl-C")
        sys.stdout.flush()

    try:
        return run_engine(
            args.capacity, args.memory, args.bind, seed=args.seed, ready=ready, allow_remote=args.allow_remote
        )
    except (RuntimeError, ValueError) as e:
        print(f"epc-playground engine: {e}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:
        print(f"epc-playground engine: cannot listen: {e}", file=sys.stderr)
        return EXIT_USAGE


def cmd_keys(args: argparse.Namespace) -> int:
    from engined import curve, runtime

    try:
        made = curve.make_keys(args.dir)
    except (runtime.Refused, OSError) as e:
        print(f"epc-playground keys: {e}", file=sys.stderr)
        return EXIT_USAGE
    directory = args.dir or curve.keys_dir()
    copy = f"{directory}/{{server.key,client.key,client.key_secret}}"
    print(f"{'made' if made else 'kept'} CURVE keys in {directory}: server and client pairs, NAME.key and .key_secret")
    print("a tcp client elsewhere needs server.key, client.key and client.key_secret in a 0700 directory of its own,")
    print(f"named by ${curve.KEYS_ENV} (or its runtime dir's keys/), e.g.:")
    print(f"  ssh HOST 'mkdir -m 700 epc-keys' && scp -p {copy} HOST:epc-keys/")
    print(f"  then on HOST: {curve.KEYS_ENV}=~/epc-keys epc-playground cg --connect tcp://THIS-HOST:PORT tree")
    print("the engine lets in every NAME.key here when it starts: restart it after adding a client's public key")
    return 0


def cmd_cg(args: argparse.Namespace) -> int:
    import os

    from workloads.client import EngineClient, EngineError, NoEngine

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
                sys.stdout.write(format_tree(cast(Snapshot, client.snapshot())))
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


def cmd_mount(args: argparse.Namespace) -> int:
    from playground.cgroupfs import mount

    return mount(args.dir, args.connect)


def cmd_test_sgx(args: argparse.Namespace) -> int:
    from playground import test_sgx

    return test_sgx.run(args)


def cmd_run(args: argparse.Namespace) -> int:
    from playground.scenario.command import run_command

    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())

"""The ``epc-playground`` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version

from engine.units import format_size, parse_size

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


def _version() -> str:
    try:
        return version("epc-playground")
    except PackageNotFoundError:
        return "unknown"


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text.removesuffix("s"))
    except ValueError:
        value = -1.0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration in seconds, like 5 or 2.5s")
    return value


def _workload_options(parser: argparse.ArgumentParser) -> None:
    """What every workload command takes: its name, where it runs, which engine."""
    parser.add_argument("--name", default="", help="a name to show in the TUI and events")
    parser.add_argument("--cgroup", default="", metavar="PATH", help="move itself there first (default: stay put)")
    parser.add_argument("--connect", metavar="EP", help="the engine's endpoint (default: discover it)")


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
    tui.add_argument("--capacity", type=_size, default=parse_size("128MiB"), metavar="SIZE", help="EPC of its engine")

    engine = sub.add_parser(
        "engine",
        help="run the emulated SGX host in the foreground",
        description="Run the emulated SGX host in the foreground; Ctrl-C or SIGTERM stops it cleanly. "
        "Without --bind it listens on ipc in its runtime directory, where workloads and "
        "`epc-playground cg` find it by themselves.",
    )
    engine.add_argument(
        "--capacity", type=_size, default=parse_size("128MiB"), metavar="SIZE", help="EPC size (128MiB)"
    )
    engine.add_argument("--memory", type=_size, metavar="SIZE", help="host RAM for backing store (default: unlimited)")
    engine.add_argument(
        "--bind", metavar="EP", help="ipc://PATH or tcp://HOST:PORT (tcp: loopback unless you name a host)"
    )
    engine.add_argument("--seed", type=int, default=0, help="seed for anything random (0)")
    engine.add_argument("-v", "--verbose", action="store_true", help="log each warning and more")

    enclave = sub.add_parser(
        "enclave",
        help="one enclave workload, in the caller's cgroup",
        description="Build an enclave like the kernel selftest's (ECREATE, ADD_PAGES of a TCS, code and the "
        "heap, EINIT), touch its heap in a pattern, release it and exit. Exit status: 0 ok, 1 an errno "
        "(named on stderr, e.g. ENOMEM), killed by SIGBUS on a fault the host cannot serve, by SIGKILL "
        "when the OOM killer picks it, 2 for usage or connection errors.",
    )
    enclave.add_argument("--size", type=_size, required=True, metavar="SIZE", help="heap size, e.g. 64MiB")
    enclave.add_argument("--pattern", default="sequential", choices=("sequential", "random", "hotcold", "shifting"))
    enclave.add_argument("--passes", type=_positive, default=1, help="times over the heap (1)")
    enclave.add_argument("--duration", type=_seconds, metavar="SECONDS", help="run this long instead of --passes")
    enclave.add_argument("--seed", type=int, default=0, help="seed of the random patterns (0)")
    enclave.add_argument("--batch", type=_positive, default=256, help="pages per access request (256)")
    enclave.add_argument("--grow", type=_size, default=0, metavar="SIZE", help="SGX2: grow by EAUG after EINIT")
    enclave.add_argument("--trim", type=_size, default=0, metavar="SIZE", help="SGX2: trim and remove at the end")
    _workload_options(enclave)

    vm = sub.add_parser(
        "vm",
        help="a guest VM holding virtual EPC (unreclaimable)",
        description="Open virtual EPC for a guest and touch it page by page; the host cannot reclaim it, so at "
        "the cgroup's limit the guest dies by SIGBUS. Exit status as for `enclave`.",
    )
    vm.add_argument("--size", type=_size, required=True, metavar="SIZE", help="guest EPC size, e.g. 32MiB")
    vm.add_argument("--passes", type=_positive, default=1, help="times over its EPC (1)")
    vm.add_argument("--duration", type=_seconds, metavar="SECONDS", help="hold it this long")
    _workload_options(vm)

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
    write = cg_sub.add_parser("write", help="write a value to a file")
    write.add_argument("path")
    write.add_argument("value")
    cg_sub.add_parser("mkdir", help="create a cgroup").add_argument("path")
    cg_sub.add_parser("rmdir", help="remove a cgroup").add_argument("path")
    cg_sub.add_parser("tree", help="the cgroups with their usage and limits")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    commands: dict[str, Callable[[argparse.Namespace], int]] = {
        "tui": cmd_tui,
        "engine": cmd_engine,
        "enclave": cmd_enclave,
        "vm": cmd_vm,
        "cg": cmd_cg,
    }
    if args.command is None:
        return cmd_tui(parser.parse_args(["tui"]))
    return commands[args.command](args)


def cmd_tui(args: argparse.Namespace) -> int:
    import os

    from engine import protocol
    from playground.launch import start_engine_process
    from playground.tui.app import EpcApp

    engine = None
    endpoint = args.connect
    if endpoint is None:
        running = protocol.read_runtime_file()
        if running is not None:
            endpoint = str(running["endpoint"])
        else:
            try:
                engine, endpoint = start_engine_process(["--capacity", str(args.capacity)], dict(os.environ))
            except RuntimeError as e:
                print(f"epc-playground: {e}", file=sys.stderr)
                return EXIT_USAGE
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
    from engine.server import run_engine

    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )

    def ready(endpoint: str) -> None:
        print(f"epc-playground engine: serving {endpoint} (EPC {format_size(args.capacity)}); stop with Ctrl-C")
        sys.stdout.flush()

    try:
        return run_engine(args.capacity, args.memory, args.bind, seed=args.seed, ready=ready)
    except (RuntimeError, ValueError) as e:
        print(f"epc-playground engine: {e}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:
        print(f"epc-playground engine: cannot listen: {e}", file=sys.stderr)
        return EXIT_USAGE


def cmd_enclave(args: argparse.Namespace) -> int:
    from workloads.enclave import EnclavePlan, run_enclave
    from workloads.process import run_workload

    plan = EnclavePlan(args.size, args.pattern, args.passes, args.duration, args.seed, args.batch)
    plan.grow_pages = -(-args.grow // 4096)
    plan.trim_pages = -(-args.trim // 4096)
    return run_workload(
        lambda client: run_enclave(client, plan),
        endpoint=args.connect,
        role="enclave",
        name=args.name,
        cgroup=args.cgroup,
    )


def cmd_vm(args: argparse.Namespace) -> int:
    from workloads.process import run_workload
    from workloads.vm import run_vm

    return run_workload(
        lambda client: run_vm(client, args.size, passes=args.passes, duration_s=args.duration),
        endpoint=args.connect,
        role="vm",
        name=args.name,
        cgroup=args.cgroup,
    )


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
                sys.stdout.write(format_tree(client.snapshot()))
    except EngineError as e:
        strerror = os.strerror(e.errno) if e.errno else e.message
        print(f"epc-playground cg {args.action} {getattr(args, 'path', '')}: {strerror} ({e.code})", file=sys.stderr)
        return 1
    except NoEngine as e:
        print(f"epc-playground cg: {e}", file=sys.stderr)
        return EXIT_USAGE
    return 0


def format_tree(snapshot: dict[str, object]) -> str:
    """The cgroup tree with sgx_epc usage, limit and events, and backing memory."""
    rows = [("cgroup", "misc.current", "misc.max", "peak", "events", "memory", "tasks")]
    cgroups = snapshot["cgroups"]
    assert isinstance(cgroups, list)
    for cg in cgroups:
        depth = cg["path"].count("/") if cg["path"] != "/" else 0
        name = "/ (all EPC)" if cg["path"] == "/" else "  " * (depth - 1) + cg["path"].rsplit("/", 1)[-1]
        limit = (
            "-" if cg["misc_max"] is None else "max" if cg["misc_max"] >= (1 << 64) - 1 else format_size(cg["misc_max"])
        )
        rows.append(
            (
                name,
                format_size(cg["misc_current"]),
                limit,
                format_size(cg["misc_peak"]),
                str(cg["misc_events"]) if cg["path"] != "/" else "-",
                format_size(cg["memory_current"]),
                str(len(cg["procs"])),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    capacity, free = snapshot["capacity"], snapshot["free"]
    assert isinstance(capacity, int) and isinstance(free, int)
    lines.append(
        f"EPC {format_size(capacity)}, {format_size(free)} free, ksgxd {'running' if snapshot['ksgxd'] else 'idle'}"
    )
    return "\n".join(line.rstrip() for line in lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())

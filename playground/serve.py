"""``epc-playground engine``, the emulated host in the foreground, and ``epc-playground keys``, the CURVE keys
its tcp endpoints need."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from common.options import EXIT_USAGE, add_knob_options, capacity, parsed_knobs, profile, size
from common.units import format_size, parse_size


def add_parsers(sub: Any) -> None:
    """The ``engine`` and ``keys`` commands."""
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
    engine.add_argument(
        "--capacity", type=capacity, default=parse_size("128MiB"), metavar="SIZE", help="EPC size (128MiB)"
    )
    engine.add_argument("--memory", type=size, metavar="SIZE", help="host RAM for backing store (default: unlimited)")
    engine.add_argument(
        "--bind", metavar="EP", help="ipc://PATH or tcp://HOST:PORT (tcp: a loopback address unless --allow-remote)"
    )
    engine.add_argument(
        "--allow-remote", action="store_true", help="let --bind name a non-loopback address (other hosts, with keys)"
    )
    engine.add_argument("--seed", type=int, default=0, help="seed for anything random (0)")
    engine.add_argument(
        "--profile",
        type=profile,
        metavar="NAME|FILE",
        help="the CPU whose SGX costs drive emulated time: sgx1-client, icelake-sp, sapphire-rapids (the "
        "default), zero, or a TOML file (docs/costs.md)",
    )
    engine.add_argument("-v", "--verbose", action="store_true", help="log each warning and more")
    add_knob_options(engine)
    engine.set_defaults(handler=run_engine_command)

    keys = sub.add_parser(
        "keys",
        help="make the CURVE keys that tcp needs",
        description="Make the server and client CURVE key pairs (zmq's certificate files, each 0600 in a 0700 "
        "directory) where missing; keys already there are kept. A tcp engine lets in every client whose "
        "public key (NAME.key) is in that directory when it starts; a tcp client uses server.key, "
        "client.key and client.key_secret from it.",
    )
    keys.add_argument("--dir", metavar="DIR", help="where (default: $EPC_PLAYGROUND_KEYS, else the runtime's keys/)")
    keys.set_defaults(handler=make_keys)


def run_engine_command(args: argparse.Namespace) -> int:
    from engined.main import run_engine

    knobs = parsed_knobs(args)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )

    def ready(endpoint: str) -> None:
        print(f"epc-playground engine: serving {endpoint} (EPC {format_size(args.capacity)}); stop with Ctrl-C")
        if knobs.mark():
            print(f"epc-playground engine: {knobs.mark()}")
        sys.stdout.flush()

    try:
        return run_engine(
            args.capacity,
            args.memory,
            args.bind,
            seed=args.seed,
            ready=ready,
            allow_remote=args.allow_remote,
            knobs=knobs,
            profile=args.profile,
        )
    except (RuntimeError, ValueError) as e:
        print(f"epc-playground engine: {e}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:
        print(f"epc-playground engine: cannot listen: {e}", file=sys.stderr)
        return EXIT_USAGE


def make_keys(args: argparse.Namespace) -> int:
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

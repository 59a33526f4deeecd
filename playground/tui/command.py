"""``epc-playground tui`` (and ``epc-playground`` alone): the TUI on a running engine or on one of its own.

No textual here: the app is imported when the command runs, not to build the parser.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from common.options import EXIT_USAGE, add_knob_options, given_knobs, knob_argv, parsed_knobs, profile, size
from common.units import format_size
from playground.tui.config import default_path, load_config


def add_parser(sub: Any) -> None:
    tui = sub.add_parser(
        "tui",
        help="the playground TUI (what `epc-playground` alone runs)",
        description="The cgroup tree with usage bars, details, workloads and events; create cgroups, set "
        "limits, spawn and kill workloads. Without --connect it starts an engine of its own and stops it "
        "on quit (or attaches to the default engine when one is running).",
    )
    tui.add_argument("--connect", metavar="EP", help="attach to a running engine and leave it running")
    tui.add_argument(
        "--capacity", type=size, metavar="SIZE", help="EPC of its engine (default: the config file's, or 128MiB)"
    )
    tui.add_argument(
        "--profile",
        type=profile,
        metavar="NAME|FILE",
        help="the CPU whose SGX costs drive the emulated time of the engine this TUI starts (default: "
        "sapphire-rapids; docs/costs.md); an engine already running keeps its own",
    )
    tui.add_argument(
        "--config",
        metavar="FILE",
        type=Path,
        help="the config file (default: $XDG_CONFIG_HOME/epc-playground/config.toml; see docs/tui.md)",
    )
    tui.add_argument(
        "--inproc",
        metavar="SCENARIO",
        help="no engine: run a scenario (a file, or a bundled scenario's name) on the in-process host, on a "
        "virtual clock, and watch it; step mode steps the virtual clock (its EPC is the file's; its knobs the "
        "file's [knobs] with the options below over them)",
    )
    add_knob_options(tui)
    tui.set_defaults(handler=run)


KNOBS_ELSEWHERE = "the knob options apply to the engine this TUI starts, and"
PROFILE_ELSEWHERE = "--profile applies to the engine this TUI starts, and"


def _engine_options(args: argparse.Namespace) -> str:
    """What the options for the TUI's own engine are called, when any was given: "" when none."""
    if given_knobs(args):
        return KNOBS_ELSEWHERE
    return PROFILE_ELSEWHERE if args.profile is not None else ""


def run(args: argparse.Namespace) -> int:
    if args.inproc is not None:
        from playground.tui.inproc_app import run_inproc

        return run_inproc(args)
    from engined import runtime
    from playground.launch import drain_output, start_engine_process
    from playground.tui.app import EpcApp
    from workloads.client import EngineClient, NoEngine

    knobs = parsed_knobs(args)  # a bad one: exit 2, before anything starts
    elsewhere = _engine_options(args)
    if elsewhere and args.connect is not None:
        print(f"epc-playground tui: {elsewhere} --connect names one that runs already", file=sys.stderr)
        return EXIT_USAGE
    path = args.config if args.config is not None else default_path()
    if args.config is not None and not path.is_file():
        print(f"epc-playground tui: no config file at {path} (create it, or leave out --config)", file=sys.stderr)
        return EXIT_USAGE
    try:
        config = load_config(path)
    except OSError as e:
        print(f"epc-playground tui: cannot read the config file {path}: {e.strerror}", file=sys.stderr)
        return EXIT_USAGE
    capacity = args.capacity if args.capacity is not None else config.capacity
    engine = None
    endpoint = args.connect
    attached = ""
    if endpoint is not None:  # an engine we attach to must be there before the screen opens
        try:
            EngineClient(endpoint, timeout_s=5).close()
        except NoEngine as e:
            print(f"epc-playground tui: {e}", file=sys.stderr)
            return EXIT_USAGE
    else:
        try:
            running = runtime.read_runtime_file()
        except runtime.Refused as e:
            print(f"epc-playground: {e}", file=sys.stderr)
            return EXIT_USAGE
        if running is not None:
            if elsewhere:
                what = "the knobs" if elsewhere == KNOBS_ELSEWHERE else "--profile"
                print(
                    f"epc-playground tui: {elsewhere} one runs already at {running['endpoint']} (pid "
                    f"{running['pid']}): stop it, or give {what} to `epc-playground engine`",
                    file=sys.stderr,
                )
                return EXIT_USAGE
            endpoint = str(running["endpoint"])
            attached = (
                f"attached to the engine already running at {endpoint} (pid {running['pid']}, EPC "
                f"{format_size(int(running['capacity']))}): --capacity applies only to an engine this TUI "
                "starts, and q leaves this one running"
            )
        else:
            try:
                with_profile = ["--profile", args.profile] if args.profile is not None else []
                engine, endpoint = start_engine_process(
                    ["--capacity", str(capacity), *knob_argv(knobs), *with_profile], dict(os.environ)
                )
            except RuntimeError as e:
                print(f"epc-playground: {e}", file=sys.stderr)
                return EXIT_USAGE
            drain_output(engine)  # nobody reads its pipes while the TUI runs: it must never block on them
    app = EpcApp(endpoint, owns_engine=engine, attached=attached, config=config)
    app.capacity = str(capacity)
    app.knob_argv = knob_argv(knobs)  # r starts a new engine with them too...
    app.profile_argv = ["--profile", args.profile] if args.profile is not None else []  # ...and this profile
    try:
        app.run()
    finally:
        app.stop_everything()  # after a crash too: nothing this TUI started outlives it
    return app.return_code or 0

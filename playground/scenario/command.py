"""The ``epc-playground run`` command: its options and help, choose the backend, write KTAP and JSON Lines,
return the exit code.  The scenario machinery is imported when the command runs, not to build the parser.

Exit status: 0 when every expect passed (and every other step did what it said, and
the host's invariants hold); 1 when anything failed; 2 for a file that does not
validate, no engine to run on, or an engine that went away (noticed within a second,
in any step or between steps: one line, the engine (pid N) is gone).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from typing import TYPE_CHECKING, Any, TextIO

from common.knobs import Knobs
from common.options import EXIT_USAGE as EXIT_INVALID  # runner.EXIT_INVALID: an invalid file, no engine
from common.options import add_knob_options, count, parsed_knobs, profile

if TYPE_CHECKING:
    from playground.scenario.backends.base import Backend
    from playground.scenario.model import Scenario

PROG = "epc-playground run"
EXIT_INTERRUPTED = 130  # as a shell reports SIGINT
RUN_DESCRIPTION = """\
Run a scenario file (TOML, the format below and in README) step by step and print KTAP: one
result per expect, `#` lines saying what was read and what was expected, and a last one
for the other steps and the host's invariant check. Exit 0 when
all pass, 1 when anything fails (an expect, a step, the host's invariant check), 2
for a file that does not validate (nothing runs), no engine, or an engine that went
away during the run (one line: the engine (pid N) is gone).

By default the run starts an engine process of its own (or uses --connect) and runs
one `epc-playground enclave|vm` process per workload. --inproc runs the same file on
the in-process host with a virtual clock: fast, and the same file and seed give the
same KTAP and --events file, byte for byte.

Top-level keys: name, description, capacity (EPC), memory (host RAM for backing,
optional), seed; a [knobs] table (nr_to_scan, low_pages, high_pages, cg_margin,
cg_low_limit, async_reclaim: docs/knobs.md), under the knob options below.
Steps, in order, one kind each ([[step]]):
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


def add_parser(sub: Any) -> None:
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
    run.add_argument(
        "--profile",
        type=profile,
        metavar="NAME|FILE",
        help="the CPU whose SGX costs drive emulated time (default: the file's profile, else sapphire-rapids; "
        "docs/costs.md)",
    )
    run.add_argument(
        "-q", "--quiet", action="store_true", help="no progress on stderr (a line every 5 s where it is no terminal)"
    )
    add_knob_options(run)
    run.set_defaults(handler=run_command)


class JsonLines:
    """Engine events as JSON Lines: one object a line, keys sorted, so equal runs give equal bytes.

    With knobs that are not V17's the first line says so: ``{"kind": "knobs", "knobs":
    {...}, "note": "knobs (not the kernel's): ..."}``; with V17's there is no such line."""

    def __init__(self, out: TextIO, knobs: Knobs | None = None) -> None:
        self.out = out
        if knobs is not None and knobs.mark():
            self([{"kind": "knobs", "knobs": knobs.changed(), "note": knobs.mark()}])

    def __call__(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            self.out.write(json.dumps(event, sort_keys=True, separators=(", ", ": ")) + "\n")


def list_scenarios(out: TextIO) -> int:
    from playground.scenario.load import ScenarioError, load_scenario
    from playground.scenarios import bundled

    for name, path in bundled().items():
        try:
            scenario = load_scenario(path)
            out.write(f"{name:<28} {scenario.description or scenario.name}\n")
        except ScenarioError as e:
            out.write(f"{name:<28} (invalid: {e})\n")
    return 0


def run_command(args: argparse.Namespace) -> int:
    from playground.scenarios import load_or_say

    if args.list:
        return list_scenarios(sys.stdout)
    if args.file is None:
        print(f"{PROG}: give a scenario file or a bundled scenario's name (--list shows them)", file=sys.stderr)
        return EXIT_INVALID
    scenario = load_or_say(args.file, PROG)
    if scenario is None:
        return EXIT_INVALID
    if args.seed is not None:
        scenario = _with_seed(scenario, args.seed)
    scenario = _with_knobs(scenario, parsed_knobs(args, scenario.knobs.changed()))  # a bad one: exit 2
    try:  # before anything starts: a path that cannot be written runs nothing
        events_file = open(args.events, "w", encoding="utf-8") if args.events else None  # noqa: SIM115
    except OSError as e:
        print(f"{PROG}: --events {args.events}: cannot write it: {e.strerror}", file=sys.stderr)
        return EXIT_INVALID
    try:
        return _start_and_run(args, scenario, events_file)
    finally:
        if events_file is not None:
            events_file.close()


def _start_and_run(args: argparse.Namespace, scenario: Scenario, events_file: TextIO | None) -> int:
    from playground.scenario.backends.base import BackendError

    with tempfile.TemporaryDirectory(prefix="epc-run-") as runtime_dir:
        try:
            backend = _backend(args, scenario, runtime_dir)
        except BackendError as e:
            print(f"{PROG}: {e}", file=sys.stderr)
            return EXIT_INVALID
        try:
            return _run(scenario, backend, events_file, args.quiet)
        except BackendError as e:  # also SizeError: the file's sizes do not fit this engine (nothing ran)
            print(f"{PROG}: {e}", file=sys.stderr)
            return EXIT_INVALID
        except KeyboardInterrupt:
            print(f"\n{PROG}: interrupted; stopping the workloads", file=sys.stderr)
            return EXIT_INTERRUPTED
        finally:
            backend.close()


def _with_seed(scenario: Scenario, seed: int) -> Scenario:
    from dataclasses import replace

    return replace(scenario, seed=seed)


def _with_knobs(scenario: Scenario, knobs: Knobs) -> Scenario:
    from dataclasses import replace

    return replace(scenario, knobs=knobs)


def _backend(args: argparse.Namespace, scenario: Scenario, runtime_dir: str) -> Backend:
    from playground.scenario.backends.base import BackendError
    from playground.scenario.model import Spawn

    if args.inproc:
        if args.connect:
            raise BackendError("--inproc runs its own in-process host: leave out --connect")
        from playground.scenario.backends.inproc import InprocBackend

        return InprocBackend(
            scenario.capacity, scenario.memory, scenario.seed, scenario.knobs, _profile(args, scenario)
        )
    from playground.scenario.backends.real import RealBackend
    from workloads.client import NoEngine

    if args.connect:
        spawns = [step.number for step in scenario.steps if isinstance(step, Spawn)]
        if args.connect.startswith("tcp://") and spawns:
            raise BackendError(
                f"{scenario.source}: step {spawns[0]} (spawn): workloads register only over ipc, where the kernel "
                f"tells the engine their pid; run it on the engine's host with its ipc endpoint, not {args.connect}"
            )
        try:
            backend = RealBackend.attach(args.connect, scenario.memory)
        except NoEngine as e:
            raise BackendError(str(e)) from None
        if backend.client.knobs != scenario.knobs.changed():
            backend.close()
            theirs = Knobs.from_mapping(backend.client.knobs).mark() or "V17's knobs"
            ours = scenario.knobs.mark() or "V17's knobs"
            raise BackendError(
                f"the engine at {args.connect} runs {theirs}, but this run asks for {ours} (the file's [knobs] and "
                "the command line's): start an engine with those, or leave out --connect"
            )
        return backend
    return RealBackend.start(
        scenario.capacity, scenario.memory, scenario.seed, runtime_dir, scenario.knobs, _profile(args, scenario)
    )


def _profile(args: argparse.Namespace, scenario: Scenario) -> str | None:
    """The cost profile: --profile, else the file's, else None (the default)."""
    return args.profile if args.profile is not None else scenario.profile


def _run(scenario: Scenario, backend: Backend, events_file: TextIO | None, quiet: bool) -> int:
    from playground.scenario.ktap import KtapWriter, Observers, ProgressLine, RunObserver
    from playground.scenario.runner import run_scenario

    progress = ProgressLine(sys.stderr, terminal=sys.stderr.isatty(), prefix=f"{PROG}: ")
    observers: list[RunObserver] = [KtapWriter(sys.stdout, before_write=progress.clear)]
    if not quiet:
        observers.append(progress)
    sink = JsonLines(events_file, scenario.knobs) if events_file is not None else None
    report = run_scenario(scenario, backend, Observers(*observers), events=sink)
    return report.exit_code

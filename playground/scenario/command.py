"""The ``epc-playground run`` command: choose the backend, write KTAP and JSON Lines, return the exit code.

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
from typing import Any, TextIO

from playground.scenario.backends.base import Backend, BackendError
from playground.scenario.bundled import bundled, resolve
from playground.scenario.ktap import KtapWriter, Observers, ProgressLine, RunObserver
from playground.scenario.load import ScenarioError, load_scenario
from playground.scenario.model import Scenario, Spawn
from playground.scenario.runner import EXIT_INVALID, run_scenario

PROG = "epc-playground run"
EXIT_INTERRUPTED = 130  # as a shell reports SIGINT


class JsonLines:
    """Engine events as JSON Lines: one object a line, keys sorted, so equal runs give equal bytes."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def __call__(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            self.out.write(json.dumps(event, sort_keys=True, separators=(", ", ": ")) + "\n")


def list_scenarios(out: TextIO) -> int:
    for name, path in bundled().items():
        try:
            scenario = load_scenario(path)
            out.write(f"{name:<28} {scenario.description or scenario.name}\n")
        except ScenarioError as e:
            out.write(f"{name:<28} (invalid: {e})\n")
    return 0


def run_command(args: argparse.Namespace) -> int:
    if args.list:
        return list_scenarios(sys.stdout)
    if args.file is None:
        print(f"{PROG}: give a scenario file or a bundled scenario's name (--list shows them)", file=sys.stderr)
        return EXIT_INVALID
    try:
        scenario = load_scenario(resolve(args.file))
    except ScenarioError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return EXIT_INVALID
    if args.seed is not None:
        scenario = _with_seed(scenario, args.seed)
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
    with tempfile.TemporaryDirectory(prefix="epc-run-") as runtime_dir:
        try:
            backend = _backend(args, scenario, runtime_dir)
        except BackendError as e:
            print(f"{PROG}: {e}", file=sys.stderr)
            return EXIT_INVALID
        try:
            return _run(scenario, backend, events_file)
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


def _backend(args: argparse.Namespace, scenario: Scenario, runtime_dir: str) -> Backend:
    if args.inproc:
        if args.connect:
            raise BackendError("--inproc runs its own in-process host: leave out --connect")
        from playground.scenario.backends.inproc import InprocBackend

        return InprocBackend(scenario.capacity, scenario.memory, scenario.seed)
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
            return RealBackend.attach(args.connect, scenario.memory)
        except NoEngine as e:
            raise BackendError(str(e)) from None
    return RealBackend.start(scenario.capacity, scenario.memory, scenario.seed, runtime_dir)


def _run(scenario: Scenario, backend: Backend, events_file: TextIO | None) -> int:
    progress = ProgressLine(sys.stderr)
    observers: list[RunObserver] = [KtapWriter(sys.stdout, before_write=progress.clear)]
    if sys.stderr.isatty():
        observers.append(progress)
    sink = JsonLines(events_file) if events_file is not None else None
    report = run_scenario(scenario, backend, Observers(*observers), events=sink)
    return report.exit_code

"""A scenario run from the TUI: the runner on the TUI's engine in a worker thread, its KTAP
lines and progress handed to the app through ``call_from_thread``."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import Any, Protocol

from common.knobs import Knobs
from playground.scenario.ktap import Progress, RunObserver
from workloads.client import NoEngine


class ScenarioHost(Protocol):
    """What the worker needs of the app (all called on the app's thread)."""

    def call_from_thread(self, callback: Callable[..., Any], *args: Any) -> Any: ...
    def scenario_line(self, line: str) -> None: ...
    def scenario_progress(self, text: str) -> None: ...
    def scenario_note(self, text: str) -> None: ...
    def scenario_done(self, name: str, summary: str, severity: str) -> None: ...


def run_scenario_thread(host: ScenarioHost, endpoint: str, scenario: Any, stop: threading.Event) -> None:
    """In a worker thread: the runner on this engine, its KTAP into the event log."""
    from playground.scenario.backends.base import BackendError
    from playground.scenario.backends.real import RealBackend
    from playground.scenario.ktap import KtapWriter, Observers
    from playground.scenario.runner import run_scenario

    name = scenario.name
    try:
        backend = RealBackend.attach(endpoint, scenario.memory)
    except (NoEngine, BackendError) as e:
        host.call_from_thread(host.scenario_done, name, f"cannot run: {e}", "error")
        return
    try:
        knobs = Knobs.from_mapping(backend.client.knobs)
    except ValueError:  # an engine this client cannot read: its KTAP says what the file asked for
        knobs = scenario.knobs
    if knobs != scenario.knobs:  # the engine keeps its knobs: the KTAP must say the ones the run had
        theirs = knobs.short() or "V17's"
        host.call_from_thread(host.scenario_note, f"{name}: runs with this engine's knobs ({theirs}), not the file's")
        scenario = dataclasses.replace(scenario, knobs=knobs)
    try:
        ktap = KtapWriter(_LinesOut(lambda line: host.call_from_thread(host.scenario_line, line)))
        report = run_scenario(scenario, backend, Observers(ktap, _ProgressOut(host, name)), stop=stop)
    except BackendError as e:
        host.call_from_thread(host.scenario_done, name, f"stopped: {e}", "error")
        return
    finally:
        backend.close()
    how = "stopped" if report.cancelled else "passed" if report.exit_code == 0 else "FAILED"
    summary = f"{how}: {report.passed} of {len(report.results)} expects passed"
    if report.step_failures:
        summary += f", {len(report.step_failures)} steps failed"
    host.call_from_thread(host.scenario_done, name, summary, "information" if how == "passed" else "warning")


class _LinesOut:
    """A text stream that hands each complete line to ``emit`` (KTAP into the event log)."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        self.emit = emit
        self.partial = ""

    def write(self, text: str) -> int:
        *lines, self.partial = (self.partial + text).split("\n")
        for line in lines:
            self.emit(line)
        return len(text)

    def flush(self) -> None:
        pass


class _ProgressOut(RunObserver):
    """A scenario's progress into the status line, its notes (``# ...``) to the app too."""

    def __init__(self, host: ScenarioHost, name: str) -> None:
        self.host, self.name = host, name

    def progress(self, progress: Progress) -> None:
        step = f"step {progress.step}/{progress.total} ({progress.kind})" if progress.step else "finishing"
        self.host.call_from_thread(self.host.scenario_progress, f"   scenario {self.name}: {step}")

    def note(self, text: str) -> None:
        self.host.call_from_thread(self.host.scenario_note, text)

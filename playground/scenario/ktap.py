"""KTAP output of a scenario run (the kernel's test format), and the stderr progress line.

One result per ``expect``: ``ok N - description`` or ``not ok N - description``, then
``#`` lines saying what was read and what was expected.  Failures of other steps (a
write that had to fail with an errno, a wait that timed out) and a broken invariant
are ``# FAIL step N ...`` diagnostics as they happen, and one more result after the
expects' covers them all (``not ok N - the other steps and the host's invariants``,
then ``# failed: step 3 (write), ...``), so the plan counts it and a KTAP parser that
reads only the results sees the run fail.  The last line is kselftest's
``# Totals: pass:P fail:F error:E`` (E: the other steps that failed).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TextIO

from playground.scenario.model import Scenario

LINE_EVERY_S = 5.0  # how often a run's progress is a line of its own when stderr is no terminal


class TextOut(Protocol):
    """Where KTAP goes: stdout, a file, or anything with write and flush (the TUI's event log)."""

    def write(self, text: str, /) -> int: ...

    def flush(self) -> None: ...


@dataclass(slots=True)
class Result:
    """One expect's outcome: its KTAP number, its step, and what to say when it failed."""

    number: int
    step: int
    ok: bool
    description: str
    diagnostics: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Progress:
    step: int  # 1-based; 0 before the first and after the last
    total: int
    kind: str
    alive: int  # workloads running


class RunObserver:
    """Told what a run does as it goes; every method does nothing unless overridden."""

    def begin(self, scenario: Scenario, plan: int) -> None:
        pass

    def note(self, text: str) -> None:
        """A remark that is no failure (``# ...``)."""

    def step_failed(self, step: int, text: str) -> None:
        """A step other than an expect went wrong (0: the end of the run); the run will exit 1."""

    def result(self, result: Result) -> None:
        pass

    def progress(self, progress: Progress) -> None:
        pass

    def end(self, passed: int, failed: int, errors: int) -> None:
        pass


class Observers(RunObserver):
    """Several observers as one."""

    def __init__(self, *observers: RunObserver) -> None:
        self.observers = observers

    def begin(self, scenario: Scenario, plan: int) -> None:
        for o in self.observers:
            o.begin(scenario, plan)

    def note(self, text: str) -> None:
        for o in self.observers:
            o.note(text)

    def step_failed(self, step: int, text: str) -> None:
        for o in self.observers:
            o.step_failed(step, text)

    def result(self, result: Result) -> None:
        for o in self.observers:
            o.result(result)

    def progress(self, progress: Progress) -> None:
        for o in self.observers:
            o.progress(progress)

    def end(self, passed: int, failed: int, errors: int) -> None:
        for o in self.observers:
            o.end(passed, failed, errors)


def _clean(text: str) -> str:
    """One line, and no '#' (KTAP reads what follows one as a directive)."""
    return " ".join(text.split()).replace("#", "%23")


class KtapWriter(RunObserver):
    """KTAP version 1 on ``out``, a line at a time (flushed, so a reader sees results as they come)."""

    def __init__(self, out: TextOut, before_write: Callable[[], None] | None = None) -> None:
        self.out = out
        self.before_write = before_write

    def _line(self, text: str) -> None:
        if self.before_write is not None:
            self.before_write()
        self.out.write(text + "\n")
        self.out.flush()

    def begin(self, scenario: Scenario, plan: int) -> None:
        self._line("KTAP version 1")
        self._line(f"# scenario: {_clean(scenario.name)}")
        if scenario.description:
            self._line(f"# {_clean(scenario.description)}")
        if scenario.knobs.mark():  # never taken for the kernel's: V17's own values say nothing
            self._line(f"# {scenario.knobs.mark()}")
        self._line(f"1..{plan}")

    def note(self, text: str) -> None:
        self._line(f"# {text}")

    def step_failed(self, step: int, text: str) -> None:
        self._line(f"# FAIL {f'step {step}' if step else 'end'}: {text}")

    def result(self, result: Result) -> None:
        status = "ok" if result.ok else "not ok"
        self._line(f"{status} {result.number} - {_clean(result.description)}")
        for line in result.diagnostics:
            self._line(f"# {line}")

    def end(self, passed: int, failed: int, errors: int) -> None:
        self._line(f"# Totals: pass:{passed} fail:{failed} error:{errors}")


class ProgressLine(RunObserver):
    """Where a run is, on stderr: ``step 3/12 (wait), 4 workloads alive, 2.1 s``, once it has taken ``after_s``.

    On a terminal the line is redrawn in place every ``interval_s`` (after 1 s, every
    0.1 s), and wiped before any other output and at the end.  Elsewhere (a pipe, a CI
    log) it is a line of its own, ``PREFIX: step ...``, every LINE_EVERY_S: a long run
    shows it is alive, without a line per step.
    """

    def __init__(
        self,
        err: TextIO,
        *,
        terminal: bool,
        prefix: str = "",
        after_s: float | None = None,
        interval_s: float | None = None,
    ) -> None:
        self.err = err
        self.terminal = terminal
        self.prefix = prefix
        self.after_s = after_s if after_s is not None else 1.0 if terminal else LINE_EVERY_S
        self.interval_s = interval_s if interval_s is not None else 0.1 if terminal else LINE_EVERY_S
        self.started = time.monotonic()
        self.drawn_at = 0.0
        self.shown = False

    def progress(self, progress: Progress) -> None:
        now = time.monotonic()
        if now - self.started < self.after_s or now - self.drawn_at < self.interval_s or not progress.step:
            return
        self.drawn_at = now
        alive = f"{progress.alive} workload{'s' if progress.alive != 1 else ''} alive"
        text = f"step {progress.step}/{progress.total} ({progress.kind}), {alive}, {now - self.started:.1f} s"
        if self.terminal:
            self.err.write(f"\r\x1b[K{text}")
            self.shown = True
        else:
            self.err.write(f"{self.prefix}{text}\n")
        self.err.flush()

    def clear(self) -> None:
        if self.shown:
            self.err.write("\r\x1b[K")
            self.err.flush()
            self.shown = False

    def end(self, passed: int, failed: int, errors: int) -> None:
        self.clear()

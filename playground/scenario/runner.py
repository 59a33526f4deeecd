"""Run a scenario against a backend: steps in order, a KTAP result per expect, one for the other steps last.

``run_scenario(scenario, backend, observer)`` is the whole runner; it knows nothing of
processes or sockets (the backend does) nor of output formats (the observers do), so
the command line, the tests and a TUI can drive it alike::

    backend = RealBackend.attach(endpoint, memory)  # or RealBackend.start(...), InprocBackend(...)
    report = run_scenario(load_scenario(path), backend, MyObserver(), events=sink)
    backend.close()

Every step runs, whatever failed before it.  ``mkdir`` creates missing parents and
accepts a cgroup that exists (``mkdir -p``).  A ``write`` without ``errno`` must
succeed; with one it must fail with exactly that errno.  ``kill`` of an instance that
has already ended does nothing (a note says so).  A ``wait`` that times out fails the
step, unless every workload it waits for that has not ended is stalled (a fault that no
reclaim can help: its outcome reads ``stalled`` until its call goes on); a note says so.
At the end what still runs is killed, and the host's invariants are checked.
"""

from __future__ import annotations

import random
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from common.costs import format_ns, slowdown
from common.options import EXIT_USAGE
from playground.scenario.backends.base import Backend, BackendError, WorkloadSpec
from playground.scenario.expr import Expr, ExprError, Template
from playground.scenario.ktap import Progress, Result, RunObserver
from playground.scenario.model import (
    ExpectEvent,
    ExpectExited,
    ExpectFile,
    ExpectTime,
    Kill,
    Mkdir,
    Rmdir,
    Scenario,
    Sleep,
    Spawn,
    Step,
    Wait,
    Write,
)
from wire.protocol import MAX_SIZE, PAGE_SIZE, EngineError, Outcome

EXIT_PASS, EXIT_FAIL, EXIT_INVALID = 0, 1, EXIT_USAGE  # invalid: a file that does not validate, no engine
EventSink = Callable[[list[dict[str, Any]]], None]
STEPS_TITLE = "the other steps and the host's invariants"  # the last KTAP result: see _Run.run
_NUMBER = re.compile(r"-?\d+")
_COMPUTE_FROM = {"calls": "the trace's", "hello": "declared", "profile": "the profile's"}  # who said a compute


@dataclass(slots=True)
class RunReport:
    results: list[Result] = field(default_factory=list)
    step_failures: list[str] = field(default_factory=list)  # including a broken invariant
    outcomes: dict[str, list[str | None]] = field(default_factory=dict)  # workload name -> per instance
    cancelled: bool = False
    steps: Result | None = None  # the KTAP result after the expects': every other step, and the invariants

    @property
    def passed(self) -> int:
        return sum(r.ok for r in self.results)

    @property
    def failed(self) -> int:
        return len(self.results) - self.passed

    @property
    def exit_code(self) -> int:
        return EXIT_PASS if not (self.failed or self.step_failures or self.cancelled) else EXIT_FAIL


class SizeError(BackendError):
    """A size or template of the file does not work out on this engine (its capacity): nothing has run."""


class Cancelled(Exception):
    """The caller asked the run to stop (``run_scenario(..., stop=event)``)."""


def workload_seed(seed: int, name: str, index: int) -> int:
    """The seed of one workload's access pattern: from the scenario's seed, its name and instance."""
    return random.Random(f"{seed}/{name}/{index}").randrange(1 << 31)


class _Run:
    def __init__(
        self,
        scenario: Scenario,
        backend: Backend,
        observer: RunObserver,
        events: EventSink | None,
        stop: threading.Event | None,
    ) -> None:
        self.scenario = scenario
        self.stop = stop
        self.backend = backend
        self.observer = observer
        self.events = events
        self.report = RunReport()
        self.env: dict[str, int | None] = {"capacity": backend.capacity_bytes, "memory": backend.memory_bytes}
        self.pids: dict[str, list[int]] = {}  # workload name -> pids, in instance order
        self.rng = random.Random(scenario.seed)  # kill pick = "random"
        self.current = 0
        self.current_kind = ""
        self.seen: list[dict[str, Any]] = []  # every event so far, for event expects
        self.failed_steps: list[str] = []  # what the last result names: "step 3 (write)", ...

    def tick(self) -> None:
        if self.stop is not None and self.stop.is_set() and self.current_kind != "end":
            raise Cancelled
        self.observer.progress(
            Progress(self.current, len(self.scenario.steps), self.current_kind, self.backend.alive())
        )
        self.flush_events()

    def flush_events(self, sync: bool = False) -> None:
        batch = self.backend.take_events(sync)
        self.seen.extend(batch)
        if batch and self.events is not None:
            self.events(batch)

    def fail(self, step: Step, text: str) -> None:
        self.report.step_failures.append(f"step {step.number}: {text}")
        self.failed_steps.append(f"step {step.number} ({step.kind_name})")
        self.observer.step_failed(step.number, text)

    def check_sizes(self) -> None:
        """Evaluate every size and template against this engine before step 1; SizeError (one line) if one fails."""
        for step in self.scenario.steps:
            checks: list[tuple[str, Expr | Template | None, int]] = []  # key, what, its smallest value
            if isinstance(step, Spawn):
                least = max(1, step.trace_pages * PAGE_SIZE)  # a trace's heap holds its pages
                checks = [("size", step.size, least), ("grow", step.grow, 0), ("trim", step.trim, 0)]
            elif isinstance(step, ExpectFile):
                checks = [(step.condition, step.text or step.bound, 0)]
            elif isinstance(step, Write):
                checks = [("value", step.value, 0)]
            for key, what, low in checks:
                where = f"{self.scenario.source}: step {step.number} ({step.kind_name}): key {key!r}"
                try:
                    if isinstance(what, Template):
                        what.render(self.env)
                        continue
                    value = what.evaluate(self.env) if what is not None else low
                except ExprError as e:
                    raise SizeError(f"{where}: {e} (on this engine, capacity = {self.env['capacity']})") from None
                if not low <= value <= MAX_SIZE:
                    assert what is not None
                    raise SizeError(
                        f"{where}: {what.source!r} is {value} bytes on this engine (capacity = {self.env['capacity']}),"
                        f" which is not a size from {low} to {MAX_SIZE}"
                        + (f" (its trace needs {low})" if key == "size" and low > 1 else "")
                    )

    def run(self) -> RunReport:
        scenario = self.scenario
        self.check_sizes()
        self.observer.begin(scenario, scenario.expects + 1)  # the expects, then the other steps as one more
        if self.backend.capacity_bytes != scenario.capacity:
            self.observer.note(
                f"the engine has {self.backend.capacity_bytes} bytes of EPC, the file says {scenario.capacity}: "
                "expressions use the engine's"
            )
        try:
            for step in scenario.steps:
                self.current, self.current_kind = step.number, step.kind_name
                self.tick()
                self.do(step)
        except Cancelled:
            self.report.cancelled = True
            self.failed_steps.append(f"cancelled at step {self.current}")
            self.observer.note(f"cancelled at step {self.current}: the rest does not run")
        self.current, self.current_kind = len(scenario.steps), "end"
        killed = self.backend.finish(self.tick)
        if killed:
            self.observer.note(f"end: {len(killed)} workloads still ran and were killed: pids {killed}")
        for name, pids in self.pids.items():
            self.report.outcomes[name] = [self.backend.outcome(pid) for pid in pids]
        for warning in self.backend.warnings():
            self.observer.note(f"warning: {warning}")
        self.times_notes()
        broken = self.backend.check()
        if broken is not None:
            self.report.step_failures.append(f"end: {broken}")
            self.observer.step_failed(0, f"the host's invariant check: {broken}")
        self.flush_events(sync=True)  # the last events too (real mode: they lag the replies)
        if broken is not None:
            self.failed_steps.append("the host's invariant check")
        steps = Result(len(self.report.results) + 1, 0, not self.failed_steps, STEPS_TITLE)
        if self.failed_steps:
            steps.diagnostics = [f"failed: {', '.join(self.failed_steps)}"]
        self.report.steps = steps
        self.observer.result(steps)
        passed, failed = self.report.passed + steps.ok, self.report.failed + (not steps.ok)
        self.observer.end(passed, failed, len(self.report.step_failures))
        return self.report

    def do(self, step: Step) -> None:
        if isinstance(step, Mkdir):
            self.mkdir(step)
        elif isinstance(step, Rmdir):
            try:
                self.backend.rmdir(step.path)
            except EngineError as e:
                self.fail(step, f"rmdir {step.path}: {e.code} ({e.message})")
        elif isinstance(step, Write):
            self.write(step)
        elif isinstance(step, Spawn):
            self.spawn(step)
        elif isinstance(step, Sleep):
            self.backend.sleep(step.duration_ns, self.tick)
        elif isinstance(step, Kill):
            self.kill(step)
        elif isinstance(step, Wait):
            self.wait(step)
        elif isinstance(step, ExpectFile):
            self.add_result(step.number, step.title, *self.expect_file(step))
        elif isinstance(step, ExpectEvent):
            self.add_result(step.number, step.title, *self.expect_event(step))
        elif isinstance(step, ExpectTime):
            self.add_result(step.number, step.title, *self.expect_time(step))
        else:
            self.add_result(step.number, step.title, *self.expect_exited(step))

    # -- steps ------------------------------------------------------------------

    def mkdir(self, step: Mkdir) -> None:
        parts = step.path.strip("/").split("/")
        for depth in range(1, len(parts) + 1):
            path = "/" + "/".join(parts[:depth])
            try:
                self.backend.mkdir(path)
            except EngineError as e:
                if e.code != "EEXIST":
                    self.fail(step, f"mkdir {path}: {e.code} ({e.message})")
                    return

    def write(self, step: Write) -> None:
        value = step.value.render(self.env)
        try:
            self.backend.write(step.path, value)
        except EngineError as e:
            if e.code != step.errno:
                wanted = "succeed" if step.errno is None else f"fail with {step.errno}"
                self.fail(step, f"write {value!r} to {step.path}: {e.code} ({e.message}); it should {wanted}")
            return
        if step.errno is not None:
            self.fail(step, f"write {value!r} to {step.path} succeeded; it should fail with {step.errno}")

    def spawn(self, step: Spawn) -> None:
        env = self.env
        first = len(self.pids.get(step.name, []))
        specs = [
            WorkloadSpec(
                name=step.instance_name(index),
                cgroup=step.cgroup,
                kind=step.kind,
                size_bytes=step.size.evaluate(env),
                pattern=step.pattern,
                passes=step.passes,
                duration_ns=step.duration_ns,
                grow_bytes=step.grow.evaluate(env) if step.grow else 0,
                trim_bytes=step.trim.evaluate(env) if step.trim else 0,
                seed=workload_seed(self.scenario.seed, step.name, first + index),
                trace=step.trace,
                compute_ns=step.compute_ns,
            )
            for index in range(step.count)
        ]
        try:
            pids = self.backend.spawn(specs)
        except EngineError as e:
            self.fail(step, f"spawn {step.name} into {step.cgroup}: {e.code} ({e.message})")
            return
        self.pids.setdefault(step.name, []).extend(pids)

    def kill(self, step: Kill) -> None:
        pids = self.pids.get(step.name, [])
        if step.pick == "random":
            chosen = [self.rng.randrange(len(pids))] if pids else []
        elif step.pick == "index":
            if step.index >= len(pids):
                self.fail(step, f"kill {step.name}: no instance {step.index} (it has {len(pids)})")
                return
            chosen = [step.index]
        else:
            chosen = list(range(len(pids)))
        for index in chosen:
            pid = pids[index]
            if self.backend.outcome(pid) not in (None, Outcome.STALLED):
                self.observer.note(f"step {step.number}: {step.name} instance {index} had already ended")
                continue
            self.observer.note(f"step {step.number}: SIG{step.signal} to {step.name} instance {index}")
            self.backend.kill(pid, step.signal)

    def wait(self, step: Wait) -> None:
        names = [step.name] if step.name is not None else list(self.pids)
        pids = [pid for name in names for pid in self.pids.get(name, [])]
        if not self.backend.wait(pids, step.timeout_ns, self.tick):
            outcomes = [self.backend.outcome(pid) for pid in pids]
            running, stalled = outcomes.count(None), outcomes.count(Outcome.STALLED)
            what = step.name or "the workloads"
            after = f"after {step.timeout_ns / 1e9:g} s"
            if running:
                also = f" ({stalled} more stalled)" if stalled else ""
                self.fail(step, f"wait for {what}: {running} of {len(pids)} still ran {after}{also}")
            else:  # a stalled workload waits as the kernel's task would: the wait ends as stalled
                self.observer.note(f"step {step.number}: wait for {what}: {stalled} of {len(pids)} stalled {after}")

    # -- expects ----------------------------------------------------------------

    def add_result(self, step: int, title: str, ok: bool, description: str, diagnostics: list[str]) -> None:
        result = Result(len(self.report.results) + 1, step, ok, title or f"step {step}: {description}")
        if not ok:
            result.diagnostics = [f"step {step}: {line}" for line in diagnostics]
        self.report.results.append(result)
        self.observer.result(result)

    def expect_file(self, step: ExpectFile) -> tuple[bool, str, list[str]]:
        if step.condition == "equals":
            assert step.text is not None
            wanted = step.text.render(self.env)
            description = f"{step.path} equals {wanted!r}"
            expected = f"expected: {wanted!r}"
        elif step.condition == "matches":
            assert step.regex is not None
            description = f"{step.path} matches /{step.regex.pattern}/"
            expected = f"expected to match: /{step.regex.pattern}/"
        else:
            assert step.bound is not None
            bound = step.bound.evaluate(self.env)
            relation = "<=" if step.condition == "at_most" else ">="
            description = f"{step.path} {relation} {bound} ({step.bound.source})"
            expected = f"expected: its last number {relation} {bound}"
        try:
            raw = self.backend.read(step.path)
        except EngineError as e:
            return False, description, [f"read {step.path}: {e.code} ({e.message})", expected]
        text = raw.removesuffix("\n")
        if step.condition == "equals":
            return text == wanted, description, [f"read: {text!r}", expected]
        if step.condition == "matches":
            assert step.regex is not None
            return step.regex.search(text) is not None, description, [f"read: {text!r}", expected]
        numbers = _NUMBER.findall(text)
        if not numbers:
            return (
                False,
                description,
                [f"read: {text!r}, which ends in no number", f"expected: a number {relation} {bound}"],
            )
        value = int(numbers[-1])
        ok = value <= bound if step.condition == "at_most" else value >= bound
        return ok, description, [f"read: {text!r}", expected]

    def expect_exited(self, step: ExpectExited) -> tuple[bool, str, list[str]]:
        outcomes = [self.backend.outcome(pid) for pid in self.pids.get(step.name, [])]
        matching = sum(o == step.outcome for o in outcomes)
        total = len(outcomes)
        if step.condition == "all":
            ok, wanted = matching == total and total > 0, f"all {total}"
        elif step.condition == "none":
            ok, wanted = matching == 0, "none"
        elif step.condition == "at_least":
            ok, wanted = matching >= step.count, f"at least {step.count}"
        else:
            ok, wanted = matching <= step.count, f"at most {step.count}"
        description = f"{step.name}: {wanted} exited {step.outcome}"
        seen = ", ".join(f"{n} {o or 'still running'}" for o, n in _tally(outcomes))
        return (
            ok,
            description,
            [f"{step.name} ({total}): {seen or 'none spawned'}", f"expected: {wanted} {step.outcome}"],
        )

    def group_times(self, name: str) -> tuple[int, int, int, int]:
        """The emulated runtime and paging of the workloads ``name`` spawned, summed over those that
        exited (their workload_exit events carry them); how many exited, of how many."""
        self.flush_events(sync=True)
        pids = set(self.pids.get(name, []))
        runtime = paging = done = 0
        for event in self.seen:
            if event.get("kind") == "workload_exit" and event.get("pid") in pids:
                runtime += int(event.get("runtime_ns", 0))
                paging += int(event.get("paging_ns", 0))
                done += 1
        return runtime, paging, done, len(pids)

    def expect_time(self, step: ExpectTime) -> tuple[bool, str, list[str]]:
        runtime, paging, done, total = self.group_times(step.name)
        value = {"slowdown": slowdown(runtime, paging), "runtime": runtime, "paging": paging}[step.what]
        relation = step.relation
        ok = done > 0 and (
            value < step.bound if relation == "<" else value <= step.bound if relation == "<=" else
            value > step.bound if relation == ">" else value >= step.bound
        )  # fmt: skip
        description = f"{step.name}: {step.what} {step.text}"
        shown = f"{value:.3f}" if step.what == "slowdown" else format_ns(int(value))
        seen = f"{step.name} ({done} of {total} exited): {step.what} {shown}" if done else (
            f"{step.name}: none of {total} has exited yet (wait for them first)"
        )  # fmt: skip
        return ok, description, [seen, f"expected: {step.what} {step.text}"]

    def times_notes(self) -> None:
        """A ``#`` line per workload group: its emulated runtime, paging and slowdown, and the compute per
        page accessed its workloads used (docs/costs.md)."""
        for name in self.pids:
            runtime, paging, done, total = self.group_times(name)
            if done:
                self.observer.note(
                    f"{name}: emulated runtime {format_ns(runtime)}, paging {format_ns(paging)}, "
                    f"slowdown {slowdown(runtime, paging):.3f}, {self.group_compute(name)} ({done} of {total} exited)"
                )

    def group_compute(self, name: str) -> str:
        """The compute per page accessed the exited workloads ``name`` spawned used, and who said it:
        ``compute 400 ns a page (the profile's)``; a range when they differ (a trace's means)."""
        pids = set(self.pids.get(name, []))
        seen = [
            (int(e.get("compute_ns", 0)), str(e.get("compute_from", "")))
            for e in self.seen
            if e.get("kind") == "workload_exit" and e.get("pid") in pids
        ]
        low, high = min(ns for ns, _ in seen), max(ns for ns, _ in seen)
        figure = format_ns(low) if low == high else f"{format_ns(low)} to {format_ns(high)}"
        sources = sorted({_COMPUTE_FROM.get(source, source) for _, source in seen})
        return f"compute {figure} a page ({', '.join(sources)})"

    def expect_event(self, step: ExpectEvent) -> tuple[bool, str, list[str]]:
        self.flush_events(sync=True)
        of_kind = [e for e in self.seen if e.get("kind") == step.kind]
        count = sum(all(e.get(key) == value for key, value in step.where) for e in of_kind)
        where = ", ".join(f"{key}={value}" for key, value in step.where)
        relation = ">=" if step.condition == "at_least" else "<="
        description = f"{step.kind} events{f' with {where}' if where else ''} {relation} {step.count}"
        ok = count >= step.count if step.condition == "at_least" else count <= step.count
        return (
            ok,
            description,
            [
                f"seen: {count} such events ({len(of_kind)} {step.kind} events in all)",
                f"expected: {relation} {step.count}",
            ],
        )


def _tally(outcomes: list[str | None]) -> list[tuple[str | None, int]]:
    counts: dict[str | None, int] = {}
    for outcome in outcomes:
        counts[outcome] = counts.get(outcome, 0) + 1
    return sorted(counts.items(), key=lambda item: (item[0] is None, str(item[0])))


def run_scenario(
    scenario: Scenario,
    backend: Backend,
    observer: RunObserver | None = None,
    *,
    events: EventSink | None = None,
    stop: threading.Event | None = None,
) -> RunReport:
    """Run every step of ``scenario`` on ``backend``; the observer hears results and progress as they come.

    ``events`` receives the engine's events in batches, oldest first.  Setting ``stop``
    (from another thread) ends the run at the next step or progress tick: what still
    runs is killed and the invariants are checked, and the report says cancelled.  The
    backend is left open: the caller closes it.  BackendError (the engine went away)
    propagates; SizeError (a BackendError) before anything runs when a size or template
    of the file does not evaluate to a valid value with this engine's capacity.
    """
    return _Run(scenario, backend, observer or RunObserver(), events, stop).run()

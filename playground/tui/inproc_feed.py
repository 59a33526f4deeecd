"""A scenario on the in-process host, for the TUI: ``epc-playground tui --inproc SCENARIO``.

The scenario runs on the in-process backend (the engine's Session on a virtual clock) in a
thread of its own, as fast as the host can, and the TUI draws from the same Session at its
4 Hz, as it would from an engine; no textual here.  The two threads never touch the Session
at once: every round of the backend and every call of the runner is a *runner turn*, every
read and action of the display a *display turn* (``Turns``).  A display that waits goes
first, and while the Session is frozen (step mode) the runner waits before its next turn,
so only the display's steps move the host and its clock.  The virtual clock depends on
none of this: unfrozen, the run gives the KTAP of ``epc-playground run --inproc``, byte
for byte.

- ``SharedBackend``: the backend with turns, the events a display shows, slow motion.
- ``InprocClient``: what the TUI sends an engine (mkdir, write, lru, frames, freeze, step,
  thaw, ...), checked as the wire checks a request, served by the engine's own handlers
  (``engined.requests.HANDLERS``) on the Session.
- ``InprocFeed``: the FeedState the panels draw from.
- ``InprocRun``: the runner's thread, its KTAP lines, progress and report.
"""

from __future__ import annotations

import errno
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import GeneratorType
from typing import Any, cast

from common.knobs import V17, Knobs
from engined.calls import NOBODY, WAIT, error_reply
from engined.requests import HANDLERS
from playground.feed import EVENTS, FeedState
from playground.scenario.backends.base import BackendError, Tick, WorkloadSpec
from playground.scenario.backends.inproc import InprocBackend
from playground.scenario.ktap import KtapWriter, Observers, Progress, RunObserver
from playground.scenario.model import Scenario
from playground.scenario.runner import RunReport, run_scenario
from playground.tui.scenario_worker import _LinesOut
from wire.messages import FrameCells, FreezeState, LruListing, StepResult
from wire.protocol import PRESSURE_KINDS, EngineError, ProtocolError, decode_request, request
from wire.snapshot import Snapshot

log = logging.getLogger(__name__)

PACE_HZ = 20  # in slow motion the clock moves at most 1/PACE_HZ of the rate at a time (no jumps)
RATES = (None, 10**9, 10**8, 10**7, 10**6, 10**5, 10**4)  # virtual ns a wall second: None, as fast as it goes
DISPLAY_OPS = frozenset({"read", "listdir", "mkdir", "rmdir", "write", "lru", "frames", "snapshot"})


class Stopped(BackendError):
    """The display closed while the scenario ran: the runner stops where it is."""


class Turns:
    """Who may touch the Session now: one thread at a time, a turn at a time.

    The runner takes a turn for each round and each of its calls, and waits first for as
    long as ``wait_s()`` says (math.inf: until told; the Session is frozen) and while a
    display waits: its rounds come back to back and would starve the display (a lock is
    not fair).  A thread already in a turn enters again at once.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._owner = 0  # the thread in a turn (0: none)
        self._depth = 0
        self._display_waiting = 0
        self.stopping = False

    @contextmanager
    def runner(self, wait_s: Callable[[], float]) -> Iterator[None]:
        with self._cond:
            if not self._enter_again():
                while True:
                    if self.stopping:
                        raise Stopped("the display closed: the scenario stopped")
                    if self._owner or self._display_waiting:
                        self._cond.wait()
                        continue
                    delay = wait_s()
                    if delay <= 0:
                        break
                    self._cond.wait(None if delay == math.inf else delay)
                self._owner, self._depth = threading.get_ident(), 1
        try:
            yield
        finally:
            self._leave()

    @contextmanager
    def display(self) -> Iterator[None]:
        with self._cond:
            if not self._enter_again():
                self._display_waiting += 1
                try:
                    while self._owner:
                        self._cond.wait()
                finally:
                    self._display_waiting -= 1
                self._owner, self._depth = threading.get_ident(), 1
        try:
            yield
        finally:
            self._leave()

    def stop(self) -> None:
        """The runner's next turn raises Stopped (a runner waiting for one too)."""
        with self._cond:
            self.stopping = True
            self._cond.notify_all()

    def _enter_again(self) -> bool:
        if self._owner == threading.get_ident():
            self._depth += 1
            return True
        return False

    def _leave(self) -> None:
        with self._cond:
            self._depth -= 1
            if not self._depth:
                self._owner = 0
                self._cond.notify_all()


class SharedBackend(InprocBackend):
    """The in-process backend, shared by the runner's thread and a display (see the module docstring).

    Each of the runner's calls and rounds is a runner turn; a round waits in slow motion
    until the wall clock has caught up with the virtual one (``rate_ns``), and every turn
    while the Session is frozen.  ``shown`` keeps the events a display shows (not the
    pressure kinds: their sums come with each snapshot, as from an engine's stats).
    """

    def __init__(
        self,
        capacity: int,
        memory: int | None,
        seed: int,
        turns: Turns,
        knobs: Knobs = V17,
        profile: str | None = None,
    ) -> None:
        super().__init__(capacity, memory, seed, knobs, profile)
        self.turns = turns
        self.shown: deque[dict[str, Any]] = deque(maxlen=EVENTS)
        self.running = True  # the runner takes the events; once it has ended nobody does
        self.rate_ns: int | None = None  # slow motion: virtual ns per wall second (None: as fast as it goes)
        self.anchor = (0, 0.0)  # (virtual ns, wall s) slow motion counts from: the rate set, or a thaw
        self.session.publish = self._publish

    def _publish(self, messages: list[dict[str, Any]]) -> None:
        if self.running:
            self._events.extend(messages)
        self.shown.extend(message for message in messages if message["kind"] not in PRESSURE_KINDS)

    # -- the runner's turns ---------------------------------------------------------

    def _frozen_s(self) -> float:
        return math.inf if self.session.frozen is not None else 0.0

    def _paced_s(self) -> float:
        """How long the next round waits: while frozen, until thawed; in slow motion, until the
        wall clock has reached the virtual time at the rate."""
        if self.session.frozen is not None:
            return math.inf
        if self.rate_ns is None:
            return 0.0
        virtual_ns, wall_s = self.anchor
        return wall_s + (self.clock.now_ns() - virtual_ns) / self.rate_ns - time.monotonic()

    def _round(self) -> bool:
        with self.turns.runner(self._paced_s):
            return super()._round()

    def _idle(self, deadline_ns: int) -> None:
        with self.turns.runner(self._paced_s):
            if self.rate_ns is not None:  # slow motion: time passes steadily, not in one jump
                deadline_ns = min(deadline_ns, self.clock.now_ns() + max(1, self.rate_ns // PACE_HZ))
            super()._idle(deadline_ns)

    def _call(self, op: str, **args: Any) -> Any:
        with self.turns.runner(self._frozen_s):
            return super()._call(op, **args)

    def spawn(self, specs: list[WorkloadSpec]) -> list[int]:
        with self.turns.runner(self._frozen_s):
            return super().spawn(specs)

    def kill(self, pid: int, signal: str) -> None:
        with self.turns.runner(self._frozen_s):
            super().kill(pid, signal)

    def outcome(self, pid: int) -> str | None:
        with self.turns.runner(self._frozen_s):
            return super().outcome(pid)

    def alive(self) -> int:
        with self.turns.runner(self._frozen_s):
            return super().alive()

    def take_events(self, sync: bool = False) -> list[dict[str, Any]]:
        with self.turns.runner(self._frozen_s):
            return super().take_events(sync)

    def finish(self, tick: Tick) -> list[int]:
        with self.turns.runner(self._frozen_s):
            return super().finish(tick)

    def check(self) -> str | None:
        with self.turns.runner(self._frozen_s):
            return super().check()

    # -- the display's (called in display turns) ------------------------------------

    def thaw(self) -> FreezeState:
        state = super().thaw()
        self.anchor = (self.clock.now_ns(), time.monotonic())  # slow motion goes on from here
        return state

    def set_rate(self, rate_ns: int | None) -> None:
        self.rate_ns = rate_ns
        self.anchor = (self.clock.now_ns(), time.monotonic())

    def serve(self, op: str, args: dict[str, Any]) -> Any:
        """A display's request, served by the engine's handler of ``op`` on the Session, whole
        (a stepped read such as ``frames`` runs all its steps); an error as the engine answers it."""
        try:
            result = HANDLERS[op](self.session, NOBODY, **args)
            if type(result) is GeneratorType:
                result = _run_whole(result)
        except Exception as e:
            reply = error_reply(0, e)
            raise EngineError(reply.err, reply.msg) from None
        return result

    def task_alive(self, pid: int) -> bool:
        task = self.tasks.get(pid)
        return task is not None and task.outcome is None


def _run_whole(steps: Any) -> Any:
    while True:
        try:
            status = next(steps)
        except StopIteration as done:
            return done.value
        if status is WAIT:  # no op a display sends waits for reclaim
            steps.close()
            raise OSError(errno.EAGAIN, "the request would wait for reclaim work")


class InprocClient:
    """The engine's ops the TUI sends (EngineClient's methods), to the in-process Session.

    Each is checked as the wire checks a request (EPROTO for a bad argument), then served in
    a display turn; freeze, step and thaw are the Session's step mode with this client as
    its holder, so its own requests are never queued by its freeze.
    """

    def __init__(self, backend: SharedBackend) -> None:
        self.backend = backend
        self.turns = backend.turns

    def call(self, op: str, **args: Any) -> Any:
        if op not in DISPLAY_OPS:
            raise EngineError("EPERM", f"{op}: not a request a display sends to the in-process host")
        checked = _checked(op, args)
        with self.turns.display():
            return self.backend.serve(op, checked)

    def read(self, path: str) -> str:
        return str(self.call("read", path=path))

    def write(self, path: str, value: str) -> None:
        self.call("write", path=path, value=value)

    def mkdir(self, path: str) -> None:
        self.call("mkdir", path=path)

    def rmdir(self, path: str) -> None:
        self.call("rmdir", path=path)

    def listdir(self, path: str) -> list[str]:
        return cast(list[str], self.call("listdir", path=path))

    def snapshot(self) -> dict[str, Any]:
        return cast(dict[str, Any], self.call("snapshot"))

    def lru(self, cgroup: str, offset: int = 0, limit: int = 256, unreclaimable_offset: int = 0) -> LruListing:
        listing = self.call("lru", cgroup=cgroup, offset=offset, limit=limit, unreclaimable_offset=unreclaimable_offset)
        return cast(LruListing, listing)

    def frames(self, count: int, first: int = 0, group: int = 1) -> FrameCells:
        return cast(FrameCells, self.call("frames", count=count, first=first, group=group))

    def freeze(self) -> FreezeState:
        with self.turns.display():
            return cast(FreezeState, self._step_mode(self.backend.freeze))

    def step(self, what: str = "request") -> StepResult:
        what = _checked("step", {"what": what})["what"]
        with self.turns.display():
            return cast(StepResult, self._step_mode(lambda: self.backend.step(what)))

    def thaw(self) -> FreezeState:
        with self.turns.display():
            return cast(FreezeState, self._step_mode(self.backend.thaw))

    def _step_mode(self, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except OSError as e:
            reply = error_reply(0, e)
            raise EngineError(reply.err, reply.msg) from None

    def kill(self, pid: int) -> bool:
        """End an in-process workload as a SIGKILL would (any signal the backend knows does);
        False when it has already ended.  Never a signal to a process of this host."""
        with self.turns.display():
            if not self.backend.task_alive(pid):
                return False
            self.backend.kill(pid, "KILL")
            return True

    def set_rate(self, rate_ns: int | None) -> None:
        with self.turns.display():
            self.backend.set_rate(rate_ns)

    def close(self) -> None:
        pass


def _checked(op: str, args: dict[str, Any]) -> dict[str, Any]:
    """The arguments as the engine would take them off the wire (EPROTO: one line on what is wrong)."""
    try:
        return decode_request(request(op, 0, **args))[2]
    except ProtocolError as e:
        raise EngineError(e.code, e.message) from None


class InprocFeed(FeedState):
    """What the panels draw from, read from the in-process Session in a display turn at each poll:
    the whole snapshot (the host is in this process: no deltas), the events since the last one."""

    def __init__(self, run: InprocRun) -> None:
        self.run = run
        self.client = InprocClient(run.backend)
        self.polls = 0
        super().__init__(self._read()[0])

    def _read(self) -> tuple[Snapshot, list[dict[str, Any]]]:
        backend = self.run.backend
        with backend.turns.display():
            snapshot = cast(Snapshot, backend.session.snapshot())
            events = list(backend.shown)
            backend.shown.clear()
        return snapshot, events

    def poll(self) -> bool:
        snapshot, events = self._read()
        self.take_events(events)
        self.take_stats(snapshot)
        self.polls += 1
        return True

    def close(self) -> None:
        self.run.close()


class InprocRun:
    """The scenario in a thread of its own on a SharedBackend; what it said, for the display to take.

    ``ktap`` holds every KTAP line so far; ``take_lines()`` those not taken yet.  ``done`` is
    set when the runner has ended: ``report`` then holds its report (None when it stopped
    early: ``failure`` says why).
    """

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.turns = Turns()
        self.backend = SharedBackend(
            scenario.capacity, scenario.memory, scenario.seed, self.turns, scenario.knobs, scenario.profile
        )
        self.stop = threading.Event()  # set: the run is cancelled at its next step (the runner's own stop)
        self.ktap: list[str] = []
        self._untaken: deque[str] = deque()
        self.progress: Progress | None = None
        self.report: RunReport | None = None
        self.failure = ""
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"scenario {scenario.name}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        observers = Observers(KtapWriter(_LinesOut(self._line)), _ProgressOf(self))
        try:
            self.report = run_scenario(self.scenario, self.backend, observers, stop=self.stop)
        except BackendError as e:  # Stopped, or a size that does not fit (nothing ran)
            self.failure = str(e)
        except Exception as e:  # a bug of ours: said, and the display goes on
            log.exception("the in-process scenario %s failed", self.scenario.name)
            self.failure = f"{type(e).__name__}: {e}"
        finally:
            self.backend.running = False
            self.done.set()

    def _line(self, line: str) -> None:
        self.ktap.append(line)
        self._untaken.append(line)

    def take_lines(self) -> list[str]:
        lines = []
        while self._untaken:
            lines.append(self._untaken.popleft())
        return lines

    def summary(self) -> tuple[str, bool]:
        """How the run ended, in a line, and whether that is a pass."""
        report = self.report
        if report is None:
            return f"stopped: {self.failure}", False
        how = "stopped" if report.cancelled else "passed" if report.exit_code == 0 else "FAILED"
        text = f"{how}: {report.passed} of {len(report.results)} expects passed"
        if report.step_failures:
            text += f", {len(report.step_failures)} steps failed"
        return text, how == "passed"

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the runner where it is (frozen or not) and wait for its thread."""
        self.stop.set()
        self.turns.stop()
        if self.thread.is_alive():
            self.thread.join(timeout_s)


class _ProgressOf(RunObserver):
    def __init__(self, run: InprocRun) -> None:
        self.run = run

    def progress(self, progress: Progress) -> None:
        self.run.progress = progress

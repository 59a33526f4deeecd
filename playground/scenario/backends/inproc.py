"""The in-process backend: the engine's Session (engined.session) on a virtual clock, in this process.

Each workload is its program (workloads.enclave, workloads.vm), the very sequence of
calls its process would make, handed to the Session as the engine's ROUTER would
hand them.  The Session steps, parks and stalls them as in the engine; only waiting
differs.  Each round every task whose call has been answered makes its next call,
then the Session gives every ready step one turn; after each call and each step the
async reclaim work runs until it is idle, as if on CPUs of its own (the engine runs
2 ms slices of it between rounds).  Time is virtual: a step
costs TURN_NS, each page a step asked for or reclaim wrote costs PAGE_NS, a task that
sleeps (a VM holding its EPC) is runnable again when the clock reaches its wake-up
time, and a stalled call tries again STALL_RETRY_HZ times a virtual second.  No wall
clock in the run (only the progress ticks read it, every TICK_S), no unordered
iteration: the same scenario and seed give the same events, byte for byte.

The Session's step mode works here too (``freeze``, ``step``, ``thaw``: ``tui --inproc``):
frozen, rounds run nothing and the tasks' calls wait, whole; a step runs one request step
or one reclaim batch and moves the clock on by what it did, as a round does.

It is the one front-end module that runs the core (docs/architecture.md, the import rules).
"""

from __future__ import annotations

import errno
import time
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import Any

from common.costs import load_profile
from common.knobs import V17, Knobs
from engine import PAGE_SIZE, Host, VirtualClock
from engined.calls import NOBODY, Caller, Reply
from engined.requests import HANDLERS
from engined.session import Session
from playground.scenario.backends.base import CgroupFiles, Tick, WorkloadSpec
from wire.messages import FreezeState, StepResult
from wire.protocol import EngineError, Outcome
from workloads.enclave import EnclavePlan, enclave
from workloads.program import Call, Program, Sleep, plan, registered
from workloads.vm import vm

BATCH_PAGES = 256  # pages of one access call: the workloads' own batch
TURN_NS = 20_000  # one request step: its round trip and the engine's bookkeeping
PAGE_NS = 2_000  # one page added, faulted or reclaimed (the engine does about 500k a second)
FIRST_PID = 1000
PID_STRIDE = 7  # pids as a real host would hand them out: not consecutive
TICK_S = 0.1  # wall time between progress ticks (a round can take milliseconds: a tick is not per round)
RUNNER = "runner"  # the Session's name for the scenario runner's own calls (cgroup files)
STEPPER = "stepper"  # its name for whoever freezes and steps this host (a display: tui --inproc)


@dataclass(slots=True)
class Task:
    """A workload: its program, and where it is in it."""

    pid: int
    spec: WorkloadSpec
    program: Program
    wake_ns: int = 0  # runnable from this virtual time on (a Sleep)
    calling: bool = False  # its call is in the Session, not answered yet
    result: Any = None  # the answer to send into its program next
    registered: bool = False  # it said hello
    outcome: str | None = None  # once it has ended: ok, an errno name, SIGBUS, OOM, killed
    ending: str = ""  # it is to end after this round, so: an error answered, or the OOM killer


def _always() -> bool:
    return True


def _plan(spec: WorkloadSpec) -> dict[str, Any]:
    """What its hello says of it, as its command line would (workloads/cli.py)."""
    duration_s = None if spec.duration_ns is None else spec.duration_ns / 1e9
    if spec.kind == "vm":
        return plan(spec.size_bytes, "", max(1, spec.passes), duration_s, spec.compute_ns)
    pattern = "" if spec.trace else spec.pattern
    return plan(spec.size_bytes, pattern, None if duration_s else spec.passes, duration_s, spec.compute_ns)


class _Tasks:
    """The Session's view of the processes here: the backend's tasks (pids live while their task runs)."""

    def __init__(self, backend: InprocBackend) -> None:
        self.backend = backend

    def watch(self, pid: int) -> None:
        if not self.alive(pid):
            raise OSError(errno.ESRCH, f"no process {pid}")

    def watching(self, pid: int) -> bool:
        return self.alive(pid)

    def gone(self, pid: int) -> bool:
        return False  # the backend takes every exit at once

    def alive(self, pid: int) -> bool:
        task = self.backend.tasks.get(pid)
        return task is not None and task.outcome is None

    def forget(self, pid: int) -> None:
        pass

    def exit_status(self, pid: int) -> int | None:
        return None  # a task has no wait status: the backend gives Session.exited its outcome

    def stopped(self, pid: int) -> bool:
        return False  # a task cannot be stopped

    def kill(self, pid: int) -> str | None:
        self.backend.tasks[pid].ending = Outcome.OOM  # it dies at the end of this round
        return None

    def parent(self, pid: int) -> int:
        return 0  # the runner started them all: none inherits another's cgroup


class InprocBackend(CgroupFiles):
    """A scenario's host in this process.  Deterministic: see the module docstring."""

    def __init__(
        self, capacity: int, memory: int | None, seed: int, knobs: Knobs = V17, profile: str | None = None
    ) -> None:
        self.clock = VirtualClock()
        self.capacity_bytes = capacity
        self.memory_bytes = memory
        self.host = Host(capacity, memory, seed, clock=self.clock, inline_work=False, knobs=knobs)
        self.tasks: dict[int, Task] = {}
        self._events: list[dict[str, Any]] = []
        self._answer_to_runner: Reply | None = None
        self.session = Session(
            self.host,
            _Tasks(self),
            HANDLERS,
            answer=self._answer,
            publish=self._events.extend,
            pub="inproc",
            profile=load_profile(profile),
        )
        self._next_pid = FIRST_PID
        self.rounds = 0

    def take_events(self, sync: bool = False) -> list[dict[str, Any]]:
        self.session.flush_events()
        out, self._events[:] = self._events[:], []
        return out

    # -- the runner's own calls -------------------------------------------------

    def _call(self, op: str, **args: Any) -> Any:
        """A call of the runner's, as a client of the Session: answered at once (files are never stepped)."""
        self.session.submit(RUNNER, NOBODY, 0, op, args)
        reply, self._answer_to_runner = self._answer_to_runner, None
        assert reply is not None, f"{op} was not answered at once"
        if reply.err:
            raise EngineError(reply.err, reply.msg)
        return reply.ok

    def warnings(self) -> list[str]:
        return []

    def check(self) -> str | None:
        try:
            self.host.check()
        except AssertionError as e:
            return f"invariant broken: {e}"
        return None

    # -- workloads --------------------------------------------------------------

    def spawn(self, specs: list[WorkloadSpec]) -> list[int]:
        return [self._spawn(spec) for spec in specs]

    def _spawn(self, spec: WorkloadSpec) -> int:
        """A new task, placed and registered (or ended already, when its cgroup refused it) on return."""
        pid = self._next_pid
        self._next_pid += PID_STRIDE
        program = registered(
            self._program(spec), pid=pid, role=spec.kind, name=spec.name, cgroup=spec.cgroup, plan=_plan(spec)
        )
        task = Task(pid, spec, program)
        self.tasks[pid] = task
        while not task.registered and task.outcome is None:
            self._advance(task)  # its cgroup.procs write and hello are answered at once
            self._take_endings()
        return pid

    def _program(self, spec: WorkloadSpec) -> Program:
        now_ns = self.clock.now_ns
        if spec.kind == "vm":
            return vm(spec.size_bytes, now_ns, passes=spec.passes, duration_ns=spec.duration_ns, batch=BATCH_PAGES)
        plan = EnclavePlan(spec.size_bytes, spec.pattern, spec.passes, None, spec.seed, BATCH_PAGES, trace=spec.trace)
        plan.compute_ns = spec.compute_ns
        if spec.duration_ns is not None:
            plan.duration_s = spec.duration_ns / 1e9
        plan.grow_pages = -(-spec.grow_bytes // PAGE_SIZE)
        plan.trim_pages = -(-spec.trim_bytes // PAGE_SIZE)
        return enclave(plan, now_ns)

    def kill(self, pid: int, signal: str) -> None:
        if self.tasks[pid].outcome is None:
            self._end(self.tasks[pid], Outcome.KILLED)

    def outcome(self, pid: int) -> str | None:
        task = self.tasks[pid]
        workload = self.session.workloads.get(pid)
        if task.outcome is None and workload is not None and workload.stalled_calls:
            return Outcome.STALLED
        return task.outcome

    def alive(self) -> int:
        return sum(task.outcome is None for task in self.tasks.values())

    def _advance(self, task: Task) -> None:
        """The task's next call goes to the Session (or it sleeps, or its program is done)."""
        try:
            step = task.program.send(task.result)
        except StopIteration:
            self._end(task, Outcome.OK)
            return
        except EngineError as e:  # the program's own verdict on an answer (ADD_PAGES cut short)
            self._end(task, e.code)
            return
        task.result = None
        if isinstance(step, Sleep):
            task.wake_ns = self.clock.now_ns() + step.ns
            return
        assert isinstance(step, Call)
        task.calling = True
        self.session.submit(task.pid, Caller(task.pid, 0), 0, step.op, step.args)

    def _answer(self, key: Hashable, reply: Reply) -> None:
        if key == RUNNER:
            self._answer_to_runner = reply
            return
        assert isinstance(key, int)
        task = self.tasks[key]
        task.calling = False
        if reply.err:  # the process would exit 1 with the errno, or die by SIGBUS
            task.ending = task.ending or reply.err
        else:
            task.result = reply.ok
            task.registered = task.registered or (isinstance(reply.ok, dict) and "cgroup" in reply.ok)

    def _end(self, task: Task, outcome: str) -> None:
        """The process is gone: the Session releases what it held (its last reference)."""
        task.outcome = outcome
        task.program.close()
        self.session.exited(task.pid, outcome)

    def _take_endings(self) -> None:
        """Tasks whose call failed, or that the OOM killer chose, end now (as their processes would)."""
        for task in self.tasks.values():
            if task.ending and task.outcome is None:
                self._end(task, task.ending)

    # -- time -------------------------------------------------------------------

    def _round(self) -> bool:
        """A call from every runnable task, then a Session round; False when nothing could run."""
        session = self.session
        done = self._done()
        runnable = self._advance_runnable()
        busy = session.round(lambda: _always, between=lambda: session.run_work(_always))
        self._take_endings()
        self._charge(done)
        return bool(runnable) or busy

    def _advance_runnable(self) -> list[Task]:
        """Every task whose call was answered and that is awake makes its next call; the reclaim
        work runs after each until it is idle.  The tasks that were runnable."""
        session, now = self.session, self.clock.now_ns()
        runnable = [t for t in self.tasks.values() if t.outcome is None and not t.calling and t.wake_ns <= now]
        for task in runnable:
            if task.outcome is None:
                self._advance(task)
                session.run_work(_always)
        return runnable

    def _done(self) -> tuple[int, int, int]:
        """What the host has done so far, as the clock counts it: steps, pages stepped, pages written out."""
        return self.session.steps_run, self.session.pages_stepped, self.host.pages_reclaimed

    def _charge(self, before: tuple[int, int, int]) -> int:
        """Move the clock on by what was done since ``before``: TURN_NS a step, PAGE_NS a page; the ns."""
        steps, pages, written = before
        session = self.session
        pages = session.pages_stepped - pages + self.host.pages_reclaimed - written
        ns = (session.steps_run - steps) * TURN_NS + pages * PAGE_NS
        self.clock.advance(ns)
        return ns

    def _run_until(self, deadline_ns: int, done: Iterator[bool] | None, tick: Tick) -> bool:
        """Rounds until the virtual deadline or ``done``; ``tick()`` every TICK_S of wall time (progress and
        a stop request: the virtual run does not depend on when they come)."""
        next_tick = time.monotonic() + TICK_S
        while self.clock.now_ns() < deadline_ns:
            if done is not None and next(done):
                return True
            if not self._round():
                self._idle(deadline_ns)
            if time.monotonic() >= next_tick:
                tick()
                next_tick = time.monotonic() + TICK_S
        return done is not None and next(done)

    def _idle(self, deadline_ns: int) -> None:
        """Nothing can run now: the clock goes to when something can (at most ``deadline_ns``)."""
        self.clock.advance(max(0, self._next_wake(deadline_ns) - self.clock.now_ns()))

    def _next_wake(self, deadline_ns: int) -> int:
        """When something can run next: a sleeping task wakes, or a stalled call tries again."""
        sleeping = [t.wake_ns for t in self.tasks.values() if t.outcome is None and not t.calling]
        retry = self.session.next_retry_ns()
        return min([deadline_ns, *sleeping, *([retry] if retry is not None else [])])

    def sleep(self, ns: int, tick: Tick) -> None:
        self._run_until(self.clock.now_ns() + ns, None, tick)

    def wait(self, pids: list[int], timeout_ns: int, tick: Tick) -> bool:
        def ended() -> Iterator[bool]:
            while True:
                yield all(self.tasks[pid].outcome is not None for pid in pids)

        return self._run_until(self.clock.now_ns() + timeout_ns, ended(), tick)

    # -- step mode --------------------------------------------------------------
    #
    # The Session's own (engined/session.py), with this backend as its holder: frozen, a round runs
    # no request step and no reclaim work, and the tasks' calls wait in its ready queue, whole.

    def freeze(self) -> FreezeState:
        return self.session.freeze(STEPPER, 0)

    def step(self, what: str = "request") -> StepResult:
        """One step of the frozen Session (Session.step: a request step, or a reclaim batch); the tasks
        it answered make their next call (queued), and the clock moves on by what the step did, as
        after a round.  OSError(EINVAL) when not frozen."""
        done = self._done()
        result = self.session.step(STEPPER, what)
        self._advance_runnable()
        self._take_endings()
        self._charge(done)
        result["state"] = self.session.freeze_state()
        return result

    def thaw(self) -> FreezeState:
        return self.session.thaw("asked", STEPPER)

    def finish(self, tick: Tick) -> list[int]:
        killed = [task.pid for task in self.tasks.values() if task.outcome is None]
        for pid in killed:
            self._end(self.tasks[pid], Outcome.KILLED)
        self.host.run_pending_work()
        return killed

    def close(self) -> None:
        pass

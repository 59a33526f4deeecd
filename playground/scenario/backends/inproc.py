"""The in-process backend: the core (engine.Host) on a virtual clock, workloads as cooperative tasks.

Each workload is a generator that does what its process would (workloads/enclave.py,
workloads/vm.py) one request chunk per turn.  The scheduler gives every runnable task
one turn in a fixed round-robin (by pid), then runs the host's async reclaim work, as
the engine runs its workers between request steps.  Time is virtual: a turn costs
TURN_NS plus PAGE_NS per page it asked for, the host's work PAGE_NS per page it
reclaimed, and a task that sleeps (a VM holding its EPC) is runnable again when the
clock reaches its wake-up time.  No wall clock, no unordered iteration: the same
scenario and seed give the same events, byte for byte.

A call that the core reports Blocked stalls (a fault that no reclaim can help: the host
ran the queued work inline and nothing moved), unless an OOM victim has yet to die: the
task then sleeps and tries again STALL_RETRY_HZ times a virtual second, or at once when
a task ends or a cgroup file is written, as the engine does; ``stall`` and ``stall_end``
events say when it began and went on, and its outcome reads ``stalled`` meanwhile.

DESIGN.md section 1 allows the in-process scenario mode to drive the core directly.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from engine import PAGE_SIZE, Blocked, Host, SigBus, VirtualClock
from engine.events import STALL_RETRY_HZ, Event, Stalled, StallEnded
from engine.sgx import IoctlError, errno_name
from playground.scenario.backends.base import Tick, WorkloadSpec
from wire.protocol import EngineError as FileError  # a failed file operation (this module's old name for it)
from workloads.enclave import CODE_PAGES, TCS_PAGES, EnclavePlan
from workloads.patterns import batches

CHUNK_PAGES = 256  # pages one turn asks for: the workloads' access batch, and a slice of ADD_PAGES
TURN_NS = 20_000  # one request: its round trip and the engine's bookkeeping
PAGE_NS = 2_000  # one page added, faulted or reclaimed (the engine does about 500k a second)
VM_HOLD_NS = 50_000_000  # a guest holding its EPC touches it again every 50 ms (workloads/vm.py)
FIRST_PID = 1000
PID_STRIDE = 7  # pids as a real host would hand them out: not consecutive
TICK_TURNS = 2000  # turns between progress ticks
STALL_RETRY_NS = 10**9 // STALL_RETRY_HZ
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Pause:
    """Yielded by a task that sleeps for ``ns`` (it costs the engine nothing)."""

    ns: int


@dataclass(frozen=True, slots=True)
class Waiting:
    """Yielded by a task whose call ``op`` could not go on after ``pages`` pages: it tries again.

    Blocked (the host ran the queued work inline, or waits for an OOM victim), or with
    ``again`` an EDMM ioctl's EAGAIN (the work runs after the turn, as in the engine).
    """

    pages: int
    op: str
    again: bool = False


Turn = Generator[int | Pause | Waiting, None, None]
"""A workload as a task: each ``next()`` is one turn; it yields the pages it asked for, a Pause, or Waiting."""


class Interrupted(Exception):
    """ADD_PAGES stopped early (a signal): the workload exits 1 with EINTR, as workloads/enclave.py does."""


def enclave_task(host: Host, pid: int, plan: EnclavePlan) -> Turn:
    """workloads.enclave.run_enclave() as a task: ECREATE, ADD_PAGES, EINIT, enter, passes, EAUG, trim, release.

    ``plan.passes`` 0 builds and enters only (the kernel selftest's test_sgx).
    """
    clock = host.clock
    eid = yield from _retry(lambda: host.ecreate(pid, plan.enclave_bytes), "ecreate")
    for kind, count in (("TCS", TCS_PAGES), ("REG", CODE_PAGES), ("REG", plan.heap_pages)):
        yield from _in_chunks(0, count, _adder(host, pid, eid, kind), "add_pages")

    def touch(at: int, n: int) -> int:
        host.access(pid, eid, at, n, write=True)
        return n  # a turn costs the pages it asked for, faulted or not

    def accept(at: int, n: int) -> int:  # EACCEPT of trimmed pages
        host.access(pid, eid, at, n)
        return n

    host.einit(pid, eid)
    heap = TCS_PAGES + CODE_PAGES
    for _ in range(plan.entries):
        yield from _in_chunks(0, heap, touch, "access")
    passes = plan.passes if plan.duration_s is None else 1 << 30
    deadline = None if plan.duration_s is None else clock.now_ns() + int(plan.duration_s * 1e9)
    for ranges in batches(plan.pattern, plan.heap_pages, passes=passes, batch=plan.batch, seed=plan.seed):
        for first, count in ranges:
            yield from _in_chunks(heap + first, count, touch, "access")
        if deadline is not None and clock.now_ns() >= deadline:
            break
    if plan.grow_pages:
        yield from _in_chunks(0, plan.grow_pages, lambda _at, n: host.augment(pid, eid, n), "augment")
    if plan.trim_pages:  # as the engine's op_remove_pages: trim, EACCEPT every page, remove
        trim = min(plan.trim_pages, plan.heap_pages)
        yield from _resumed(lambda at, n: host.trim_pages(pid, eid, at, n), heap, trim)
        yield from _in_chunks(heap, trim, accept, "remove_pages")
        yield from _resumed(lambda at, n: host.remove_trimmed(pid, eid, at, n), heap, trim)
    host.release(eid)


def vm_task(host: Host, pid: int, size_bytes: int, passes: int, duration_ns: int | None) -> Turn:
    """workloads.vm.run_vm() as a task: touch the guest's EPC page by page, hold it, release it."""
    clock = host.clock
    npages = -(-size_bytes // PAGE_SIZE)
    vid = host.vepc_open(pid, npages * PAGE_SIZE)

    def touch(at: int, n: int) -> int:
        host.vepc_access(pid, vid, at, n)
        return n

    deadline = None if duration_ns is None else clock.now_ns() + duration_ns
    for ranges in batches("sequential", npages, passes=max(1, passes), batch=CHUNK_PAGES):
        for first, count in ranges:
            yield from _in_chunks(first, count, touch, "vepc_access")
    while deadline is not None and clock.now_ns() < deadline:
        yield from _in_chunks(0, npages, touch, "vepc_access")
        yield Pause(VM_HOLD_NS)
    host.vepc_release(vid)


def _no_turns() -> Turn:
    yield from ()


def _adder(host: Host, pid: int, eid: int, kind: str) -> Callable[[int, int], int]:
    """ADD_PAGES of ``n`` more pages of ``kind`` (they go after the last one added)."""

    def add(_at: int, n: int) -> int:
        added = host.add_pages(pid, eid, n, kind)
        if added < n:
            raise Interrupted(f"ADD_PAGES stopped after {added} of {n} pages (a signal)")
        return added

    return add


def _retry(call: Callable[[], T], op: str) -> Generator[Waiting, None, T]:
    """One call that the core may report Blocked (waiting for an OOM victim, or stalled): tried again."""
    while True:
        try:
            return call()
        except Blocked:
            yield Waiting(0, op)


def _resumed(call: Callable[[int, int], object], first: int, count: int) -> Generator[int | Waiting, None, None]:
    """An EDMM call over pages first..first+count-1 in one turn; after EAGAIN (or Blocked) it goes on
    from where it stopped on the next turn, as the selftest and the engine's op_remove_pages do."""
    done = 0
    while True:
        try:
            call(first + done, count - done)
        except IoctlError as e:
            if e.errno != errno.EAGAIN:
                raise
            done += e.done
            yield Waiting(e.done, "remove_pages", again=True)
            continue
        except Blocked as e:
            done += e.done
            yield Waiting(e.done, "remove_pages")
            continue
        yield count - done
        return


def _in_chunks(
    first: int, count: int, call: Callable[[int, int], int], op: str
) -> Generator[int | Waiting, None, None]:
    """``call(at, n)`` (the request ``op``) over pages first..first+count-1, up to CHUNK_PAGES a turn;
    Blocked resumes where the core stopped, when the task tries again (Waiting)."""
    done = 0
    while done < count:
        n = min(CHUNK_PAGES, count - done)
        try:
            served = call(first + done, n)
        except Blocked as e:
            done += e.done
            yield Waiting(e.done, op)
            continue
        done += served
        yield served


@dataclass(slots=True)
class Task:
    pid: int
    spec: WorkloadSpec
    turns: Turn
    wake_ns: int = 0
    outcome: str | None = None
    stalled_ns: int = 0  # the virtual clock when its call began to stall (0: it does not)
    retries: int = 0  # tries since
    op: str = ""  # the request that stalls
    progress_seen: int = -1  # the host's reclaim progress at its last EAGAIN


class InprocBackend:
    """A scenario's host in this process.  Deterministic: see the module docstring."""

    def __init__(self, capacity: int, memory: int | None, seed: int) -> None:
        self.clock = VirtualClock()
        self.capacity_bytes = capacity
        self.memory_bytes = memory
        self._events: list[dict[str, Any]] = []
        self._seq = 0
        self.host = Host(capacity, memory, seed, clock=self.clock, event_sink=self._on_event)
        self.tasks: dict[int, Task] = {}
        self._next_pid = FIRST_PID
        self.turns = 0

    # -- events -----------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        self._publish(event.to_dict())

    def _publish(self, message: dict[str, Any]) -> None:
        self._seq += 1
        message["seq"] = self._seq
        self._events.append(message)

    def take_events(self, sync: bool = False) -> list[dict[str, Any]]:
        out, self._events = self._events, []
        return out

    # -- files ------------------------------------------------------------------

    def _file_op(self, op: Any, *args: str) -> Any:
        try:
            return op(*args)
        except OSError as e:
            raise FileError(errno_name(e.errno or errno.EIO), e.strerror or str(e)) from None

    def mkdir(self, path: str) -> None:
        self._file_op(self.host.mkdir, path)

    def rmdir(self, path: str) -> None:
        self._file_op(self.host.rmdir, path)

    def read(self, path: str) -> str:
        return str(self._file_op(self.host.read, path))

    def write(self, path: str, value: str) -> None:
        self._file_op(self.host.write, path, value)
        self._wake_stalled()  # a limit raised may let a stalled call go on

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
        pid = self._next_pid
        self._next_pid += PID_STRIDE
        host = self.host
        if spec.cgroup != "/":
            try:
                host.write(f"{spec.cgroup}/cgroup.procs", str(pid))  # `--cgroup`: it moves itself first
            except OSError as e:  # the process would exit 1 with the errno before its hello
                self.tasks[pid] = Task(pid, spec, _no_turns(), outcome=errno_name(e.errno or errno.EIO))
                return pid
        if spec.kind == "vm":
            turns = vm_task(host, pid, spec.size_bytes, spec.passes, spec.duration_ns)
        else:
            plan = EnclavePlan(spec.size_bytes, spec.pattern, spec.passes, None, spec.seed, CHUNK_PAGES)
            if spec.duration_ns is not None:
                plan.duration_s = spec.duration_ns / 1e9
            plan.grow_pages = -(-spec.grow_bytes // PAGE_SIZE)
            plan.trim_pages = -(-spec.trim_bytes // PAGE_SIZE)
            turns = enclave_task(host, pid, plan)
        self.tasks[pid] = Task(pid, spec, turns)
        host.tree.register_task(pid)
        cgroup = host.task_cgroup(pid)
        self._publish({"kind": "workload_start", "pid": pid, "role": spec.kind, "name": spec.name, "cgroup": cgroup})
        return pid

    def kill(self, pid: int, signal: str) -> None:
        task = self.tasks[pid]
        if task.outcome is None:
            self.host.signal(pid)
            self._end(task, "killed")

    def outcome(self, pid: int) -> str | None:
        task = self.tasks[pid]
        return "stalled" if task.outcome is None and task.stalled_ns else task.outcome

    def alive(self) -> int:
        return sum(task.outcome is None for task in self.tasks.values())

    def _end(self, task: Task, outcome: str) -> None:
        """The process is gone: the host releases what it held (its last reference)."""
        self._end_stall(task, "exited")
        task.outcome = outcome
        task.turns.close()
        self.host.exit_task(task.pid)
        self._publish({"kind": "workload_exit", "pid": task.pid, "name": task.spec.name, "reason": outcome})
        self._wake_stalled()

    # -- stalls -----------------------------------------------------------------

    def _wait(self, task: Task, step: Waiting) -> None:
        """Its call could not go on.  It stalls when no reclaim can help: Blocked with no OOM victim
        to wait for (the host ran the work inline), or EAGAIN again with the work between the two
        having moved nothing.  Otherwise it tries again at its next turn."""
        host = self.host
        if host.oom_victims:
            return  # the victim's exit frees its backing
        if step.again and task.progress_seen != host.progress and not task.stalled_ns:
            task.progress_seen = host.progress
            return
        now = self.clock.now_ns()
        if task.stalled_ns:
            task.retries += 1
        else:
            task.stalled_ns, task.retries, task.op = now, 0, step.op
            host.emit(Stalled(now, task.pid, task.spec.name, host.task_cgroup(task.pid), step.op))
        task.wake_ns = now + STALL_RETRY_NS

    def _end_stall(self, task: Task, how: str) -> None:
        if not task.stalled_ns:
            return
        now = self.clock.now_ns()
        cgroup = self.host.task_cgroup(task.pid)
        elapsed = now - task.stalled_ns
        task.stalled_ns = 0
        self.host.emit(StallEnded(now, task.pid, task.spec.name, cgroup, task.op, elapsed, task.retries, how))

    def _wake_stalled(self) -> None:
        """A task ended or a file was written: every stalled task tries again at its next turn."""
        now = self.clock.now_ns()
        for task in self.tasks.values():
            if task.stalled_ns and task.outcome is None:
                task.wake_ns = min(task.wake_ns, now)

    # -- time -------------------------------------------------------------------

    def _round(self) -> bool:
        """One turn for every runnable task, then the async work; False when no task could run."""
        now = self.clock.now_ns()
        runnable = [t for t in self.tasks.values() if t.outcome is None and t.wake_ns <= now]
        for task in runnable:
            if task.outcome is None:
                self._turn(task)
            self._deliver_oom_kills()
        written = self.host.pages_reclaimed
        self.host.run_pending_work()
        self.clock.advance((self.host.pages_reclaimed - written) * PAGE_NS)
        self._deliver_oom_kills()
        return bool(runnable)

    def _turn(self, task: Task) -> None:
        self.turns += 1
        try:
            step = next(task.turns)
        except StopIteration:
            self._end_stall(task, "resumed")
            self._end(task, "ok")
            return
        except (SigBus, Interrupted, OSError) as e:
            outcome = self._outcome_of(task.pid, e)
            self._end_stall(task, outcome)
            self._end(task, outcome)
            return
        if isinstance(step, Pause):
            self._end_stall(task, "resumed")
            task.wake_ns = self.clock.now_ns() + step.ns
            self.clock.advance(TURN_NS)
        elif isinstance(step, Waiting):
            self.clock.advance(TURN_NS + step.pages * PAGE_NS)
            self._wait(task, step)
        else:
            self._end_stall(task, "resumed")
            task.progress_seen = -1
            self.clock.advance(TURN_NS + step * PAGE_NS)

    def _outcome_of(self, pid: int, error: Exception) -> str:
        """How the process would end: the OOM killer's SIGKILL beats whatever its call returned."""
        if pid in self.host.oom_victims:
            return "OOM"
        if isinstance(error, SigBus):
            return "SIGBUS"
        if isinstance(error, Interrupted):
            return "EINTR"
        assert isinstance(error, OSError)  # IoctlError and the driver's other errors: exit 1 with the errno
        return errno_name(error.errno or errno.EIO)

    def _deliver_oom_kills(self) -> None:
        """The OOM killer's SIGKILL: its victims die at once (the engine sends the real signal)."""
        for pid in sorted(self.host.oom_victims):
            task = self.tasks.get(pid)
            if task is not None and task.outcome is None:
                self._end(task, "OOM")

    def _run_until(self, deadline_ns: int, done: Iterator[bool] | None, tick: Tick) -> bool:
        rounds = 0
        while self.clock.now_ns() < deadline_ns:
            if done is not None and next(done):
                return True
            if not self._round():
                sleeping = [t.wake_ns for t in self.tasks.values() if t.outcome is None]
                target = min([deadline_ns, *sleeping])
                self.clock.advance(max(0, target - self.clock.now_ns()))
            rounds += 1
            if rounds % TICK_TURNS == 0:
                tick()
        return done is not None and next(done)

    def sleep(self, ns: int, tick: Tick) -> None:
        self._run_until(self.clock.now_ns() + ns, None, tick)

    def wait(self, pids: list[int], timeout_ns: int, tick: Tick) -> bool:
        def ended() -> Iterator[bool]:
            while True:
                yield all(self.tasks[pid].outcome is not None for pid in pids)

        return self._run_until(self.clock.now_ns() + timeout_ns, ended(), tick)

    def finish(self, tick: Tick) -> list[int]:
        killed = [task.pid for task in self.tasks.values() if task.outcome is None]
        for pid in killed:
            self.host.signal(pid)
            self._end(self.tasks[pid], "killed")
        self.host.run_pending_work()
        return killed

    def close(self) -> None:
        pass

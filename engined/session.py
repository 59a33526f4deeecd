"""The engine's scheduler of requests on one Host, with no sockets and no clock of its own.

The engine process feeds it the requests of its ROUTER socket; the in-process scenario
mode feeds it the calls of the workload programs on a virtual clock.  Both get the same
stepping, parking, stalls, exits, OOM kills and event numbering from here; they differ
in how they wait (real time or virtual) and in how much reclaim work they run per round.

A request runs as steps: a long ADD_PAGES or a batch of faults is cut into chunks of
``chunk_pages`` so that other callers, process exits and the reclaim work get their
turn.  A step that the core reports waiting (a fault got EBUSY, or reclaim waits for an
OOM victim to exit) is parked until the async reclaim work (cgroup work items and
ksgxd) or an exit has changed something.  One that is still blocked once that work has
run dry, having moved nothing, stalls: as the kernel's task faults again for as long as
nothing frees the limiting cgroup, it is retried STALL_RETRY_HZ times a second, and at
once after a process exit, an enclave or vEPC release or a cgroup file write.

Who a caller is comes from the transport (the kernel's peer credentials); what happens
to processes (following them until they exit, SIGKILL for the OOM killer, their parent)
goes through ``Processes``, which the engine implements with pidfds and /proc, and the
in-process mode with its table of tasks.
"""

from __future__ import annotations

import errno
import logging
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from operator import mul, sub
from types import GeneratorType
from typing import Any

from common.costs import OP_ACCESS, Profile, load_profile
from engine import Blocked, Host, SigBus
from engine.events import (
    STALL_RETRY_HZ,
    Event,
    Frozen,
    ReclaimBatch,
    Stalled,
    StallEnded,
    Stepped,
    Thawed,
    WorkloadExited,
    WorkloadStarted,
)
from engine.files import WRITABLE_NAMES
from engined.calls import MORE, Caller, Handler, Processes, Reply, Step, again, error_reply, how
from engined.history import History
from engined.liveness import describe_status, inherited_cgroup
from engined.stats import Stats, Workload
from wire.messages import FreezeState, Info, StepResult
from wire.protocol import PRESSURE_KINDS, READ_OPS, STEP_OPS

log = logging.getLogger("epc.engine")

CHUNK_PAGES = 1024  # pages per step of a long request (about 3 ms of work under reclaim)
MAX_OPEN_PER_PID = 1024  # enclaves and vEPCs one process may hold open (the kernel: RLIMIT_NOFILE, EMFILE)
MAX_EXITED = 256  # exited workload records kept for displays; older ones are pruned
STALL_RETRY_NS = 10**9 // STALL_RETRY_HZ
STEP_EVENTS = 64  # events a step's answer lists (it counts them all)
# the ops whose SGX operations a workload's clock pays for (docs/costs.md); the others touch no EPC
METERED_OPS = frozenset({
    "ecreate", "add_pages", "einit", "access", "augment", "release", "remove_pages", "modify_types",
    "restrict_permissions", "remove_trimmed", "vepc_open", "vepc_access", "vepc_release",
})  # fmt: skip


@dataclass(slots=True)
class Pending:
    """A request being served in steps."""

    key: Hashable  # whom to answer: the transport's name for the caller
    request_id: int
    pid: int
    steps: Step
    op: str = ""
    progress_seen: int = -1
    idle_seen: bool = False  # woken because the reclaim work ran dry: still blocked means stalled
    stalled_ns: int | None = None  # the host clock when it started to stall (None: it does not)
    retries: int = 0  # tries since it stalled
    retry_ns: int = 0  # the host clock of its next try while it stalls
    reads: bool = False  # an op that changes nothing (check): it goes on while the engine is frozen
    queued: bool = False  # taken while frozen: its process may be a new one of an exited workload's pid
    compute_ns: int | None = None  # an access that gave its compute: what is left to charge (None: per page)


@dataclass(slots=True)
class Freeze:
    """Step mode: who holds it (the transport's name for its connection, and its pid) and since when."""

    key: Hashable
    pid: int
    since_ns: int
    steps: int = 0


class Session:
    """Requests on ``host``, as steps; see the module docstring.

    ``handlers``: what each op does (engined.requests.HANDLERS); ``answer(key, reply)`` sends
    a reply; ``publish(messages)`` sends numbered events; ``wake()`` tells the driver that
    parked calls became ready; ``engine_pid`` and ``pub`` (the PUB endpoint) are what ping and
    hello tell a client (``info``); ``uid`` is the engine's own.
    """

    def __init__(
        self,
        host: Host,
        processes: Processes,
        handlers: Mapping[str, Handler],
        *,
        answer: Callable[[Hashable, Reply], None],
        publish: Callable[[list[dict[str, Any]]], None],
        wake: Callable[[], None] = lambda: None,
        engine_pid: int = 0,
        pub: str = "",
        uid: int = 0,
        chunk_pages: int = CHUNK_PAGES,
        profile: Profile | None = None,
    ) -> None:
        self.host = host
        self.profile = profile if profile is not None else load_profile()
        self._weights, self._paging_weights = self.profile.weights()
        self._entry_ns = self.profile.cost_ns["entry"]  # bound once: read by every metered call
        self._compute_ns = self.profile.cost_ns["compute"]
        self.kworker_ns = 0  # emulated CPU time of the cgroup work items (async reclaim), all together
        self.ksgxd_ns = 0  # ...and of ksgxd (global reclaim)
        self.processes = processes
        self.answer = answer
        self.publish = publish
        self.wake = wake
        self.info: Info = {
            "engine_pid": engine_pid,
            "pub": pub,
            "capacity": host.capacity_bytes,
            "writable": sorted(WRITABLE_NAMES),
            "frozen": False,
            "knobs": host.knobs.changed(),
        }
        self.uid = uid
        self.chunk_pages = chunk_pages
        self.workloads: dict[int, Workload] = {}
        self.stats = Stats(
            host, self.workloads, processes.stopped, self._clocks, default_compute_ns=self.profile.cost_ns["compute"]
        )
        self.ready: deque[Pending] = deque()
        self.waiting: list[Pending] = []
        self.stalled: list[Pending] = []  # calls that no reclaim can help, tried again now and then
        self.events: list[Event] = []
        self.seq = 0
        self.oom_sent: set[int] = set()  # OOM victims sent their SIGKILL, not yet exited
        self.checking = False
        self.steps_run = 0  # requests taken and steps run, ever (a virtual clock's measure)
        self.pages_stepped = 0  # pages the steps asked the core for, ever (another)
        self.handlers = handlers
        self.history = History()
        self.frozen: Freeze | None = None  # step mode (see the "step mode" section below)
        self.asking: Hashable = None  # the connection whose request a handler is serving
        self.answered: Reply | None = None  # the last reply sent (what a step reports)
        self._recording: list[dict[str, Any]] | None = None  # the events a step causes
        host.emit = self.events.append

    # -- taking requests ------------------------------------------------------

    def submit(self, key: Hashable, caller: Caller, request_id: int, op: str, args: dict[str, Any]) -> None:
        """Take one checked request: answered at once, or its first step now and the rest in rounds.
        While the engine is frozen, a request that may change the host waits in the ready queue
        (its holder's excepted: it drives), whole, for a step or the thaw."""
        frozen = self.frozen
        if frozen is not None and key != frozen.key and _may_change_host(op, args):
            pending = Pending(key, request_id, caller.pid, self._deferred(caller, op, args), op, queued=True)
            pending.compute_ns = args.get("compute_ns") if op == "access" else None
            self.ready.append(pending)
            return
        self.steps_run += 1
        self.asking = key
        handler = self.handlers[op]
        before = self.host.ops.copy() if op in METERED_OPS else None
        # an access that says its compute (a trace's batch) pays that, once, instead of per page
        given = args.get("compute_ns") if op == "access" else None
        try:
            result = handler(self, caller, **args)
        except Blocked:  # an op that is not stepped waits like the others: asked again later
            result = again(lambda: handler(self, caller, **args))
        except Exception as e:
            if before is not None:
                self._charge(caller.pid, before, given or 0, given)
            self._answer(key, self._failed(request_id, caller.pid, e))
            return
        if before is not None:
            extra = self._entry_ns + (given or 0) if op == "access" else 0
            self._charge(caller.pid, before, extra, given)
        if type(result) is GeneratorType:  # (isinstance against the ABC costs a microsecond a call)
            # its first step now, before any reclaim work runs: a first WAIT then records the
            # progress its failed attempt saw (else a retry after that work would look stalled)
            pending = Pending(key, request_id, caller.pid, result, op, reads=op in READ_OPS)
            pending.compute_ns = None if given is None else 0
            self._step(pending)
        else:
            self._answer(key, Reply(request_id, result))

    def _deferred(self, caller: Caller, op: str, args: dict[str, Any]) -> Step:
        """A request taken while frozen, as steps: its first does what submit would have done."""
        handler = self.handlers[op]
        try:
            result = handler(self, caller, **args)
        except Blocked:
            result = again(lambda: handler(self, caller, **args))
        if type(result) is GeneratorType:
            result = yield from result
        return result

    # -- rounds ---------------------------------------------------------------

    def work_due(self) -> bool:
        host = self.host
        return bool(host.work) or host.work_in_flight is not None or host.ksgxd_woken

    def busy(self) -> bool:
        """Whether a round has something to do now (frozen: only the steps of ops that read)."""
        if self.frozen is not None:
            return any(p.reads for p in self.ready)
        return bool(self.ready) or self.work_due()

    def round(self, work_slice: Callable[[], Callable[[], bool]], between: Callable[[], None] = lambda: None) -> bool:
        """Every ready step once (``between`` after each, to let a newcomer in), then reclaim work
        for as long as the predicate that ``work_slice()`` returns when the work starts says (the
        engine's 2 ms slice counts from there, not from the round's start); False when there was
        nothing to do.  Frozen, a round runs only the steps of ops that read (check)."""
        if self.frozen is not None:
            return self._frozen_round(between)
        self._retry_stalled()
        if not self.ready and not self.work_due():
            self._expire_waiting()
            return bool(self.ready)  # the parked calls it woke go at once, not after the driver's idle wait
        for _ in range(len(self.ready)):
            if not self.ready or self.frozen is not None:
                break  # an exit taken in between dropped its calls, or a freeze stops the round
            self.steps_run += 1
            self._step(self.ready.popleft())
            between()
        self.run_work(work_slice())
        self._deliver_oom_kills()
        self._expire_waiting()
        return True

    def run_work(self, more_work: Callable[[], bool]) -> None:
        """The async reclaim work (cgroup work items, ksgxd) for as long as ``more_work()`` says;
        the parked calls wake when it moved something."""
        host = self.host
        if self.work_due() and self.frozen is None:
            progress = host.progress
            while self._run_work_step() and more_work():
                pass
            if host.progress != progress:
                self._wake_waiting()

    def _run_work_step(self) -> bool:
        """One Host.run_work_step(), its cost on the clock of whoever runs it: a cgroup's work item
        (the kworkers' clock) or ksgxd."""
        host = self.host
        work = host.work_in_flight
        ksgxd = work.cg is None if work is not None else not host.work and host.ksgxd_woken
        before = host.ops.copy()
        ran = host.run_work_step()
        cost = sum(map(mul, map(sub, host.ops, before), self._weights))
        if ksgxd:
            self.ksgxd_ns += cost
        else:
            self.kworker_ns += cost
        return ran

    def _clocks(self) -> tuple[str, int, int]:
        """The profile's name and the reclaim workers' clocks, for the snapshot's header."""
        return self.profile.name, self.kworker_ns, self.ksgxd_ns

    def _charge(self, pid: int, before: list[int], extra_ns: int = 0, given: int | None = None) -> None:
        """What ``pid``'s call did to the host since the counts ``before``, on its workload's clock:
        the operations' costs (paging among them) and its compute per page accessed, unless the call
        ``given`` its own compute (an access with ``compute_ns``: the caller puts it in ``extra_ns``)."""
        workload = self.workloads.get(pid)
        if workload is None:
            return
        ops = self.host.ops
        pages = ops[OP_ACCESS] - before[OP_ACCESS]
        if given is not None:
            compute = 0
            workload.call_compute = True
            workload.call_compute_ns += given
            workload.call_compute_pages += pages
        elif workload.compute_ns is not None:
            compute = workload.compute_ns
        else:
            compute = self._compute_ns
        workload.runtime_ns += pages * compute + extra_ns
        if ops[:OP_ACCESS] != before[:OP_ACCESS]:  # some SGX operation (the counts before OP_ACCESS, the last)
            delta = list(map(sub, ops, before))
            workload.runtime_ns += sum(map(mul, delta, self._weights))  # access weighs 0: its compute is above
            workload.paging_ns += sum(map(mul, delta, self._paging_weights))

    def next_retry_ns(self) -> int | None:
        """The host clock when the next stalled call tries again; None when none stalls (or frozen)."""
        if self.frozen is not None:
            return None
        return min((p.retry_ns for p in self.stalled), default=None)

    def _step(self, pending: Pending) -> str:
        """Run one step of ``pending``; how it ended: done, failed, more, waiting, stalled or dropped."""
        workload = self.workloads.get(pending.pid)
        if workload is not None and workload.state != "running" and not pending.queued:
            pending.steps.close()  # its process is gone: nobody to answer
            self._end_stall(pending, "exited")
            return "dropped"
        before = self.host.ops.copy() if pending.op in METERED_OPS else None
        try:
            status = next(pending.steps)
        except StopIteration as done:
            if before is not None:
                self._charge_step(pending, before)
            self._end_stall(pending, "resumed")
            self._answer(pending.key, Reply(pending.request_id, done.value))
            return "done"
        except Exception as e:
            if before is not None:
                self._charge_step(pending, before)
            self._end_stall(pending, how(e))
            self._answer(pending.key, self._failed(pending.request_id, pending.pid, e))
            return "failed"
        if before is not None:
            self._charge_step(pending, before)
        if status is MORE:
            self._end_stall(pending, "resumed")
            self.ready.append(pending)
            return "more"
        if pending.stalled_ns is not None:
            pending.retries += 1
            self._park_stalled(pending)
            return "stalled"
        if pending.idle_seen and pending.progress_seen == self.host.progress:
            self._start_stall(pending)  # the work it waited for ran dry and moved nothing
            return "stalled"
        pending.idle_seen = False
        pending.progress_seen = self.host.progress
        self.waiting.append(pending)
        return "waiting"

    def _charge_step(self, pending: Pending, before: list[int]) -> None:
        """A step's cost on its caller's clock; an access that gave its compute pays what is left of it
        (all of it on the first step of one taken while frozen, nothing after) and no compute per page."""
        given = pending.compute_ns
        if given is None:
            self._charge(pending.pid, before)
        else:
            self._charge(pending.pid, before, given, given)
            pending.compute_ns = 0

    def _wake_waiting(self) -> None:
        self.ready.extend(self.waiting)
        self.waiting.clear()

    def _expire_waiting(self) -> None:
        """When nothing can unblock the parked requests any more (the reclaim work ran dry, no
        OOM victim is exiting), give each another try: one still blocked then stalls (_step)."""
        if self.waiting and not self.work_due() and not self.host.oom_victims:
            for pending in self.waiting:
                pending.idle_seen = True
            self._wake_waiting()

    # -- stalls ---------------------------------------------------------------

    def _start_stall(self, pending: Pending) -> None:
        """The call stalls: the workload shows as stalled, a ``stall`` event says so once."""
        now = self.host.clock.now_ns()
        pending.stalled_ns = now
        pending.retries = 0
        workload = self.workloads.get(pending.pid)
        name = ""
        if workload is not None:
            name = workload.name
            workload.stalled_calls += 1
            workload.stalled_ns = workload.stalled_ns or now
        cgroup = self.host.task_cgroup(pending.pid)
        log.info("pid %d (%s) stalls in %s: %s that no reclaim can help", pending.pid, name, cgroup, pending.op)
        self._publish_now(Stalled(now, pending.pid, name, cgroup, pending.op))
        self._park_stalled(pending)

    def _park_stalled(self, pending: Pending) -> None:
        pending.retry_ns = self.host.clock.now_ns() + STALL_RETRY_NS
        self.stalled.append(pending)

    def _end_stall(self, pending: Pending, how: str) -> None:
        """The stalled call went on (``resumed``), failed (an errno name) or its task is gone (``exited``)."""
        if pending.stalled_ns is None:
            return
        now = self.host.clock.now_ns()
        workload = self.workloads.get(pending.pid)
        name = ""
        if workload is not None:
            name = workload.name
            workload.stalled_calls -= 1
            if not workload.stalled_calls:
                workload.stalled_ns = 0
        cgroup = workload.cgroup if workload is not None and workload.state != "running" else ""
        cgroup = cgroup or self.host.task_cgroup(pending.pid)
        elapsed = now - pending.stalled_ns
        pending.stalled_ns = None
        self._publish_now(StallEnded(now, pending.pid, name, cgroup, pending.op, elapsed, pending.retries, how))

    def _retry_stalled(self) -> None:
        """Stalled calls whose time has come, back to the ready queue."""
        if not self.stalled:
            return
        now = self.host.clock.now_ns()
        due = [p for p in self.stalled if p.retry_ns <= now]
        if due:
            self.stalled = [p for p in self.stalled if p.retry_ns > now]
            self.ready.extend(due)

    def something_freed(self) -> None:
        """A process exited, an enclave or vEPC was released, or a cgroup file was written: every
        parked call, the stalled ones included, tries again now."""
        self.ready.extend(self.stalled)
        self.stalled.clear()
        self._wake_waiting()
        self.wake()

    # -- answers and events ---------------------------------------------------

    def _answer(self, key: Hashable, reply: Reply) -> None:
        self._deliver_oom_kills()  # first: an OOM kill lands before the call returns, as in the kernel
        self.answered = reply
        self.answer(key, reply)

    def _failed(self, request_id: int, pid: int, error: BaseException) -> Reply:
        if isinstance(error, SigBus):
            self._note_exit_reason(pid, "SIGBUS")
        return error_reply(request_id, error)

    def flush_events(self) -> None:
        """Number the events buffered so far (the core's and the Session's) and publish them."""
        if not self.events:
            return
        events = self.events[:]
        self.events.clear()  # the same list: the host appends to it
        self._publish([event.to_dict() for event in events])

    def _publish(self, messages: list[dict[str, Any]]) -> None:
        keep = self.history.event
        for message in messages:
            self.seq += 1
            message["seq"] = self.seq
            if message["kind"] not in PRESSURE_KINDS:
                keep(message)
        if self._recording is not None:
            self._recording.extend(messages)
        self.publish(messages)

    def _publish_now(self, event: Event) -> None:
        """An event of the Session's, after the core's buffered ones (so it follows what it is about)."""
        self.flush_events()
        self._publish([event.to_dict()])

    def snapshot(self) -> dict[str, Any]:
        """The whole state a client needs to draw: cgroups, workloads, EPC; O(cgroups + workloads)."""
        self.flush_events()  # so its seq covers every event whose effect it shows
        return self.stats.full(self.info["pub"], self.info["engine_pid"], self.seq)

    def shutdown(self) -> None:
        """Answer every call in hand with ESHUTDOWN and publish what is buffered."""
        for pending in [*self.ready, *self.waiting, *self.stalled]:
            pending.steps.close()
            self.answer(pending.key, Reply(pending.request_id, err="ESHUTDOWN", msg="the engine stopped"))
        self.ready.clear()
        self.waiting.clear()
        self.stalled.clear()
        self.flush_events()

    # -- step mode ------------------------------------------------------------
    #
    # Frozen, the Session runs nothing by itself: no request steps (new requests that may change
    # the host wait in the ready queue, whole), no reclaim work, no stall retries.  Ops that only
    # read are answered as ever, and a check goes on in rounds.  ``step`` runs one request step
    # or one round of reclaim work; ``thaw`` (or the holder's connection or process going) resumes.
    # Exits are not requests: a process that dies while frozen is released at once.

    def freeze(self, key: Hashable, pid: int) -> FreezeState:
        """Freeze for the connection ``key`` of process ``pid`` (0: none, in-process); EBUSY when
        another holds it.  Its process's exit (watched) or its connection's loss thaws."""
        frozen = self.frozen
        if frozen is not None:
            if frozen.key != key:
                raise OSError(errno.EBUSY, f"the engine is frozen by pid {frozen.pid}: only its holder steps or thaws")
            return self.freeze_state()
        if pid:
            self.processes.watch(pid)  # ESRCH if it is gone already
        now = self.host.clock.now_ns()
        self.frozen = Freeze(key, pid, now)
        self.info["frozen"] = True
        self.stats.frozen, self.stats.frozen_ns = True, now
        log.info("frozen by pid %d (step mode)", pid)
        self._publish_now(Frozen(now, pid))
        return self.freeze_state()

    def thaw(self, how: str = "asked", key: Hashable = None) -> FreezeState:
        """Resume: ``how`` is asked (by ``key``: EPERM unless it holds the freeze), disconnected
        or exited.  A stall's time frozen does not count: its start moves on by that much."""
        frozen = self.frozen
        if frozen is None:
            return self.freeze_state()
        if how == "asked" and key != frozen.key:
            raise OSError(errno.EPERM, f"the engine is frozen by pid {frozen.pid}: only its holder thaws it")
        now = self.host.clock.now_ns()
        self._unfreeze_stalls(frozen.since_ns, now)
        self.frozen = None
        self.info["frozen"] = False
        self.stats.frozen, self.stats.frozen_ns = False, 0
        log.info("thawed (%s) after %d steps", how, frozen.steps)
        self._publish_now(Thawed(now, frozen.pid, how, now - frozen.since_ns, frozen.steps))
        self.wake()
        return self.freeze_state()

    def disconnected(self, key: Hashable) -> None:
        """The transport lost connection ``key``: if it held the freeze, the engine thaws."""
        if self.frozen is not None and self.frozen.key == key:
            self.thaw("disconnected")

    def holder(self) -> Hashable:
        """The connection that holds the freeze (None: not frozen)."""
        return None if self.frozen is None else self.frozen.key

    def freeze_state(self) -> FreezeState:
        frozen, host = self.frozen, self.host
        return {
            "frozen": frozen is not None,
            "pid": frozen.pid if frozen is not None else 0,
            "since_ns": frozen.since_ns if frozen is not None else 0,
            "steps": frozen.steps if frozen is not None else 0,
            "ready": sum(1 for p in self.ready if not p.reads),
            "waiting": len(self.waiting),
            "stalled": len(self.stalled),
            "work": len(host.work) + (host.work_in_flight is not None),
            "ksgxd": host.ksgxd_woken,
        }

    def _unfreeze_stalls(self, since_ns: int, now: int) -> None:
        """Move each stall's start on by the time it spent frozen (to ``now`` if it began frozen)."""
        frozen_ns = now - since_ns
        for pending in self.stalled + [p for p in self.ready if p.stalled_ns is not None]:
            assert pending.stalled_ns is not None
            pending.stalled_ns = min(pending.stalled_ns + frozen_ns, now)
        for workload in self.workloads.values():
            if workload.stalled_calls:
                workload.stalled_ns = min(workload.stalled_ns + frozen_ns, now)

    def _frozen_round(self, between: Callable[[], None]) -> bool:
        """A frozen round: the steps of ops that read, nothing else; False when there were none."""
        reads = [p for p in self.ready if p.reads]
        if not reads:
            return False
        self.ready = deque(p for p in self.ready if not p.reads)
        for pending in reads:
            self._step(pending)
            between()
        return True

    def step(self, key: Hashable, what: str) -> StepResult:
        """One step of a frozen engine by its holder ``key``: ``request`` (the oldest ready
        request's next step; with none ready, the stalled call due first tries again) or
        ``reclaim`` (one round of the reclaim work in flight or queued next, usually one batch).
        EINVAL when not frozen, EPERM for another connection."""
        frozen = self.frozen
        if frozen is None:
            raise OSError(errno.EINVAL, "the engine is not frozen: freeze it first, then step")
        if key != frozen.key:
            raise OSError(errno.EPERM, f"the engine is frozen by pid {frozen.pid}: only its holder steps")
        self.flush_events()  # what happened before is not this step's
        recording: list[dict[str, Any]] = []
        self._recording = recording
        try:
            result = self._step_request() if what == "request" else self._step_reclaim()
            self._deliver_oom_kills()
            self._expire_waiting()  # as a round ends: calls nothing can help any more try again
            self.flush_events()
        finally:
            self._recording = None
        kinds: dict[str, int] = {}
        for message in recording:
            kinds[message["kind"]] = kinds.get(message["kind"], 0) + 1
        result |= {"nr_events": len(recording), "kinds": kinds, "events": recording[:STEP_EVENTS]}
        if result["ran"]:
            frozen.steps += 1
            now = self.host.clock.now_ns()
            r = result
            stepped = Stepped(now, what, r["op"], r["pid"], r["status"], r["worker"], r["written"], len(recording))
            self._publish_now(stepped)
        result["state"] = self.freeze_state()
        return result

    def _step_request(self) -> StepResult:
        pending = None
        for i, ready in enumerate(self.ready):
            if not ready.reads:
                pending = ready
                del self.ready[i]
                break
        if pending is None and self.stalled:
            pending = min(self.stalled, key=lambda p: p.retry_ns)
            self.stalled.remove(pending)
        result = _step_result("request", self.freeze_state())
        if pending is None:
            parked = f"{len(self.waiting)} wait for reclaim work: step reclaim" if self.waiting else "nothing waits"
            result["note"] = f"no request is ready to step ({parked})"
            return result
        self.steps_run += 1
        self.answered = None
        status = self._step(pending)
        err = self.answered.err if self.answered is not None and status in ("done", "failed") else ""
        result |= {"ran": True, "op": pending.op, "pid": pending.pid, "status": status, "err": err}
        result["note"] = f"{pending.op} of pid {pending.pid}: {status}" + (f" ({err})" if err else "")
        return result

    def _step_reclaim(self) -> StepResult:
        host = self.host
        result = _step_result("reclaim", self.freeze_state())
        if not self.work_due():
            result["note"] = "no reclaim work is queued"
            return result
        progress, written, worker = host.progress, host.pages_reclaimed, ""
        while not worker and self.work_due():  # (a queued item of a cgroup freed since runs nothing)
            work = host.work_in_flight
            if work is None and host.work:
                queued = host.tree.by_id[next(iter(host.work))]
                worker = "" if queued is None else queued.path
            else:
                worker = "ksgxd" if work is None or work.cg is None else work.cg.path
            self._run_work_step()
        if not worker:
            result["note"] = "no reclaim work is queued (the cgroups it was queued for are gone)"
            return result
        batches = [e for e in self.events if isinstance(e, ReclaimBatch)]
        stopped = host.work_in_flight is None
        result |= {
            "ran": True,
            "status": "stopped" if stopped else "more",
            "worker": worker,
            "scanned": sum(e.scanned for e in batches),
            "rotated": sum(e.rotated for e in batches),
            "written": host.pages_reclaimed - written,
            "stopped": stopped,
        }
        result["note"] = f"{worker}: {len(batches)} batch(es), {result['written']} pages written" + (
            ", and it stopped" if stopped else ""
        )
        if host.progress != progress:
            self._wake_waiting()
        return result

    def sample_history(self) -> None:
        """A history sample of every cgroup (the engine's 4 Hz tick, whoever listens)."""
        self.history.sample(self.host)

    # -- processes ------------------------------------------------------------

    def register(self, caller: Caller, pid: int, role: str, name: str) -> None:
        """A new workload process: followed until it exits, placed where its nearest placed ancestor is."""
        if self.processes.gone(pid):
            self.exited(pid)  # an earlier process of this pid: its exit first
        workload = self.workloads.get(pid)
        if workload is not None and workload.state == "running":
            return
        self.processes.watch(pid)
        host = self.host
        if pid not in host.tree.tasks:
            cgroup = inherited_cgroup(pid, self._placed, self.processes.parent)
            host.write(f"{cgroup.rstrip('/')}/cgroup.procs", str(pid))
        cgroup = host.task_cgroup(pid)
        name = name or f"{role}-{pid}"
        self.workloads.pop(pid, None)  # a reused pid: a new record, at the end
        self.workloads[pid] = Workload(pid, role, name, cgroup, host.clock.now_ns(), caller.uid)
        self._publish_now(WorkloadStarted(host.clock.now_ns(), pid, role, name, cgroup))

    def _placed(self, pid: int) -> str | None:
        """The cgroup a cgroup.procs write put ``pid`` in, root included; None if none ever did."""
        cg = self.host.tree.placed(pid)
        return None if cg is None else cg.path

    def reap(self, pids: Iterable[int]) -> None:
        """Take the exits of these processes that already happened, before acting on their cgroups."""
        for pid in list(pids):
            if self.processes.watching(pid):
                if self.processes.gone(pid):
                    self.exited(pid)
            elif not self.processes.alive(pid):
                self.host.exit_task(pid)

    def exited(self, pid: int, reason: str = "") -> None:
        """``pid`` is gone, however it went: release what it held, without its help.  ``reason``:
        how it ended, when the driver knows better than the workload said (killed, failed, ...).
        Frozen or not: an exit is not a request (and the freeze of a holder that exits ends)."""
        if self.frozen is not None and self.frozen.pid == pid:
            self.thaw("exited")
        try:
            self._release_process(pid, reason)
        except Exception:
            log.exception("internal error releasing pid %d", pid)
        self.something_freed()

    def _release_process(self, pid: int, reason: str) -> None:
        self._drop_calls(pid)
        status = self.processes.exit_status(pid)  # before forget: read through its pidfd
        self.processes.forget(pid)
        before = self.host.ops.copy()
        self.host.signal(pid)
        self.host.exit_task(pid)  # releases what it held: EREMOVE on its clock
        self._charge(pid, before)
        self.oom_sent.discard(pid)
        workload = self.workloads.get(pid)
        if workload is not None and workload.state == "running":
            workload.state = "exited"
            workload.reason = workload.reason or reason or "killed"
            workload.exit_signal, workload.exit_code = describe_status(status)
            workload.exited_ns = self.host.clock.now_ns()
            compute = workload.compute_used(self.profile.cost_ns["compute"])
            self._publish_now(
                WorkloadExited(
                    workload.exited_ns,
                    pid,
                    workload.name,
                    workload.reason,
                    workload.runtime_ns,
                    workload.paging_ns,
                    *compute,
                )
            )
            log.info("workload %d (%s) exited: %s", pid, workload.name, workload.reason)
            self._prune_exited()
        self.flush_events()

    def _drop_calls(self, pid: int) -> None:
        """The calls ``pid`` had parked or queued end with it (a stalled one says so), unanswered."""
        calls = [p for p in (*self.ready, *self.waiting, *self.stalled) if p.pid == pid]
        if not calls:
            return
        self.ready = deque(p for p in self.ready if p.pid != pid)
        self.waiting = [p for p in self.waiting if p.pid != pid]
        self.stalled = [p for p in self.stalled if p.pid != pid]
        for pending in calls:
            pending.steps.close()
            self._end_stall(pending, "exited")

    def _prune_exited(self) -> None:
        """Keep the newest MAX_EXITED exited records (dicts keep registration order)."""
        exited = [pid for pid, w in self.workloads.items() if w.state == "exited"]
        for pid in exited[: max(len(exited) - MAX_EXITED, 0)]:
            del self.workloads[pid]

    def _deliver_oom_kills(self) -> None:
        victims = self.host.oom_victims
        if victims and not victims <= self.oom_sent:
            for pid in sorted(victims - self.oom_sent):
                self._oom_kill(pid)

    def _oom_kill(self, pid: int) -> None:
        """The OOM killer's SIGKILL, only to a registered workload whose uid is ours (or we are
        root); never to the engine itself."""
        workload = self.workloads.get(pid)
        if workload is None or workload.state != "running" or pid == self.info["engine_pid"]:
            why: str | None = "not a workload of this engine"
        elif self.uid != 0 and workload.uid != self.uid:
            why = f"owned by uid {workload.uid}, not the engine's {self.uid}"
        else:
            why = self.processes.kill(pid)
            if why is None:
                self._note_exit_reason(pid, "OOM")
                self.oom_sent.add(pid)
                return
        log.warning("the OOM killer chose pid %d, %s: not killed", pid, why)
        self.host.oom_victims.discard(pid)
        self.host.signals.discard(pid)

    def note_exit_reason(self, pid: int, reason: str) -> None:
        """How ``pid`` says it ends (bye), or how the engine saw it end first (SIGBUS, OOM)."""
        self._note_exit_reason(pid, reason)

    def _note_exit_reason(self, pid: int, reason: str) -> None:
        workload = self.workloads.get(pid)
        if workload is not None and not workload.reason:
            workload.reason = reason

    # -- what requests check --------------------------------------------------

    def workload(self, pid: int) -> Workload:
        """The caller's workload record: it must have said hello (EPERM otherwise)."""
        workload = self.workloads.get(pid)
        if not pid or workload is None or workload.state != "running":
            raise OSError(errno.EPERM, f"pid {pid} is not a registered workload: say hello first (over ipc)")
        return workload

    def may_open(self, workload: Workload) -> None:
        if len(workload.eids) + len(workload.vids) >= MAX_OPEN_PER_PID:
            raise OSError(errno.EMFILE, f"pid {workload.pid} has {MAX_OPEN_PER_PID} enclaves and vEPCs open")


def _step_result(what: str, state: FreezeState) -> StepResult:
    return {
        "what": "request" if what == "request" else "reclaim",
        "ran": False,
        "note": "",
        "op": "",
        "pid": 0,
        "status": "",
        "err": "",
        "worker": "",
        "scanned": 0,
        "rotated": 0,
        "written": 0,
        "stopped": False,
        "nr_events": 0,
        "kinds": {},
        "events": [],
        "state": state,
    }


def _may_change_host(op: str, args: dict[str, Any]) -> bool:
    """Whether a frozen engine queues this request: everything but reads, the step mode's own ops
    and a client's hello."""
    if op in READ_OPS or op in STEP_OPS:
        return False
    return op != "hello" or args.get("role") != "client"

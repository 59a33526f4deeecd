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
from types import GeneratorType
from typing import Any

from engine import Blocked, Host, SigBus
from engine.events import STALL_RETRY_HZ, Event, Stalled, StallEnded, WorkloadExited, WorkloadStarted
from engine.files import WRITABLE_NAMES
from engined.calls import MORE, Caller, Handler, Processes, Reply, Step, again, error_reply, how
from engined.liveness import describe_status, inherited_cgroup
from engined.stats import Stats, Workload
from wire.messages import Info

log = logging.getLogger("epc.engine")

CHUNK_PAGES = 1024  # pages per step of a long request (about 3 ms of work under reclaim)
MAX_OPEN_PER_PID = 1024  # enclaves and vEPCs one process may hold open (the kernel: RLIMIT_NOFILE, EMFILE)
MAX_EXITED = 256  # exited workload records kept for displays; older ones are pruned
STALL_RETRY_NS = 10**9 // STALL_RETRY_HZ


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
    ) -> None:
        self.host = host
        self.processes = processes
        self.answer = answer
        self.publish = publish
        self.wake = wake
        self.info: Info = {
            "engine_pid": engine_pid,
            "pub": pub,
            "capacity": host.capacity_bytes,
            "writable": sorted(WRITABLE_NAMES),
        }
        self.uid = uid
        self.chunk_pages = chunk_pages
        self.workloads: dict[int, Workload] = {}
        self.stats = Stats(host, self.workloads, processes.stopped)
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
        host.emit = self.events.append

    # -- taking requests ------------------------------------------------------

    def submit(self, key: Hashable, caller: Caller, request_id: int, op: str, args: dict[str, Any]) -> None:
        """Take one checked request: answered at once, or its first step now and the rest in rounds."""
        self.steps_run += 1
        handler = self.handlers[op]
        try:
            result = handler(self, caller, **args)
        except Blocked:  # an op that is not stepped waits like the others: asked again later
            result = again(lambda: handler(self, caller, **args))
        except Exception as e:
            self._answer(key, self._failed(request_id, caller.pid, e))
            return
        if type(result) is GeneratorType:  # (isinstance against the ABC costs a microsecond a call)
            # its first step now, before any reclaim work runs: a first WAIT then records the
            # progress its failed attempt saw (else a retry after that work would look stalled)
            self._step(Pending(key, request_id, caller.pid, result, op))
        else:
            self._answer(key, Reply(request_id, result))

    # -- rounds ---------------------------------------------------------------

    def work_due(self) -> bool:
        host = self.host
        return bool(host.work) or host.work_in_flight is not None or host.ksgxd_woken

    def round(self, work_slice: Callable[[], Callable[[], bool]], between: Callable[[], None] = lambda: None) -> bool:
        """Every ready step once (``between`` after each, to let a newcomer in), then reclaim work
        for as long as the predicate that ``work_slice()`` returns when the work starts says (the
        engine's 2 ms slice counts from there, not from the round's start); False when there was
        nothing to do."""
        self._retry_stalled()
        if not self.ready and not self.work_due():
            self._expire_waiting()
            return bool(self.ready)  # the parked calls it woke go at once, not after the driver's idle wait
        for _ in range(len(self.ready)):
            if not self.ready:
                break  # an exit taken in between dropped its calls
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
        if self.work_due():
            progress = host.progress
            while host.run_work_step() and more_work():
                pass
            if host.progress != progress:
                self._wake_waiting()

    def next_retry_ns(self) -> int | None:
        """The host clock when the next stalled call tries again; None when none stalls."""
        return min((p.retry_ns for p in self.stalled), default=None)

    def _step(self, pending: Pending) -> None:
        workload = self.workloads.get(pending.pid)
        if workload is not None and workload.state != "running":
            pending.steps.close()  # its process is gone: nobody to answer
            self._end_stall(pending, "exited")
            return
        try:
            status = next(pending.steps)
        except StopIteration as done:
            self._end_stall(pending, "resumed")
            self._answer(pending.key, Reply(pending.request_id, done.value))
            return
        except Exception as e:
            self._end_stall(pending, how(e))
            self._answer(pending.key, self._failed(pending.request_id, pending.pid, e))
            return
        if status is MORE:
            self._end_stall(pending, "resumed")
            self.ready.append(pending)
        elif pending.stalled_ns is not None:
            pending.retries += 1
            self._park_stalled(pending)
        elif pending.idle_seen and pending.progress_seen == self.host.progress:
            self._start_stall(pending)  # the work it waited for ran dry and moved nothing
        else:
            pending.idle_seen = False
            pending.progress_seen = self.host.progress
            self.waiting.append(pending)

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
        for message in messages:
            self.seq += 1
            message["seq"] = self.seq
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
        how it ended, when the driver knows better than the workload said (killed, failed, ...)."""
        try:
            self._release_process(pid, reason)
        except Exception:
            log.exception("internal error releasing pid %d", pid)
        self.something_freed()

    def _release_process(self, pid: int, reason: str) -> None:
        self._drop_calls(pid)
        status = self.processes.exit_status(pid)  # before forget: read through its pidfd
        self.processes.forget(pid)
        self.host.signal(pid)
        self.host.exit_task(pid)
        self.oom_sent.discard(pid)
        workload = self.workloads.get(pid)
        if workload is not None and workload.state == "running":
            workload.state = "exited"
            workload.reason = workload.reason or reason or "killed"
            workload.exit_signal, workload.exit_code = describe_status(status)
            workload.exited_ns = self.host.clock.now_ns()
            self._publish_now(WorkloadExited(workload.exited_ns, pid, workload.name, workload.reason))
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

"""The real backend: an engine process (started for the run, or attached) and one OS process per workload.

Each workload is ``python -m workloads enclave|vm --hold --cgroup PATH --name NAME
--connect EP ...`` (``WorkloadSpec.to_argv``): ``--hold`` stops it right after its
``hello``, when it sits registered in its cgroup, until every workload of the step is
there; then they go one by one, as a shell loop's background jobs start on a real
host (``spawn``).  Its end maps to an outcome as the workload
commands' exit codes say (README, docs/scenarios.md): 0 ok; 1 with an errno name on stderr, that errno
(else failed); killed by SIGBUS, SIGBUS; by SIGKILL after the OOM killer chose it,
OOM; by any other signal (ours, or a SIGKILL of someone else), killed; else failed.
While it runs, its outcome reads ``stalled`` between the engine's ``stall`` and
``stall_end`` events for it (a fault that no reclaim can help).

Events come from the engine's PUB socket, read by a thread into a list so that none
is lost while the runner waits on a request.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal as signals
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import IO, Any

from common.knobs import V17, Knobs
from common.options import knob_argv
from engined import runtime
from playground.launch import drain_output, start_engine_process
from playground.scenario.backends.base import BackendError, CgroupFiles, Tick, WorkloadSpec
from playground.scenario.backends.stream import Subscriber
from wire import protocol
from wire.protocol import EngineError, Outcome
from workloads import process
from workloads.client import EngineClient, NoEngine

POLL_S = 0.02
TICK_S = 0.1
START_TIMEOUT_S = 30.0  # a workload process must say hello within this
SPAWN_GAP_S = 0.02  # between the starts of one spawn step's workloads (a shell loop's fork and exec, roughly)
SUBSCRIBE_TIMEOUT_S = 5.0
RELEASE_TIMEOUT_S = 10.0


class EventStream:
    """The engine's events, drained from its PUB socket by a thread into ``events``."""

    def __init__(self, pub_endpoint: str) -> None:
        self._lock = threading.Lock()
        self._events: list[dict[str, Any]] = []
        self.oom_killed: set[int] = set()
        self.started: set[int] = set()
        self.exited: set[int] = set()
        self.stalled: set[int] = set()  # between a stall event and its stall_end
        self.last_seq = 0
        self.lost = 0
        self.late = 0  # catch_up() gave up waiting this many times
        self.malformed: list[str] = []  # messages that could not be read, why
        topics = (protocol.TOPIC_EVENT, protocol.TOPIC_STATS)  # TOPIC_EVENT: both event topics
        # hwm 0: keep everything, we read as fast as it comes
        self.subscriber = Subscriber(pub_endpoint, topics, hwm=0, skipped=self._skipped)
        self._subscribed = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="epc-events", daemon=True)
        self._thread.start()
        if not self._subscribed.wait(SUBSCRIBE_TIMEOUT_S):  # a stats message proves the subscription is live
            self.close()
            raise BackendError(f"no events from the engine at {pub_endpoint} within {SUBSCRIBE_TIMEOUT_S:g} s")

    def _loop(self) -> None:
        while not self._stop.is_set():
            if self.subscriber.drain(self._take, timeout_ms=50, limit=256):
                self._subscribed.set()

    def _skipped(self, topic: bytes, why: str) -> None:
        """A message that could not be read: the reader goes on, warnings() reports it."""
        with self._lock:
            self.malformed.append(why)

    def _take(self, topic: bytes, batch: list[dict[str, Any]]) -> None:
        if not topic.startswith(protocol.TOPIC_EVENT):
            return  # stats: they only show the subscription is live
        with self._lock:
            for event in batch:
                seq = int(event.get("seq", 0))
                if self.last_seq and seq > self.last_seq + 1:
                    self.lost += seq - self.last_seq - 1
                self.last_seq = max(self.last_seq, seq)
                kind = event.get("kind")
                if kind == "oom_kill":
                    self.oom_killed.add(int(event["pid"]))
                elif kind == "workload_start":
                    self.started.add(int(event["pid"]))
                elif kind == "workload_exit":
                    self.exited.add(int(event["pid"]))
                elif kind == "stall":
                    self.stalled.add(int(event["pid"]))
                elif kind == "stall_end":
                    self.stalled.discard(int(event["pid"]))
                self._events.append(event)

    def catch_up(self, seq: int, timeout_s: float = 2.0) -> None:
        """Wait until the events up to ``seq`` have arrived (they lag the replies by a little).

        Gives up after ``timeout_s``, counted in ``late`` (the run then warns that events may be missing).
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if self.last_seq >= seq:
                    return
            time.sleep(0.005)
        with self._lock:
            self.late += 1

    def take(self) -> list[dict[str, Any]]:
        with self._lock:
            out, self._events = self._events, []
        return out

    def seen(self, attribute: str, pid: int) -> bool:
        with self._lock:
            return pid in getattr(self, attribute)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        self.subscriber.close()


@dataclass(slots=True)
class Proc:
    spec: WorkloadSpec
    popen: subprocess.Popen[bytes]
    stderr: IO[bytes]
    signalled: bool = False  # we sent it a signal (a kill step, or the end of the run)
    outcome: Outcome | str | None = None  # an errno name is an outcome too
    last_error: str = ""  # a failed one's last non-empty line on stderr


class RealBackend(CgroupFiles):
    """A scenario's host as an engine process; workloads as processes.  ``close()`` stops what it started."""

    def __init__(self, client: EngineClient, engine: subprocess.Popen[str] | None, memory: int | None) -> None:
        self.client = client
        self.engine = engine
        self.endpoint = client.endpoint
        self.capacity_bytes = client.capacity
        self.memory_bytes = memory
        self.procs: dict[int, Proc] = {}
        self.engine_log: deque[str] = drain_output(engine) if engine is not None else deque(maxlen=20)
        try:
            self.stream = EventStream(client.pub_endpoint)
        except BackendError:
            client.close()
            self._stop_engine()
            raise
        try:
            snapshot = self._call("snapshot")
            self._seq_at_start = int(snapshot["seq"])
        except BaseException:
            self.stream.close()
            client.close()
            self._stop_engine()
            raise
        if engine is None and snapshot.get("memory") is not None:  # attached: the engine's RAM, if it says
            self.memory_bytes = int(snapshot["memory"])

    @classmethod
    def start(
        cls,
        capacity: int,
        memory: int | None,
        seed: int,
        runtime_dir: str,
        knobs: Knobs = V17,
        profile: str | None = None,
    ) -> RealBackend:
        """An engine process of its own, listening on ipc in ``runtime_dir`` (a fresh private directory),
        with the series' ``knobs`` and the cost ``profile``."""
        endpoint = f"ipc://{runtime_dir}/engine.sock"
        args = ["--capacity", str(capacity), "--seed", str(seed), "--bind", endpoint, *knob_argv(knobs)]
        if memory is not None:
            args += ["--memory", str(memory)]
        if profile is not None:
            args += ["--profile", profile]
        try:
            engine, endpoint = start_engine_process(args, dict(os.environ))
        except RuntimeError as e:
            raise BackendError(str(e)) from None
        try:
            client = EngineClient(endpoint, timeout_s=30)
        except NoEngine as e:
            engine.kill()
            raise BackendError(str(e)) from None
        return cls(client, engine, memory)

    @classmethod
    def attach(cls, endpoint: str | None, memory: int | None) -> RealBackend:
        """A running engine (``--connect``, or the one discovery finds); NoEngine when there is none."""
        return cls(EngineClient(endpoint, timeout_s=30), None, memory)

    # -- files ------------------------------------------------------------------

    def _call(self, op: str, **args: Any) -> Any:
        """The engine's answer; EngineError as it gave it, BackendError once the engine is gone."""
        try:
            return self.client.call(op, **args)
        except NoEngine as e:
            raise BackendError(str(e)) from None

    def warnings(self) -> list[str]:
        stream = self.stream
        out = [f"{stream.lost} engine events were lost on the way (--events misses them)"] if stream.lost else []
        if stream.late:
            out.append(f"events lagged more than 2 s behind the engine {stream.late} times: some may be missing")
        if stream.malformed:
            out.append(
                f"{len(stream.malformed)} event messages could not be read, the first: {stream.malformed[0]}; "
                "events may be missing"
            )
        for proc in self.procs.values():
            if proc.outcome == Outcome.FAILED and proc.last_error:
                out.append(f"{proc.spec.name} (pid {proc.popen.pid}) failed; its stderr ended: {proc.last_error}")
        return out

    def check(self) -> str | None:
        try:
            self._call("check")
        except EngineError as e:
            return e.message
        return None

    def take_events(self, sync: bool = False) -> list[dict[str, Any]]:
        """The events that came in; BackendError when the engine is gone (the runner asks at every step)."""
        self._check_engine()
        if sync:
            seq = int(self._call("snapshot")["seq"])
            if seq > self._seq_at_start:
                self.stream.catch_up(seq)
        return self.stream.take()

    # -- workloads --------------------------------------------------------------

    def spawn(self, specs: list[WorkloadSpec]) -> list[int]:
        """Start every process; once all have said hello (each is in its cgroup, registered),
        let them go one by one, SPAWN_GAP_S apart, in order, as a shell loop of ``cmd &``
        starts jobs on a real host.

        Not at one instant: jobs that start level stay level under the engine's equal turns,
        while on a real host one gets ahead (the selftest's large cases depend on it); and
        not as Python's start-up happens to spread them, which varies from run to run.  A
        process that ends before its hello (say, its cgroup does not exist) just ends: its
        exit status is its outcome.
        """
        procs = [self._start(spec) for spec in specs]
        deadline = time.monotonic() + START_TIMEOUT_S
        for proc in procs:
            assert proc.popen.stdout is not None
            ready, _, _ = select.select([proc.popen.stdout], [], [], max(0.0, deadline - time.monotonic()))
            line = proc.popen.stdout.readline() if ready else b"?"
            if line not in (process.READY, b""):  # b"": it ended before its hello
                self._abandon(procs, f"workload {proc.spec.name} (pid {proc.popen.pid}) did not start")
        for i, proc in enumerate(procs):
            assert proc.popen.stdin is not None and proc.popen.stdout is not None
            if i:
                time.sleep(SPAWN_GAP_S)
            proc.popen.stdout.close()
            with contextlib.suppress(BrokenPipeError):
                proc.popen.stdin.write(b"g")
                proc.popen.stdin.close()
        return [proc.popen.pid for proc in procs]

    def _start(self, spec: WorkloadSpec) -> Proc:
        """``python -m workloads enclave|vm --hold ...``: it waits after its hello until spawn() lets it go."""
        argv = [sys.executable, "-m", "workloads", *spec.to_argv(self.endpoint, hold=True)]
        stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close(); a file, so it cannot fill up)
        env = {k: v for k, v in os.environ.items() if k != runtime.ENDPOINT_ENV}
        popen = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, env=env)
        proc = self.procs[popen.pid] = Proc(spec, popen, stderr)
        return proc

    def _abandon(self, procs: list[Proc], message: str) -> None:
        for proc in procs:
            self._signal(proc, signals.SIGKILL)
        raise BackendError(f"{message} within {START_TIMEOUT_S:g} s")

    def kill(self, pid: int, signal: str) -> None:
        proc = self.procs[pid]
        if self._poll(proc) is None:
            self._signal(proc, signals.Signals[f"SIG{signal}"])

    def _signal(self, proc: Proc, signum: int) -> None:
        proc.signalled = True
        with contextlib.suppress(ProcessLookupError):
            proc.popen.send_signal(signum)

    def _poll(self, proc: Proc) -> Outcome | str | None:
        if proc.outcome is None and proc.popen.poll() is not None:
            proc.outcome = self._classify(proc, proc.popen.returncode)
        return proc.outcome

    def _classify(self, proc: Proc, status: int) -> Outcome | str:
        outcome = self._outcome(proc, status)
        if outcome == Outcome.FAILED:
            proc.stderr.seek(0)
            lines = [line.strip() for line in proc.stderr.read().decode(errors="replace").splitlines()]
            proc.last_error = next((line for line in reversed(lines) if line), "")
        return outcome

    def _outcome(self, proc: Proc, status: int) -> Outcome | str:
        """Its exit status as an outcome (the workload commands' exit codes): an errno name for 1 with one."""
        if status == 0:
            return Outcome.OK
        if status == 1:
            proc.stderr.seek(0)
            words = proc.stderr.read().decode(errors="replace").split()
            # "epc-playground enclave: ENOMEM: ..." (workloads/process.py)
            for word in words:
                name = word.rstrip(":")
                if word.endswith(":") and name.startswith("E") and name[1:].isupper() and protocol.errno_code(name):
                    return name
            return Outcome.FAILED
        if status == -signals.SIGBUS:
            return Outcome.SIGBUS
        if status == -signals.SIGKILL and not proc.signalled and self._oom_killed(proc.popen.pid):
            return Outcome.OOM
        return Outcome.KILLED if status < 0 else Outcome.FAILED

    def _oom_killed(self, pid: int) -> bool:
        """The engine publishes the OOM kill right after it sends SIGKILL: give the event a moment."""
        deadline = time.monotonic() + 1.0
        while not self.stream.seen("oom_killed", pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(POLL_S)
        return True

    def outcome(self, pid: int) -> Outcome | str | None:
        outcome = self._poll(self.procs[pid])
        if outcome is None and self.stream.seen("stalled", pid):
            return Outcome.STALLED
        return outcome

    def alive(self) -> int:
        return sum(self._poll(proc) is None for proc in self.procs.values())

    # -- time -------------------------------------------------------------------

    def _pass_time(self, deadline: float, done: Any, tick: Tick) -> bool:
        ticked = time.monotonic()
        while True:
            for proc in self.procs.values():
                self._poll(proc)
            if done():
                return True
            now = time.monotonic()
            if now >= deadline:
                return False
            self._check_engine()
            if now - ticked >= TICK_S:
                tick()
                ticked = now
            time.sleep(min(POLL_S, deadline - now))

    def sleep(self, ns: int, tick: Tick) -> None:
        self._pass_time(time.monotonic() + ns / 1e9, lambda: False, tick)

    def wait(self, pids: list[int], timeout_ns: int, tick: Tick) -> bool:
        """Until every one has exited and the engine has released what it held (its workload_exit event)."""
        procs = [self.procs[pid] for pid in pids]
        done = self._pass_time(
            time.monotonic() + timeout_ns / 1e9,
            lambda: all(p.outcome for p in procs) and self._released(pids),
            tick,
        )
        if not done:  # what stalls at this moment: the engine's events up to now
            seq = int(self._call("snapshot")["seq"])
            if seq > self._seq_at_start:
                self.stream.catch_up(seq)
        return done

    def _check_engine(self) -> None:
        """BackendError (one line: the engine (pid N) is gone) once the engine has gone away; cheap, no request."""
        if self.engine is not None and self.engine.poll() is not None:
            status = self.engine.returncode
            said = f"; it said: {' | '.join(self.engine_log)}" if status > 0 and self.engine_log else ""
            raise BackendError(f"the engine (pid {self.engine.pid}) is gone{said}")
        try:
            self.client.check_engine()
        except NoEngine as e:
            raise BackendError(str(e)) from None

    def _released(self, pids: list[int]) -> bool:
        """The engine has seen each of ``pids`` that it saw start go (and released its enclaves)."""
        return all(self.stream.seen("exited", pid) for pid in pids if self.stream.seen("started", pid))

    def finish(self, tick: Tick) -> list[int]:
        """SIGKILL what still runs, then wait until the engine has seen every workload go."""
        killed = [pid for pid, proc in self.procs.items() if self._poll(proc) is None]
        for pid in killed:
            self._signal(self.procs[pid], signals.SIGKILL)
        self._pass_time(
            time.monotonic() + RELEASE_TIMEOUT_S,
            lambda: all(p.outcome for p in self.procs.values()) and self._released(list(self.procs)),
            tick,
        )
        return killed

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.popen.poll() is None:
                self._signal(proc, signals.SIGKILL)
                proc.popen.wait()
            proc.stderr.close()
        self.stream.close()
        self.client.close()
        self._stop_engine()

    def _stop_engine(self) -> None:
        if self.engine is not None and self.engine.poll() is None:
            self.engine.send_signal(signals.SIGTERM)
            try:
                self.engine.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.engine.kill()
                self.engine.wait()
        if self.engine is not None and self.engine.stdout is not None:
            self.engine.stdout.close()

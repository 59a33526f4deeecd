"""One batch of the soak's kill half, and the checks after it; the record of the whole run.

A batch is BATCH real workload processes forked by the forkserver, each into its cgroup,
each SIGKILLed at its own random time.  Then: every one the engine registered is seen
exited (within DRAIN_S) and its workload_exit event came; no charge is left in any /k
cgroup nor among root's own pages (within LEAK_WAIT_S); and `check` answers "ok".
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.soak_procs import Engine, EventFeed, Forkserver, Fuzzers, wait_for
from workloads.client import EngineClient, EngineError

MiB = 1 << 20
BATCH = 20
KILL_AFTER_S = (0.05, 1.0)
DRAIN_S = 10.0  # a batch's workloads must all be seen exited by then
LEAK_WAIT_S = 5.0  # a charge still there after this long is a leak
NOTES = 40
LIMITS = {"/k/a": 8 * MiB, "/k/b": 12 * MiB, "/k/m": 8 * MiB, "/k/v": 16 * MiB}
KILL_CGROUPS = ["/k", *LIMITS]
OOM_CGROUP, OOM_MEMORY_MAX = "/k/m", 4 * MiB
HOLD = ["--duration", "30"]  # runs until its kill
SGX2 = ["--grow", "4MiB", "--trim", "2MiB", "--passes", "40"]  # EAUG after EINIT, trim at the end
# One batch: (kind, cgroup, the command line after `epc-playground`), 20 in all.
KINDS: list[tuple[str, str, list[str]]] = [
    *[("random", "/k/a", ["enclave", "--size", "24MiB", "--pattern", "random", *HOLD])] * 4,
    *[("add_pages", "/k/b", ["enclave", "--size", "256MiB"])] * 2,  # a long ADD_PAGES under reclaim
    *[("oom", "/k/m", ["enclave", "--size", "32MiB"])] * 3,  # its backing is over memory.max
    *[("vm", "/k/v", ["vm", "--size", "4MiB", *HOLD])] * 4,
    *[("hotcold", "/k/b", ["enclave", "--size", "16MiB", "--pattern", "hotcold", *HOLD])] * 2,
    ("hotcold", "/", ["enclave", "--size", "16MiB", "--pattern", "hotcold", *HOLD]),
    *[("sgx2", "/k/a", ["enclave", "--size", "4MiB", *SGX2])] * 2,
    *[("sgx2", "/", ["enclave", "--size", "4MiB", "--pattern", "shifting", *SGX2])] * 2,
]
assert len(KINDS) == BATCH
LIVE_PHASES = ("ECREATE/ADD_PAGES", "faulting", "VM touching")


@dataclass(slots=True)
class Failures:
    """Everything that makes the soak fail; all must stay 0."""

    leaks: int = 0  # a charge left in a /k cgroup, root's own pages, or root at the end
    hangs: int = 0  # workloads not seen exited within DRAIN_S, fuzzers not done by the deadline
    lost_replies: int = 0
    wrong_ids: int = 0
    bad_replies: int = 0
    disconnects: int = 0  # the engine dropped a fuzzer over a frame that was not oversize
    internal_errors: int = 0  # EIO "internal error" to a fuzzer or a workload, or in the engine's log
    check_failures: int = 0
    foreign_ok: int = 0  # a request on another process's enclave or vEPC that succeeded
    workload_errors: int = 0  # a workload that exited 2 (usage, lost engine) or crashed
    missing_exits: int = 0  # a registered workload whose workload_exit event never came
    fuzzer_deaths: int = 0  # a fuzzer that died other than by the OOM killer, or could not settle
    engine: int = 0  # the engine died, or did not stop with status 0


@dataclass(slots=True)
class Soak:
    """The run's counts and measurements."""

    frames_target: int
    kills_target: int
    failures: Failures = field(default_factory=Failures)
    notes: list[str] = field(default_factory=list)
    batches: int = 0
    kills_sent: int = 0  # SIGKILLs to processes still alive
    kills_live_registered: int = 0  # of those, to workloads the engine's snapshot showed running
    phases: Counter[str] = field(default_factory=Counter)  # what each workload was doing when killed
    exits: Counter[str] = field(default_factory=Counter)  # how the workloads ended
    exits_by_kind: dict[str, Counter[str]] = field(default_factory=dict)
    frames: int = 0
    replies: Counter[str] = field(default_factory=Counter)
    by_category: dict[str, dict[str, int]] = field(default_factory=dict)
    slowest_frames: list[Any] = field(default_factory=list)
    fuzzer_oom_kills: int = 0
    drain_ms: list[float] = field(default_factory=list)
    check_ms: list[float] = field(default_factory=list)  # the soak's own check after each batch
    spawn_ms: list[float] = field(default_factory=list)  # forking a batch's 20 workloads
    after_ms: list[float] = field(default_factory=list)  # from a batch's last kill to the end of its checks
    batch_s: list[float] = field(default_factory=list)
    release_ms: list[float] = field(default_factory=list)  # kill to workload_exit event
    hello_ms: list[float] = field(default_factory=list)  # start to workload_start event
    rss_mb: dict[str, float] = field(default_factory=dict)
    engine_cpu_s: float = 0.0
    cgroups_at_end: int = 0  # the fuzzers' mkdirs leave some
    seconds: float = 0.0

    def fail(self, what: str, note: str, count: int = 1) -> None:
        setattr(self.failures, what, getattr(self.failures, what) + count)
        if len(self.notes) < NOTES:
            self.notes.append(f"{what}: {note}")

    def failed(self) -> int:
        return sum(asdict(self.failures).values())


@dataclass(slots=True)
class Child:
    """One workload process of a batch."""

    name: str
    kind: str
    pid: int
    pidfd: int
    started_at: float
    kill_at: float
    stderr_path: str
    killed_at: float = 0.0
    live: bool = False  # killed while alive and running in the engine's snapshot


@dataclass(slots=True)
class Run:
    """What the soak works with."""

    soak: Soak
    directory: str
    engine: Engine
    client: EngineClient
    forkserver: Forkserver
    events: EventFeed
    fuzzers: Fuzzers
    rng: random.Random
    started: float
    leftover: list[str] = field(default_factory=list)  # the charges the last leak check found


# -- one batch of the kill soak ------------------------------------------------------


def run_batch(run: Run, number: int) -> None:
    started = time.monotonic()
    children = _spawn(run, number)
    run.soak.spawn_ms.append((time.monotonic() - started) * 1000)
    try:
        _kill(run, children)
    finally:
        statuses = run.forkserver.reap([child.pid for child in children])
        for child in children:
            os.close(child.pidfd)
    last_kill = max(child.killed_at or time.monotonic() for child in children)
    _drain(run, children, last_kill)
    _account(run, children, statuses)
    check_leaks(run, f"batch {number}")
    checked = time.monotonic()
    check_engine(run, f"batch {number}")
    run.soak.check_ms.append((time.monotonic() - checked) * 1000)
    run.soak.batches += 1
    run.soak.batch_s.append(time.monotonic() - started)
    run.soak.after_ms.append((time.monotonic() - last_kill) * 1000)


def _spawn(run: Run, number: int) -> list[Child]:
    """The batch's workloads, started together; each one's kill time drawn."""
    plans = []
    for i, (kind, cgroup, argv) in enumerate(KINDS):
        name = f"soak-{number}-{i}"
        args = [*argv, "--cgroup", cgroup, "--name", name, "--connect", run.engine.endpoint]
        if args[0] == "enclave":
            args += ["--seed", str(run.rng.randrange(1 << 30))]
        plans.append((name, kind, args, f"{run.directory}/w/{name}.err"))
    forked = run.forkserver.spawn([(args, stderr_path) for _, _, args, stderr_path in plans])
    children = []
    for (name, kind, _, stderr_path), (pid, forked_at) in zip(plans, forked, strict=True):
        kill_at = forked_at + run.rng.uniform(*KILL_AFTER_S)
        children.append(Child(name, kind, pid, os.pidfd_open(pid), forked_at, kill_at, stderr_path))
    return children


def _kill(run: Run, children: list[Child]) -> None:
    """SIGKILL each child at its time, noting what the engine's snapshot just before showed it doing."""
    soak = run.soak
    for child in sorted(children, key=lambda c: c.kill_at):
        time.sleep(max(0.0, child.kill_at - time.monotonic()))
        rows = {row["name"]: row for row in run.client.snapshot()["workloads"]}
        if _zombie(child.pid):
            soak.phases["exited before its kill"] += 1
            continue
        signal.pidfd_send_signal(child.pidfd, signal.SIGKILL)
        child.killed_at = time.monotonic()
        phase = _phase(rows.get(child.name))
        soak.kills_sent += 1
        soak.phases[phase] += 1
        if phase in LIVE_PHASES:
            child.live = True
            soak.kills_live_registered += 1


def _zombie(pid: int) -> bool:
    """Whether our (unreaped) child has already exited."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] == "Z"


def _phase(row: dict[str, Any] | None) -> str:
    if row is None:
        return "not registered yet"
    if row["state"] == "exited":
        return f"gone in the engine ({row['reason'] or 'exited'})"
    if row["state"] == "stalled":
        return "stalled (a fault that no reclaim can help)"
    if row["role"] == "vm":
        return "VM touching"
    return "faulting" if row["faults"] else "ECREATE/ADD_PAGES"


def _drain(run: Run, children: list[Child], last_kill: float) -> None:
    """Wait until the engine shows every registered workload of the batch exited, and its exit event came."""
    names = {child.name for child in children}

    def running() -> list[str]:
        rows = run.client.snapshot()["workloads"]
        return [row["name"] for row in rows if row["name"] in names and row["state"] != "exited"]

    if not wait_for(lambda: not running(), DRAIN_S, 0.005):
        still = running()
        run.soak.fail("hangs", f"{len(still)} workloads still running {DRAIN_S:g} s after their kill: {still[:5]}",
                      len(still))  # fmt: skip
    run.soak.drain_ms.append((time.monotonic() - last_kill) * 1000)
    registered = {row["name"] for row in run.client.snapshot()["workloads"] if row["name"] in names}
    if not wait_for(lambda: registered <= run.events.exited.keys(), 2.0):
        missing = sorted(registered - run.events.exited.keys())
        run.soak.fail("missing_exits", f"no workload_exit event for {missing[:5]}", len(missing))
    for child in children:
        exited = run.events.exited.get(child.name)
        if child.live and exited is not None:
            run.soak.release_ms.append((exited - child.killed_at) * 1000)
        said_hello = run.events.started.get(child.name)
        if said_hello is not None:
            run.soak.hello_ms.append((said_hello - child.started_at) * 1000)


def _account(run: Run, children: list[Child], statuses: dict[int, int]) -> None:
    """How each workload ended; a usage or connection error, a crash or an internal error fails the soak."""
    soak = run.soak
    for child in children:
        code = statuses.get(child.pid)
        err = Path(child.stderr_path).read_text(errors="replace") if os.path.exists(child.stderr_path) else ""
        how = _ending(code, err, child.pid in run.events.oom_killed)
        soak.exits[how] += 1
        soak.exits_by_kind.setdefault(child.kind, Counter())[how] += 1
        if "internal error" in err:
            soak.fail("internal_errors", f"{child.name} ({child.kind}): {err.strip()[-300:]}")
        elif how.startswith(("status", "exit 2")) or "Traceback" in err:
            soak.fail("workload_errors", f"{child.name} ({child.kind}) {how}: {err.strip()[-300:]}")
        with contextlib.suppress(OSError):
            os.remove(child.stderr_path)


def _ending(code: int | None, err: str, oom_killed: bool) -> str:
    if code == -signal.SIGKILL:
        return "OOM-killed" if oom_killed else "killed"
    if code == -signal.SIGBUS:
        return "SIGBUS"
    if code == 0:
        return "ok"
    if code == 1:
        words = err.strip().splitlines()[-1].split(": ") if err.strip() else []
        return f"exit 1 {words[1] if len(words) > 1 else '?'}"
    if code == 2:
        return "exit 2"
    return f"status {code}"


# -- the checks ---------------------------------------------------------------------


def _charges(run: Run) -> list[str]:
    """Charges left where nothing should hold any: every /k cgroup, and root's own pages."""
    left = []
    for path in KILL_CGROUPS:
        misc = run.client.read(f"{path}/misc.current")
        memory = run.client.read(f"{path}/memory.current")
        if misc.split() != ["sgx_epc", "0"] or memory.strip() != "0":
            left.append(f"{path}: misc.current {misc.strip()!r}, memory.current {memory.strip()!r}")
    root = next(row for row in run.client.snapshot()["cgroups"] if row["path"] == "/")
    if root["reclaimable"] or root["unreclaimable"]:
        left.append(f"/: {root['reclaimable']} reclaimable and {root['unreclaimable']} unreclaimable pages of its own")
    return left


def check_leaks(run: Run, when: str) -> None:
    """Fails the soak for charges left over; a leak counts once (while later batches find it unchanged)."""
    left: list[str] = []

    def clean() -> bool:
        left[:] = _charges(run)
        return not left

    if not wait_for(clean, LEAK_WAIT_S, 0.1) and left != run.leftover:
        run.soak.fail("leaks", f"{when}: {'; '.join(left)}")
    run.leftover = left


def check_engine(run: Run, when: str) -> None:
    try:
        answer = run.client.call("check")
    except EngineError as e:
        answer = f"{e.code}: {e.message}"
    if answer != "ok":
        run.soak.fail("check_failures", f"{when}: check said {answer!r}")


def make_cgroups(client: EngineClient) -> None:
    """The cgroups of the kill soak (/k) and of the fuzzers (/f)."""
    for path in ["/k", *LIMITS, "/f"]:
        client.mkdir(path)
    for path, limit in LIMITS.items():
        client.write(f"{path}/misc.max", f"sgx_epc {limit}")
    client.write(f"{OOM_CGROUP}/memory.max", str(OOM_MEMORY_MAX))

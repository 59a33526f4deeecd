"""What the scenario runner needs of a host: the contract its two backends keep.

``inproc.InprocBackend`` runs the in-process core on a virtual clock with the
workloads as cooperative tasks; ``real.RealBackend`` drives a real
engine process and one OS process per workload.  The runner sees only this interface.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

Tick = Callable[[], None]
"""Called now and then while a backend lets time pass (sleep, wait), e.g. to draw progress."""


class BackendError(Exception):
    """The backend itself failed (the engine went away, a workload could not start)."""


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    """One workload, sizes resolved to bytes: what ``python -m workloads enclave|vm`` is given (``to_argv``)."""

    name: str
    cgroup: str
    kind: str  # enclave | vm
    size_bytes: int
    pattern: str = "sequential"
    passes: int = 1
    duration_ns: int | None = None
    grow_bytes: int = 0
    trim_bytes: int = 0
    seed: int = 0
    trace: str = ""  # a trace file replayed instead of the pattern
    compute_ns: int | None = None  # its compute per page accessed (--compute); None: the profile's or the trace's

    def to_argv(self, endpoint: str, *, hold: bool = False) -> list[str]:
        """Its command line after ``python -m workloads`` (or ``epc-playground``), on the engine at ``endpoint``.

        ``hold``: it waits after its hello until told to go (the real backend's spawn step).
        """
        argv = [self.kind, *(["--hold"] if hold else []), "--size", str(self.size_bytes)]
        argv += [*(["--name", self.name] if self.name else []), "--cgroup", self.cgroup, "--connect", endpoint]
        if self.kind == "enclave":
            argv += ["--trace", self.trace] if self.trace else ["--pattern", self.pattern]
            argv += ["--passes", str(self.passes), "--seed", str(self.seed)]
            argv += ["--grow", str(self.grow_bytes), "--trim", str(self.trim_bytes)]
        else:
            argv += ["--passes", str(max(1, self.passes))]
        if self.duration_ns is not None:
            argv += ["--duration", repr(self.duration_ns / 1e9)]
        if self.compute_ns is not None:
            argv += ["--compute", f"{self.compute_ns}ns"]
        return argv


class CgroupFiles:
    """mkdir, rmdir, read and write of cgroup files as the engine's ops, through the backend's
    ``_call(op, **args)`` (EngineError with the errno name when the engine refuses)."""

    def _call(self, op: str, **args: Any) -> Any:
        raise NotImplementedError

    def mkdir(self, path: str) -> None:
        self._call("mkdir", path=path)

    def rmdir(self, path: str) -> None:
        self._call("rmdir", path=path)

    def read(self, path: str) -> str:
        return str(self._call("read", path=path))

    def write(self, path: str, value: str) -> None:
        self._call("write", path=path, value=value)


class Backend(Protocol):
    capacity_bytes: int
    memory_bytes: int | None

    def mkdir(self, path: str) -> None:
        """Create one cgroup; EngineError(EEXIST, ENOENT, ...), as every file operation fails."""

    def rmdir(self, path: str) -> None: ...

    def read(self, path: str) -> str: ...

    def write(self, path: str, value: str) -> None: ...

    def spawn(self, specs: list[WorkloadSpec]) -> list[int]:
        """Start workloads together; their pids once each runs in its cgroup (or has already ended)."""

    def kill(self, pid: int, signal: str) -> None:
        """Send TERM, KILL, INT or HUP to a workload (nothing if it has ended)."""

    def outcome(self, pid: int) -> str | None:
        """None while it runs (Outcome.STALLED while its call stalls: a fault that no reclaim can help);
        then an Outcome (ok, SIGBUS, OOM, killed, failed) or an errno name (ENOMEM, ...)."""

    def alive(self) -> int:
        """How many workloads run now."""

    def sleep(self, ns: int, tick: Tick) -> None:
        """Let ``ns`` nanoseconds pass while the workloads run."""

    def wait(self, pids: list[int], timeout_ns: int, tick: Tick) -> bool:
        """Let time pass until every one of ``pids`` has ended (True) or the timeout (False)."""

    def finish(self, tick: Tick) -> list[int]:
        """End the run: kill what still runs (SIGKILL) and wait until the host has released it; their pids."""

    def check(self) -> str | None:
        """The host's invariant check: None when it holds, else what is broken."""

    def warnings(self) -> list[str]:
        """Things the run should mention (say, events the subscriber lost)."""

    def take_events(self, sync: bool = False) -> list[dict[str, Any]]:
        """Engine events since the last call, oldest first, each with ``seq`` and ``kind``.

        ``sync``: first catch up with every event the engine has published until now.
        """

    def close(self) -> None: ...

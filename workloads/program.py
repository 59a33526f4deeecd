"""A workload as a program: the sequence of requests it makes, written once.

A program is a generator.  It yields ``Call(op, args)`` and gets the call's result back
(what the engine's reply carries), or yields ``Sleep(ns)`` and gets None after that
long.  A failed call never comes back: whoever runs the program ends it there, as
the process would end (exit 1 with the errno, or death by SIGBUS).  The program may
raise ``EngineError`` itself, for a result that is a failure (ADD_PAGES cut short).

Two runners: ``run()`` below, over an EngineClient in a real workload process, and the
in-process scenario mode, which hands the calls to the engine's Session directly.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, Protocol

from wire.protocol import MAX_COMPUTE_NS, MAX_DURATION_MS, MAX_PASSES, MAX_SIZE, PAGE_SIZE


@dataclass(frozen=True, slots=True)
class Call:
    """One request: its op and its arguments, as the wire carries them."""

    op: str
    args: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Sleep:
    """A pause of ``ns`` nanoseconds (it costs the engine nothing)."""

    ns: int


Program = Generator[Call | Sleep, Any, None]
Clock = Callable[[], int]
"""Now, in nanoseconds: time.monotonic_ns in a real process, the virtual clock in process."""


class Caller(Protocol):
    def call(self, op: str, **args: Any) -> Any: ...


def run(client: Caller, program: Program) -> None:
    """Run ``program`` over ``client``: each Call a request; EngineError (or NoEngine) ends it."""
    try:
        result: Any = None
        while True:
            try:
                step = program.send(result)
            except StopIteration:
                return
            if isinstance(step, Sleep):
                time.sleep(step.ns / 1e9)
                result = None
            else:
                result = client.call(step.op, **step.args)
    finally:
        program.close()


def plan(
    size_bytes: int,
    pattern: str = "",
    passes: int | None = None,
    duration_s: float | None = None,
    compute_ns: int | None = None,
) -> dict[str, Any]:
    """A workload's plan as ``hello`` carries it (the TUI shows it): the size it asked for, its
    pattern, passes and duration, each only when known and clamped to what the wire takes."""
    out: dict[str, Any] = {}
    if PAGE_SIZE <= size_bytes <= MAX_SIZE:
        out["size"] = size_bytes
    if pattern:
        out["pattern"] = pattern
    if passes is not None:
        out["passes"] = min(max(passes, 0), MAX_PASSES)
    if duration_s is not None:
        out["duration_ms"] = min(max(1, round(duration_s * 1000)), MAX_DURATION_MS)
    if compute_ns is not None:
        out["compute_ns"] = min(max(compute_ns, 0), MAX_COMPUTE_NS)
    return out


def registered(
    program: Program, *, pid: int, role: str, name: str, cgroup: str, plan: dict[str, Any] | None = None
) -> Program:
    """``program`` as a new process runs it: it first moves itself to ``cgroup`` (when given, as
    the selftest's ash_cgexec.sh does), says hello (with its ``plan``), and says bye once the
    program is done."""
    if cgroup and cgroup != "/":
        yield Call("write", {"path": f"{cgroup.rstrip('/')}/cgroup.procs", "value": str(pid)})
    yield Call("hello", {"pid": pid, "role": role, "name": name, **(plan or {})})
    yield from program
    yield Call("bye", {"reason": "ok"})

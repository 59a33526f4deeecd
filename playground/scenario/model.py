"""The scenario's steps as frozen records: what ``load.py`` makes of a file and ``runner.py`` runs.

Sizes stay expressions (``Expr``) and values templates (``Template``), evaluated by
the runner against the engine's real capacity.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from common.knobs import V17, Knobs
from playground.scenario.expr import Expr, Template


@dataclass(frozen=True, slots=True)
class Mkdir:
    kind_name: ClassVar[str] = "mkdir"
    number: int
    path: str  # absolute; parents are created too (mkdir -p)


@dataclass(frozen=True, slots=True)
class Rmdir:
    kind_name: ClassVar[str] = "rmdir"
    number: int
    path: str


@dataclass(frozen=True, slots=True)
class Write:
    kind_name: ClassVar[str] = "write"
    number: int
    path: str
    value: Template
    errno: str | None  # the write must fail with this errno name


@dataclass(frozen=True, slots=True)
class Spawn:
    kind_name: ClassVar[str] = "spawn"
    number: int
    name: str
    cgroup: str
    kind: str  # enclave | vm
    size: Expr
    count: int
    pattern: str
    passes: int  # 0: build and enter only, like the selftest's test_sgx
    duration_ns: int | None
    grow: Expr | None  # SGX2: EAUG after EINIT
    trim: Expr | None  # SGX2: trim and remove before release
    trace: str = ""  # a trace file to replay instead of the pattern (absolute; its size checked at load)
    trace_pages: int = 0  # the pages the trace needs: the heap is at least that
    compute_ns: int | None = None  # its compute per page accessed (``compute = "2us"``); None: the profile's

    def instance_name(self, index: int) -> str:
        return self.name if self.count == 1 else f"{self.name}.{index}"


@dataclass(frozen=True, slots=True)
class Sleep:
    kind_name: ClassVar[str] = "sleep"
    number: int
    duration_ns: int


@dataclass(frozen=True, slots=True)
class Kill:
    kind_name: ClassVar[str] = "kill"
    number: int
    name: str
    pick: str  # all | random | index
    index: int
    signal: str


@dataclass(frozen=True, slots=True)
class Wait:
    kind_name: ClassVar[str] = "wait"
    number: int
    name: str | None  # None: every workload spawned so far
    timeout_ns: int


@dataclass(frozen=True, slots=True)
class ExpectFile:
    kind_name: ClassVar[str] = "expect"
    number: int
    path: str
    condition: str  # equals | matches | at_most | at_least
    text: Template | None  # equals
    regex: re.Pattern[str] | None  # matches
    bound: Expr | None  # at_most / at_least
    title: str


@dataclass(frozen=True, slots=True)
class ExpectExited:
    kind_name: ClassVar[str] = "expect"
    number: int
    name: str
    outcome: str
    condition: str  # at_least | at_most | all | none
    count: int
    title: str


@dataclass(frozen=True, slots=True)
class ExpectTime:
    """An expect on a workload group's emulated time (docs/costs.md): ``what`` (slowdown, runtime or
    paging, summed over the group's exited instances) ``relation`` (<, <=, >, >=) ``bound`` (a
    ratio for slowdown, nanoseconds otherwise)."""

    kind_name: ClassVar[str] = "expect"
    number: int
    name: str
    what: str
    relation: str
    bound: float
    text: str  # as the file wrote it ("<1.2")
    title: str


@dataclass(frozen=True, slots=True)
class ExpectEvent:
    kind_name: ClassVar[str] = "expect"
    number: int
    kind: str  # the engine event's kind: reclaim, limit_hit, oom_kill, sigbus, release, ...
    where: tuple[tuple[str, str | int], ...]  # fields that must be equal (a cgroup as an absolute path)
    condition: str  # at_least | at_most
    count: int
    title: str


Expect = ExpectFile | ExpectExited | ExpectTime | ExpectEvent
Step = Mkdir | Rmdir | Write | Spawn | Sleep | Kill | Wait | ExpectFile | ExpectExited | ExpectTime | ExpectEvent


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    capacity: int  # bytes, as the file gives it (an engine given by --connect may differ)
    memory: int | None
    seed: int
    steps: tuple[Step, ...]
    source: str  # the file it came from
    knobs: Knobs = V17  # its [knobs] table: the series' constants for the host it runs on
    profile: str | None = None  # the cost profile it names (a bundled name or a file), None: the default

    @property
    def expects(self) -> int:
        return sum(isinstance(step, ExpectFile | ExpectExited | ExpectTime | ExpectEvent) for step in self.steps)

"""The ``--vary`` grammar, the grid of points, and a point's values put into a scenario.

``--vary "PATH=LO..HI/N"`` is N values evenly spaced from LO to HI, both included (sizes
rounded to whole 4 KiB pages, counts and seeds to whole numbers); ``--vary "PATH=a,b,c"``
is those values, in that order.  PATH is one of:

- ``CGROUP/misc.max`` or ``CGROUP/memory.max``: a size (or ``max``).  The value replaces
  what every write of the scenario to that file writes (a write that must fail, one with
  ``errno``, is left as it is); when the scenario writes nothing there it is written right
  after the step that creates the cgroup (its ``mkdir``, or a child's).
- ``NAME.count`` (1..256) or ``NAME.size`` (a size) of the spawn named NAME.
- ``seed``: the scenario's seed.

Several ``--vary`` make a grid: every combination, the first axis varying slowest.
Every mistake is a ``VaryError`` of one line, found before anything runs.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass

from common.limits import MAX_SIZE, PAGE_SIZE, U64_MAX
from common.units import format_size, parse_size, shown
from playground.scenario.expr import parse_expr, parse_template
from playground.scenario.load import suggest
from playground.scenario.model import Mkdir, Scenario, Spawn, Step, Write

MAX_POINTS = 100_000  # points of one sweep, the whole grid
MAX_COUNT = 256  # a spawn's count, as a scenario file allows
LIMIT_FILES = ("misc.max", "memory.max")
SPAWN_KEYS = ("count", "size")
MAX = "max"  # a limit's "no limit" value, in a list


class VaryError(ValueError):
    """A ``--vary`` that cannot be swept: one line saying what and what to do."""


@dataclass(frozen=True, slots=True)
class Axis:
    """One ``--vary``: what it varies and its values (bytes for sizes; None stands for ``max``)."""

    text: str  # as given
    path: str  # CGROUP/misc.max, NAME.size, seed, ...
    kind: str  # misc.max | memory.max | count | size | seed
    target: str  # the cgroup's absolute path, the spawn's name, or "" for seed
    values: tuple[int | None, ...]

    @property
    def is_size(self) -> bool:
        return self.kind in ("misc.max", "memory.max", "size")

    @property
    def is_limit(self) -> bool:
        return self.kind in LIMIT_FILES

    def label(self, value: int | None) -> str:
        """How a value reads in the table: bytes for sizes (``max`` for none), else the number."""
        return MAX if value is None else str(value)


@dataclass(frozen=True, slots=True)
class Point:
    """One run of the sweep: its number (table order) and a value per axis."""

    index: int
    values: tuple[int | None, ...]


def parse_vary(text: str, scenario: Scenario) -> Axis:
    """One ``--vary`` against the scenario it varies; VaryError (one line) for anything wrong."""
    path, sep, spec = text.partition("=")
    path, spec = path.strip(), spec.strip()
    if not sep or not path or not spec:
        raise VaryError(f"--vary {shown(text)}: write PATH=LO..HI/N or PATH=a,b,c, e.g. pod/misc.max=8MiB..128MiB/16")
    kind, target = _target(path, scenario, text)
    raw = _range(spec, kind, text) if ".." in spec else _list(spec, kind, text)
    values: list[int | None] = []
    for value in raw:  # a range rounded to pages can give one value twice: it is run once
        if value not in values:
            values.append(value)
    normal = f"{target.strip('/')}/{kind}" if kind in LIMIT_FILES else path
    return Axis(text, normal, kind, target, tuple(values))


def _target(path: str, scenario: Scenario, text: str) -> tuple[str, str]:
    """(kind, target) of PATH: a cgroup file the scenario creates, a spawn's key, or the seed."""
    if path == "seed":
        return "seed", ""
    spawns = [step.name for step in scenario.steps if isinstance(step, Spawn)]
    if "/" in path or path.endswith(LIMIT_FILES):
        folder, _, name = path.rstrip("/").rpartition("/")
        if name not in LIMIT_FILES:
            raise VaryError(f"--vary {shown(text)}: {name!r} is not a file a sweep varies: use misc.max or memory.max")
        cgroup = "/" + "/".join(part for part in folder.split("/") if part)
        if cgroup == "/":
            raise VaryError(f"--vary {shown(text)}: the root cgroup has no {name}: vary a cgroup the scenario makes")
        if _creating_step(scenario, cgroup) is None:
            made = sorted({step.path for step in scenario.steps if isinstance(step, Mkdir)})
            known = f"it makes: {', '.join(made)}" if made else "it makes none"
            raise VaryError(f"--vary {shown(text)}: the scenario never makes the cgroup {cgroup} ({known})")
        return name, cgroup
    name, dot, key = path.rpartition(".")
    if not dot or key not in SPAWN_KEYS:
        forms = "CGROUP/misc.max, CGROUP/memory.max, NAME.count, NAME.size or seed"
        raise VaryError(f"--vary {shown(text)}: {shown(path)} is not something a sweep varies: use {forms}")
    if name not in spawns:
        hint = suggest(name, spawns) if spawns else "the scenario spawns nothing"
        raise VaryError(f"--vary {shown(text)}: no spawn is named {name!r} ({hint})")
    return key, name


def _creating_step(scenario: Scenario, cgroup: str) -> Mkdir | None:
    """The first mkdir that makes ``cgroup`` (itself or a descendant: mkdir makes parents too)."""
    for step in scenario.steps:
        if isinstance(step, Mkdir) and (step.path == cgroup or step.path.startswith(cgroup + "/")):
            return step
    return None


def _value(word: str, kind: str, text: str) -> int | None:
    """One value of an axis, checked as the scenario file would check it."""
    word = word.strip()
    if kind in LIMIT_FILES and word == MAX:
        return None
    if kind in ("count", "seed"):
        if not word.isascii() or not word.isdigit() or len(word) > 20:
            raise VaryError(f"--vary {shown(text)}: {shown(word)} is not a whole number")
        value = int(word)
    else:
        try:
            value = parse_size(word)
        except ValueError as e:
            raise VaryError(f"--vary {shown(text)}: {e}") from None
    _check(value, kind, text)
    return value


def _check(value: int, kind: str, text: str) -> None:
    if kind == "count" and not 1 <= value <= MAX_COUNT:
        raise VaryError(f"--vary {shown(text)}: a spawn's count is from 1 to {MAX_COUNT}, not {value}")
    if kind == "seed" and value >= 1 << 63:
        raise VaryError(f"--vary {shown(text)}: a seed is below 2**63, not {value}")
    if kind == "size" and not 0 < value <= MAX_SIZE:
        raise VaryError(f"--vary {shown(text)}: a spawn's size is from 1 byte to {format_size(MAX_SIZE)}, not {value}")
    if kind in LIMIT_FILES and value > min(MAX_SIZE, U64_MAX):
        raise VaryError(f"--vary {shown(text)}: a limit of at most {format_size(MAX_SIZE)}, not {value} bytes")


def _list(spec: str, kind: str, text: str) -> list[int | None]:
    words = spec.split(",")
    if any(not word.strip() for word in words):
        raise VaryError(f"--vary {shown(text)}: an empty value in the list: write PATH=a,b,c")
    if len(words) > MAX_POINTS:
        raise VaryError(f"--vary {shown(text)}: more than {MAX_POINTS} values")
    return [_value(word, kind, text) for word in words]


def _range(spec: str, kind: str, text: str) -> list[int | None]:
    """LO..HI/N: N values evenly spaced from LO to HI, both included; sizes rounded to pages."""
    lo_text, _, rest = spec.partition("..")
    hi_text, slash, n_text = rest.partition("/")
    if not slash:
        raise VaryError(f"--vary {shown(text)}: a range needs its number of points: LO..HI/N, e.g. 8MiB..128MiB/16")
    n_text = n_text.strip()
    if not n_text.isascii() or not n_text.isdigit() or len(n_text) > 7:
        raise VaryError(f"--vary {shown(text)}: {shown(n_text)} is not a number of points")
    n = int(n_text)
    if n == 0:
        raise VaryError(f"--vary {shown(text)}: a range of 0 points runs nothing: give N of 1 or more")
    if n > MAX_POINTS:
        raise VaryError(f"--vary {shown(text)}: {n} points; a sweep has at most {MAX_POINTS}")
    if MAX in (lo_text.strip(), hi_text.strip()):
        raise VaryError(f"--vary {shown(text)}: 'max' ends no range: list it, e.g. PATH=8MiB,16MiB,max")
    lo, hi = _value(lo_text, kind, text), _value(hi_text, kind, text)
    assert lo is not None and hi is not None
    if hi < lo:
        raise VaryError(f"--vary {shown(text)}: the range runs from LO up to HI: {lo_text.strip()} is above it")
    if n == 1 and hi != lo:
        raise VaryError(f"--vary {shown(text)}: 1 point cannot span {lo_text.strip()}..{hi_text.strip()}: give N >= 2")
    values: list[int | None] = []
    for i in range(n):
        value = lo + (hi - lo) * i // (n - 1) if n > 1 else lo
        if kind != "count" and kind != "seed":
            value = (value + PAGE_SIZE // 2) // PAGE_SIZE * PAGE_SIZE
            if kind == "size":
                value = max(value, PAGE_SIZE)
        values.append(value)
    return values


def grid(axes: list[Axis]) -> list[Point]:
    """Every combination of the axes' values, the first axis varying slowest; VaryError past MAX_POINTS
    or for a path varied twice."""
    seen: set[str] = set()
    for axis in axes:
        if axis.path in seen:
            raise VaryError(f"--vary {shown(axis.text)}: {axis.path} is varied twice: give all its values in one")
        seen.add(axis.path)
    total = 1
    for axis in axes:
        total *= len(axis.values)
    if total > MAX_POINTS:
        raise VaryError(f"the grid has {total} points; a sweep has at most {MAX_POINTS}: vary fewer values")
    combos = itertools.product(*(axis.values for axis in axes))
    return [Point(index, tuple(values)) for index, values in enumerate(combos)]


def apply(scenario: Scenario, axes: list[Axis], point: Point) -> Scenario:
    """The scenario with the point's values put in (the module docstring says where each goes)."""
    steps: list[Step] = list(scenario.steps)
    seed = scenario.seed
    inserts: list[tuple[int, Write]] = []
    for axis, value in zip(axes, point.values, strict=True):
        if axis.kind == "seed":
            assert value is not None
            seed = value
        elif axis.kind in SPAWN_KEYS:
            assert value is not None
            steps = [_spawn_with(step, axis.kind, value) if _is_spawn(step, axis.target) else step for step in steps]
        else:
            path = f"{axis.target}/{axis.kind}"
            text = _file_value(axis.kind, value)
            written = [i for i, step in enumerate(steps) if isinstance(step, Write) and step.path == path]
            for i in written:
                step = steps[i]
                assert isinstance(step, Write)
                if step.errno is None:
                    steps[i] = dataclasses.replace(step, value=parse_template(text))
            if not written:
                mkdir = _creating_step(scenario, axis.target)
                assert mkdir is not None
                inserts.append((steps.index(mkdir), Write(mkdir.number, path, parse_template(text), None)))
    for at, write in sorted(inserts, key=lambda item: item[0], reverse=True):
        steps.insert(at + 1, write)
    return dataclasses.replace(scenario, seed=seed, steps=tuple(steps))


def _is_spawn(step: Step, name: str) -> bool:
    return isinstance(step, Spawn) and step.name == name


def _spawn_with(step: Step, key: str, value: int) -> Step:
    assert isinstance(step, Spawn)
    if key == "count":
        return dataclasses.replace(step, count=value)
    return dataclasses.replace(step, size=parse_expr(str(value)))


def _file_value(kind: str, value: int | None) -> str:
    """What is written to the file: ``sgx_epc N`` to misc.max, ``N`` to memory.max (``max``: no limit)."""
    text = MAX if value is None else str(value)
    return f"sgx_epc {text}" if kind == "misc.max" else text

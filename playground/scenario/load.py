"""Scenario files v1 (docs/scenarios.md): TOML in, typed steps out, every mistake found before a run.

``load_scenario(path)`` parses and validates a whole file into a ``Scenario`` of frozen
step records.  Anything wrong (an unknown key, a bad size or expression, a step with
no kind or two, an expect with two conditions, a workload name never spawned, an event
kind or field that no event has) raises ScenarioError with one line per problem, each
naming the file, the step number and the key; nothing has run by then.  Sizes are kept
as expressions (``Expr``) and evaluated by the runner against the engine's real
capacity, so ``--connect`` to another engine still works.
"""

from __future__ import annotations

import dataclasses
import difflib
import errno
import functools
import math
import os
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from common.knobs import Knobs
from common.units import format_size, parse_compute, parse_size
from playground.scenario.expr import Expr, ExprError, Template, parse_expr, parse_template
from playground.scenario.model import (
    Expect,
    ExpectEvent,
    ExpectExited,
    ExpectFile,
    ExpectTime,
    Kill,
    Mkdir,
    Rmdir,
    Scenario,
    Sleep,
    Spawn,
    Step,
    Wait,
    Write,
)
from wire.protocol import MAX_SIZE, PAGE_SIZE, PATTERNS, SIGNALS, Outcome

KINDS = ("mkdir", "rmdir", "write", "spawn", "sleep", "kill", "wait", "expect")
WORKLOAD_KINDS = ("enclave", "vm")
OUTCOMES = (Outcome.OK, "ENOMEM", Outcome.SIGBUS, Outcome.OOM, Outcome.KILLED, Outcome.FAILED, Outcome.STALLED)
OUTCOME_ERRNOS = frozenset(errno.errorcode.values()) | {"ERESTARTSYS"}
DEFAULT_WAIT_NS = 60 * 10**9
CGROUP_FIELDS = frozenset({"cgroup", "requester", "walk_root", "next_cg"})  # event fields that hold a cgroup path
MAX_DURATION_NS = 24 * 3600 * 10**9  # one day: the longest sleep, duration or timeout
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|us|ns)?\s*")
_DURATION_NS = {"ns": 1, "us": 10**3, "ms": 10**6, "s": 10**9, None: 10**9, "m": 60 * 10**9}
_T = TypeVar("_T")
_TOP_KEYS = ("name", "description", "capacity", "memory", "seed", "knobs", "profile", "step")
MAX_PROBLEMS = 100  # lines of one ScenarioError; a file with more says how many it leaves out
_TOML_AT = re.compile(r"\(at line (\d+), column (\d+)\)$")
WIRE_EVENT_FIELDS = {"seq": "int"}  # what the engine adds to every event it publishes (docs/protocol.md)
_INLINE_TABLE_HINT = "an inline table { ... } must fit on one line; write a long one as [step.spawn] under its [[step]]"
_STRING_HINT = 'a quoted string must end on the line it starts: close its quote, or write """...""" for several lines'


class ScenarioError(ValueError):
    """A scenario file that cannot run: one line per problem (``problems``), each saying where and what."""

    def __init__(self, *problems: str) -> None:
        super().__init__("\n".join(problems))
        self.problems: tuple[str, ...] = problems


@functools.cache
def event_fields() -> dict[str, dict[str, str]]:
    """Every event kind the engine publishes, with its fields and their types (``int``, ``str``, ``bool``).

    Derived from the core's own records, engine/events.py, the one place they are defined
    (imported when a file first has an event expect: all the scenario files take from the
    core), plus what the wire adds to each event (``seq``).
    """
    from engine.events import Event

    found: dict[str, dict[str, str]] = {}
    todo: list[type[Event]] = [Event]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls is not Event:
            found[cls.kind] = {f.name: str(f.type) for f in dataclasses.fields(cls)} | WIRE_EVENT_FIELDS
    return dict(sorted(found.items()))


def suggest(word: str, known: list[str]) -> str:
    """``did you mean X?`` with the nearest of ``known`` (difflib), else the whole list."""
    nearest = difflib.get_close_matches(word, known, n=1)
    return f"did you mean {nearest[0]}?" if nearest else f"known: {', '.join(known)}"


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file; ScenarioError (one line) for anything wrong."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ScenarioError(f"{path}: cannot read it: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ScenarioError(f"{path}: not UTF-8 text") from None
    return parse_scenario(text, str(path))


def parse_scenario(text: str, source: str = "<scenario>") -> Scenario:
    """Validate TOML text as a scenario; ScenarioError naming ``source``, the step and the key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        hint = _toml_hint(text, str(e))
        raise ScenarioError(f"{source}: not valid TOML: {e}{f' ({hint})' if hint else ''}") from None
    except RecursionError:  # tomllib parses nested arrays and inline tables recursively
        raise ScenarioError(f"{source}: arrays or inline tables nested too deeply to read") from None
    return _Validator(source).scenario(data)


def _toml_hint(text: str, message: str) -> str | None:
    """What to do about a TOML error where a line's end cut a quoted string or an inline table
    (TOML 1.0 keeps each on one line); None for any other error: its message says it."""
    at = _TOML_AT.search(message)
    lines = text.split("\n")
    if at is None or not 1 <= int(at.group(1)) <= len(lines):
        return None
    line, column = lines[int(at.group(1)) - 1], int(at.group(2))
    if column <= len(line.rstrip("\r")):  # not at the line's end
        return None
    if message.startswith("Illegal character '\\n'"):
        return _STRING_HINT
    return _INLINE_TABLE_HINT if line.count("{") > line.count("}") else None


TIME_EXPECTS = ("slowdown", "runtime", "paging")  # expect on a workload group's emulated time
_RELATION = re.compile(r"\s*(<=|>=|<|>)\s*(\S.*)")


def parse_duration(value: object) -> int:
    """Nanoseconds from ``"500ms"``, ``"2s"``, ``"1.5s"``, ``"1m"`` or a number of seconds; at most a day."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"bad duration {value!r}: use a number of seconds or a string like 500ms, 2s, 1m")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"bad duration {value!r}: give a finite number of seconds")
        if value < 0:
            raise ValueError(f"bad duration {value!r}: it cannot be negative")
        ns = value * 10**9
    else:
        m = _DURATION.fullmatch(value)
        if m is None:
            raise ValueError(f"bad duration {value!r}: use a number of seconds or a string like 500ms, 2s, 1m")
        number, unit = m.groups()
        ns = float(number) * _DURATION_NS[unit]
    if ns > MAX_DURATION_NS:
        raise ValueError(f"bad duration {value!r}: at most one day (86400 s)")
    return int(ns)


def normalize_path(value: str) -> str:
    """``t/parent`` and ``/t/parent/`` are both ``/t/parent``; ValueError for empty, ``.`` or ``..`` parts."""
    parts = value.strip().strip("/").split("/")
    if parts == [""]:
        return "/"
    for part in parts:
        if part in ("", ".", ".."):
            raise ValueError(f"bad path {value!r}: no empty, '.' or '..' components")
    return "/" + "/".join(parts)


class _Validator:
    """Walks the parsed TOML; every error names the source, the step number and the key."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.where = "the top level"
        self.env: dict[str, int | None] = {}
        self.spawned: set[str] = set()
        self.problems: list[str] = []

    def fail(self, message: str) -> ScenarioError:
        return ScenarioError(f"{self.source}: {self.where}: {message}")

    def noted(self, check: Callable[[], _T]) -> _T | None:
        """``check()``, or None when it raised ScenarioError: its problem is noted and the checking goes on."""
        try:
            return check()
        except ScenarioError as e:
            self.problems.extend(e.problems)
            return None

    def scenario(self, data: dict[str, Any]) -> Scenario:
        """The whole file: every problem of the top level, then the first of each step, one line each.

        The steps are not checked when ``capacity`` or ``memory`` is wrong: their sizes are
        expressions of those, and each would fail for that one reason.
        """
        self.noted(lambda: self.keys(data, _TOP_KEYS, required=("name", "capacity")))
        name = self.noted(lambda: self.string(data, "name")) if "name" in data else None
        description = self.noted(lambda: self.string(data, "description", ""))
        capacity = self.noted(lambda: self.capacity(data)) if "capacity" in data else None
        memory = self.noted(lambda: self.size_literal(data, "memory")) if "memory" in data else None
        seed = self.noted(lambda: self.seed(data))
        knobs = self.noted(lambda: self.knobs(data))
        profile = self.noted(lambda: self.profile(data)) if "profile" in data else None
        self.env = {"capacity": capacity, "memory": memory}
        raw_steps = data.get("step", [])
        if not isinstance(raw_steps, list) or not all(isinstance(s, dict) for s in raw_steps):
            self.problems.append(str(self.fail("key 'step': write each step as a [[step]] table")))
            raw_steps = []
        if capacity is None or ("memory" in data and memory is None):
            raw_steps = []
        steps = [self.noted(functools.partial(self.step, number, raw)) for number, raw in enumerate(raw_steps, 1)]
        if self.problems:
            problems = self.problems[:MAX_PROBLEMS]
            if len(self.problems) > MAX_PROBLEMS:
                problems.append(f"{self.source}: and {len(self.problems) - MAX_PROBLEMS} more problems")
            raise ScenarioError(*problems)
        assert name is not None and description is not None and capacity is not None and seed is not None
        assert knobs is not None
        checked = tuple(step for step in steps if step is not None)
        return Scenario(name, description, capacity, memory, seed, checked, self.source, knobs, profile)

    def capacity(self, data: dict[str, Any]) -> int:
        capacity = self.size_literal(data, "capacity")
        if capacity <= 0 or capacity % PAGE_SIZE:
            raise self.fail(f"key 'capacity': {capacity} bytes is not a positive whole number of 4 KiB pages")
        return capacity

    def profile(self, data: dict[str, Any]) -> str:
        """The cost profile: a bundled name, or a .toml file relative to the scenario's (checked now)."""
        from common.costs import ProfileError, load_profile

        value = data["profile"]
        if not isinstance(value, str) or not value:
            raise self.fail(f"key 'profile': {value!r} is not a profile's name or a .toml file")
        if value.endswith(".toml") and not os.path.isabs(value):
            value = os.path.join(os.path.dirname(self.source), value)
        try:
            load_profile(value)
        except ProfileError as e:
            raise self.fail(f"key 'profile': {e}") from None
        return value

    def seed(self, data: dict[str, Any]) -> int:
        seed = data.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise self.fail(f"key 'seed': {seed!r} is not a whole number >= 0")
        return seed

    def knobs(self, data: dict[str, Any]) -> Knobs:
        """The ``[knobs]`` table (common.knobs: nr_to_scan, low_pages, ...), V17's where it says nothing."""
        table = data.get("knobs", {})
        if not isinstance(table, dict):
            raise self.fail("key 'knobs': write the series' knobs as a [knobs] table, e.g. nr_to_scan = 4")
        try:
            return Knobs.from_mapping(table)
        except ValueError as e:
            raise self.fail(f"[knobs]: {e}") from None

    # -- steps ------------------------------------------------------------------

    def step(self, number: int, raw: dict[str, Any]) -> Step:
        kinds = [key for key in raw if key in KINDS]
        unknown = [key for key in raw if key not in KINDS]
        self.where = f"step {number}"
        if unknown:
            raise self.fail(f"unknown key {unknown[0]!r} (a step is one of: {', '.join(KINDS)})")
        if len(kinds) != 1:
            found = " and ".join(repr(k) for k in kinds) if kinds else "none"
            raise self.fail(f"a step has exactly one kind ({', '.join(KINDS)}); found {found}")
        kind = kinds[0]
        self.where = f"step {number} ({kind})"
        value = raw[kind]
        if kind in ("mkdir", "rmdir"):
            if not isinstance(value, str):
                raise self.fail(f"key {kind!r}: give the cgroup's path as a string")
            path = self.path(value, kind)
            return Mkdir(number, path) if kind == "mkdir" else Rmdir(number, path)
        if kind == "sleep":
            return Sleep(number, self.duration(value, "sleep"))
        if not isinstance(value, dict):
            raise self.fail(f"key {kind!r}: give a table, e.g. {kind} = {{ ... }}")
        if kind == "write":
            return self.write(number, value)
        if kind == "spawn":
            return self.spawn(number, value)
        if kind == "kill":
            return self.kill(number, value)
        if kind == "wait":
            return self.wait(number, value)
        return self.expect(number, value)

    def write(self, number: int, t: dict[str, Any]) -> Write:
        self.keys(t, ("path", "value", "errno"), required=("path", "value"))
        value = t["value"]
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise self.fail("key 'value': give the text to write as a string")
        code = t.get("errno")
        if code is not None and code not in OUTCOME_ERRNOS:
            raise self.fail(f"key 'errno': {code!r} is not an errno name such as EINVAL or ERANGE")
        return Write(number, self.path(self.string(t, "path"), "path"), self.template(value, "value"), code)

    def spawn(self, number: int, t: dict[str, Any]) -> Spawn:
        keys: tuple[str, ...] = ("name", "cgroup", "kind", "size", "count", "pattern", "trace", "passes")
        keys += ("duration", "grow", "trim", "compute")
        name = t.get("name")
        if isinstance(name, str) and name in self.spawned:
            raise self.fail(f"key 'name': {name!r} is spawned by an earlier step already; give this one another name")
        if isinstance(name, str):  # first: later steps that name it are no more problems when this one has one
            self.spawned.add(name)
        self.keys(t, keys, required=("name",) if "trace" in t else ("name", "size"))
        name = self.string(t, "name")
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,47}", name):
            raise self.fail(f"key 'name': {name!r}: use letters, digits, '_' and '-' (at most 48)")
        kind = self.choice(t, "kind", WORKLOAD_KINDS, "enclave")
        count = self.integer(t, "count", 1, low=1, high=256)
        trace, trace_pages = self.trace(t) if "trace" in t else ("", 0)
        size = self.size(t, "size", positive=True) if "size" in t else parse_expr(str(trace_pages * PAGE_SIZE))
        duration = self.duration(t["duration"], "duration") if "duration" in t else None
        if duration == 0:
            raise self.fail("key 'duration': it must be longer than 0 (leave it out to run the passes once)")
        if kind == "vm" and any(k in t for k in ("pattern", "trace", "grow", "trim")):
            bad = next(k for k in ("pattern", "trace", "grow", "trim") if k in t)
            raise self.fail(f"key {bad!r}: only an enclave takes it, not a vm")
        return Spawn(
            number,
            name,
            self.path(self.string(t, "cgroup", "/"), "cgroup"),
            kind,
            size,
            count,
            self.choice(t, "pattern", PATTERNS, "sequential"),
            self.integer(t, "passes", 1, low=0, high=1000),
            duration,
            self.size(t, "grow") if "grow" in t else None,
            self.size(t, "trim") if "trim" in t else None,
            trace,
            trace_pages,
            self.compute(t["compute"]) if "compute" in t else None,
        )

    def trace(self, t: dict[str, Any]) -> tuple[str, int]:
        """A spawn's ``trace``: the file's absolute path (a relative one is the scenario file's
        neighbour) and the pages it needs, once the whole file is checked; not with ``pattern``."""
        from workloads.trace import TraceError, replayable

        if "pattern" in t:
            raise self.fail("keys 'trace' and 'pattern': give one of them (a trace is replayed instead of a pattern)")
        name = self.string(t, "trace")
        path = Path(name)
        if not path.is_absolute() and not self.source.startswith("<"):
            path = Path(self.source).parent / path
        path = path.resolve()
        if not path.is_file():
            raise self.fail(f"key 'trace': no trace file {name!r} (looked for {path}); paths are the scenario file's")
        try:
            return str(path), replayable(path)
        except TraceError as e:
            raise self.fail(f"key 'trace': {e}") from None

    def kill(self, number: int, t: dict[str, Any]) -> Kill:
        self.keys(t, ("name", "pick", "index", "signal"), required=("name",))
        name = self.workload_name(t)
        if "pick" in t and "index" in t:
            raise self.fail("keys 'pick' and 'index': give one of them")
        index = self.integer(t, "index", 0, low=0, high=255)
        pick = "index" if "index" in t else self.choice(t, "pick", ("all", "random"), "all")
        return Kill(number, name, pick, index, self.choice(t, "signal", SIGNALS, "TERM"))

    def wait(self, number: int, t: dict[str, Any]) -> Wait:
        self.keys(t, ("name", "timeout"))
        name = self.workload_name(t) if "name" in t else None
        timeout = self.duration(t["timeout"], "timeout") if "timeout" in t else DEFAULT_WAIT_NS
        return Wait(number, name, timeout)

    def expect(self, number: int, t: dict[str, Any]) -> Expect:
        title = self.string(t, "title", "")
        if "path" in t:
            self.keys(t, ("path", "equals", "matches", "at_most", "at_least", "title"), required=("path",))
            condition = self.one_of(t, ("equals", "matches", "at_most", "at_least"))
            path = self.path(self.string(t, "path"), "path")
            text = regex = bound = None
            if condition == "equals":
                text = self.template(self.string(t, "equals"), "equals")
            elif condition == "matches":
                try:
                    regex = re.compile(self.string(t, "matches"))
                except re.error as e:
                    raise self.fail(f"key 'matches': not a regular expression: {e}") from None
            else:
                bound = self.size(t, condition)
            return ExpectFile(number, path, condition, text, regex, bound, title)
        if "name" in t and any(key in t for key in TIME_EXPECTS):
            return self.expect_time(number, t, title)
        if "name" in t:
            self.keys(t, ("name", "exited", "at_least", "at_most", "all", "none", "title"), required=("name", "exited"))
            name = self.workload_name(t)
            outcome = self.string(t, "exited")
            if outcome not in OUTCOMES and outcome not in OUTCOME_ERRNOS:
                raise self.fail(f"key 'exited': {outcome!r} is not one of {', '.join(OUTCOMES)} (or an errno name)")
            condition = self.one_of(t, ("at_least", "at_most", "all", "none"))
            if condition in ("all", "none"):
                if t[condition] is not True:
                    raise self.fail(f"key {condition!r}: write {condition} = true")
                count = 0
            else:
                count = self.integer(t, condition, 0, low=0, high=1 << 16)
            return ExpectExited(number, name, outcome, condition, count, title)
        if "event" in t:
            return self.expect_event(number, t, title)
        unknown = [key for key in t if key not in ("title",)]
        hint = f"unknown key {unknown[0]!r}; " if unknown else ""
        forms = "a file (path = ...), workloads (name = ..., exited = ...) or events (event = ...)"
        raise self.fail(f"{hint}expect {forms}")

    def expect_time(self, number: int, t: dict[str, Any], title: str) -> ExpectTime:
        """``{ name = "db", slowdown = "<1.2" }``: one of slowdown, runtime, paging, as a relation
        (<, <=, >, >=) and a number (a ratio for slowdown; a duration or ns for the others)."""
        self.keys(t, ("name", *TIME_EXPECTS, "title"), required=("name",))
        what = self.one_of(t, TIME_EXPECTS)
        name = self.workload_name(t)
        value = t[what]
        m = _RELATION.fullmatch(value) if isinstance(value, str) else None
        if m is None:
            example = "<1.2" if what == "slowdown" else "<=2s"
            raise self.fail(f"key {what!r}: {value!r} is not a relation and a number, like {example!r}")
        relation, figure = m.group(1), m.group(2).strip()
        if what == "slowdown":
            try:
                bound = float(figure)
            except ValueError:
                bound = math.nan
            if not (math.isfinite(bound) and bound >= 1.0):
                raise self.fail(f"key 'slowdown': {figure!r} is not a ratio of at least 1 (runtime over unlimited)")
        else:
            try:
                bound = float(parse_duration(figure))
            except ValueError as e:
                raise self.fail(f"key {what!r}: {e}") from None
        return ExpectTime(number, name, what, relation, bound, value, title)

    def expect_event(self, number: int, t: dict[str, Any], title: str) -> ExpectEvent:
        self.keys(t, ("event", "where", "at_least", "at_most", "title"), required=("event",))
        kind = self.string(t, "event")
        schema = event_fields()
        if kind not in schema:
            raise self.fail(f"key 'event': no event is of kind {kind!r}; {suggest(kind, list(schema))}")
        where = t.get("where", {})
        if not isinstance(where, dict):
            raise self.fail("key 'where': give a table of event fields, e.g. where = { cgroup = \"t/a\" }")
        fields: list[tuple[str, str | int]] = []
        for key, value in sorted(where.items()):
            if key not in schema[kind]:
                known = [name for name in schema[kind] if schema[kind][name] != "bool"]
                raise self.fail(f"key 'where': {kind} events have no field {key!r}; {suggest(key, known)}")
            wanted = schema[kind][key]
            if wanted == "bool":
                raise self.fail(f"key 'where': field {key!r} is true or false, which where cannot match")
            if isinstance(value, bool) or type(value).__name__ != wanted:
                what = "a whole number" if wanted == "int" else "a string"
                raise self.fail(f"key 'where': field {key!r} of {kind} events is {what}, not {value!r}")
            if key in CGROUP_FIELDS and isinstance(value, str):
                value = self.path(value, "where")
            fields.append((key, value))
        condition = self.one_of(t, ("at_least", "at_most"))
        count = self.integer(t, condition, 0, low=0, high=1 << 40)
        return ExpectEvent(number, kind, tuple(fields), condition, count, title)

    # -- values -----------------------------------------------------------------

    def keys(self, t: dict[str, Any], known: tuple[str, ...], required: tuple[str, ...] = ()) -> None:
        for key in t:
            if key not in known:
                raise self.fail(f"unknown key {key!r} (known: {', '.join(known)})")
        for key in required:
            if key not in t:
                raise self.fail(f"key {key!r} is missing")

    def one_of(self, t: dict[str, Any], conditions: tuple[str, ...]) -> str:
        given = [c for c in conditions if c in t]
        if len(given) != 1:
            found = " and ".join(repr(c) for c in given) if given else "none"
            raise self.fail(f"give exactly one condition of {', '.join(conditions)}; found {found}")
        return given[0]

    def string(self, t: dict[str, Any], key: str, default: str | None = None) -> str:
        if key not in t and default is not None:
            return default
        value = t.get(key)
        if not isinstance(value, str):
            raise self.fail(f"key {key!r}: {value!r} is not a string")
        return value

    def integer(self, t: dict[str, Any], key: str, default: int, *, low: int, high: int) -> int:
        value = t.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(f"key {key!r}: {value!r} is not a whole number in {low}..{high}")
        return value

    def choice(self, t: dict[str, Any], key: str, choices: tuple[str, ...], default: str) -> str:
        value = t.get(key, default)
        if value not in choices:
            raise self.fail(f"key {key!r}: {value!r} is not one of {', '.join(choices)}")
        return str(value)

    def path(self, value: str, key: str) -> str:
        try:
            return normalize_path(value)
        except ValueError as e:
            raise self.fail(f"key {key!r}: {e}") from None

    def compute(self, value: object) -> int:
        try:
            return parse_compute(value)
        except ValueError as e:
            raise self.fail(f"key 'compute': {e} (per page accessed)") from None

    def duration(self, value: object, key: str) -> int:
        try:
            return parse_duration(value)
        except ValueError as e:
            raise self.fail(f"key {key!r}: {e}") from None

    def size_literal(self, t: dict[str, Any], key: str) -> int:
        try:
            return parse_size(t[key])
        except ValueError as e:
            raise self.fail(f"key {key!r}: {e}") from None

    def size(self, t: dict[str, Any], key: str, positive: bool = False) -> Expr:
        """An int, a SIZE or an expression (``{...}`` around it is allowed), checked by evaluating it now."""
        value = t[key]
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise self.fail(f"key {key!r}: {value!r} is not a size (bytes, 64MiB, or an expression like capacity/512)")
        text = str(value).strip()
        if text.startswith("{") and text.endswith("}"):
            text = text[1:-1]
        try:
            expr = parse_expr(text)
            result = expr.evaluate(self.env)
        except ExprError as e:
            raise self.fail(f"key {key!r}: {e}") from None
        if result < 0 or (positive and result == 0):
            raise self.fail(f"key {key!r}: {value!r} is {result} bytes, which is not a size")
        if result > MAX_SIZE:
            largest = f"{MAX_SIZE}, {format_size(MAX_SIZE)}"
            raise self.fail(f"key {key!r}: {value!r} is {result} bytes, more than the largest size ({largest})")
        return expr

    def template(self, value: str, key: str) -> Template:
        try:
            template = parse_template(value)
            template.render(self.env)
        except ExprError as e:
            raise self.fail(f"key {key!r}: {e}") from None
        return template

    def workload_name(self, t: dict[str, Any]) -> str:
        name = self.string(t, "name")
        if name not in self.spawned:
            raise self.fail(f"key 'name': no workload named {name!r} is spawned before this step")
        return name

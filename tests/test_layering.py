"""The layering promises of DESIGN.md section 1, read from the code's own imports (the AST).

Every import counts, wherever it stands: at the top, inside a function, or under
TYPE_CHECKING, since each is a dependency a reader has to follow.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("common", "engine", "wire", "engined", "workloads", "playground")
STDLIB = set(sys.stdlib_module_names) | {"__future__"}


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """The modules ``path`` imports, by full dotted name (relative imports resolved)."""
    module = _module(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            submodules = {f"{base}.{alias.name}" for alias in node.names} & _ALL_MODULES
            names |= submodules  # `from pkg import module` needs the module, not all of pkg
            if len(submodules) < len(node.names):
                names.add(base)
    return names


_ALL_MODULES = {
    ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    for package in PACKAGES
    for path in (ROOT / package).rglob("*.py")
}


def _sources() -> dict[str, Path]:
    return {_module(path): path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))}


SOURCES = _sources()


def _top(name: str) -> str:
    return name.split(".")[0]


def _tops(package: str) -> dict[str, set[str]]:
    """Each module of ``package`` and the top-level packages it imports."""
    return {
        module: {_top(name) for name in _imports(path)} - {_top(module)}
        for module, path in SOURCES.items()
        if _top(module) == package
    }


@pytest.mark.parametrize(
    ("package", "allowed"),
    [
        ("common", STDLIB),
        ("engine", STDLIB | {"common"}),
        ("wire", STDLIB | {"common", "msgpack"}),
    ],
)
def test_the_lower_layers_import_only_what_they_may(package: str, allowed: set[str]) -> None:
    for module, tops in _tops(package).items():
        assert tops <= allowed, f"{module} imports {sorted(tops - allowed)}"


def test_only_the_engine_process_and_the_clients_import_zmq() -> None:
    for module, path in SOURCES.items():
        if _top(module) not in ("engined", "workloads", "playground"):
            assert "zmq" not in {_top(name) for name in _imports(path)}, f"{module} imports zmq"


def test_only_the_tui_imports_textual() -> None:
    for module, path in SOURCES.items():
        if not module.startswith("playground.tui"):
            assert "textual" not in {_top(name) for name in _imports(path)}, f"{module} imports textual"


def test_workloads_and_front_ends_reach_the_engine_only_through_the_wire() -> None:
    """Except the in-process scenario mode, which runs the core in the runner's own process, and the
    scenario validator, which reads the event kinds and their fields from their one home, engine.events."""
    for module, path in SOURCES.items():
        if _top(module) in ("workloads", "playground") and module != "playground.scenario.backends.inproc":
            core = {name for name in _imports(path) if _top(name) == "engine"}
            allowed = {"engine.events"} if module == "playground.scenario.load" else set()
            assert core <= allowed, f"{module} imports the core: {sorted(core - allowed)}"


def test_importing_the_wire_or_a_workload_loads_no_core() -> None:
    code = (
        "import sys, wire.protocol, workloads.client; "
        "loaded = sorted(m for m in sys.modules if m == 'engine' or m.startswith('engine.')); "
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_importing_the_core_pulls_in_no_textual_and_no_zmq() -> None:
    code = "import sys, engine; assert not {'textual', 'zmq', 'msgpack'} & set(sys.modules), sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle in ``graph`` (module -> the modules it imports), as a path back to its start; None."""
    done: set[str] = set()
    for start in sorted(graph):
        path, stack = [start], [iter(sorted(graph[start]))]
        while stack:
            child = next(stack[-1], None)
            if child is None:
                done.add(path.pop())
                stack.pop()
            elif child in path:
                return [*path[path.index(child) :], child]
            elif child not in done:
                path.append(child)
                stack.append(iter(sorted(graph[child])))
    return None


def test_no_import_cycles_anywhere_not_even_lazy_ones() -> None:
    """DESIGN.md section 1: every import counts, inside a function or under TYPE_CHECKING too,
    across packages as well as inside them."""
    graph = {module: _imports(path) & SOURCES.keys() - {module} for module, path in SOURCES.items()}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_no_core_module_reaches_up_to_the_facade() -> None:
    """The core's modules take the HostState (engine.state); only engine/__init__ imports engine.host."""
    for module, path in SOURCES.items():
        if _top(module) == "engine" and module not in ("engine", "engine.host"):
            assert "engine.host" not in _imports(path), f"{module} imports engine.host: take the HostState"


def test_the_cycle_finder_finds_one() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None

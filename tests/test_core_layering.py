"""The core's modules form layers: no import cycle, not even under TYPE_CHECKING or inside a
function, and none of them reaches up to the facade (engine.host) (DESIGN.md 1, review 1.3)."""

from __future__ import annotations

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parent.parent / "engine"
NOT_THE_CORE = {"server.py", "protocol.py", "runtime.py", "curve.py", "stats.py", "units.py"}  # leaving engine/


def _engine_imports(path: Path) -> set[str]:
    """The engine modules ``path`` imports anywhere in it (top level, TYPE_CHECKING, functions)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names if alias.name.startswith("engine.")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "engine":  # from engine import misc, memcg
                out |= {f"engine.{alias.name}" for alias in node.names if (ENGINE / f"{alias.name}.py").exists()}
            elif node.module.startswith("engine."):
                out.add(node.module)
    return {name.removeprefix("engine.") for name in out}


def _graph() -> dict[str, set[str]]:
    return {path.stem: _engine_imports(path) for path in ENGINE.glob("*.py") if path.name != "__init__.py"}


def test_no_core_module_imports_the_facade() -> None:
    for name, imports in _graph().items():
        if f"{name}.py" not in NOT_THE_CORE:
            assert "host" not in imports, f"engine/{name}.py imports engine.host: take the HostState"


def test_the_engine_package_has_no_import_cycle() -> None:
    graph = _graph()
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            cycle = [*path[path.index(name) :], name]
            raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
        if name in done:
            return
        for dep in sorted(graph.get(name, ())):
            visit(dep, [*path, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])

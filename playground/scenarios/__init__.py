"""The bundled scenario files (``*.toml`` beside this module), runnable by name: ``epc-playground run NAME``."""

from __future__ import annotations

import difflib
import sys
from importlib import resources
from pathlib import Path

from playground.scenario.load import ScenarioError, load_scenario
from playground.scenario.model import Scenario


def bundled() -> dict[str, Path]:
    """Bundled scenario files by name (the file name without ``.toml``), sorted."""
    folder = resources.files(__name__)
    found = {Path(str(entry)).stem: Path(str(entry)) for entry in folder.iterdir() if entry.name.endswith(".toml")}
    return dict(sorted(found.items()))


def resolve(name_or_path: str) -> Path:
    """A scenario file as given, else a bundled scenario's path; ScenarioError when it is neither.

    A directory named like a bundled scenario (``tests/kselftest``) does not hide it.
    Something that looks like a path (a ``/`` in it or a ``.toml`` suffix) is returned
    as it is, so that reading it says what is wrong with it.  A name that is neither gets
    the bundled names it starts, else the nearest by difflib.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    found = bundled().get(name_or_path)
    if found is not None:
        return found
    if path.suffix == ".toml" or "/" in name_or_path:
        return path
    names = list(bundled())
    near = [name for name in names if name.startswith(name_or_path)] if name_or_path else []
    near = near or difflib.get_close_matches(name_or_path, names, n=3)
    hint = f"did you mean {' or '.join(near)}?" if near else "`epc-playground run --list` shows them"
    raise ScenarioError(f"{name_or_path}: no such file, and no bundled scenario has that name ({hint})")


def load_or_say(name_or_path: str, prog: str) -> Scenario | None:
    """The scenario file, or bundled scenario, ``name_or_path``, loaded and checked; None when it
    cannot be, after saying why on stderr, a line per problem (``prog: ...``): the caller exits 2."""
    try:
        return load_scenario(resolve(name_or_path))
    except ScenarioError as e:
        for problem in e.problems:  # every problem of the file, one line each
            print(f"{prog}: {problem}", file=sys.stderr)
        return None

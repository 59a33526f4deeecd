"""The bundled scenario files (``*.toml`` beside this module), runnable by name: ``epc-playground run NAME``."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def bundled() -> dict[str, Path]:
    """Bundled scenario files by name (the file name without ``.toml``), sorted."""
    folder = resources.files(__name__)
    found = {Path(str(entry)).stem: Path(str(entry)) for entry in folder.iterdir() if entry.name.endswith(".toml")}
    return dict(sorted(found.items()))


def resolve(name_or_path: str) -> Path:
    """A file path as given, or a bundled scenario's path when the name is one (and no such file exists)."""
    path = Path(name_or_path)
    if path.exists() or path.suffix == ".toml" or "/" in name_or_path:
        return path
    return bundled().get(name_or_path, path)

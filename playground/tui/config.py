"""The TUI's config file, ``$XDG_CONFIG_HOME/epc-playground/config.toml`` (``~/.config/...``);
its keys and an example: docs/tui.md.

Read once at start (``load_config``).  A value that does not hold is one notice, which
names the key and says what was used instead; the other keys still apply and the TUI
starts.  The theme chosen in the palette is written back (``save_theme``), the rest of
the file left as it was.  No textual here: ``epc-playground tui`` reads it for the
capacity of the engine it starts before any screen opens.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.limits import MAX_SIZE, PAGE_SIZE
from common.units import format_size, parse_size, shown

DEFAULT_CAPACITY = 128 << 20
MIN_HZ, MAX_HZ = 1, 20
MAX_COLUMNS = 32  # names in `columns`; the table has far fewer
MAX_FILE_BYTES = 64 << 10  # a config file is a few lines: a larger one is not read


@dataclass(frozen=True, slots=True)
class TuiConfig:
    """What the file says, after checking; the defaults where it says nothing (or nothing valid)."""

    path: Path | None = None  # read from, and where the theme is saved; None: nothing is saved
    theme: str | None = None  # None: Textual's default
    refresh_hz: float = 4.0
    columns: tuple[str, ...] | None = None  # None: every column of the workloads table
    capacity: int = DEFAULT_CAPACITY
    screenshot_dir: str = "."
    notices: tuple[str, ...] = field(default=())  # one line per key that was ignored, said at start


def default_path(env: dict[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME/epc-playground/config.toml``, ``~/.config/...`` when unset or not absolute."""
    env = dict(os.environ) if env is None else env
    base = env.get("XDG_CONFIG_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path(env.get("HOME") or Path.home()) / ".config"
    return root / "epc-playground" / "config.toml"


def load_config(path: Path) -> TuiConfig:
    """The config at ``path``; a missing file is the defaults (and where a theme would be saved).
    Raises OSError only for a file that is there and cannot be read."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        return TuiConfig(path=path)
    where = str(path)
    if len(data) > MAX_FILE_BYTES:
        return TuiConfig(path=path, notices=(f"{where}: larger than {MAX_FILE_BYTES} bytes, not read: defaults",))
    try:
        table = tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        return TuiConfig(path=path, notices=(f"{where}: not TOML ({e}): defaults for every key",))
    return parse_config(table, path)


def parse_config(table: dict[str, Any], path: Path | None = None) -> TuiConfig:
    """Check each key of a parsed file; each bad one is a notice and its default."""
    notices: list[str] = []
    values: dict[str, Any] = {}
    where = f"{path}: " if path is not None else ""
    for key, value in table.items():
        check = _CHECKS.get(key)
        if check is None:
            notices.append(f"{where}unknown key {shown(key)} ignored (keys: {', '.join(_CHECKS)})")
            continue
        try:
            values[_FIELDS.get(key, key)] = check(value)
        except ValueError as e:
            notices.append(f"{where}{key} ignored: {e}")
    return TuiConfig(path=path, notices=tuple(notices), **values)


def _theme(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > 64:
        raise ValueError(f'{shown(value)} is not a theme name (a string such as "gruvbox")')
    return value


def _refresh_rate(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not MIN_HZ <= value <= MAX_HZ:
        raise ValueError(f"{shown(value)} is not a number of refreshes per second from {MIN_HZ} to {MAX_HZ}: 4 used")
    return float(value)


def _columns(value: Any) -> tuple[str, ...]:
    if (
        not isinstance(value, list)
        or not 0 < len(value) <= MAX_COLUMNS
        or not all(isinstance(name, str) and 0 < len(name) <= 32 for name in value)
    ):
        raise ValueError(f'{shown(value)} is not a list of column names such as ["pid", "name", "state"]: all shown')
    return tuple(value)


def _capacity(value: Any) -> int:
    try:
        nbytes = parse_size(value)
    except ValueError:
        nbytes = -1
    if not PAGE_SIZE <= nbytes <= MAX_SIZE:
        raise ValueError(
            f'{shown(value)} is not a size from 4KiB to {format_size(MAX_SIZE)} such as "256MiB": '
            f"{format_size(DEFAULT_CAPACITY)} used"
        )
    return nbytes


def _screenshot_dir(value: Any) -> str:
    if not isinstance(value, str) or not value or "\0" in value or len(value) > 4096:
        raise ValueError(f"{shown(value)} is not a directory: the current directory used")
    path = os.path.expanduser(value)
    if not os.path.isdir(path):
        raise ValueError(f"{shown(value)} is not a directory: the current directory used")
    return path


_CHECKS = {
    "theme": _theme,
    "refresh_rate": _refresh_rate,
    "columns": _columns,
    "capacity": _capacity,
    "screenshot_dir": _screenshot_dir,
}
_FIELDS = {"refresh_rate": "refresh_hz"}  # a key whose field has another name

_THEME_LINE = re.compile(r"^[ \t]*theme[ \t]*=.*$", re.MULTILINE)


def save_theme(path: Path, theme: str) -> None:
    """Write ``theme = "NAME"`` into the file at ``path``: the theme line replaced, or added at
    the top; the rest of the file as it was.  Creates the file (and its directory) if need be."""
    line = f"theme = {_toml_string(theme)}"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    text = _THEME_LINE.sub(lambda _m: line, text, count=1) if _THEME_LINE.search(text) else f"{line}\n{text}"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _toml_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'

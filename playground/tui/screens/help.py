"""The help (``?``): the focused panel's keys and meaning first, then the keys that work
everywhere, then the other panels and what the screen shows.

A panel says what it is in a ``HELP`` class attribute (Markdown: what it shows, its
glyphs and colours; Textual's own Keys panel reads the same attribute) and has its keys
in its ``BINDINGS``: the help is built from both, so it follows the code.  Only the keys
of the project's own classes are listed (a Tree's or a DataTable's scrolling keys are
one line, MOVE).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from textwrap import dedent
from typing import Any

from rich.table import Table
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.dom import DOMNode
from textual.screen import ModalScreen, Screen
from textual.widget import Widget
from textual.widgets import Footer, Markdown, Static

CLOSE = "Esc, ? or q closes this help.   ↑/↓, PgUp/PgDn scroll it."
OWN = "playground."  # the modules whose bindings are the project's own
PANEL_NAMES = {"cgroups": "cgroup tree", "details-panel": "details", "workloads": "workloads", "events": "event log"}
MOVE = ("↑ ↓ PgUp PgDn Home End", "move in the panel (the mouse too)")

ABOUT = """\
## What the screen shows

An emulated SGX host: its Enclave Page Cache (EPC) is limited per cgroup by the misc
controller, page for page as the SGX EPC cgroup series (V17).

- **Status line**: the EPC's size, what is free, whether `ksgxd` (global reclaim) is running,
  how many workloads run (and stall).
- **cgroup tree**: each cgroup's `misc.current` against its *effective* limit, the smallest
  `misc.max` from it up to the root (or the whole EPC). `█` is in use, `░` is room left, `▒` is
  held by others under a limit it shares, `┃` marks `misc.peak`; `t` lists them flat, by usage.
- **details**: the files of the selected cgroup, pages on its LRU, its tasks, and a minute of
  its usage and of pages reclaimed.
- **workloads**: enclaves and guest VMs; size, resident and swapped pages, faults per second,
  and how each one ended (ok, ENOMEM, SIGBUS, OOM, killed).
- **events**: limit hits, reclaim, ENOMEM, SIGBUS, OOM kills, workloads coming and going,
  stamped with the engine's clock (`[   83.456]`: seconds since it started, as dmesg);
  pressure summed per cgroup per second. `tab` to it: the pane under it explains the selected
  event and the kernel function it mirrors; `enter` on a pressure line shows its reclaim batches.
- **Kernel views**: `L` the selected cgroup's LRU, `F` the EPC frame map; `z` freezes the engine
  (step mode: `.` one request step, `,` one reclaim batch), `z` again thaws.

Sizes are typed as `64MiB`, `1GiB` (or `max` for a limit); plain numbers are bytes.
Every key and the config file: `docs/tui.md`.
"""

# Keys that are no binding of the app's own, but work everywhere.
MORE_KEYS = (
    ("tab / shift+tab", "move between the panels"),
    ("^p", "the command palette: every action by name, the theme, the Keys panel, a screenshot"),
    ("esc", "closes a dialog, this help, or the Keys panel"),
)


@dataclass(frozen=True, slots=True)
class HelpSection:
    """A part of the help: a title, Markdown (a panel's HELP), and keys with what they do."""

    title: str
    text: str
    keys: tuple[tuple[str, str], ...]


def panel_of(widget: DOMNode | None) -> Widget | None:
    """The panel ``widget`` is in: itself or the nearest ancestor with a ``HELP`` or a panel's id."""
    for node in widget.ancestors_with_self if widget is not None else ():
        if isinstance(node, Screen):
            return None
        if isinstance(node, Widget) and (node.HELP or node.id in PANEL_NAMES):
            return node
    return None


def panel_name(panel: Widget) -> str:
    return PANEL_NAMES.get(panel.id or "", panel.id or type(panel).__name__)


def own_bindings(node: DOMNode) -> Iterator[Binding]:
    """The bindings the project's classes give ``node`` (its class and bases from ``playground``)."""
    for cls in type(node).__mro__:
        if cls.__module__.startswith(OWN):
            for binding in cls.__dict__.get("BINDINGS", ()):
                yield binding if isinstance(binding, Binding) else Binding(*binding)


def key_rows(app: App[Any], bindings: Iterable[Binding]) -> tuple[tuple[str, str], ...]:
    """(keys, what they do) for each action that has a description; a binding's tooltip is its
    longer text.  Keys of one action share a row."""
    rows: dict[str, tuple[list[str], str]] = {}
    for binding in bindings:
        if not binding.description:
            continue
        for key in binding.key.split(","):
            keys, _text = rows.setdefault(binding.action, ([], binding.tooltip or binding.description))
            shown = app.get_key_display(Binding(key.strip(), binding.action, key_display=binding.key_display))
            if shown not in keys:
                keys.append(shown)
    return tuple((" / ".join(keys), text) for keys, text in rows.values())


def panel_section(app: App[Any], panel: Widget, focused: bool) -> HelpSection:
    title = f"{panel_name(panel)}{' (the focused panel)' if focused else ''}"
    keys = key_rows(app, own_bindings(panel))
    return HelpSection(title, dedent(panel.HELP or "").strip(), (*keys, MOVE) if focused else keys)


def help_sections(app: App[Any], focused: DOMNode | None) -> list[HelpSection]:
    """The whole help: the focused panel, the keys of everywhere, the other panels, the screen."""
    sections = []
    panel = panel_of(focused)
    if panel is not None:
        sections.append(panel_section(app, panel, focused=True))
    sections.append(HelpSection("everywhere", "", (*key_rows(app, own_bindings(app)), *MORE_KEYS)))
    for other in app.screen.query(Widget):
        if other is not panel and panel_of(other) is other:
            section = panel_section(app, other, focused=False)
            if section.text or section.keys:
                sections.append(section)
    sections.append(HelpSection("", ABOUT, ()))
    return sections


def help_text(sections: Iterable[HelpSection]) -> str:
    """The help as plain Markdown (what a test or the docs read)."""
    parts = [CLOSE]
    for section in sections:
        if section.title:
            parts.append(f"## {section.title}")
        if section.text:
            parts.append(section.text)
        parts += [f"    {keys:<24} {text}" for keys, text in section.keys]
    return "\n\n".join(parts)


def keys_table(keys: Iterable[tuple[str, str]]) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(no_wrap=True, style="bold")
    table.add_column()
    for key, text in keys:
        table.add_row(key, text)
    return table


class HelpScreen(ModalScreen[None]):
    """The help, from ``help_sections`` when it opens: how to close it at the top, the focused panel first."""

    BINDINGS = [
        Binding("escape", "close", "Close"),
        Binding("question_mark", "close", "Close", show=False),
        Binding("q", "close", "Close", show=False),
    ]

    def __init__(self, sections: list[HelpSection]) -> None:
        super().__init__()
        self.sections = sections

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help", classes="dialog"):
            yield Static(Text(CLOSE, style="bold"), classes="hint")
            for section in self.sections:
                if section.title:
                    yield Static(Text(section.title.upper(), style="bold"), classes="help-title")
                if section.text:
                    yield Markdown(section.text)
                if section.keys:
                    yield Static(keys_table(section.keys), classes="help-keys")
        yield Footer()

    def action_close(self) -> None:
        self.dismiss(None)

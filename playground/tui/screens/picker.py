"""Choose a scenario to run: a bundled one from the list, or a TOML file."""

from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from playground.tui.screens.prompt import FAILED, Check


def scenario_option(name: str, description: str, name_width: int) -> Table:
    """One line of the list: the name, then its description wrapped in a column of its own
    (never back under the names)."""
    grid = Table.grid(padding=(0, 2), expand=True)
    grid.add_column(width=name_width, no_wrap=True)
    grid.add_column(ratio=1)
    grid.add_row(name, description)
    return grid


class ScenarioScreen(ModalScreen[str | None]):
    """Choose a scenario: a bundled one (Enter on it) or a file (typed, Enter).  ``check`` says
    what is wrong with a choice (a file that is not there, or not a scenario): shown in the
    screen, which stays open.  Dismisses with the name or path, or None on Esc."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, bundled: dict[str, str], check: Check | None = None) -> None:
        super().__init__()
        self.bundled = bundled  # name -> description
        self.check = check

    def compose(self) -> ComposeResult:
        width = max((len(name) for name in self.bundled), default=8)
        with Vertical(id="scenario", classes="dialog"):
            yield Label("Run a scenario on this engine (its cgroups appear in the tree; S stops it)")
            yield OptionList(
                *[Option(scenario_option(name, text, width), id=name) for name, text in self.bundled.items()],
                id="bundled",
            )
            yield Input(placeholder="or a file: path/to/scenario.toml", id="path")
            yield Static("", id="error", classes="error", markup=False)
            yield Static("↑/↓ and Enter run a bundled one, Tab goes to the file, Esc cancels", classes="hint")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#error", Static).display = False

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self._choose(event.option.id)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._choose(event.value.strip() or None)

    def _choose(self, name: str | None) -> None:
        if not name:
            return
        error = self.check(name) if self.check is not None else None
        if error:
            shown = self.query_one("#error", Static)
            shown.update(f"{FAILED}{error}")
            shown.display = True
            return
        self.dismiss(name)

    def action_cancel(self) -> None:
        self.dismiss(None)

"""Choose the signal to send to a workload."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Label, OptionList, Static
from textual.widgets.option_list import Option


class SignalScreen(ModalScreen[str | None]):
    """Choose the signal to send to a workload; dismisses with its name (TERM, KILL, ...) or None."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, pid: int, signals: tuple[str, ...]) -> None:
        super().__init__()
        self.pid = pid
        self.signals = signals

    def compose(self) -> ComposeResult:
        with Vertical(id="signal", classes="dialog"):
            yield Label(f"Send to pid {self.pid}")
            yield OptionList(*[Option(f"SIG{name}", id=name) for name in self.signals], id="signals")
            yield Static("↑/↓ choose, Enter sends, Esc cancels", classes="hint")
        yield Footer()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)

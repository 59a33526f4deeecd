"""Modal screens of the TUI: a one-line prompt and the workload spawn form."""

from __future__ import annotations

from dataclasses import dataclass

from textual.app import ComposeResult
from textual.containers import Grid, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select


class PromptScreen(ModalScreen[str | None]):
    """Ask for one value; dismisses with the text, or None on Escape."""

    BINDINGS = [("escape", "cancel", "Cancel")]

    def __init__(self, question: str, placeholder: str = "", value: str = "") -> None:
        super().__init__()
        self.question = question
        self.placeholder = placeholder
        self.value = value

    def compose(self) -> ComposeResult:
        with Vertical(id="prompt"):
            yield Label(self.question)
            yield Input(value=self.value, placeholder=self.placeholder, id="answer")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip())

    def action_cancel(self) -> None:
        self.dismiss(None)


@dataclass(slots=True)
class SpawnRequest:
    kind: str  # enclave | vm
    size: str
    pattern: str
    passes: str
    count: str


class SpawnScreen(ModalScreen[SpawnRequest | None]):
    """The spawn form: kind, size, pattern, passes and how many."""

    BINDINGS = [("escape", "cancel", "Cancel")]

    def __init__(self, cgroup: str, kind: str = "enclave") -> None:
        super().__init__()
        self.cgroup = cgroup
        self.kind = kind

    def compose(self) -> ComposeResult:
        with Grid(id="spawn"):
            yield Label(f"Spawn into {self.cgroup}", id="spawn-title")
            yield Label("kind")
            yield Select([("enclave", "enclave"), ("guest VM", "vm")], value=self.kind, allow_blank=False, id="kind")
            yield Label("size")
            yield Input(value="16MiB", id="size")
            yield Label("pattern")
            patterns = [(p, p) for p in ("sequential", "random", "hotcold", "shifting")]
            yield Select(patterns, value="sequential", allow_blank=False, id="pattern")
            yield Label("passes")
            yield Input(value="3", id="passes")
            yield Label("count")
            yield Input(value="1", id="count")
            yield Button("Spawn", variant="primary", id="go")
            yield Button("Cancel", id="cancel")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "go":
            self._submit()
        else:
            self.dismiss(None)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self._submit()

    def _submit(self) -> None:
        self.dismiss(
            SpawnRequest(
                kind=str(self.query_one("#kind", Select).value),
                size=self.query_one("#size", Input).value.strip(),
                pattern=str(self.query_one("#pattern", Select).value),
                passes=self.query_one("#passes", Input).value.strip(),
                count=self.query_one("#count", Input).value.strip(),
            )
        )

    def action_cancel(self) -> None:
        self.dismiss(None)

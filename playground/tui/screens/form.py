"""A form of fields checked all at once (the spawn form, the sweep form): Enter in a field or the
Go button checks them; the first error shows in the form with its field focused and the form
stays open; Esc cancels.  A form says how it turns its fields into a request: ``request()``."""

from __future__ import annotations

from typing import ClassVar, TypeVar

from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Button, Input, Label, Static

from playground.tui.fields import FieldError
from playground.tui.screens.prompt import FAILED

T = TypeVar("T")


def row(label: str, field: Widget, hint: str, classes: str = "") -> Horizontal:
    """A line of a form: the field's name, the field, a word on what it takes."""
    hint_text = Static(hint, classes="hint", markup=False)
    return Horizontal(Label(label, classes="field-label"), field, hint_text, classes=f"row {classes}")


class FormScreen(ModalScreen[T | None]):
    """Dismissed with ``request()``'s value once every field holds, with None on Esc or Cancel.
    The form composes an ``#error`` Static (hidden) and a ``#go`` button."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def request(self) -> T:
        """The fields, checked, as what the form asks for; FieldError for the first that is wrong."""
        raise NotImplementedError

    def text(self, field: str) -> str:
        """What the Input ``field`` holds, without surrounding blanks."""
        return self.query_one(f"#{field}", Input).value.strip()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "go":
            self.submit()
        else:
            self.dismiss(None)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.submit()

    def submit(self) -> None:
        try:
            request = self.request()
        except FieldError as e:
            error = self.query_one("#error", Static)
            error.update(f"{FAILED}{e}")
            error.display = True
            self.query_one(f"#{e.field}").focus()
            return
        self.dismiss(request)

    def action_cancel(self) -> None:
        self.dismiss(None)

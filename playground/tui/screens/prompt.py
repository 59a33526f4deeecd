"""A one-line prompt that checks its answer before it closes, and the size words every prompt uses."""

from __future__ import annotations

from collections.abc import Callable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Input, Label, Static

from common.limits import U64_MAX
from common.units import parse_size, shown

# One vocabulary for sizes in every prompt and form of the TUI, and in their errors.
SIZE_WORDS = "64MiB, 1GiB; plain numbers are bytes"
LIMIT_WORDS = "64MiB, 1GiB or max; plain numbers are bytes"
KEYS_WORDS = "Enter applies, Esc cancels"
FAILED = "✗ "  # an error, also without colour

Check = Callable[[str], "str | None"]  # the answer -> what is wrong with it (the prompt stays open), or None


def size_text(nbytes: int | None) -> str:
    """A size as the prompts take it back, exactly: ``16MiB``, ``7600KiB``, ``4097``; ``max`` for none."""
    if nbytes is None or nbytes >= U64_MAX:
        return "max"
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if nbytes and nbytes % (1 << shift) == 0:
            return f"{nbytes >> shift}{unit}"
    return str(nbytes)


def size_error(text: str, *, limit: bool = False) -> str | None:
    """What is wrong with ``text`` as a size (or, for a limit, ``max``), in the prompts' words; None if nothing."""
    if limit and text == "max":
        return None
    try:
        parse_size(text)
    except ValueError:
        return f"{shown(text)} is not a size: {LIMIT_WORDS if limit else SIZE_WORDS}"
    return None


class PromptScreen(ModalScreen[str | None]):
    """Ask for one value, prefilled (and selected: typing replaces it).  Enter runs ``check``
    on the answer: an error is shown inside the prompt, which stays open with the answer in
    it to fix; no error dismisses with the answer.  ``check`` may do the work itself (write
    the limit, make the cgroup), so an error from the engine comes back into the open
    prompt too.  Esc dismisses with None."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(
        self, question: str, *, value: str = "", placeholder: str = "", hint: str = "", check: Check | None = None
    ) -> None:
        super().__init__()
        self.question = question
        self.value = value
        self.placeholder = placeholder
        self.hint = hint
        self.check = check
        self.error = ""  # shown now

    def compose(self) -> ComposeResult:
        with Vertical(id="prompt", classes="dialog"):
            yield Label(self.question, id="question", markup=False)
            yield Input(value=self.value, placeholder=self.placeholder, id="answer")
            if self.hint:
                yield Static(self.hint, classes="hint", markup=False)
            yield Static("", id="error", classes="error", markup=False)
            yield Static(KEYS_WORDS, classes="hint")
        yield Footer()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        answer = event.value.strip()
        error = self.check(answer) if self.check is not None else None
        if error:
            self.show_error(error)
            return
        self.dismiss(answer)

    def on_input_changed(self, event: Input.Changed) -> None:
        if self.error:
            self.show_error("")  # being fixed

    def show_error(self, error: str) -> None:
        self.error = error
        self.query_one("#error", Static).update(f"{FAILED}{error}" if error else "")
        self.query_one("#error", Static).display = bool(error)

    def on_mount(self) -> None:
        self.query_one("#error", Static).display = False

    def action_cancel(self) -> None:
        self.dismiss(None)

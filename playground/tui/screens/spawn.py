"""The spawn form: the fields each kind of workload uses, every one checked in the form."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Footer, Input, Label, Select, Static

from common.limits import MAX_SIZE, PAGE_SIZE
from common.options import seconds, whole
from common.units import format_size, parse_size, shown
from playground.tui.fields import FieldError
from playground.tui.screens.form import FormScreen, row
from playground.tui.screens.prompt import SIZE_WORDS
from wire.protocol import PATTERNS

MAX_COUNT = 64  # workloads one form spawns
MAX_PASSES = 1_000_000
MAX_HOLD_S = 86_400.0  # a day
VM_HOLD = "30s"  # how long a guest VM holds its EPC unless told otherwise
COMPACT_BELOW_ROWS = 40  # on a terminal shorter than this the fields are drawn without borders


@dataclass(frozen=True, slots=True)
class SpawnRequest:
    """A checked form: what to spawn, how many."""

    kind: str  # enclave | vm
    size_bytes: int
    count: int
    pattern: str = "sequential"  # an enclave's
    passes: int = 1  # an enclave's; 0: build and enter only
    hold_s: float | None = None  # a VM's


def check_spawn(
    kind: str, *, size: str, count: str, pattern: str = "sequential", passes: str = "1", hold: str = VM_HOLD
) -> SpawnRequest:
    """The form's fields as typed -> a SpawnRequest; FieldError for the first field that is wrong.
    An enclave takes size, pattern, passes (0 and up) and count; a VM size, hold and count."""
    try:
        size_bytes = parse_size(size)
    except ValueError:
        raise FieldError("size", f"{shown(size)} is not a size: {SIZE_WORDS}") from None
    if not PAGE_SIZE <= size_bytes <= MAX_SIZE:
        raise FieldError("size", f"{shown(size)} is not from one page ({PAGE_SIZE} bytes) to {format_size(MAX_SIZE)}")
    if kind == "enclave":
        if pattern not in PATTERNS:
            raise FieldError("pattern", f"{shown(pattern)} is not one of {', '.join(PATTERNS)}")
        passes_n = _whole("passes", passes, 0, MAX_PASSES)
        return SpawnRequest(kind, size_bytes, _whole("count", count, 1, MAX_COUNT), pattern, passes_n)
    if kind != "vm":
        raise FieldError("kind", f"{shown(kind)} is not enclave or vm")
    try:
        hold_s = seconds(hold)
    except argparse.ArgumentTypeError as e:
        raise FieldError("hold", str(e)) from None
    if hold_s > MAX_HOLD_S:
        raise FieldError("hold", f"{shown(hold)} is more than a day ({MAX_HOLD_S:.0f} s)")
    return SpawnRequest(kind, size_bytes, _whole("count", count, 1, MAX_COUNT), hold_s=hold_s)


def _whole(field: str, text: str, low: int, high: int) -> int:
    try:
        return whole(text, low, high)
    except argparse.ArgumentTypeError as e:
        raise FieldError(field, str(e)) from None


class SpawnScreen(FormScreen[SpawnRequest]):
    """The spawn form.  An enclave: size, pattern, passes, count; a guest VM: size, how long it
    holds its EPC, count.  Spawn (or Enter in a field) checks every field: the first error is
    shown in the form, its field focused, and the form stays open; Esc cancels."""

    def __init__(self, cgroup: str, kind: str = "enclave") -> None:
        super().__init__()
        self.cgroup = cgroup
        self.kind = kind

    def compose(self) -> ComposeResult:
        with Vertical(id="spawn", classes="dialog"):
            yield Label(f"Spawn into {self.cgroup}", id="spawn-title", markup=False)
            kinds = [("enclave", "enclave"), ("guest VM", "vm")]
            yield row("kind", Select(kinds, value=self.kind, allow_blank=False, id="kind"), "")
            yield row("size", Input(value="16MiB", id="size"), SIZE_WORDS)
            patterns = Select([(p, p) for p in PATTERNS], value="sequential", allow_blank=False, id="pattern")
            yield row("pattern", patterns, "how it walks its heap", "enclave-only")
            passes = "times over its heap; 0: build and enter only"
            yield row("passes", Input(value="3", id="passes"), passes, "enclave-only")
            hold = "seconds it holds its EPC (up to a day)"
            yield row("hold", Input(value=VM_HOLD, id="hold"), hold, "vm-only")
            yield row("count", Input(value="1", id="count"), f"how many, 1 to {MAX_COUNT}")
            yield Static("", id="error", classes="error", markup=False)
            with Horizontal(id="spawn-buttons"):
                yield Button("Spawn", variant="primary", id="go")
                yield Button("Cancel", id="cancel")
            yield Static("Enter spawns, Esc cancels", classes="hint")
        yield Footer()

    def on_mount(self) -> None:
        self._show_kind(self.kind)
        self.query_one("#error", Static).display = False
        if self.app.size.height < COMPACT_BELOW_ROWS:  # the form fits a short terminal, its error too
            self.add_class("-compact")
            for field in self.query("Input, Select, Button"):
                field.compact = True  # type: ignore[attr-defined]

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "kind":
            self._show_kind(str(event.value))

    def _show_kind(self, kind: str) -> None:
        """Only the fields this kind of workload uses."""
        for line in self.query(".enclave-only"):
            line.display = kind == "enclave"
        for line in self.query(".vm-only"):
            line.display = kind == "vm"

    def request(self) -> SpawnRequest:
        text = self.text
        return check_spawn(
            str(self.query_one("#kind", Select).value),
            size=text("size"),
            count=text("count"),
            pattern=str(self.query_one("#pattern", Select).value),
            passes=text("passes"),
            hold=text("hold"),
        )

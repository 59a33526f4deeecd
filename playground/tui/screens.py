"""Modal screens of the TUI: a one-line prompt, the workload spawn form, the signal chooser and the help."""

from __future__ import annotations

from dataclasses import dataclass

from textual.app import ComposeResult
from textual.containers import Grid, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Markdown, OptionList, Select
from textual.widgets.option_list import Option

from wire.protocol import PATTERNS


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
            patterns = [(p, p) for p in PATTERNS]
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


class SignalScreen(ModalScreen[str | None]):
    """Choose the signal to send to a workload; dismisses with its name (TERM, KILL, ...) or None."""

    BINDINGS = [("escape", "cancel", "Cancel")]

    def __init__(self, pid: int, signals: tuple[str, ...]) -> None:
        super().__init__()
        self.pid = pid
        self.signals = signals

    def compose(self) -> ComposeResult:
        with Vertical(id="prompt"):
            yield Label(f"Send to pid {self.pid}")
            yield OptionList(*[Option(f"SIG{name}", id=name) for name in self.signals], id="signals")

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)


HELP = """\
# epc-playground

An emulated SGX host: its Enclave Page Cache (EPC) is limited per cgroup by the misc
controller, page for page as the SGX EPC cgroup series (V17).

## What the screen shows

- **Status line**: the EPC's size, what is free, whether `ksgxd` (global reclaim) is running.
- **cgroup tree**: each cgroup's `misc.current` against its *effective* limit, the smallest
  `misc.max` from it up to the root (or the whole EPC). `█` is in use, `░` is room left, `▒` is
  held by others under a limit it shares, `┃` marks `misc.peak`; `t` lists them flat, by usage.
- **details**: every misc and memory file of the selected cgroup, pages on its LRU
  (reclaimable), its tasks, and a minute of usage and of pages reclaimed per tick.
- **workloads**: enclaves and guest VMs; size, resident and swapped pages, faults per
  second, and how each one ended (ok, ENOMEM, SIGBUS, OOM, killed).
- **events**: limit hits, reclaim, ENOMEM, SIGBUS, OOM kills, workloads coming and going;
  runs of the same event on the same cgroup are counted (`x12`).

## Keys

| key | does |
|---|---|
| `n` / `x` | new cgroup under the selected one / remove the selected cgroup |
| `m` / `M` | set `misc.max` / `memory.max` of the selected cgroup (`64M`, `1G`, `max`) |
| `e` / `v` | spawn enclaves / guest VMs into the selected cgroup |
| `k` / `K` | send a signal to the selected workload / `SIGKILL` it |
| `/` | filter the event log by a text (a cgroup, a kind such as `sigbus`, a pid) |
| `f` | find the next cgroup whose path contains a text |
| `o` / `S` | run a scenario (bundled, or a TOML file) on this engine, its KTAP in the log / stop it |
| `p` | pause the display (history keeps recording) |
| `r` | start a new engine after ours went away |
| `tab` | move between the tree and the workloads table |
| `ctrl+p` | the command palette: every action by name |
| `q` | quit (stops the engine and workloads this TUI started) |

Press `escape` to close this help.
"""


class HelpScreen(ModalScreen[None]):
    """What the screen shows and every key."""

    BINDINGS = [("escape", "close", "Close"), ("question_mark", "close", "Close"), ("q", "close", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Markdown(HELP)

    def action_close(self) -> None:
        self.dismiss(None)


class ScenarioScreen(ModalScreen[str | None]):
    """Choose a scenario to run: a bundled one from the list, or a file; dismisses with its name or path."""

    BINDINGS = [("escape", "cancel", "Cancel")]

    def __init__(self, bundled: dict[str, str]) -> None:
        super().__init__()
        self.bundled = bundled  # name -> description

    def compose(self) -> ComposeResult:
        with Vertical(id="scenario"):
            yield Label("Run a scenario on this engine (its cgroups appear in the tree; S stops it)")
            yield OptionList(
                *[Option(f"{name:<18} {text}", id=name) for name, text in self.bundled.items()], id="bundled"
            )
            yield Input(placeholder="or a file: path/to/scenario.toml", id="path")

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)

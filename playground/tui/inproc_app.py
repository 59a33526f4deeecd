"""``epc-playground tui --inproc SCENARIO``: the TUI on a scenario that runs in this process.

The same panels as on an engine (tree, details, workloads, events with the scenario's
KTAP lines, the LRU view and the frame map), drawn from the in-process host
(``inproc_feed``).  Step mode steps the virtual clock: ``z`` freezes (the scenario's
thread waits before its next round), ``.`` runs one request step and ``,`` one reclaim
batch, each moving the clock by what it did, ``z`` thaws; ``-`` and ``+`` set a slow
motion (virtual time a wall second).  There are no processes here: ``k`` ends an
in-process workload, and ``e``, ``v``, ``o`` and ``r``, which start processes or an
engine, say so and do nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from textual.binding import Binding

from common.options import EXIT_USAGE, parsed_knobs
from common.units import format_size
from playground.tui.app import EpcApp, status_line
from playground.tui.inproc_feed import RATES, InprocClient, InprocFeed, InprocRun
from playground.tui.screens.signal import SignalScreen
from playground.tui.step_mode import frozen_status
from wire import protocol
from wire.protocol import EngineError
from wire.snapshot import Snapshot

PROG = "epc-playground tui"
NO_PROCESSES = "in process there are no processes to start: run `epc-playground` without --inproc for an engine"


def rate_text(rate_ns: int | None) -> str:
    """``10 ms virtual a second``; the full speed when None."""
    if rate_ns is None:
        return "full speed"
    for unit, ns in (("s", 10**9), ("ms", 10**6), ("us", 10**3)):
        if rate_ns >= ns:
            return f"{rate_ns / ns:g} {unit} virtual a second"
    return f"{rate_ns} ns virtual a second"


def virtual_status(t_ns: int, rate_ns: int | None) -> str:
    """The status line's part for the in-process host: its virtual time and the slow motion."""
    slow = f" (slow motion: {rate_text(rate_ns)})" if rate_ns is not None else ""
    return f" [b]t={t_ns / 1e9:.6f} s virtual[/]{slow}"


class InprocApp(EpcApp):
    """EpcApp on an InprocRun: the scenario starts with the app and stops when it quits."""

    BINDINGS = [
        Binding("left_square_bracket", "slower", "Slower", show=False),
        Binding("right_square_bracket", "faster", "Faster", show=False),
    ]
    PALETTE = [
        *EpcApp.PALETTE,
        ("Slow motion: slower", "less virtual time a wall second: 1 s, 100 ms ... 10 us ([)", "slower"),
        ("Slow motion: faster", "more virtual time a wall second, up to full speed (])", "faster"),
    ]
    HELP = """\
## In process

The scenario runs in this process on a **virtual clock**: `t=` in the status line is its
time, which moves only by what the host does (20 us a request step, 2 us a page).

- `z` freezes it: the scenario waits before its next round; `.` runs one request step,
  `,` one reclaim batch, and the clock moves by that step's cost; `z` thaws.
- `-` slows it down (1 s, 100 ms, 10 ms, 1 ms, 100 us, 10 us of virtual time a wall
  second), `+` speeds it up again to full speed.
- `k` ends an in-process workload (there is no process to signal); `e`, `v`, `o`
  and `r` need an engine.

When the scenario ends, the host stays as it was, to browse; its KTAP is in the event log.
"""

    def __init__(self, run: InprocRun, *, rate_index: int = 0) -> None:
        super().__init__("", feed=InprocFeed(run))
        self.inproc = run  # the scenario and its thread
        self.rate_index = rate_index  # into RATES: 0, full speed
        run.backend.set_rate(RATES[rate_index])  # (before its thread starts)
        self.ended = False  # the scenario's end was said
        self.title = f"epc-playground: {run.scenario.name}, in process"

    @property
    def client(self) -> InprocClient:
        assert isinstance(self.feed, InprocFeed)
        return self.feed.client

    def on_mount(self) -> None:  # (EpcApp's on_mount runs after this one: Textual calls both)
        self.scenario_stop = self.inproc.stop
        self.inproc.start()
        scenario = self.inproc.scenario
        memory = f", memory {format_size(scenario.memory)}" if scenario.memory is not None else ""
        self.notify(
            f"{scenario.name}: in process on a virtual clock (EPC {format_size(scenario.capacity)}{memory}, "
            "from the file). z freezes it, then . and , step it; - slows it down",
            timeout=8,
        )

    # -- what is drawn ----------------------------------------------------------------

    def tick(self) -> None:
        for line in self.inproc.take_lines():
            self.scenario_line(line)
        if self.inproc.done.is_set() and not self.ended:
            self.ended = True
            summary, passed = self.inproc.summary()
            self.scenario_done(self.inproc.scenario.name, summary, "information" if passed else "warning")
        super().tick()

    def status_text(self, snap: Snapshot) -> str:
        """The virtual time and step mode first (they must fit at 100 columns), then the EPC and
        the workloads, then the scenario's progress."""
        running = sum(1 for w in snap["workloads"] if w["state"] != "exited")
        stalled = sum(1 for w in snap["workloads"] if w["state"] == "stalled")
        return (
            virtual_status(int(snap["t_ns"]), self._rate())
            + frozen_status(snap)
            + "  "
            + status_line(snap, running, stalled)
            + self._progress()
        )

    def _rate(self) -> int | None:
        return RATES[self.rate_index]

    def _progress(self) -> str:
        name = self.inproc.scenario.name
        if self.inproc.done.is_set():
            return f"   scenario {name}: {self.inproc.summary()[0]}"
        progress = self.inproc.progress
        if progress is None or not progress.step:
            return f"   scenario {name}: starting" if progress is None else f"   scenario {name}: finishing"
        return f"   scenario {name}: step {progress.step}/{progress.total} ({progress.kind})"

    def scenario_done(self, name: str, summary: str, severity: Any) -> None:
        super().scenario_done(name, summary, severity)
        self.notify("the host stays as the scenario left it: browse it, q quits", timeout=10)

    def _now(self) -> None:
        """Draw what a step or a freeze did at once, not at the next tick."""
        self.tick()

    # -- step mode and slow motion -------------------------------------------------------

    def action_freeze(self) -> None:
        super().action_freeze()
        self._now()

    def action_step(self, what: str) -> None:
        super().action_step(what)
        self._now()

    def action_slower(self) -> None:
        self._set_rate(min(self.rate_index + 1, len(RATES) - 1))

    def action_faster(self) -> None:
        self._set_rate(max(self.rate_index - 1, 0))

    def _set_rate(self, index: int) -> None:
        self.rate_index = index
        self.client.set_rate(RATES[index])
        self.notify(f"the virtual clock: {rate_text(RATES[index])}")
        self._now()

    def action_stop_scenario(self) -> None:
        """S: the scenario stops at its next step (its workloads are killed); a frozen host thaws
        first, for the runner to get there."""
        if self.frozen and not self.inproc.done.is_set():
            try:
                self.client.thaw()
            except EngineError as e:
                self.notify(f"thaw: {e.message} ({e.code})", severity="error")
                return
            self.frozen = False
        super().action_stop_scenario()

    # -- what needs processes or an engine ---------------------------------------------

    def action_kill(self) -> None:
        pid = self._selected_pid()
        if pid is not None:
            signals = SignalScreen(pid, protocol.SIGNALS)
            self.push_screen(signals, lambda name: self.action_signal(name, pid) if name else None)

    def action_signal(self, name: str, pid: int | None = None) -> None:
        """End the in-process workload ``pid`` (the selected one by default): any signal a scenario's
        kill step knows ends it as killed.  No signal goes to a process of this host."""
        pid = pid if pid is not None else self._selected_pid()
        if pid is None:
            return
        if name not in protocol.SIGNALS:
            self.notify(f"SIG{name}: in process only {', '.join(protocol.SIGNALS)} (each ends it)", severity="warning")
            return
        if not self.client.kill(pid):
            self.notify(f"pid {pid} has already ended", severity="warning")
            return
        self.notify(f"in-process workload {pid} ended (SIG{name}: killed)")
        self._now()

    def action_spawn(self, kind: str) -> None:
        self.notify(f"{'e' if kind == 'enclave' else 'v'}: {NO_PROCESSES}", severity="warning")

    def action_run_scenario(self) -> None:
        name = self.inproc.scenario.name
        self.notify(f"this TUI runs {name} in process; o runs one on an engine (no --inproc)", severity="warning")

    def action_restart_engine(self) -> None:
        self.notify(f"r: {NO_PROCESSES}", severity="warning")


def run_inproc(args: argparse.Namespace) -> int:
    """``tui --inproc SCENARIO``: load it (every problem one line, exit 2), then run the TUI on it."""
    from playground.scenarios import load_or_say

    if args.connect is not None:
        print(f"{PROG}: --inproc runs its own in-process host: leave out --connect", file=sys.stderr)
        return EXIT_USAGE
    scenario = load_or_say(args.inproc, PROG)
    if scenario is None:
        return EXIT_USAGE
    scenario = dataclasses.replace(scenario, knobs=parsed_knobs(args, scenario.knobs.changed()))  # bad: exit 2
    if getattr(args, "profile", None) is not None:  # --profile over the file's
        scenario = dataclasses.replace(scenario, profile=args.profile)
    app = InprocApp(InprocRun(scenario))
    try:
        app.run()
    finally:
        app.stop_everything()  # the scenario's thread too
    return app.return_code or 0

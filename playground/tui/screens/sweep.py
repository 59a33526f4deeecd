"""The sweep (``w``): a form for the scenario, the limit, the range and the budget, then a screen
that runs the sweep in a worker thread (its points in a pool of processes, ``run_local``) with
its progress, and draws the curve as text with the knee, the recommendation and the pod's
resource line.  Esc cancels a running sweep (the pool's workers are killed); ``w`` writes
the table as CSV and the curve as PNG into the screenshot directory."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Input, Label, Static

from common.units import shown
from playground.tui.screens.form import FormScreen, row
from playground.tui.screens.prompt import LIMIT_WORDS
from playground.tui.sweep_text import (
    DEFAULT_BUDGET,
    SweepRequest,
    check_sweep,
    curve_lines,
    default_path,
    default_range,
)

FIELDS = ("scenario", "path", "range", "budget")


class SweepFormScreen(FormScreen[SweepRequest]):
    """What to sweep, prefilled: Enter (or Sweep) checks every field; the first error is shown in
    the form, its field focused, and nothing runs; Esc cancels.  A new scenario refills the path
    and the range with its defaults."""

    def __init__(self, selected: str, scenario: str) -> None:
        super().__init__()
        self.selected = selected
        self.scenario = scenario
        self.path, self.range = self._defaults(scenario)

    def _defaults(self, name: str) -> tuple[str, str]:
        """The path and range the scenario ``name`` proposes; ("", "") when it does not load."""
        from playground.scenario.load import ScenarioError, load_scenario
        from playground.scenarios import resolve

        try:
            scenario = load_scenario(resolve(name))
        except (ScenarioError, OSError):
            return "", ""
        path = default_path(scenario, self.selected)
        return path, default_range(scenario, path) if path else ""

    def compose(self) -> ComposeResult:
        with Vertical(id="sweep-form", classes="dialog"):
            yield Label(f"Sweep a limit (selected: {self.selected})", id="sweep-title", markup=False)
            yield row("scenario", Input(value=self.scenario, id="scenario"), "a bundled name or a .toml file")
            yield row("path", Input(value=self.path, id="path"), "CGROUP/misc.max or memory.max")
            yield row("range", Input(value=self.range, id="range"), "LO..HI/N or a,b,c")
            yield row("budget", Input(value=DEFAULT_BUDGET, id="budget"), "the slowdown allowed; empty: none")
            yield Static("", id="error", classes="error", markup=False)
            with Horizontal(id="sweep-buttons"):
                yield Button("Sweep", variant="primary", id="go")
                yield Button("Cancel", id="cancel")
            yield Static(f"sizes: {LIMIT_WORDS}.  Enter sweeps, Esc cancels", classes="hint", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#error", Static).display = False

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "scenario" and event.value.strip() != self.scenario:
            self.scenario = event.value.strip()
            path, span = self._defaults(self.scenario)
            if path:
                self.query_one("#path", Input).value = path
                self.query_one("#range", Input).value = span

    def request(self) -> SweepRequest:
        return check_sweep(*(self.text(field) for field in FIELDS))


class SweepScreen(Screen[None]):
    """A sweep running, then its curve.  Esc: cancel the sweep while it runs, else back."""

    BINDINGS = [
        Binding("escape", "back", "Cancel / back"),
        Binding("w", "write", "Write CSV + PNG"),
    ]

    def __init__(self, request: SweepRequest, jobs: int | None = None) -> None:
        super().__init__()
        self.request = request
        self.jobs = jobs
        self.stop = threading.Event()
        self.done = 0
        self.total = len(request.points)
        self.state = "running"  # running | done | cancelled | failed
        self.sweep: Any = None  # playground.sweep.output.Sweep once done
        self.summary: list[str] = []

    def compose(self) -> ComposeResult:
        axis = self.request.axis
        title = f"sweep of {self.request.scenario.name}: {axis.path} over {len(self.request.points)} points"
        yield Static(title, id="sweep-heading", markup=False)
        yield Static("", id="sweep-progress", markup=False)
        with VerticalScroll(id="sweep-body"):
            yield Static("", id="sweep-curve", markup=False)
            yield Static("", id="sweep-summary", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self._show_progress()
        self.run_worker(self._run, thread=True, name="sweep", group="sweep")

    # -- the worker thread ----------------------------------------------------

    def _run(self) -> None:
        from playground.sweep.command import focus_cgroup
        from playground.sweep.execute import SweepCancelled, default_jobs, run_local
        from playground.sweep.vary import apply

        request = self.request
        axes = [request.axis]
        cgroup = focus_cgroup(request.scenario, axes)
        runs = [apply(request.scenario, axes, point) for point in request.points]
        jobs = self.jobs or default_jobs()
        try:
            results = run_local(runs, cgroup, jobs, lambda _: self.app.call_from_thread(self._point_done), self.stop)
        except SweepCancelled:
            self.app.call_from_thread(self._finished, "cancelled", None, cgroup)
            return
        except Exception as e:  # a point that raised: said on the screen, not a crash of the TUI
            self.app.call_from_thread(self._finished, f"failed: {e}", None, cgroup)
            return
        self.app.call_from_thread(self._finished, "done", results, cgroup)

    # -- the app's thread -----------------------------------------------------

    def _point_done(self) -> None:
        self.done += 1
        self._show_progress()

    def _show_progress(self) -> None:
        if self.state == "running":
            text = f"running: {self.done}/{self.total} points done  (Esc cancels)"
        elif self.state == "done":
            text = f"{self.total} points  (w writes the table as CSV and the curve as PNG; Esc back)"
        else:
            text = f"{self.state} after {self.done}/{self.total} points  (Esc back)"
        # gone back (Esc) while a point was ending: counted, nothing to draw (the screen may still be
        # attached while its children are being removed, so no query_one)
        for progress in self.query("#sweep-progress").results(Static):
            progress.update(text)

    def _finished(self, state: str, results: Any, cgroup: str) -> None:
        from playground.sweep.command import summarize
        from playground.sweep.output import Sweep

        self.state = state
        if not self.is_attached:  # gone back (Esc) while the last point ended: nothing to draw
            return
        if results is not None:
            request = self.request
            self.sweep = Sweep(request.scenario.name, cgroup, [request.axis], request.points, results)
            self.summary = summarize(self.sweep, request.budget)
            for curve in self.query("#sweep-curve").results(Static):
                curve.update("\n".join(curve_lines(self.sweep)))
            for summary in self.query("#sweep-summary").results(Static):
                summary.update("\n" + "\n".join(self.summary))
        self._show_progress()

    def on_unmount(self) -> None:
        self.stop.set()  # gone (Esc, or the TUI quits): a sweep still running stops

    def action_back(self) -> None:
        if self.state == "running":
            self.stop.set()
            self.notify("sweep cancelled: its points stop")
        self.app.pop_screen()

    def action_write(self) -> None:
        """The table as CSV and the curve as PNG, next to the screenshots; say where, or why not."""
        if self.sweep is None:
            self.notify("nothing to write yet: the sweep has not finished", severity="warning")
            return
        from playground.sweep.output import to_csv

        folder = os.path.expanduser(getattr(self.app, "screenshot_dir", "."))
        stem = f"sweep-{self.sweep.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        base = os.path.abspath(os.path.join(folder, stem))
        try:
            with open(f"{base}.csv", "w", encoding="utf-8") as out:
                out.write(to_csv(self.sweep))
        except OSError as e:
            self.notify(f"cannot write {shown(base + '.csv')}: {e.strerror}", severity="error", timeout=10)
            return
        written = [f"{base}.csv"]
        try:
            from playground.sweep.plot import draw

            draw(self.sweep, f"{base}.png", self.sweep.summary["cost"], self.sweep.summary.get("recommended_point"))
            written.append(f"{base}.png")
        except (ImportError, OSError) as e:
            self.notify(f"the plot is not drawn: {e}", severity="warning", timeout=10)
        self.notify("written: " + ", ".join(written), timeout=15)

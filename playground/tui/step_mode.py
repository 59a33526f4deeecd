"""Step mode from the TUI: freeze the engine, run one request step or one reclaim batch at a time,
thaw.  The freeze is held by the TUI's own connection: if the TUI goes away the engine thaws."""

from __future__ import annotations

from typing import Protocol

from wire.messages import FreezeState, StepResult
from wire.snapshot import Snapshot


class StepSource(Protocol):
    def freeze(self) -> FreezeState: ...
    def step(self, what: str = "request") -> StepResult: ...
    def thaw(self) -> FreezeState: ...


FROZEN_HINT = "FROZEN: . steps a request, , runs a reclaim batch, z thaws"


def waiting(state: FreezeState) -> str:
    """What waits for a step: ``3 ready, 1 parked, 2 work items, ksgxd woken``."""
    parts = [f"{state['ready']} ready", f"{state['waiting']} parked for reclaim"]
    if state["stalled"]:
        parts.append(f"{state['stalled']} stalled")
    parts.append(f"{state['work']} work item{'s' if state['work'] != 1 else ''}")
    if state["ksgxd"]:
        parts.append("ksgxd woken")
    return ", ".join(parts)


def step_note(result: StepResult) -> str:
    """One step in a line: what ran, what it did, what it caused, and what waits now."""
    if not result["ran"]:
        return f"nothing ran: {result['note']}"
    kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(result["kinds"].items()))
    caused = f"; events: {kinds}" if kinds else ""
    return f"{result['note']}{caused}.  Waiting: {waiting(result['state'])}"


def frozen_status(snap: Snapshot) -> str:
    """The status line's step-mode part, from the snapshot (any client's freeze shows)."""
    if not snap.get("frozen"):
        return ""
    return f"   [b reverse] {FROZEN_HINT} [/]"

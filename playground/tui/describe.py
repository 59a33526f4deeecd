"""One line of the event log per engine event (no textual here)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _pressure(e: dict[str, Any]) -> str:
    """Limit hits on a cgroup's own limit and pages reclaimed from its LRU, since the last stats."""
    parts = [f"limit hit x{e['hits']}"] if e["hits"] else []
    if e["reclaimed"]:
        parts.append(f"{e['reclaimed']} pages reclaimed")
    return f"{e['cgroup']}: {', '.join(parts)}"


def _stall_end(e: dict[str, Any]) -> str:
    """How a stall ended, after how long and how many more failed charges."""
    how = {"resumed": "goes on", "exited": "ended by its exit"}.get(e["how"], f"failed: {e['how']}")
    return f"{e['op']} {how} after {e['stalled_ns'] / 1e9:.1f} s, {e['retries']} more tries"


DESCRIBE: dict[str, Callable[[dict[str, Any]], str]] = {
    "pressure": _pressure,
    "enomem": lambda e: f"pid {e['pid']} in {e['cgroup']}: {e['op']} ENOMEM",
    "sigbus": lambda e: f"pid {e['pid']} in {e['cgroup']}: SIGBUS ({e['errno']})",
    "stall": lambda e: f"{e['name']} (pid {e['pid']}) in {e['cgroup']}: {e['op']} stalls, no reclaim can help",
    "stall_end": lambda e: f"{e['name']} (pid {e['pid']}) in {e['cgroup']}: {_stall_end(e)}",
    "oom_kill": lambda e: f"{e['cgroup']}: OOM killer picked pid {e['pid']}",
    "workload_start": lambda e: f"{e['role']} {e['name']} (pid {e['pid']}) starts in {e['cgroup']}",
    "workload_exit": lambda e: f"{e['name']} (pid {e['pid']}) exited: {e['reason']}",
    "write": lambda e: f"{e['path']} <- {e['value']}",
    "mkdir": lambda e: f"mkdir {e['cgroup']}",
    "ksgxd_wake": lambda e: f"ksgxd woken, {e['free_pages']} pages free",
    "secs_writeback": lambda e: f"enclave {e['enclave']}: SECS written out",
    "ecreate": lambda e: f"enclave {e['enclave']} created by pid {e['pid']}",
    "release": lambda e: f"enclave {e['enclave']} released: {e['pages_freed']} pages",
    "rmdir": lambda e: f"rmdir {e['cgroup']}{' (dying)' if e['dying'] else ''}",
    "malformed": lambda e: f"a {e['topic']} message from the engine could not be read, skipped ({e['error']})",
}


def describe(event: dict[str, Any]) -> str:
    """``kind            what happened``: the kind in a column of its own, then a sentence."""
    kind = str(event.get("kind"))
    details = DESCRIBE.get(kind)
    text = details(event) if details else ", ".join(f"{k}={v}" for k, v in event.items() if k not in ("kind", "seq"))
    return f"{kind:<15} {text}"

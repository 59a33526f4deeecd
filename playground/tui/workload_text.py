"""What the workloads table and a workload's detail say of a workload, in words (no textual here):
its state and how it ended, its plan, its ELRANGE, and a cgroup path cut to fit."""

from __future__ import annotations

from common.costs import format_ns, slowdown
from common.units import format_size
from wire.protocol import Outcome
from wire.snapshot import WorkloadRow

FINE_ENDINGS = (Outcome.OK, Outcome.KILLED)  # how a workload may end without it being a failure


def state_text(w: WorkloadRow, now_ns: int) -> str:
    """running, stopped, stalled Ns, or how it ended: killed: SIGTERM, exited: code 3, exited: SIGBUS..."""
    state = w["state"]
    if state == "stalled":
        return f"stalled {max(0, now_ns - int(w.get('stalled_ns') or now_ns)) // 10**9}s"
    if state != "exited":
        return state
    reason = w["reason"] or "?"
    if reason == Outcome.KILLED:  # it went without a word: what the kernel said, if the engine learned it
        if w.get("exit_signal"):
            return f"killed: {w['exit_signal']}"
        if w.get("exit_code") is not None:
            return f"exited: code {w['exit_code']}"
    return f"exited: {reason}"


def failed(w: WorkloadRow) -> bool:
    """Stalled, or ended by a failure (SIGBUS, OOM, an errno, failed, a non-zero exit code)."""
    if w["state"] == "stalled":
        return True
    if w["state"] != "exited":
        return False
    if w["reason"] == Outcome.KILLED and not w.get("exit_signal") and w.get("exit_code"):
        return True
    return w["reason"] not in FINE_ENDINGS


def plan_text(w: WorkloadRow) -> str:
    """What it was asked to do, as its hello said it."""
    size, pattern, passes, duration_ms = w.get("size", 0), w.get("pattern", ""), w.get("passes"), w.get("duration_ms")
    if not size:
        return "not said (a workload whose hello gave no plan: test_sgx, or an older client)"
    what = "of heap" if w["role"] == "enclave" else "of guest EPC"
    parts = [f"{format_size(size)} {what}"]
    if pattern:
        parts.append(f"{pattern} pattern")
    if passes is not None:
        parts.append(f"{passes} pass{'es' if passes != 1 else ''}" + (" (build and enter only)" if passes == 0 else ""))
    if duration_ms is not None:
        parts.append(f"{'then holds it' if w['role'] == 'vm' else 'runs'} {duration_ms / 1000:g} s")
    return ", ".join(parts)


def elrange_text(w: WorkloadRow) -> str:
    elrange = w.get("elrange", 0)
    if not elrange:
        return "none yet (no ECREATE or vepc_open)"
    if w["role"] == "vm":
        return f"{format_size(elrange)} of virtual EPC (vepc_open: whole pages of what it asked for)"
    return f"{format_size(elrange)} (ECREATE: the heap, a TCS and 4 code pages, rounded up to a power of two)"


def ending_text(w: WorkloadRow) -> str:
    """How it ended, and who says so."""
    reason = w["reason"]
    signal_name, code = w.get("exit_signal", ""), w.get("exit_code")
    if reason == Outcome.OK:
        return "ended ok (it said so, then exited)"
    if reason == Outcome.SIGBUS:
        return "died by SIGBUS: a fault the host could not serve (ENOMEM: nothing left to reclaim at its limit)"
    if reason == Outcome.OOM:
        return "killed by the OOM killer (SIGKILL): its backing store went over a memory.max"
    if reason != Outcome.KILLED:
        return f"ended with {reason} (it said so, then exited)"
    if signal_name:
        return f"killed by {signal_name} (the kernel's wait status, read by the engine)"
    if code is not None:
        return f"exited with code {code} without saying why"
    return (
        "went without a word; the engine could not learn how (its parent reaped it before the engine "
        "looked, on a kernel before 6.15)"
    )


def abbreviate(path: str, width: int) -> str:
    """``path`` in at most ``width`` cells, cut in the middle: its last name kept whole when it fits
    (``/sgx_kse…/sgx_test_small``), else both ends of it (``/kubep…ainerd-1f.scope``)."""
    if len(path) <= width:
        return path
    if width < 4:
        return path[-width:]
    head, _, leaf = path.rpartition("/")
    if head and len(leaf) + 2 <= width:
        return path[: width - len(leaf) - 2] + "…/" + leaf
    front = (width - 1) // 3
    return path[:front] + "…" + path[len(path) - (width - 1 - front) :]


def in_subtree(path: str, root: str) -> bool:
    return root == "/" or path == root or path.startswith(root.rstrip("/") + "/")


def relative(path: str, root: str) -> str:
    """``path`` as seen from ``root`` (``.`` for root itself); absolute under ``/``."""
    if root == "/":
        return path
    return "." if path == root else path[len(root.rstrip("/")) + 1 :]


def time_text(runtime_ns: int, paging_ns: int) -> str:
    """Emulated time (docs/costs.md): ``emulated 13.76 ms, paging 6.67 ms, slowdown 1.94x (against no limit)``."""
    return (
        f"emulated {format_ns(runtime_ns)}, paging {format_ns(paging_ns)},"
        f" slowdown {slowdown(runtime_ns, paging_ns):.2f}x (against no limit)"
    )


COMPUTE_FROM = {"calls": "the trace's", "hello": "declared", "profile": "the profile's"}


def compute_text(compute_ns: int, source: str) -> str:
    """A workload's compute per page accessed and who said it: ``2.00 us a page (declared)``; a trace's
    is the mean of what its access calls gave so far."""
    said = COMPUTE_FROM.get(source, source)
    mean = "on average " if source == "calls" else ""
    return f"{mean}{format_ns(compute_ns)} a page accessed" + (f" ({said})" if said else "")

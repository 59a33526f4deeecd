"""Step mode on the in-process backend: frozen, it moves only by steps, and each step moves the
virtual clock by what it did (the Session's own step mode, as the engine's freeze/step/thaw ops)."""

from __future__ import annotations

from playground.scenario.backends.base import WorkloadSpec
from playground.scenario.backends.inproc import PAGE_NS, TURN_NS, InprocBackend


def _thrashing() -> InprocBackend:
    """An enclave of 1 MiB under a limit of 256 KiB, sequential: every pass faults every page."""
    backend = InprocBackend(4 << 20, None, 1)
    backend.mkdir("/t")
    backend.write("/t/misc.max", f"sgx_epc {256 << 10}")
    backend.spawn([WorkloadSpec("thrasher", "/t", "enclave", 1 << 20, passes=10_000)])
    backend.sleep(5_000_000, lambda: None)
    return backend


def _current(backend: InprocBackend) -> int:
    return int(backend.read("/t/misc.current").split()[1])


def _counters(backend: InprocBackend) -> tuple[int, int, int]:
    return backend.session.steps_run, backend.session.pages_stepped, backend.host.pages_reclaimed


def test_a_frozen_in_process_host_moves_only_by_steps_each_costing_what_it_did_on_the_clock() -> None:
    backend = _thrashing()
    assert backend.freeze()["frozen"]
    now, current = backend.clock.now_ns(), _current(backend)
    for _ in range(5):  # a round of a frozen host: the tasks' calls queue, nothing runs
        backend._round()
    assert (backend.clock.now_ns(), _current(backend)) == (now, current)

    raised = lowered = queued_next = False
    for _ in range(200):
        state = backend.session.freeze_state()
        what = "request" if state["ready"] else "reclaim"
        steps, pages, written = _counters(backend)
        result = backend.step(what)
        after = _counters(backend)
        cost = (after[0] - steps) * TURN_NS + (after[1] - pages + after[2] - written) * PAGE_NS
        assert backend.clock.now_ns() - now == cost, result["note"]
        if not result["ran"]:
            assert cost == 0, result["note"]  # a step that ran nothing costs nothing
        elif what == "request":
            assert cost >= TURN_NS, result["note"]  # a request step's turn, and its pages
        else:
            assert cost == result["written"] * PAGE_NS, result["note"]  # the pages the batch wrote out
        if result["status"] == "done":  # the task it answered made its next call: queued, whole
            queued_next = queued_next or result["state"]["ready"] > 0
        was, now = current, backend.clock.now_ns()
        current = _current(backend)
        raised = raised or (what == "request" and current > was)
        lowered = lowered or (what == "reclaim" and current < was)
        if raised and lowered and queued_next:
            break
    assert raised, "no request step charged a page"
    assert lowered, "no reclaim step wrote a page out"
    assert queued_next, "no answered task queued its next call"

    backend.thaw()
    backend.sleep(1_000_000, lambda: None)
    assert backend.clock.now_ns() >= now + 1_000_000
    assert _current(backend) <= 256 << 10

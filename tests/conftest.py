"""Fixtures shared by the tests, and the hypothesis profiles (the one place they are registered)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from hypothesis import HealthCheck, settings

from .engine_fixture import RunningEngine, running_engine

# A zmq Context collected with a socket still open blocks forever in Context.term() inside
# __del__ (two full runs hung so, in test_scenario, on a context some earlier test left).
# Until that test is found, collection does not term: the process exit frees the sockets.
zmq.Context.__del__ = lambda self: None  # type: ignore[method-assign]

# Hypothesis profiles: HYPOTHESIS_PROFILE=dev|ci; by default ci where CI is set (CI runs
# `CI=true bash .ci/run`), else dev.  ci is the full budget; dev is the quick one while you
# work.  Every hypothesis test takes its budget from here: the core's state machine
# (test_stateful.py) the profile itself, the state machine that drives a real engine
# (test_wire_fuzz.py) the "<profile>-engine" one, each of whose steps costs a round trip.
# The seeds stay fixed in the tests (@seed, derandomize): a failure replays.
_COMMON = settings(
    deadline=None,  # a step that waits for reclaim or a process is slow, not wrong
    database=None,  # the fixed seeds reproduce; print_blob says how to replay a failure
    print_blob=True,
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
_BUDGETS = {  # name: (examples, steps per example)
    "ci": (150, 60),
    "dev": (30, 25),
    "ci-engine": (20, 50),
    "dev-engine": (8, 25),
}
for _name, (_examples, _steps) in _BUDGETS.items():
    settings.register_profile(_name, _COMMON, max_examples=_examples, stateful_step_count=_steps)
HYPOTHESIS_PROFILE = os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
if HYPOTHESIS_PROFILE not in ("ci", "dev"):
    raise pytest.UsageError(f"HYPOTHESIS_PROFILE={HYPOTHESIS_PROFILE!r}: it is ci or dev")
settings.load_profile(HYPOTHESIS_PROFILE)


def pytest_report_header() -> str:
    return f"hypothesis profile: {HYPOTHESIS_PROFILE} (HYPOTHESIS_PROFILE=ci|dev; ci by default where CI is set)"


# tools/test runs the suite on every core (pytest-xdist, -n auto, --dist load: the first
# tests go round-robin, one to each worker in turn).  The longest ones go first, so that no
# worker is left running one of them alone at the end, in this order: the two runs of the
# kernel selftest over real processes (1 GiB of EPC, many processes each) land on one worker,
# one after the other, while the other runs the long single-process state-machine runs.
# Everything else keeps its order.  Measured on 2 cores; a name not found here only runs later.
LONGEST_FIRST = (
    "tests/test_kselftest_script.py::",
    "tests/test_stateful.py::test_long_random_sequence[5-",
    "tests/test_runner_real.py::test_bundled_scenario_passes_with_real_processes[kselftest]",
    "tests/test_stateful.py::test_long_random_sequence[2-",
    "tests/test_bench_smoke.py::test_benchmark_runs_quick[tui.py]",
    "tests/test_wire_fuzz.py::",
    "tests/test_stateful.py::test_state_machine",
    "tests/test_soak.py::",
    "tests/test_stateful.py::test_long_random_sequence[3-",
    "tests/test_engine_stall.py::test_a_fault_that_no_reclaim_can_help",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        return next((i for i, prefix in enumerate(LONGEST_FIRST) if item.nodeid.startswith(prefix)), len(LONGEST_FIRST))

    items.sort(key=rank)  # stable: the rest stay in file order


@pytest.fixture
def tmp_path(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """pytest's tmp_path under a shorter name (the test's first 16 characters, not 30).

    Engines put their sockets in it, and a unix socket's path must fit in 107 bytes: under
    pytest-xdist each worker's directory adds ``popen-gwN/``, which made the longest ones
    (tmp_path/other/run/epc-playground/engine.sock) too long.
    """
    return tmp_path_factory.mktemp(re.sub(r"\W", "_", request.node.name)[:16], numbered=True)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[RunningEngine]:
    """A real engine process (16 MiB of EPC) in its own runtime directory, stopped with SIGTERM after the test."""
    with running_engine(tmp_path, "--capacity", "16MiB") as running:
        yield running

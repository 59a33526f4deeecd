"""Fixtures shared by the tests, and the hypothesis profiles (the one place they are registered)."""

from __future__ import annotations

import os
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


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[RunningEngine]:
    """A real engine process (16 MiB of EPC) in its own runtime directory, stopped with SIGTERM after the test."""
    with running_engine(tmp_path, "--capacity", "16MiB") as running:
        yield running

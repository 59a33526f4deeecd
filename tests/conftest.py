"""Fixtures shared by the tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from .engine_fixture import RunningEngine, running_engine

# A zmq Context collected with a socket still open blocks forever in Context.term() inside
# __del__ (two full runs hung so, in test_scenario, on a context some earlier test left).
# Until that test is found, collection does not term: the process exit frees the sockets.
zmq.Context.__del__ = lambda self: None  # type: ignore[method-assign]


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[RunningEngine]:
    """A real engine process (16 MiB of EPC) in its own runtime directory, stopped with SIGTERM after the test."""
    with running_engine(tmp_path, "--capacity", "16MiB") as running:
        yield running

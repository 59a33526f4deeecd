"""Fixtures shared by the tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .engine_fixture import RunningEngine, running_engine


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[RunningEngine]:
    """A real engine process (16 MiB of EPC) in its own runtime directory, stopped with SIGTERM after the test."""
    with running_engine(tmp_path, "--capacity", "16MiB") as running:
        yield running

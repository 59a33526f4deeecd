"""Fixtures shared by the tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .engine_fixture import RunningEngine, start_engine, stop_engine


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[RunningEngine]:
    """A real engine process (16 MiB of EPC) in its own runtime directory, stopped with SIGTERM after the test."""
    running = start_engine(tmp_path, "--capacity", "16MiB")
    try:
        yield running
    finally:
        stop_engine(running)

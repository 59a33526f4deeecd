"""Processes we start ourselves with the spawn method log to one place (QueueHandler/QueueListener)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from engine.runtime import ENDPOINT_ENV, RUNTIME_FILE
from playground.launch import LogHub

pytestmark = pytest.mark.slow


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_engine_and_workload_logs_reach_the_parent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.delenv(ENDPOINT_ENV, raising=False)
    collect = Collect()
    hub = LogHub(collect)
    try:
        engine = hub.spawn(["engine", "--capacity", "4MiB"], name="engine")
        runtime = tmp_path / "epc-playground" / RUNTIME_FILE
        for _ in range(200):
            if runtime.exists():
                break
            engine.join(0.05)
        workloads = [hub.spawn(["enclave", "--size", "1MiB"], name=f"enclave-{i}") for i in range(2)]
        for w in workloads:
            w.join(60)
            assert w.exitcode == 0
        assert engine.pid is not None
        os.kill(engine.pid, 15)
        engine.join(10)
        assert engine.exitcode == 0
    finally:
        hub.close()
    by_process = {r.processName for r in collect.records}
    assert {"engine", "enclave-0", "enclave-1"} <= by_process
    messages = [r.getMessage() for r in collect.records]
    assert any("engine serving" in m for m in messages)
    assert sum("exits: ok" in m for m in messages) == 2

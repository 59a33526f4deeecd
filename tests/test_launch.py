"""Processes we start ourselves with the spawn method log to one place (QueueHandler/QueueListener)."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from engined.runtime import ENDPOINT_ENV, RUNTIME_FILE
from playground import cli
from playground.launch import LogHub
from workloads import cli as workload_cli

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
        engine = hub.spawn(cli.main, ["engine", "--capacity", "4MiB"], name="engine")
        runtime = tmp_path / "epc-playground" / RUNTIME_FILE
        for _ in range(200):
            if runtime.exists():
                break
            engine.join(0.05)
        workloads = [hub.spawn(workload_cli.main, ["enclave", "--size", "1MiB"], name=f"enclave-{i}") for i in range(2)]
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


def test_drain_output_keeps_an_engine_from_blocking_on_its_pipes() -> None:
    """Review B2: the TUI's own engine had stdout and stderr pipes nobody read; after 64 KiB of
    warnings it would block in write(2) and the TUI freeze.  A child writing 1 MiB to each ends."""
    import subprocess
    import sys

    from playground.launch import drain_output

    code = "import sys\nfor i in range(4096):\n    print('x' * 255)\n    print(f'line {i}', file=sys.stderr)\n"
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )  # fmt: skip
    tail = drain_output(child, keep=3)
    assert child.wait(timeout=30) == 0
    deadline = time.monotonic() + 10
    while list(tail) != ["line 4093", "line 4094", "line 4095"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert list(tail) == ["line 4093", "line 4094", "line 4095"]

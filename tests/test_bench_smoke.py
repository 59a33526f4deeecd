"""The benchmarks still run (a --quick pass each); their figures are reported, never asserted here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow  # about 40 s in all: CI runs them, the fast lane leaves them out


@pytest.mark.parametrize("script", ["baseline.py", "core_rate.py", "core_memory.py", "e2e.py", "tui.py", "sweep.py"])
def test_benchmark_runs_quick(script: str, tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())  # the figures are not asserted; that they were written is
    assert isinstance(result, dict) and result, result

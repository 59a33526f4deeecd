"""A real `epc-playground mount` process for tests, on a temporary directory."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .engine_fixture import CLI, ROOT, RunningEngine

VENV_BIN = str(Path(sys.executable).parent)  # where `test_sgx` is installed


@dataclass
class Mount:
    path: Path
    process: subprocess.Popen[str]
    env: dict[str, str]

    def sh(self, script: str, shell: str = "sh", timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run ``script`` in ``shell`` in the mount's directory, with test_sgx on PATH."""
        return subprocess.run(
            [shell, "-c", script], cwd=self.path, env=self.env, capture_output=True, text=True, timeout=timeout
        )


def is_mounted(path: Path) -> bool:
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == str(path) for line in f)


def start_mount(engine: RunningEngine, path: Path, *extra: str) -> subprocess.Popen[str]:
    """``epc-playground mount PATH``, returned once it serves (its ready line and /proc/mounts)."""
    process = subprocess.Popen(
        [*CLI, "mount", str(path), *extra],
        env=engine.env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], 30)
    line = process.stdout.readline() if ready else ""
    if "shows the cgroups" not in line:
        process.kill()
        raise AssertionError(f"the mount did not come up: {line!r} {process.communicate()}")
    deadline = time.monotonic() + 10
    while not is_mounted(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert is_mounted(path)
    return process


def stop_mount(process: subprocess.Popen[str], path: Path, signum: int = signal.SIGTERM) -> int:
    """Stop the mount with ``signum``; its exit status.  The directory must be unmounted."""
    if process.poll() is None:
        process.send_signal(signum)
    try:
        status = process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        status = process.wait()
    if is_mounted(path):  # never leave a dead mount behind, even when the test fails
        subprocess.run(["umount", "-l", str(path)], check=False)
        raise AssertionError(f"{path} still mounted after signal {signum}")
    return status


@contextlib.contextmanager
def mounted(engine: RunningEngine, tmp_path: Path) -> Iterator[Mount]:
    path = tmp_path / "cgroup"
    path.mkdir()
    process = start_mount(engine, path)
    env = {**engine.env, "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    try:
        yield Mount(path, process, env)
    finally:
        status = stop_mount(process, path, signal.SIGTERM)
        assert status == 0, process.communicate()

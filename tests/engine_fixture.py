"""A real engine process for integration tests, in its own runtime directory."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engined.runtime import ENDPOINT_ENV
from playground.launch import start_engine_process
from workloads.client import EngineClient

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "playground.cli"]


@dataclass
class RunningEngine:
    process: subprocess.Popen[str]
    env: dict[str, str]
    runtime_dir: Path
    endpoint: str

    def client(self) -> EngineClient:
        return EngineClient(self.endpoint, timeout_s=30)

    def cli(self, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, *args], env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=120, **kwargs
        )  # type: ignore[call-overload, no-any-return]

    def spawn(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*CLI, *args], env=self.env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def check(self) -> None:
        with self.client() as client:
            assert client.call("check") == "ok"


def private_env(tmp_path: Path) -> dict[str, str]:
    """This environment with a 0700 runtime directory of its own (tmp_path/run), no engine
    endpoint, and the project importable: what a fresh shell of the engine's user has."""
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "PYTHONPATH": str(ROOT)}
    env.pop(ENDPOINT_ENV, None)
    return env


def start_engine(tmp_path: Path, *args: str) -> RunningEngine:
    env = private_env(tmp_path)
    process, endpoint = start_engine_process(list(args), env)
    env[ENDPOINT_ENV] = endpoint
    return RunningEngine(process, env, Path(env["XDG_RUNTIME_DIR"]) / "epc-playground", endpoint)


@contextlib.contextmanager
def running_engine(tmp_path: Path, *args: str) -> Iterator[RunningEngine]:
    """start_engine, then stop_engine however the block ends (what the engine fixtures yield)."""
    running = start_engine(tmp_path, *args)
    try:
        yield running
    finally:
        stop_engine(running)


def stop_engine(engine: RunningEngine) -> None:
    """SIGTERM: the engine must exit 0 within a few seconds and remove its runtime files (its keys stay)."""
    if engine.process.poll() is None:
        engine.process.send_signal(signal.SIGTERM)
        try:
            status = engine.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            engine.process.kill()
            raise AssertionError("the engine did not stop within 10 s of SIGTERM") from None
        assert status == 0, engine.process.communicate()
        if engine.runtime_dir.exists():
            left = [path.name for path in engine.runtime_dir.iterdir() if path.name != "keys"]
            assert not left, left


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0) -> bool:
    """Whether ``predicate()`` holds within ``timeout`` seconds (polled every 20 ms): a bound, not a measurement."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


def free_port_pair() -> int:
    """A port P with P and P + 1 free on 127.0.0.1 (a tcp engine's requests and events), from the
    kernel rather than guessed: tests in parallel, and other programs, never get the same one."""
    for _ in range(100):
        with socket.socket() as a, socket.socket() as b:
            a.bind(("127.0.0.1", 0))
            port = int(a.getsockname()[1])
            with contextlib.suppress(OSError):
                b.bind(("127.0.0.1", port + 1))
                return port
    raise AssertionError("no two free ports in a row")

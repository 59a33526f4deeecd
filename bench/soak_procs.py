"""The soak's processes: the engine, the forkserver, the fuzzers, and a feed of the engine's events.

Each is started as a process of its own (``python -m ...``), never forked from a process
that holds a zmq context; the engine runs under RLIMIT_AS of ADDRESS_SPACE, so a
runaway allocation fails inside it rather than taking the machine.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, Any

import msgpack
import zmq

from bench import _common
from wire import protocol

ADDRESS_SPACE = 3 << 30
FUZZERS = 4


class Engine:
    """The engine process of the soak, in a private runtime directory."""

    def __init__(self, directory: str, env: dict[str, str]) -> None:
        self.endpoint = f"ipc://{directory}/e.sock"
        self.log_path = f"{directory}/engine.log"
        out_path = f"{directory}/engine.out"
        with open(out_path, "wb") as out, open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "playground.cli", "engine", "--bind", self.endpoint, "--capacity", "64MiB"],
                env=env, cwd=_common.REPO, stdout=out, stderr=log, preexec_fn=_limit_address_space,
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while "serving" not in Path(out_path).read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                raise RuntimeError(f"the engine did not start: {Path(self.log_path).read_text()[-2000:]}")
            time.sleep(0.05)

    def rss_mb(self, field_name: str = "VmRSS") -> float:
        """Its resident memory now (VmRSS), or at most so far (VmHWM)."""
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    def cpu_s(self) -> float:
        """CPU time the engine has used so far."""
        try:
            stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        except OSError:
            return 0.0
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> int | None:
        """SIGTERM and wait; its exit status (None if it had to be killed)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                return None
        return self.process.returncode

    def logged_errors(self) -> list[str]:
        """The lines of its log that tell of an engine bug."""
        lines = Path(self.log_path).read_text(errors="replace").splitlines()
        marks = ("internal error", "Task exception", "Exception in callback")
        return [line for line in lines if any(mark in line for mark in marks)]


def _limit_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


class Forkserver:
    """Our end of bench/soak_forkserver.py."""

    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.soak_forkserver"],
            env=env, cwd=_common.REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the forkserver ended (status {self.process.poll()})")
        return dict(json.loads(line))

    def spawn(self, children: list[tuple[list[str], str]]) -> list[tuple[int, float]]:
        """New workload processes, one for each (argv, stderr path), started together: each one's
        pid and the (system-wide monotonic) time it started."""
        reply = self._ask({"spawn": [{"argv": argv, "stderr": path} for argv, path in children]})
        return [(int(child["pid"]), float(child["t"])) for child in reply["children"]]

    def reap(self, pids: list[int]) -> dict[int, int]:
        return {int(pid): code for pid, code in self._ask({"reap": pids})["status"].items()}

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class EventFeed(threading.Thread):
    """The engine's other events, read as they come: when each workload's start and exit were
    published, and the OOM killer's victims."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], pub_endpoint: str) -> None:
        super().__init__(name="events", daemon=True)
        self.sub = ctx.socket(zmq.SUB)
        self.sub.linger = 0
        self.sub.setsockopt(zmq.SUBSCRIBE, protocol.TOPIC_EVENT_OTHER)
        self.sub.connect(pub_endpoint)
        self.started: dict[str, float] = {}  # workload name -> when its workload_start came
        self.exited: dict[str, float] = {}  # workload name -> when its workload_exit came
        self.oom_killed: set[int] = set()
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.is_set():
            if not self.sub.poll(100):
                continue
            _, payload = self.sub.recv_multipart()
            now = time.monotonic()
            for event in msgpack.unpackb(payload, raw=False):
                if event["kind"] == "workload_start":
                    self.started[str(event["name"])] = now
                elif event["kind"] == "workload_exit":
                    self.exited[str(event["name"])] = now
                elif event["kind"] == "oom_kill":
                    self.oom_killed.add(int(event["pid"]))
        self.sub.close(linger=0)

    def stop(self) -> None:
        self._stopping.set()
        self.join(5)


@dataclass(slots=True)
class FuzzerSlot:
    """One of the FUZZERS: its current process and what its earlier processes sent."""

    index: int
    share: int
    process: subprocess.Popen[str] | None = None
    reader: threading.Thread | None = None
    latest: dict[str, Any] = field(default_factory=dict)
    earlier: list[dict[str, Any]] = field(default_factory=list)
    generation: int = 0
    finished: bool = False

    @property
    def sent(self) -> int:
        return sum(int(r.get("sent", 0)) for r in [*self.earlier, self.latest])


class Fuzzers:
    """The FUZZERS fuzzer processes, each with its share of the frames; one the OOM killer took is
    replaced by a new process that sends the rest of its share."""

    def __init__(self, endpoint: str, env: dict[str, str], frames: int, seed: int) -> None:
        self.endpoint, self.env, self.seed = endpoint, env, seed
        shares = [frames // FUZZERS + (i < frames % FUZZERS) for i in range(FUZZERS)]
        self.slots = [FuzzerSlot(i, share) for i, share in enumerate(shares)]
        for slot in self.slots:
            self._start(slot)

    def _start(self, slot: FuzzerSlot) -> None:
        seed = self.seed * 1_000_000 + slot.index * 10_000 + slot.generation
        slot.process = subprocess.Popen(
            [sys.executable, "-m", "bench.soak_fuzzer", self.endpoint, str(slot.index), str(seed),
             str(slot.share - slot.sent)],
            env=self.env, cwd=_common.REPO, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        slot.reader = threading.Thread(target=self._read, args=(slot, slot.process.stdout), daemon=True)
        slot.reader.start()

    @staticmethod
    def _read(slot: FuzzerSlot, out: IO[str]) -> None:
        for line in out:
            slot.latest = json.loads(line)

    def sent(self) -> int:
        return sum(slot.sent for slot in self.slots)

    def tend(self, events: EventFeed) -> tuple[int, list[str]]:
        """Look at the fuzzers that ended: done, or replaced (after an OOM kill, or failing).

        Returns how many the OOM killer took, and a line for each that ended otherwise.
        """
        oom_killed, failed = 0, []
        for slot in self.slots:
            process = slot.process
            if slot.finished or process is None or process.poll() is None:
                continue
            assert slot.reader is not None
            slot.reader.join(5)  # its last line
            if slot.latest.get("done") and process.returncode == 0:
                slot.finished = True
                continue
            pid = process.pid
            if process.returncode == -signal.SIGKILL and wait_for(partial(events.oom_killed.__contains__, pid), 2.0):
                oom_killed += 1
            else:
                failed.append(f"fuzzer {slot.index} (pid {pid}) ended with status {process.returncode}")
                if slot.latest.get("setup") or slot.generation >= 3:
                    slot.finished = True
                    continue
            slot.earlier.append(slot.latest)
            slot.latest = {}
            slot.generation += 1
            self._start(slot)
        return oom_killed, failed

    def done(self) -> bool:
        return all(slot.finished for slot in self.slots)

    def stop(self) -> None:
        for slot in self.slots:
            if slot.process is not None and slot.process.poll() is None:
                slot.process.kill()
                slot.process.wait()

    def reports(self) -> list[dict[str, Any]]:
        return [report for slot in self.slots for report in [*slot.earlier, slot.latest] if report]


def wait_for(condition: Callable[[], bool], seconds: float, interval_s: float = 0.02) -> bool:
    """Whether ``condition()`` came true within ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval_s)
    return True

"""Engines and workloads started as our own processes, logging to one place.

``LogHub.spawn(target, argv)`` runs ``target(argv)`` (a command line's ``main``, say
``workloads.cli.main``) in a child started with the ``spawn`` method.  Every child gets
a ``logging.handlers.QueueHandler`` on a multiprocessing queue that the parent drains
with a ``QueueListener``: records from every child reach the parent's handlers, whatever
process they came from.  (The multiprocessing-logging package cannot do this: its 0.4.0
asserts the ``fork`` start method, and a process with threads, like a Textual app, must
not fork.)  ``start_engine_process`` starts ``epc-playground engine`` as a plain
subprocess whose pipes ``drain_output`` reads.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import multiprocessing
import sys
import threading
from collections import deque
from collections.abc import Callable
from multiprocessing.context import SpawnProcess
from typing import IO, Any

LOG_FORMAT = "%(asctime)s %(processName)s[%(process)d] %(name)s %(levelname)s %(message)s"
Main = Callable[[list[str]], int]
"""A command line's entry: its arguments in, its exit status out."""


class LogHub:
    """A queue the children log into, and the listener that hands their records to ``handlers``."""

    def __init__(self, *handlers: logging.Handler) -> None:
        self.context = multiprocessing.get_context("spawn")
        self.queue: Any = self.context.Queue()
        if not handlers:
            stderr = logging.StreamHandler(sys.stderr)
            stderr.setFormatter(logging.Formatter(LOG_FORMAT))
            handlers = (stderr,)
        self.listener = logging.handlers.QueueListener(self.queue, *handlers, respect_handler_level=True)
        self.listener.start()

    def spawn(self, target: Main, argv: list[str], name: str | None = None) -> SpawnProcess:
        """Start ``target(argv)`` as a spawned process that logs into this hub; its exit status is what it returns.

        ``target`` is a module-level function: the spawned process imports it by name.
        """
        args = (target, argv, self.queue)
        process = self.context.Process(target=_child_main, args=args, name=name or " ".join(argv[:1]))
        process.start()
        return process

    def close(self) -> None:
        """Stop the listener; never waits long: a child killed from outside (SIGKILL) while it
        wrote to the queue can leave it locked for good, and then its records are lost."""
        thread = self.listener._thread  # QueueListener.stop() would join it without a timeout
        self.queue.put_nowait(self.listener._sentinel)  # type: ignore[attr-defined]
        if thread is not None:
            thread.join(timeout=2.0)
        self.listener._thread = None
        self.queue.cancel_join_thread()  # do not wait at exit for a feeder that cannot write
        self.queue.close()


def _child_main(target: Main, argv: list[str], queue: Any) -> None:
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(queue)]
    root.setLevel(logging.INFO)
    sys.exit(target(argv))


def start_engine_process(
    args: list[str], env: dict[str, str], timeout_s: float = 30.0, cpus: set[int] | None = None
) -> tuple[Any, str]:
    """``epc-playground engine ARGS...`` as a child process; returns it once it serves, and its endpoint.

    ``cpus``: the CPUs it may run on (benchmarks pin it).  RuntimeError with what it
    printed when it does not start.
    """
    import os
    import select
    import subprocess

    cmd = [sys.executable, "-m", "playground.cli", "engine", *args]
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    process = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=pin)
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout_s)
    line = process.stdout.readline() if ready else ""
    if "serving" not in line:
        process.kill()
        raise RuntimeError(f"the engine did not start: {line!r} {process.communicate()}")
    return process, line.split("serving ", 1)[1].split()[0]


def drain_output(process: Any, keep: int = 20) -> deque[str]:
    """Read an engine process's stdout and stderr to their ends in daemon threads, so that it
    never blocks writing to a pipe nobody reads (its warnings and tracebacks go to stderr);
    returns the last ``keep`` lines of its stderr, kept as they come."""
    tail: deque[str] = deque(maxlen=keep)

    def pump(stream: IO[str], into: deque[str] | None) -> None:
        with contextlib.suppress(ValueError, OSError), stream:
            for line in stream:
                if into is not None:
                    into.append(line.rstrip())

    for stream, into in ((process.stdout, None), (process.stderr, tail)):
        if stream is not None:
            threading.Thread(target=pump, args=(stream, into), name="epc-engine-output", daemon=True).start()
    return tail

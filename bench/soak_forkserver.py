"""A forkserver for the soak: real workload processes in a few milliseconds each.

``python -m bench.soak_forkserver`` imports playground.cli and the workload modules
once, creates no zmq context, and then, for each JSON line on stdin, answers one
JSON line on stdout:

- ``{"spawn": [{"argv": ARGV, "stderr": PATH}, ...]}``: fork a child for each, which runs
  ``playground.cli.main(ARGV)`` with its stderr in PATH and exits with its status; they
  all start at once when the last is forked: ``{"children": [{"pid": N, "t": MONOTONIC}, ...]}``,
  t being that moment.
- ``{"reap": [PID, ...]}``: wait for each of those children;
  ``{"status": {PID: RETURNCODE}}``, a negative code for a signal, as subprocess gives.

A child is not waited for until it is reaped, so its pid stays its own (a zombie)
until then: the soak may open a pidfd to it and kill it at any time without hitting
another process that got the pid.  Each child is a process of its own, so the engine
learns its pid from the kernel when it says hello.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
import time
import traceback
from typing import Any, TextIO

import playground.cli
import workloads.client
import workloads.enclave
import workloads.process
import workloads.vm

PRELOADED = (workloads.client, workloads.enclave, workloads.process, workloads.vm)
EXIT_CRASH = 70  # the child raised instead of returning a status


def _child(argv: list[str], stderr_path: str) -> None:
    """Runs in the forked child: never returns."""
    code = EXIT_CRASH
    try:
        null = os.open(os.devnull, os.O_RDWR)
        err = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.dup2(err, 2)
        os.close(null)
        os.close(err)
        code = playground.cli.main(argv)
    except SystemExit as e:  # argparse
        code = e.code if isinstance(e.code, int) else EXIT_CRASH
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _fork_all(plans: list[dict[str, Any]]) -> list[int]:
    """A child for each plan, all held at one gate until the last is forked, then let go at once."""
    gate, release = os.pipe()
    pids = []
    for plan in plans:
        pid = os.fork()
        if pid == 0:
            os.close(release)
            os.read(gate, 1)  # end of file: the gate opened
            os.close(gate)
            _child(list(plan["argv"]), str(plan["stderr"]))
        pids.append(pid)
    os.close(gate)
    os.close(release)
    return pids


def _returncode(status: int) -> int:
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def serve(lines: TextIO = sys.stdin, out: TextIO = sys.stdout) -> None:
    children: set[int] = set()
    for line in lines:
        request = json.loads(line)
        reply: dict[str, object]
        if "spawn" in request:
            pids = _fork_all(request["spawn"])
            started = time.monotonic()
            children.update(pids)
            reply = {"children": [{"pid": pid, "t": started} for pid in pids]}
        else:
            status = {}
            for pid in request["reap"]:
                if pid in children:
                    children.discard(pid)
                    status[str(pid)] = _returncode(os.waitpid(pid, 0)[1])
            reply = {"status": status}
        out.write(json.dumps(reply) + "\n")
        out.flush()
    for pid in children:  # our parent went away: take our children with us
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


if __name__ == "__main__":
    gc.freeze()  # what we imported stays out of the children's collections: fewer copy-on-write faults
    serve()

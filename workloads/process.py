"""How a workload process ends: exit codes as the README gives them.

0 success; 1 an ioctl-like error, its errno name on stderr; killed by SIGBUS when a
fault cannot be served (the process really dies by the signal); killed by SIGKILL
when the OOM killer picks it (the engine sends that); 2 usage or connection errors.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from workloads.client import EngineClient, EngineError, NoEngine

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
log = logging.getLogger("epc.workload")


def die_by(signum: int) -> None:
    """End this process by ``signum``, as the kernel's signal would.

    Log records queued for a parent (a QueueHandler on a multiprocessing queue) are written
    out first: dying while the queue's feeder thread holds its shared write lock would
    leave every other writer, and the parent's listener, blocked for good.
    """
    for handler in logging.getLogger().handlers:
        queue: Any = getattr(handler, "queue", None)
        if queue is not None and hasattr(queue, "join_thread"):
            queue.close()
            queue.join_thread()
    sys.stdout.flush()
    sys.stderr.flush()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    time.sleep(5)
    os._exit(128 + signum)


READY = b"ready\n"
TITLE = "epc-playground: {role}"  # a workload process's name in ps and htop; then its name, if it has one


def name_process(role: str, name: str = "") -> str:
    """Name this process in ps and htop, ``epc-playground: enclave db``, whatever started it (a
    shell, ``python -m workloads``, the TUI's multiprocessing child, the scenario runner): its
    command line (/proc/PID/cmdline) and, cut at 15 bytes, its comm.  Returns the title."""
    import setproctitle

    title = " ".join(filter(None, (TITLE.format(role=role), name)))
    setproctitle.setproctitle(title)
    return title


def _hold() -> None:
    """Tell the launcher we are ready, wait for its go, then stop writing to its pipe (it closes it)."""
    os.write(1, READY)
    os.read(0, 1)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)


def run_workload(
    main: Callable[[EngineClient], None],
    *,
    endpoint: str | None,
    role: str,
    name: str = "",
    cgroup: str = "",
    hold: bool = False,
    prog: str = "",
    plan: dict[str, Any] | None = None,
) -> int:
    """Connect, register as ``role``, run ``main`` and map what happened to an exit status.

    ``cgroup``: first move this process there (as the selftest's ash_cgexec.sh does).
    ``hold``: once registered, say ``ready`` on stdout and wait for a byte on stdin
    before going on, so that a launcher knows the workload is placed in its cgroup
    before it takes its next step (the scenario runner does).  ``prog`` starts every
    line on stderr (default ``epc-playground ROLE``); ``plan`` goes with the hello
    (``workloads.program.plan``).  An engine that is not there or
    goes away (NoEngine: killed, or stopped with our request in hand) is one line and 2.
    """
    prog = prog or f"epc-playground {role}"
    try:
        client = EngineClient(endpoint, timeout_s=None)
    except NoEngine as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        if cgroup:
            client.write(f"{cgroup.rstrip('/')}/cgroup.procs", str(os.getpid()))
        placed = client.hello(role, name, **(plan or {}))
        if hold:
            _hold()
        log.info("%s %d starts in %s", role, os.getpid(), placed["cgroup"])
        main(client)
        client.call("bye", reason="ok")
        log.info("%s %d exits: ok", role, os.getpid())
        return EXIT_OK
    except EngineError as e:
        log.info("%s %d exits: %s", role, os.getpid(), e.code)
        if e.code == "SIGBUS":
            print(f"{prog}: SIGBUS: {e.message}", file=sys.stderr)
            client.close()
            die_by(signal.SIGBUS)
        print(f"{prog}: {e.code}: {e.message}", file=sys.stderr)
        with contextlib.suppress(EngineError, NoEngine):
            client.call("bye", _timeout_s=2.0, reason=e.code)
        return EXIT_ERROR
    except NoEngine as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        client.close()

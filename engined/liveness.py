"""Processes on this host: whether they live, their parents, the cgroup they inherit, and
following them until they exit (pidfds), for the engine and the cgroupfs mount alike."""

from __future__ import annotations

import asyncio
import errno
import os
import select
import signal
from collections.abc import Callable

MAX_DEPTH = 256  # ancestors a walk looks at before it gives up (root: the init process is near)
MAX_WATCHED = 65536  # processes the engine follows with a pidfd


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (on this host)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def parent_pid(pid: int) -> int:
    """The parent of ``pid`` from /proc/PID/stat; 0 when it is gone or unreadable."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        return int(stat[stat.rindex(")") + 2 :].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def live_parents() -> dict[int, int]:
    """pid -> parent pid of every live process (zombies have left their cgroup, as in the kernel)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields and fields[0] not in ("Z", "X"):
            parents[int(entry)] = int(fields[1])
    return parents


def inherited_cgroup(pid: int, placed: Callable[[int], str | None], parent: Callable[[int], int]) -> str:
    """The cgroup ``pid`` is in: where a cgroup.procs write placed it (``placed``), else where its
    nearest placed ancestor is, as a forked child inherits its parent's cgroup; root if none is."""
    seen = 0
    while pid > 0 and seen < MAX_DEPTH:
        where = placed(pid)
        if where is not None:
            return where
        pid = parent(pid)
        seen += 1
    return "/"


class Pidfds:
    """The engine's Processes: each followed process through a pidfd on the running asyncio loop,
    whose exit calls ``on_exit(pid)``; the OOM killer's SIGKILL goes through the same pidfd, so it
    can never reach a process that reused the pid."""

    def __init__(self, on_exit: Callable[[int], None]) -> None:
        self.on_exit = on_exit
        self.fds: dict[int, int] = {}

    def watch(self, pid: int) -> None:
        if pid in self.fds:
            return
        if len(self.fds) >= MAX_WATCHED:
            raise OSError(errno.EAGAIN, f"the engine already follows {MAX_WATCHED} processes")
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            raise OSError(errno.ESRCH, f"no process {pid} on the engine's host") from None
        except OSError as e:
            raise OSError(errno.EAGAIN, f"cannot follow process {pid}: {e.strerror}") from None
        self.fds[pid] = fd
        asyncio.get_running_loop().add_reader(fd, self.on_exit, pid)

    def watching(self, pid: int) -> bool:
        return pid in self.fds

    def gone(self, pid: int) -> bool:
        fd = self.fds.get(pid)
        return fd is not None and bool(select.select([fd], [], [], 0)[0])

    def alive(self, pid: int) -> bool:
        return process_alive(pid)

    def forget(self, pid: int) -> None:
        fd = self.fds.pop(pid, None)
        if fd is not None:
            asyncio.get_running_loop().remove_reader(fd)
            os.close(fd)

    def kill(self, pid: int) -> str | None:
        fd = self.fds.get(pid)
        if fd is None:
            return "not followed by the engine"
        try:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        except ProcessLookupError:
            pass  # already on its way out
        except OSError as e:
            return f"the kernel refused: {e.strerror}"
        return None

    def parent(self, pid: int) -> int:
        return parent_pid(pid)

    def close(self) -> None:
        for pid in list(self.fds):
            self.forget(pid)

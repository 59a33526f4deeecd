"""Processes on this host: whether they live, their parents, the cgroup they inherit, and
following them until they exit (pidfds), for the engine and the cgroupfs mount alike."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import select
import signal
import struct
from collections.abc import Callable

MAX_DEPTH = 256  # ancestors a walk looks at before it gives up (root: the init process is near)
MAX_WATCHED = 65536  # processes the engine follows with a pidfd

# ioctl(pidfd, PIDFD_GET_INFO) (Linux 6.15, include/uapi/linux/pidfd.h): struct pidfd_info's first
# version, 64 bytes (mask, cgroupid, eleven ids, exit_code), _IOWR(PIDFS_IOCTL_MAGIC 0xFF, 11, ...)
PIDFD_INFO_SIZE_VER0 = 64
PIDFD_INFO_EXIT = 1 << 3  # the wait status of a task that was reaped; the kernel keeps it on the pidfd
PIDFD_GET_INFO = (3 << 30) | (PIDFD_INFO_SIZE_VER0 << 16) | (0xFF << 8) | 11
_EXIT_CODE_AT = 60  # offset of exit_code in struct pidfd_info


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


def _stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat from its state on (field 3); [] when it is gone or unreadable."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def stopped(pid: int) -> bool:
    """Whether ``pid`` is stopped (SIGSTOP, SIGTSTP, a debugger): state T or t in /proc/PID/stat."""
    fields = _stat_fields(pid)
    return bool(fields) and fields[0] in ("T", "t")


def _reaped_status(pidfd: int) -> int | None:
    """The wait status the kernel kept on ``pidfd`` once its process was reaped (PIDFD_INFO_EXIT,
    Linux 6.15); None while it is not reaped yet, or on an older kernel."""
    info = bytearray(struct.pack("=Q", PIDFD_INFO_EXIT) + bytes(PIDFD_INFO_SIZE_VER0 - 8))
    try:
        fcntl.ioctl(pidfd, PIDFD_GET_INFO, info, True)
    except OSError:
        return None  # ENOTTY/EINVAL: a kernel before 6.15; ESRCH: reaped with no exit info kept
    if not struct.unpack_from("=Q", info)[0] & PIDFD_INFO_EXIT:
        return None
    return int(struct.unpack_from("=i", info, _EXIT_CODE_AT)[0])


def _zombie_status(pid: int) -> int | None:
    """The wait status of ``pid`` while it is a zombie (field 52 of /proc/PID/stat, which the kernel
    shows only to who may ptrace it: root, or its own user); None otherwise."""
    fields = _stat_fields(pid)
    if len(fields) < 50 or fields[0] != "Z":
        return None
    try:
        if os.geteuid() != 0 and os.stat(f"/proc/{pid}").st_uid != os.geteuid():
            return None  # shown as 0: not to be taken for an exit 0
    except OSError:
        return None
    return int(fields[49])


def exit_status(pid: int, pidfd: int) -> int | None:
    """How the exited process ``pid`` ended, as waitpid(2) gives it (WIFSIGNALED, WTERMSIG, ...),
    although it is not our child (waitid on a pidfd takes only children): the status the kernel
    keeps on its pidfd once its parent reaped it (Linux 6.15's PIDFD_INFO_EXIT), else the zombie's
    own in /proc while its parent has not.  None when neither says (an older kernel, and the
    parent reaped it before we looked)."""
    zombie = _zombie_status(pid)  # first: if the pidfd says "not reaped" after, the zombie read was ours
    reaped = _reaped_status(pidfd)
    return reaped if reaped is not None else zombie


def describe_status(status: int | None) -> tuple[str, int | None]:
    """(the signal that killed it, e.g. "SIGTERM", or ""; its exit code, or None) of a wait status."""
    if status is None:
        return "", None
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            return signal.Signals(number).name, None
        except ValueError:
            return f"SIG{number}", None
    if os.WIFEXITED(status):
        return "", os.WEXITSTATUS(status)
    return "", None


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

    def exit_status(self, pid: int) -> int | None:
        fd = self.fds.get(pid)
        return None if fd is None else exit_status(pid, fd)

    def stopped(self, pid: int) -> bool:
        return pid in self.fds and stopped(pid)

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

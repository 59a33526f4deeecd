"""The engine's cgroup tree as a cgroup-v2-like filesystem (FUSE), so shell tools and kernel scripts run on it.

``epc-playground mount DIR`` (docs/cgroupfs.md): a directory per cgroup, the files
of the core (README, "The core in a few lines") in each, with the kernel's names, modes and formats; ``cat``,
``echo VALUE > file``, ``mkdir``, ``rmdir``, ``find``, ``grep``, ``awk`` and ``watch``
work on it, and a failed write fails with the kernel's errno (EngineError.errno).

- Binding: mfusepy, ctypes over libfuse 3's high-level (path-based) API.  Pure Python,
  nothing to compile (pyfuse3 needs libfuse3-dev, a compiler and trio), and the
  high-level API gives every request's pid (``fuse_get_context()``), which is what
  ``echo 0 > cgroup.procs`` needs: ``0`` means the writing process.
- One thread: libfuse runs single-threaded (``-s``), so requests reach the one
  EngineClient (a zmq socket, which is not thread-safe) one at a time.
- Always fresh: every file is ``direct_io`` and attribute, entry and negative lookups
  are never cached, so a read asks the engine each time.  Files report size 0, as
  cgroupfs does; ``cat``, ``grep``, ``awk`` and ``wc`` read to end of file anyway.
  One open file keeps the text of its first read, so a reader in small pieces sees
  one consistent copy (the kernel's seq_file does the same).
- ``cgroup.procs`` lists, like the kernel's, every live process in the cgroup: those
  written to a ``cgroup.procs`` and their descendants, which inherit it.
- Unmounts cleanly on exit, SIGTERM, SIGINT (libfuse's handlers) and when the engine
  goes away, noticed within a second even with no one reading the mount: a thread
  watches the engine on a connection of its own and, once it is gone, says so in one
  line and ends the FUSE loop with SIGTERM (exit status 2).
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import stat
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

from common.options import EXIT_USAGE  # also: the engine went away
from engined.liveness import inherited_cgroup, live_parents
from wire.protocol import EngineError
from wire.snapshot import Snapshot
from workloads.client import EngineClient, NoEngine

PROG = "epc-playground mount"
WATCH_S = 0.2  # the watcher looks at the engine's connection this often
FUSE_DEVICE = "/dev/fuse"
FSNAME = "epc-playground"  # the mount's source in /proc/mounts (type fuse.cgroup)
T = TypeVar("T")


class CgroupFs:
    """The FUSE operations (mfusepy's high-level API, paths as str) over one EngineClient."""

    use_ns = True  # times in nanoseconds

    def __init__(self, client: EngineClient, ready: Callable[[], None] = lambda: None) -> None:
        self.client = client
        self.writable = client.writable  # the files with a write handler, as the engine says; the others 0444
        self.ready = ready
        self.texts: dict[int, bytes | None] = {}  # open file handle -> the text its first read saw
        self.next_fh = 1
        self.mounted_ns = time.time_ns()
        self.mounted = False  # libfuse said init: the mount is up
        self.engine_gone = False
        self._gone_lock = threading.Lock()  # the FUSE thread and the watcher may both notice

    def lost_engine(self, e: NoEngine) -> bool:
        """Note that the engine is gone and say so, once; True for the first to notice."""
        with self._gone_lock:
            first, self.engine_gone = not self.engine_gone, True
        if first:
            print(f"{PROG}: {e}", file=sys.stderr, flush=True)
        return first

    # -- the engine, with its errors as the kernel's errnos ----------------------

    def _engine(self, call: Callable[..., T], *args: Any) -> T:
        """``call(*args)`` on the engine; OSError(errno) for an engine error, ENOTCONN once it is gone."""
        try:
            return call(*args)
        except EngineError as e:
            raise OSError(e.errno or errno.EIO, e.message) from None
        except NoEngine as e:
            if self.lost_engine(e):
                _stop_loop()
            raise OSError(errno.ENOTCONN, str(e)) from None

    def _is_cgroup(self, path: str) -> bool:
        """True for a cgroup directory, False for a file in one; OSError(ENOENT) for neither."""
        if path == "/":
            return True
        parent, name = os.path.split(path.rstrip("/"))
        if name not in self._engine(self.client.listdir, parent):
            raise OSError(errno.ENOENT, f"no {path}")
        try:
            self._engine(self.client.listdir, path)
        except OSError as e:
            if e.errno == errno.ENOTCONN:
                raise
            return False
        return True

    # -- operations ---------------------------------------------------------------

    def init_with_config(self, conn_info: Any, config: Any) -> None:
        """Mounted: no kernel caching of contents, attributes or lookups."""
        if config is not None:
            config.direct_io = 1
            config.kernel_cache = 0
            config.entry_timeout = config.negative_timeout = config.attr_timeout = 0.0
        self.mounted = True
        self.ready()

    def getattr(self, path: str, fh: int | None = None) -> dict[str, int]:
        if self._is_cgroup(path):
            mode = stat.S_IFDIR | 0o755
        else:
            mode = stat.S_IFREG | (0o644 if os.path.basename(path) in self.writable else 0o444)
        t = self.mounted_ns
        return {
            "st_mode": mode,
            "st_nlink": 1,  # for directories too: "not counted", so find descends without guessing from it
            "st_size": 0,
            "st_uid": os.getuid(),
            "st_gid": os.getgid(),
            "st_atime": t,
            "st_mtime": t,
            "st_ctime": t,
        }

    def readdir(self, path: str, fh: int) -> list[str]:
        return [".", "..", *self._engine(self.client.listdir, path)]

    def mkdir(self, path: str, mode: int) -> None:
        self._engine(self.client.mkdir, path)

    def rmdir(self, path: str) -> None:
        if self._is_cgroup(path) and path != "/" and any(self._members(path, subtree=True)):
            raise OSError(errno.EBUSY, f"{path} has live tasks")  # inherited ones, which the engine cannot see
        self._engine(self.client.rmdir, path)

    def unlink(self, path: str) -> None:
        raise OSError(errno.EPERM, "cgroup files cannot be removed")

    def rename(self, old: str, new: str) -> None:
        raise OSError(errno.EPERM, "cgroups and their files cannot be renamed here")  # the engine has no rename

    def create(self, path: str, mode: int) -> int:
        raise OSError(errno.EACCES, "no new files in a cgroup")  # as the kernel: the directory has no create

    def open(self, path: str, flags: int) -> int:
        if self._is_cgroup(path):
            raise OSError(errno.EISDIR, path)
        if flags & os.O_ACCMODE != os.O_RDONLY and os.path.basename(path) not in self.writable:
            raise OSError(errno.EACCES, f"{path} is read-only")  # mirrors kernfs_fop_open()
        fh, self.next_fh = self.next_fh, self.next_fh + 1
        self.texts[fh] = None
        return fh

    def release(self, path: str, fh: int) -> None:
        self.texts.pop(fh, None)

    def truncate(self, path: str, length: int, fh: int | None = None) -> None:
        """``echo > file`` truncates first: nothing to do for a cgroup file."""
        if os.path.basename(path) not in self.writable:
            raise OSError(errno.EACCES, f"{path} is read-only")

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        text = self.texts.get(fh)
        if text is None or offset == 0:
            text = self._text(path)
            self.texts[fh] = text
        return text[offset : offset + size]

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        """One write(2), one write of the file, as the kernel's cgroup files take them."""
        value = data.decode(errors="replace")
        if os.path.basename(path) == "cgroup.procs" and value.strip() == "0":
            value = str(_writer_tgid())  # 0: the process that writes; mirrors cgroup_procs_write_start()
        self._engine(self.client.write, path, value)
        return len(data)

    # -- contents -------------------------------------------------------------------

    def _text(self, path: str) -> bytes:
        if os.path.basename(path) == "cgroup.procs":
            return "".join(f"{pid}\n" for pid in self._members(os.path.dirname(path))).encode()
        return self._engine(self.client.read, path).encode()

    def _members(self, cgroup: str, subtree: bool = False) -> list[int]:
        """The live processes in ``cgroup`` (and its descendants with ``subtree``): placed ones and their children."""
        snapshot = cast(Snapshot, self._engine(self.client.snapshot))
        placed = {pid: str(cg["path"]) for cg in snapshot["cgroups"] for pid in cg["procs"]}
        target = "/" + cgroup.strip("/")
        parents = live_parents()
        members = []
        for pid in sorted(parents):
            where = inherited_cgroup(pid, placed.get, lambda p: parents.get(p, 0))
            if where == target or (subtree and where.startswith(target.rstrip("/") + "/")):
                members.append(pid)
        return members


def _writer_tgid() -> int:
    """The process (thread group) behind the current FUSE request; the kernel sends the thread's id."""
    import mfusepy  # type: ignore[import-untyped]

    tid = int(mfusepy.fuse_get_context()[2])
    try:
        with open(f"/proc/{tid}/status") as f:
            for line in f:
                if line.startswith("Tgid:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return tid


def _stop_loop() -> None:
    import mfusepy

    mfusepy.fuse_exit()


class _Watcher(threading.Thread):
    """Watches the engine on a connection of its own; when it is gone, SIGTERM to the FUSE loop (which unmounts)."""

    def __init__(self, client: EngineClient, ops: CgroupFs) -> None:
        super().__init__(name="epc-mount-watch", daemon=True)
        self.client = client
        self.ops = ops
        self.stopping = threading.Event()
        self.loop_thread = threading.main_thread().ident  # libfuse's loop runs there (foreground, one thread)

    def run(self) -> None:
        first = False
        while not self.stopping.wait(WATCH_S):
            try:
                self.client.check_engine()
                continue
            except NoEngine as e:
                first = first or self.ops.lost_engine(e)
            if not first:
                return  # the FUSE thread noticed first and ends the loop itself
            if self.ops.mounted and self.loop_thread is not None:  # libfuse's SIGTERM handler is in place
                signal.pthread_kill(self.loop_thread, signal.SIGTERM)
                return

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=5)
        self.client.close()


# -- the command ------------------------------------------------------------------


def _ours_on_top(directory: str) -> bool:
    """Whether the topmost mount at ``directory`` is a cgroupfs of ours (a second one would hide it)."""
    target = os.path.realpath(directory)
    top = ""
    with open("/proc/self/mounts") as f:
        for line in f:
            source, where = line.split()[:2]
            if where.replace("\\040", " ") == target:
                top = source
    return top == FSNAME


def fuse_problem() -> str | None:
    """Why a FUSE mount cannot work here, in one line; None when /dev/fuse and libfuse 3 are there."""
    if not os.path.exists(FUSE_DEVICE):
        return (
            f"{FUSE_DEVICE} is missing: this kernel or container has no FUSE "
            "(load the fuse module, or give the container --device /dev/fuse)"
        )
    try:
        os.close(os.open(FUSE_DEVICE, os.O_RDWR))
    except OSError as e:
        return f"cannot open {FUSE_DEVICE}: {e.strerror}"
    if "FUSE_LIBRARY_PATH" not in os.environ:
        os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")  # mfusepy looks for libfuse 2 first otherwise
    try:
        import mfusepy
    except (OSError, AttributeError) as e:
        return f"libfuse 3 is not installed ({e}): apt-get install fuse3 (tools/setup does it as root)"
    if mfusepy.fuse_version_major != 3:
        return f"found libfuse {mfusepy.fuse_version_major}, need libfuse 3: apt-get install fuse3"
    if os.geteuid() != 0 and shutil.which("fusermount3") is None:
        return "fusermount3 is missing (needed to mount without root): apt-get install fuse3"
    return None


def mount(directory: str, connect: str | None = None) -> int:
    """Serve the engine's cgroup tree at ``directory`` until unmounted, SIGTERM or SIGINT; the exit status."""
    if os.path.lexists(directory) and not os.path.isdir(directory):
        print(
            f"{PROG}: {directory} exists and is not a directory: mount on a directory (mkdir /tmp/cg, then "
            f"{PROG} /tmp/cg)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if not os.path.isdir(directory):
        print(f"{PROG}: {directory} is not a directory: create it first (mkdir {directory})", file=sys.stderr)
        return EXIT_USAGE
    if _ours_on_top(directory):
        print(
            f"{PROG}: {directory} shows an engine's cgroups already: unmount it first (umount {directory})",
            file=sys.stderr,
        )
        return EXIT_USAGE
    problem = fuse_problem()
    if problem:
        print(f"{PROG}: {problem}", file=sys.stderr)
        return EXIT_USAGE
    try:
        client = EngineClient(connect, timeout_s=30.0)
        watcher_client = EngineClient(client.endpoint, timeout_s=30.0)
    except NoEngine as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return EXIT_USAGE
    import mfusepy

    def ready() -> None:
        print(f"{PROG}: {directory} shows the cgroups of the engine at {client.endpoint}; Ctrl-C unmounts", flush=True)

    options: dict[str, Any] = {"foreground": True, "nothreads": True, "fsname": FSNAME, "subtype": "cgroup"}
    if os.geteuid() == 0:
        options.update(allow_other=True, default_permissions=True)  # other users may look, as at /sys/fs/cgroup
    ops = CgroupFs(client, ready)
    watcher = _Watcher(watcher_client, ops)
    watcher.start()
    try:
        mfusepy.FUSE(ops, directory, **options)
    except RuntimeError as e:  # fuse_main()'s status: also non-zero when a signal ended the loop
        if not ops.mounted and not ops.engine_gone:
            print(f"{PROG}: cannot mount {directory} (libfuse error {e}); already mounted?", file=sys.stderr)
            return 1
    finally:
        watcher.stop()
        client.close()
    return EXIT_USAGE if ops.engine_gone else 0

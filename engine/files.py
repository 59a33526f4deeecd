"""The cgroup files, byte for byte as the kernel shows them, and their writes.

Which files a cgroup has depends on where it is (root or not) and which controllers
its parent enables (``cgroup.subtree_control``), as in cgroup v2.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass

from engine import memcg, misc
from engine.cgroup import Cgroup, split_path, utf8_len
from engine.sgx import PAGE_SIZE
from engine.state import HostState

ATOMIC_WRITE_LEN = PAGE_SIZE  # cgroup_kf_ops.atomic_write_len: bytes one write may carry


@dataclass(frozen=True, slots=True)
class CgroupFile:
    name: str
    show: Callable[[HostState, Cgroup], str]
    where: str = "all"  # all | root | nonroot
    controller: str = ""  # "" (cgroup core), "misc" or "memory"
    writable: bool = False


def _misc_line(host: HostState, value: int | str, count: int = 0) -> str:
    return misc.format_line(str(value), host.capacity_bytes, shown_anyway=bool(count))


def _procs(host: HostState, cg: Cgroup) -> str:
    return "".join(f"{pid}\n" for pid in sorted(cg.procs))


def _names(controllers: set[str]) -> str:
    return " ".join(name for name in ("memory", "misc") if name in controllers) + "\n"


FILES: dict[str, CgroupFile] = {
    f.name: f
    for f in (
        CgroupFile("cgroup.procs", _procs, writable=True),
        CgroupFile("cgroup.controllers", lambda h, cg: _names(cg.controllers)),
        CgroupFile("cgroup.subtree_control", lambda h, cg: _names(cg.subtree_control), writable=True),
        CgroupFile("misc.capacity", lambda h, cg: _misc_line(h, h.capacity_bytes), "root", "misc"),
        CgroupFile(
            "misc.current",
            lambda h, cg: _misc_line(h, cg.misc_usage * PAGE_SIZE, cg.misc_usage),
            controller="misc",
        ),
        CgroupFile("misc.peak", lambda h, cg: _misc_line(h, cg.misc_peak * PAGE_SIZE, cg.misc_peak), controller="misc"),
        CgroupFile(
            "misc.max",
            lambda h, cg: _misc_line(h, misc.format_max(cg.misc_max_bytes)),
            "nonroot",
            "misc",
            writable=True,
        ),
        CgroupFile(
            "misc.events",
            lambda h, cg: misc.format_line(f"{cg.misc_events}", h.capacity_bytes, bool(cg.misc_events)).replace(
                misc.RES_NAME, misc.RES_NAME + ".max", 1
            ),
            "nonroot",
            "misc",
        ),
        CgroupFile(
            "misc.events.local",
            lambda h, cg: misc.format_line(
                f"{cg.misc_events_local}", h.capacity_bytes, bool(cg.misc_events_local)
            ).replace(misc.RES_NAME, misc.RES_NAME + ".max", 1),
            "nonroot",
            "misc",
        ),
        CgroupFile("memory.current", lambda h, cg: f"{cg.mem_usage * PAGE_SIZE}\n", "nonroot", "memory"),
        CgroupFile("memory.peak", lambda h, cg: f"{cg.mem_peak * PAGE_SIZE}\n", "nonroot", "memory"),
        CgroupFile("memory.max", lambda h, cg: memcg.format_max(cg.mem_max_pages) + "\n", "nonroot", "memory", True),
        CgroupFile("memory.events", lambda h, cg: memcg.format_events(cg.mem_events), "nonroot", "memory"),
        CgroupFile("memory.events.local", lambda h, cg: memcg.format_events(cg.mem_events_local), "nonroot", "memory"),
    )
}
FILE_NAMES = frozenset(FILES)
WRITABLE_NAMES = frozenset(f.name for f in FILES.values() if f.writable)  # the files with a write handler


def has_file(cg: Cgroup, f: CgroupFile) -> bool:
    if (f.where == "root" and not cg.is_root) or (f.where == "nonroot" and cg.is_root):
        return False
    if f.controller == "misc":
        return cg.misc_on
    if f.controller == "memory":
        return cg.memory_on
    return True


def resolve(host: HostState, path: str) -> tuple[Cgroup, CgroupFile]:
    """The cgroup and file at ``path``; OSError(ENOENT) if either is missing, EISDIR for a cgroup."""
    names = split_path(path)
    if not names:
        raise OSError(errno.EISDIR, "/ is a cgroup directory, not a file")
    f = FILES.get(names[-1])
    cg = host.tree.lookup("/".join(names[:-1]))
    if f is None or not has_file(cg, f):
        if names[-1] in cg.live_children:
            raise OSError(errno.EISDIR, f"{path!r} is a cgroup directory, not a file")
        raise OSError(errno.ENOENT, f"no file {path!r}")
    return cg, f


def listdir(host: HostState, path: str) -> list[str]:
    """The files and child cgroups of the cgroup at ``path``, sorted."""
    cg = host.tree.lookup(path)
    return sorted([name for name, f in FILES.items() if has_file(cg, f)] + list(cg.live_children))


def write(host: HostState, cg: Cgroup, f: CgroupFile, value: str, writer_pid: int | None) -> None:
    """Apply a write to one cgroup file; OSError with the kernel's errno, nothing changed, on failure.

    E2BIG for more than PAGE_SIZE bytes in one write: cgroup files take a write whole
    (kernfs atomic_write_len, as kernfs_fop_write_iter() checks).
    """
    if not f.writable:
        raise OSError(errno.EACCES, f"{f.name} is read-only")
    if utf8_len(value) > ATOMIC_WRITE_LEN:
        raise OSError(errno.E2BIG, f"one write to {f.name} takes at most {ATOMIC_WRITE_LEN} bytes")
    if f.name == "misc.max":
        limit = misc.parse_max_write(value, host.capacity_bytes)
        cg.misc_max_bytes = limit
        cg.misc_max_pages = limit // PAGE_SIZE
    elif f.name == "memory.max":
        cg.mem_max_pages = memcg.parse_max_write(value)
        if cg.mem_usage > cg.mem_max_pages:  # backing cannot be reclaimed: memory_max_write() OOM-kills
            memcg.out_of_memory(host, cg)
    elif f.name == "cgroup.procs":
        host.tree.move_task(parse_pid(value, writer_pid), cg)
    elif f.name == "cgroup.subtree_control":
        host.tree.set_subtree_control(cg, value)


def parse_pid(value: str, writer_pid: int | None) -> int:
    """A pid written to cgroup.procs: a number, 0 meaning the writer.  Mirrors cgroup_procs_write_start()."""
    text = value.strip()
    try:
        pid = misc.kstrtou64(text) if text.lstrip("+").isalnum() else -1
    except OSError:
        pid = -1
    if pid < 0 or pid > 0x3FFFFFFF:
        raise OSError(errno.EINVAL, f"{text!r} is not a pid")
    if pid == 0:
        if writer_pid is None:
            raise OSError(errno.ESRCH, "'0' means the writing process, and this write has none")
        pid = writer_pid
    return pid

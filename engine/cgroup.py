"""The cgroup tree: directories, tasks, controllers and the fair reclaim cursor.

A Cgroup carries its misc (sgx_epc) and memory counters, its LRU of reclaimable EPC
pages and its reclaim cursor ``next_cg`` (V16/V17).  A cgroup removed while it still
holds charges lives on *dying* (offline): invisible in listings, but still on its
parent's children list, so every reclaim walk still sees its LRU (css_tryget() takes
an offline css); it is freed with its last charge.
"""

from __future__ import annotations

import errno
from heapq import heappop, heappush

from engine.epc import Lru
from engine.sgx import PAGE_COUNTER_MAX, PAGE_SIZE, U64_MAX

CONTROLLERS = ("memory", "misc")  # in the kernel's subsystem order
# memory.events keys, in the kernel's order; indexes into Cgroup.mem_events* (engine.memcg counts them)
MEMCG_EVENTS = ("low", "high", "max", "oom", "oom_kill", "oom_group_kill")
MEMCG_MAX, MEMCG_OOM, MEMCG_OOM_KILL = 2, 3, 4
NAME_MAX = 255  # bytes in one cgroup name (a directory entry)


class Cgroup:
    """One cgroup directory and the state of the controllers this host emulates."""

    __slots__ = (
        "id", "name", "path", "parent", "pos", "children", "live_children", "dying",
        "controllers", "subtree_control", "misc_on", "memory_on", "procs",
        "misc_usage", "misc_max_bytes", "misc_max_pages", "misc_peak", "misc_events", "misc_events_local",
        "misc_events_freed", "mem_usage", "mem_max_pages", "mem_peak", "mem_events", "mem_events_local",
        "mem_events_freed",
        "lru", "nonempty_lrus", "next_cg", "work_queued", "failed_epoch", "failed_pages", "reclaimed",
    )  # fmt: skip

    def __init__(self, cg_id: int, name: str, parent: Cgroup | None) -> None:
        self.id = cg_id
        self.name = name
        self.parent = parent
        self.path: str = "/" if parent is None else f"{parent.path.rstrip('/')}/{name}"
        self.pos = len(parent.children) if parent is not None else 0  # index in parent.children
        self.children: list[Cgroup] = []  # creation order, dying ones included
        self.live_children: dict[str, Cgroup] = {}
        self.dying = False
        available: set[str] = set(CONTROLLERS) if parent is None else set(parent.subtree_control)
        self.controllers = available
        self.subtree_control: set[str] = set(available)  # this host delegates every controller
        self.misc_on = "misc" in available
        self.memory_on = "memory" in available
        self.procs: set[int] = set()
        self.misc_usage = 0  # pages, hierarchical
        self.misc_max_bytes = U64_MAX
        self.misc_max_pages = U64_MAX // PAGE_SIZE
        self.misc_peak = 0
        self.misc_events = 0
        self.misc_events_local = 0
        self.misc_events_freed = 0  # hierarchical events of children since freed (for check())
        self.mem_usage = 0  # backing pages, hierarchical
        self.mem_max_pages = PAGE_COUNTER_MAX
        self.mem_peak = 0
        self.mem_events = [0] * len(MEMCG_EVENTS)
        self.mem_events_local = [0] * len(MEMCG_EVENTS)
        self.mem_events_freed = [0] * len(MEMCG_EVENTS)
        self.lru = Lru(self)
        self.nonempty_lrus = 0  # cgroups in this subtree (dying ones included) whose LRU holds pages
        self.next_cg: Cgroup = self
        self.work_queued = False
        # pages of this LRU put back for a failed backing charge in reclaim epoch failed_epoch
        self.failed_epoch = -1
        self.failed_pages = 0
        self.reclaimed = 0  # pages written out from this LRU, ever: its ReclaimBatch.written summed

    def __repr__(self) -> str:
        return f"<Cgroup {self.path}{' dying' if self.dying else ''}>"

    @property
    def is_root(self) -> bool:
        return self.parent is None

    def misc_css(self) -> Cgroup:
        """The cgroup whose misc counters this one's tasks charge (nearest with misc on)."""
        cg = self
        while not cg.misc_on:
            cg = cg.parent  # type: ignore[assignment]
        return cg

    def memory_css(self) -> Cgroup:
        cg = self
        while not cg.memory_on:
            cg = cg.parent  # type: ignore[assignment]
        return cg

    def ancestors(self) -> list[Cgroup]:
        """This cgroup and its ancestors up to root."""
        out = []
        cg: Cgroup | None = self
        while cg is not None:
            out.append(cg)
            cg = cg.parent
        return out

    def walk(self) -> list[Cgroup]:
        """This cgroup and its live descendants, in pre-order."""
        return _preorder(self)

    # LRU transitions keep ``nonempty_lrus`` exact, so "does this subtree have anything to
    # reclaim" (sgx_cgroup_lru_empty(), which walks dying cgroups too) is O(1).
    def lru_became_nonempty(self) -> None:
        """This cgroup's LRU got its first page: it and every ancestor have one more non-empty
        LRU below them, which sgx_cgroup_lru_empty() and sgx_can_reclaim_global() ask of the tree."""
        self._add_nonempty(1)

    def lru_became_empty(self) -> None:
        self._add_nonempty(-1)

    def _add_nonempty(self, delta: int) -> None:
        cg: Cgroup | None = self
        while cg is not None:
            cg.nonempty_lrus += delta
            cg = cg.parent


def _preorder(root: Cgroup) -> list[Cgroup]:
    out: list[Cgroup] = []
    stack = [root]
    while stack:
        cg = stack.pop()
        out.append(cg)
        stack.extend(reversed([c for c in cg.children if not c.dying]))
    return out


def succ(root: Cgroup, cg: Cgroup) -> Cgroup:
    """The cgroup after ``cg`` in a pre-order walk of ``root``'s subtree (dying ones included),
    or root at the end.  Mirrors sgx_cgroup_next_descendant_pre(): css_tryget() fails only
    for a freed cgroup, and a freed one is on no children list."""
    if cg.children:
        return cg.children[0]
    while cg is not root:
        parent = cg.parent
        assert parent is not None
        if cg.pos + 1 < len(parent.children):
            return parent.children[cg.pos + 1]
        cg = parent
    return root


def next_get(root: Cgroup) -> Cgroup:
    """The cgroup whose LRU gets the next reclaim turn under ``root``; advances the cursor.

    Mirrors sgx_cgroup_next_get(): root, its descendants in pre-order (removed ones that
    still hold pages included), root again: one batch per visit, whatever each cgroup's
    size.  A cursor never points at a freed cgroup (release_if_unused() moves it on), so
    the kernel's "if current one is dying" step has nothing to skip here.
    """
    cg = root.next_cg
    root.next_cg = succ(root, cg)
    return cg


class CgroupTree:
    """All cgroups of the host, by path and by id, and the task -> cgroup table."""

    __slots__ = (
        "root", "by_id", "free_ids", "tasks", "moved", "max_cgroups", "nr_cgroups", "reclaim_epoch", "stuck_lrus",
    )  # fmt: skip

    def __init__(self, max_cgroups: int) -> None:
        self.root = Cgroup(0, "", None)
        self.by_id: list[Cgroup | None] = [self.root]
        self.free_ids: list[int] = []  # ids of freed cgroups, a heap: the lowest is reused first
        self.tasks: dict[int, Cgroup] = {}  # every known task: where it is (root unless placed)
        self.moved: set[int] = set()  # the tasks a cgroup.procs write placed (root included)
        self.max_cgroups = max_cgroups  # cgroups besides root, dying ones included
        self.nr_cgroups = 0
        # Since the reclaim epoch began (a reclaim loop started, or a batch moved a page),
        # stuck_lrus LRUs have had as many pages put back for a failed backing charge as they
        # hold: every page on them was tried and failed (reclaim.reclaim_stuck()).
        self.reclaim_epoch = 0
        self.stuck_lrus = 0

    def lookup(self, path: str) -> Cgroup:
        """The live cgroup at ``path`` ("/", "/a/b" or "a/b"); OSError(ENOENT) if none."""
        cg = self.root
        for name in split_path(path):
            child = cg.live_children.get(name)
            if child is None:
                raise OSError(errno.ENOENT, f"no cgroup {path!r}")
            cg = child
        return cg

    def mkdir(self, path: str, reserved: frozenset[str]) -> Cgroup:
        """Create one cgroup.

        OSError(ENOENT) without a parent, ENAMETOOLONG for a name over NAME_MAX bytes,
        EINVAL for a NUL in it (no C string can carry one) or a bad name, EEXIST if taken,
        EAGAIN when the tree holds max_cgroups already (removed ones still holding pages
        count too: this host's own bound; the kernel's cgroup.max.descendants counts live
        ones and defaults to max).  Mirrors cgroup_mkdir() and
        cgroup_check_hierarchy_limits().
        """
        names = split_path(path)
        if not names:
            raise OSError(errno.EEXIST, "the root cgroup always exists")
        parent = self.lookup("/".join(names[:-1]))
        name = names[-1]
        if utf8_len(name) > NAME_MAX:
            raise OSError(errno.ENAMETOOLONG, f"a cgroup name is at most {NAME_MAX} bytes, not {utf8_len(name)}")
        if "\0" in name:
            raise OSError(errno.EINVAL, f"bad cgroup name {name!r}: a NUL cannot be in a name")
        if name in (".", "..") or "\n" in name:
            raise OSError(errno.EINVAL, f"bad cgroup name {name!r}")
        if name in parent.live_children or name in reserved:
            raise OSError(errno.EEXIST, f"{path!r} exists")
        if self.nr_cgroups >= self.max_cgroups:
            raise OSError(errno.EAGAIN, f"the host has {self.nr_cgroups} cgroups, its limit; remove some first")
        if self.free_ids:  # ids stay below max_cgroups + 1, as the frame tables hold them in 32 bits
            cg = Cgroup(heappop(self.free_ids), name, parent)
            self.by_id[cg.id] = cg
        else:
            cg = Cgroup(len(self.by_id), name, parent)
            self.by_id.append(cg)
        parent.children.append(cg)
        parent.live_children[name] = cg
        self.nr_cgroups += 1
        return cg

    def rmdir(self, path: str) -> Cgroup:
        """Remove a cgroup: OSError(EBUSY) with live children or tasks, or at root.

        A cgroup still holding charges goes dying (offline: invisible, but still walked
        and reclaimed) until its last charge goes; the caller frees it through
        ``release_if_unused``.
        """
        cg = self.lookup(path)
        if cg.parent is None:
            raise OSError(errno.EBUSY, "the root cgroup cannot be removed")
        if cg.live_children:
            raise OSError(errno.EBUSY, f"{cg.path} has child cgroups")
        if cg.procs:
            raise OSError(errno.EBUSY, f"{cg.path} has tasks")
        del cg.parent.live_children[cg.name]
        cg.dying = True
        return cg

    def release_if_unused(self, cg: Cgroup) -> list[Cgroup]:
        """Free ``cg`` if it is dying with no charge left, then its dying parents likewise.

        Returns the cgroups freed.  Cursors that pointed at a freed cgroup move on to its
        successor.  Mirrors sgx_cgroup_free() and sgx_cgroup_next_skip().
        """
        freed = []
        while cg.dying and not cg.misc_usage and not cg.mem_usage and not cg.children and not cg.lru.size:
            parent = cg.parent
            assert parent is not None
            for ancestor in parent.ancestors():
                if ancestor.next_cg is cg:
                    ancestor.next_cg = succ(ancestor, cg)
            del parent.children[cg.pos]
            for later in parent.children[cg.pos :]:
                later.pos -= 1
            parent.misc_events_freed += cg.misc_events
            for event, count in enumerate(cg.mem_events):
                parent.mem_events_freed[event] += count
            self.by_id[cg.id] = None
            heappush(self.free_ids, cg.id)
            self.nr_cgroups -= 1
            freed.append(cg)
            cg = parent
        return freed

    def task_cgroup(self, pid: int) -> Cgroup:
        """The cgroup of task ``pid``; a task never placed anywhere is in root."""
        return self.tasks.get(pid, self.root)

    def placed(self, pid: int) -> Cgroup | None:
        """The cgroup a cgroup.procs write put task ``pid`` in (root included); None when no write
        ever placed it (unknown, or known only by its calls: in root, where a child of a placed
        task would inherit its parent's cgroup instead)."""
        return self.tasks[pid] if pid in self.moved else None

    def register_task(self, pid: int) -> Cgroup:
        """Make ``pid`` a known task (in root unless placed), listed in its cgroup.procs."""
        cg = self.tasks.get(pid)
        if cg is None:
            cg = self.tasks[pid] = self.root
            self.root.procs.add(pid)
        return cg

    def move_task(self, pid: int, cg: Cgroup) -> None:
        """A cgroup.procs write places task ``pid`` in ``cg``.  Mirrors cgroup_attach_task()."""
        old = self.tasks.get(pid)
        if old is not None:
            old.procs.discard(pid)
        self.tasks[pid] = cg
        cg.procs.add(pid)
        self.moved.add(pid)

    def forget_task(self, pid: int) -> None:
        """Task ``pid`` exited: it leaves its cgroup and is unknown again."""
        cg = self.tasks.pop(pid, None)
        if cg is not None:
            cg.procs.discard(pid)
        self.moved.discard(pid)

    def live(self) -> list[Cgroup]:
        return _preorder(self.root)

    def all(self) -> list[Cgroup]:
        """Every cgroup that still exists, dying ones included."""
        return [cg for cg in self.by_id if cg is not None]

    def set_subtree_control(self, cg: Cgroup, buf: str) -> None:
        """Apply ``+name`` / ``-name`` tokens.  Mirrors cgroup_subtree_control_write().

        EINVAL for an unknown controller or token, ENOENT for one not in
        cgroup.controllers, EBUSY to disable one while child cgroups exist.
        """
        enable: set[str] = set()
        disable: set[str] = set()
        for token in buf.split():
            name = token[1:]
            if token[0] not in "+-" or name not in _KNOWN_CONTROLLERS:
                raise OSError(errno.EINVAL, f"bad token {token!r}: use +misc, +memory, -misc or -memory")
            (enable if token[0] == "+" else disable).add(name)
            (disable if token[0] == "+" else enable).discard(name)
        if not enable <= cg.controllers:
            raise OSError(errno.ENOENT, f"controller {sorted(enable - cg.controllers)[0]} is not available here")
        if disable & cg.subtree_control and cg.live_children:
            raise OSError(errno.EBUSY, f"{cg.path} has child cgroups using the controller")
        cg.subtree_control = (cg.subtree_control | enable) - disable
        for child in cg.live_children.values():
            child.controllers = set(cg.subtree_control)
            child.misc_on = "misc" in cg.subtree_control
            child.memory_on = "memory" in cg.subtree_control


_KNOWN_CONTROLLERS = frozenset(
    ("cpuset", "cpu", "io", "memory", "hugetlb", "pids", "rdma", "misc", "perf_event", "freezer")
)


def split_path(path: str) -> list[str]:
    return [name for name in path.split("/") if name]


def utf8_len(text: str) -> int:
    """Bytes of ``text`` in UTF-8, as the kernel counts them (a surrogate-escaped byte is one)."""
    try:
        return len(text.encode("utf-8", "surrogateescape"))
    except UnicodeEncodeError:  # a lone surrogate that stands for no byte
        return len(text.encode("utf-8", "surrogatepass"))

"""The cgroup tree: mkdir/rmdir, dying cgroups, tasks and controllers (reference 2-3)."""

from __future__ import annotations

import errno

import pytest

from engine import PAGE_SIZE, Host

from .helpers import enclave, limit, pages, place


def _errno(fn: object, *args: object) -> int:
    with pytest.raises(OSError) as e:
        fn(*args)  # type: ignore[operator]
    assert e.value.errno is not None
    return e.value.errno


def test_mkdir_and_rmdir_errnos() -> None:
    host = Host("1MiB")
    host.mkdir("/a")
    assert _errno(host.mkdir, "/a") == errno.EEXIST
    assert _errno(host.mkdir, "/x/y") == errno.ENOENT
    assert _errno(host.mkdir, "/a/misc.max") == errno.EEXIST  # a file's name
    assert _errno(host.mkdir, "/") == errno.EEXIST
    assert _errno(host.rmdir, "/nope") == errno.ENOENT
    assert _errno(host.rmdir, "/") == errno.EBUSY
    host.mkdir("a/b")  # leading slash optional
    assert _errno(host.rmdir, "/a") == errno.EBUSY  # has a child
    place(host, 10, "/a/b")
    assert _errno(host.rmdir, "/a/b") == errno.EBUSY  # has a task
    host.write("/cgroup.procs", "10")
    host.rmdir("/a/b")
    host.rmdir("/a")
    assert host.cgroups() == ["/"]


def test_cgroup_removed_while_charged_lives_on_dying_until_its_last_page() -> None:
    host = Host("1MiB")
    host.mkdir("/a")
    host.mkdir("/a/b")
    place(host, 10, "/a/b")
    eid = enclave(host, 10, 8)
    host.write("/cgroup.procs", "10")
    host.rmdir("/a/b")
    assert host.cgroups() == ["/", "/a"]  # invisible
    assert _errno(host.read, "/a/b/misc.current") == errno.ENOENT
    assert pages(host, "/a/misc.current") == 10  # its pages still count up the tree
    host.mkdir("/a/b")  # the name is free again: a new cgroup
    assert pages(host, "/a/b/misc.current") == 0
    host.rmdir("/a/b")
    dying = [cg for cg in host.tree.all() if cg.dying]
    assert [cg.path for cg in dying] == ["/a/b"]
    host.release(eid)
    assert [cg.path for cg in host.tree.all()] == ["/", "/a"]
    kinds = [e.kind for e in host.take_events()]
    assert kinds.count("cgroup_freed") == 1
    host.check()


def test_rmdir_of_a_parent_whose_only_children_are_dying() -> None:
    host = Host("1MiB")
    host.mkdir("/a")
    host.mkdir("/a/b")
    place(host, 10, "/a/b")
    eid = enclave(host, 10, 4)
    host.write("/cgroup.procs", "10")
    host.rmdir("/a/b")
    host.rmdir("/a")  # allowed: no live children
    assert host.cgroups() == ["/"]
    assert pages(host, "/misc.current") == 6
    host.release(eid)
    assert host.tree.all() == [host.tree.root]  # both freed with the last page
    host.check()


def test_an_offline_cgroup_with_pages_is_still_reclaimed() -> None:
    """rmdir only offlines the css: its LRU stays in every walk (sgx_cgroup_lru_empty, the
    cursor, ksgxd), so a charge under the parent's limit reclaims it instead of ENOMEM."""
    host = Host("1MiB")
    host.mkdir("/p")
    host.mkdir("/p/a")
    limit(host, "/p", 24)
    place(host, 10, "/p/a")
    eid = enclave(host, 10, 20)  # 20 REG + SECS + VA in /p/a
    host.write("/p/cgroup.procs", "10")
    host.rmdir("/p/a")
    assert host.cgroups() == ["/", "/p"]  # invisible
    assert host.cgroup("/p").nonempty_lrus == 1 and host.tree.root.nonempty_lrus == 1
    vid = host.vepc_open(10, 8 * PAGE_SIZE)
    assert host.vepc_access(10, vid, 0, 8) == 8  # NO_RECLAIM: EBUSY, /p's worker reclaims /p/a
    assert host.enclaves[eid].nr_swapped > 0
    assert pages(host, "/p/misc.current") <= 24
    host.check()


def test_cgroup_procs_lists_and_moves_tasks() -> None:
    host = Host("1MiB")
    host.mkdir("/a")
    host.write("/a/cgroup.procs", "42")
    host.write("/a/cgroup.procs", " 7\n")
    assert host.read("/a/cgroup.procs") == "7\n42\n"
    host.write("/cgroup.procs", "0", pid=42)  # 0: the writer itself
    assert host.read("/a/cgroup.procs") == "7\n"
    assert host.task_cgroup(42) == "/"
    for bad in ("-1", "abc", "", "1 2"):
        assert _errno(host.write, "/a/cgroup.procs", bad) == errno.EINVAL
    assert _errno(host.write, "/a/cgroup.procs", "0") == errno.ESRCH  # no writer given


def test_pages_stay_charged_where_they_were_allocated_when_the_task_moves() -> None:
    host = Host("1MiB")
    host.mkdir("/a")
    host.mkdir("/b")
    place(host, 10, "/a")
    eid = enclave(host, 10, 5, init=False)
    place(host, 10, "/b")
    host.add_pages(10, eid, 3)
    assert pages(host, "/a/misc.current") == 7
    assert pages(host, "/b/misc.current") == 3
    host.check()


def test_controllers_default_on_and_subtree_control_hides_files() -> None:
    host = Host("1MiB")
    assert host.read("/cgroup.controllers") == "memory misc\n"
    assert host.read("/cgroup.subtree_control") == "memory misc\n"
    host.mkdir("/a")
    host.write("/a/cgroup.subtree_control", "-misc")
    host.mkdir("/a/b")
    assert host.read("/a/b/cgroup.controllers") == "memory\n"
    assert "misc.max" not in host.listdir("/a/b") and "memory.max" in host.listdir("/a/b")
    place(host, 10, "/a/b")
    enclave(host, 10, 2)
    assert pages(host, "/a/misc.current") == 4  # charged to the nearest cgroup with misc on
    assert _errno(host.write, "/a/b/cgroup.subtree_control", "+misc") == errno.ENOENT
    assert _errno(host.write, "/a/cgroup.subtree_control", "-memory") == errno.EBUSY  # has a child
    assert _errno(host.write, "/a/cgroup.subtree_control", "+bogus") == errno.EINVAL
    assert _errno(host.write, "/a/cgroup.subtree_control", "misc") == errno.EINVAL
    host.write("/a/cgroup.subtree_control", "+misc +memory")
    assert "misc.max" in host.listdir("/a/b")
    host.check()


def test_an_enclave_lives_while_any_task_still_maps_it() -> None:
    host = Host("1MiB")
    eid = enclave(host, 1, 8)
    host.access(2, eid, 0, 1)  # task 2 maps it too
    host.exit_task(1)
    assert eid in host.enclaves and host.enclaves[eid].mms == [2]
    host.exit_task(2)
    assert eid not in host.enclaves
    assert host.read("/misc.current") == "sgx_epc 0\n" and host.read("/cgroup.procs") == ""
    host.check()


def test_the_tree_tells_a_task_a_write_placed_in_root_from_one_never_placed() -> None:
    """Review bug B3: a task moved back to / by a cgroup.procs write is placed (its children
    inherit root), one known only by its calls is not (its children inherit their parent's)."""
    host = Host("1MiB")
    host.mkdir("/a")
    place(host, 10, "/a")
    place(host, 10, "/")  # explicitly back in root
    enclave(host, 11, 2)  # known only by its calls: in root, never placed
    tree = host.tree
    assert tree.placed(10) is tree.root
    assert tree.placed(11) is None and host.task_cgroup(11) == "/" and 11 in tree.tasks
    assert tree.placed(12) is None and host.task_cgroup(12) == "/"
    place(host, 11, "/a")
    assert tree.placed(11) is host.cgroup("/a")
    host.exit_task(10)
    assert tree.placed(10) is None
    host.check()

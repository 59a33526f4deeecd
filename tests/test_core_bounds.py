"""The core's bounds: every index, count and size a valid request carries is one the core can
hold, page tables grow with the pages an enclave really has, an allocation that fails part-way
leaves nothing charged, cgroup names and files are bounded as the kernel's, and ``check`` runs
in slices and still finds what is broken."""

from __future__ import annotations

import contextlib
import errno
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest

from engine import PAGE_SIZE, Blocked, Host, SigBus
from engine.check import InvariantError, check_steps
from engine.enclave import DENSE_SLACK, Enclave
from engine.epc import Epc
from engine.sgx import MAX_OWNER_ID, MAX_PAGES, MAX_SIZE
from wire import protocol

from .helpers import enclave, limit, pages, place

PID = 10


def _errno(call: Callable[[], object]) -> int:
    with pytest.raises(OSError) as e:
        call()
    assert e.value.errno is not None
    return e.value.errno


def _fingerprint(host: Host) -> tuple[Any, ...]:
    return (
        host.read("/misc.current"),
        host.epc.nr_free,
        sorted(host.enclaves),
        sorted(host.vepcs),
        host.cgroups(),
        {path: host.listdir(path) for path in host.cgroups()},
    )


def _huge_enclave(host: Host, pid: int = PID) -> int:
    """An initialised enclave of the largest ELRANGE the host takes, holding one TCS page."""
    eid = host.ecreate(pid, MAX_SIZE)
    host.add_pages(pid, eid, 1, "TCS")
    host.einit(pid, eid)
    return eid


# -- C1: what the wire allows, the core holds ----------------------------------------------


def test_the_wire_allows_no_index_count_or_size_beyond_what_the_core_holds() -> None:
    assert protocol.MAX_PAGES == MAX_PAGES == 1 << 31
    assert protocol.MAX_SIZE == MAX_SIZE == MAX_PAGES * PAGE_SIZE == 8 << 40
    assert MAX_PAGES - 1 <= (1 << 31) - 1  # the largest page index fits the 32-bit frame tables


def test_sizes_beyond_8_tib_are_einval_and_change_nothing() -> None:
    host = Host("1MiB")
    before = _fingerprint(host)
    assert _errno(lambda: host.ecreate(PID, 2 * MAX_SIZE)) == errno.EINVAL
    assert _errno(lambda: host.ecreate(PID, 1 << 52)) == errno.EINVAL
    assert _errno(lambda: host.vepc_open(PID, MAX_SIZE + PAGE_SIZE)) == errno.EINVAL
    assert _fingerprint(host) == before
    with pytest.raises(ValueError, match="8 TiB"):
        Host(MAX_SIZE + PAGE_SIZE)
    host.check()


def test_the_last_page_of_an_8_tib_enclave_and_vepc_works_and_the_next_is_efault() -> None:
    host = Host("1MiB")
    eid = _huge_enclave(host)
    vid = host.vepc_open(PID, MAX_SIZE)
    last = MAX_PAGES - 1
    assert host.access(PID, eid, last, 1, write=True) == 1  # EAUG
    assert host.vepc_access(PID, vid, last, 1) == 1
    used = pages(host, "/misc.current")
    assert _errno(lambda: host.access(PID, eid, MAX_PAGES, 1)) == errno.EFAULT
    assert _errno(lambda: host.access(PID, eid, last, 2)) == errno.EFAULT
    assert _errno(lambda: host.access(PID, eid, 1 << 40, 1)) == errno.EFAULT
    assert _errno(lambda: host.vepc_access(PID, vid, MAX_PAGES, 1)) == errno.EFAULT
    assert _errno(lambda: host.remove_pages(PID, eid, last, 2)) == errno.EINVAL  # sgx_validate_offset_length()
    assert pages(host, "/misc.current") == used
    host.check()
    host.release(eid)
    host.vepc_release(vid)
    assert pages(host, "/misc.current") == 0
    host.check()


def test_enclave_ids_wrap_below_2_31_and_skip_ids_in_use() -> None:
    host = Host("1MiB")
    first = host.ecreate(PID, 2 * PAGE_SIZE)
    host._next_id = MAX_OWNER_ID
    top = host.ecreate(PID, 2 * PAGE_SIZE)
    after = host.vepc_open(PID, PAGE_SIZE)
    assert top == MAX_OWNER_ID and after == first + 1  # id 1 is taken: skipped
    host.vepc_access(PID, after, 0, 1)
    host.check()
    for eid in (first, top):
        host.release(eid)
    host.vepc_release(after)
    assert pages(host, "/misc.current") == 0
    host.check()


# -- C2: page tables as large as the pages an enclave has ------------------------------------


def test_an_eaug_at_index_2_31_minus_1_costs_o1_memory() -> None:
    host = Host("1MiB")
    eid = _huge_enclave(host)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        assert host.access(PID, eid, MAX_PAGES - 1, 1, write=True) == 1
        assert host.access(PID, eid, 1 << 26, 1) == 1
        assert host.access(PID, eid, (1 << 28) + 5, 1) == 1
        grown = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert grown < 64 << 10, f"three EAUGs far away cost {grown} bytes"
    encl = host.enclaves[eid]
    assert len(encl.pages) < 4 * DENSE_SLACK
    assert {MAX_PAGES - 1, 1 << 26, (1 << 28) + 5} <= set(encl.sparse)
    host.check()
    host.release(eid)
    assert pages(host, "/misc.current") == 0
    host.check()


def test_sparse_pages_are_reclaimed_loaded_back_trimmed_and_removed() -> None:
    host = Host("1MiB")
    host.mkdir("/t")
    limit(host, "/t", 24)
    place(host, PID, "/t")
    eid = _huge_enclave(host)
    far = [(1 << 30) + 3 * i for i in range(40)]  # more than the limit: they must swap
    for index in far:
        host.access(PID, eid, index, 1, write=True)
    host.run_pending_work()
    encl = host.enclaves[eid]
    assert not set(far) & set(range(len(encl.pages)))
    swapped = [i for i in far if encl.page(i) < -1]
    assert swapped, "no sparse page was written out"
    host.check()
    assert host.access(PID, eid, swapped[0], 1) == 1  # ELDU of a sparse page
    assert encl.page(swapped[0]) >= 0
    host.check()
    gone = far[-1]
    host.access(PID, eid, gone, 1)
    assert host.remove_pages(PID, eid, gone, 1) == 1
    assert encl.page(gone) == -1 and gone not in encl.sparse
    host.check()
    host.release(eid)
    assert pages(host, "/t/misc.current") == 0 and pages(host, "/misc.current") == 0
    host.check()


def test_the_dense_prefix_folds_in_the_sparse_pages_it_grows_over() -> None:
    host = Host("1MiB")
    eid = _huge_enclave(host)
    encl = host.enclaves[eid]
    far = 3 * DENSE_SLACK
    host.access(PID, eid, far, 1)
    assert far in encl.sparse
    host.augment(PID, eid, 1)  # EAUG appends after the highest page so far
    host.access(PID, eid, 1, DENSE_SLACK)  # a run of pages from the prefix on
    host.access(PID, eid, DENSE_SLACK + 1, far - DENSE_SLACK - 1)
    assert set(encl.sparse) == {far, far + 1} and len(encl.pages) == far  # up to them, not over them
    host.access(PID, eid, far + 2, 1)
    assert not encl.sparse and len(encl.pages) == far + 3
    assert encl.page(far) != -1 and encl.page(far + 1) != -1
    host.check()


# -- an allocation that fails part-way leaves nothing behind ---------------------------------


class Injected(Exception):
    """The failure a test plants in the allocator."""


def _fail_after(monkeypatch: pytest.MonkeyPatch, cls: type, name: str, calls: int) -> list[int]:
    """``cls.name`` works ``calls`` times, then raises Injected; returns a list that gets an item when it did."""
    real = getattr(cls, name)
    left = [calls]
    fired: list[int] = []

    def failing(self: object, *args: object, **kwargs: object) -> object:
        if left[0] == 0:
            fired.append(1)
            raise Injected(f"{name} fails")
        left[0] -= 1
        return real(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, failing)
    return fired


def _build(host: Host) -> tuple[int, int]:
    """In /t (limit 64 pages): an initialised 512-page enclave, mostly written out, and an
    initialised 8 TiB one whose next page needs a new VA page."""
    host.mkdir("/t")
    limit(host, "/t", 64)
    place(host, PID, "/t")
    eid = enclave(host, PID, 300, size_pages=512)
    big = host.ecreate(PID, MAX_SIZE)
    host.add_pages(PID, big, 511)  # page_cnt 512: the next page brings a VA page
    host.einit(PID, big)
    host.run_pending_work()
    return eid, big


OPERATIONS: dict[str, Callable[[Host, int, int], object]] = {
    "ecreate": lambda host, eid, big: host.ecreate(PID, 64 * PAGE_SIZE),
    "add_pages": lambda host, eid, big: host.add_pages(PID, host.ecreate(PID, 1 << 20), 40),
    "add_pages with VA pages due": lambda host, eid, big: host.add_pages(PID, host.ecreate(PID, 1 << 22), 600),
    "access loading a run back": lambda host, eid, big: host.access(PID, eid, 0, 40),
    "access loading one page": lambda host, eid, big: host.access(PID, eid, 5, 1),
    "augment": lambda host, eid, big: host.augment(PID, eid, 20),
    "eaug far away with a VA page due": lambda host, eid, big: host.access(PID, big, 1 << 30, 1),
    "vepc_access": lambda host, eid, big: host.vepc_access(PID, host.vepc_open(PID, 1 << 20), 0, 8),
}
TAKE, RUN, VA = (Epc, "take"), (Epc, "take_run"), (Enclave, "va_add")
# (operation, where it fails, after how many calls that worked): every allocation step of each path
CASES = [
    ("ecreate", TAKE, 0),  # its VA page
    ("ecreate", TAKE, 1),  # its SECS
    ("ecreate", VA, 0),
    ("add_pages", RUN, 0),
    ("add_pages", RUN, 1),
    ("add_pages", TAKE, 3),  # one page under reclaim
    ("add_pages with VA pages due", TAKE, 3),
    ("add_pages with VA pages due", RUN, 3),
    ("add_pages with VA pages due", VA, 1),
    ("access loading a run back", RUN, 0),
    ("access loading a run back", TAKE, 1),
    ("access loading one page", TAKE, 0),  # the SECS or the page
    ("augment", TAKE, 0),
    ("augment", TAKE, 3),
    ("eaug far away with a VA page due", TAKE, 0),  # the page
    ("eaug far away with a VA page due", TAKE, 1),  # its VA page
    ("eaug far away with a VA page due", VA, 0),
    ("vepc_access", TAKE, 0),
    ("vepc_access", TAKE, 3),
]


@pytest.mark.parametrize(
    ("operation", "point", "calls"), CASES, ids=[f"{op}-{c.__name__}.{n}-{k}" for op, (c, n), k in CASES]
)
def test_a_failure_part_way_through_an_allocation_leaves_nothing_charged(
    monkeypatch: pytest.MonkeyPatch, operation: str, point: tuple[type, str], calls: int
) -> None:
    host = Host("1MiB")
    eid, big = _build(host)
    fired = _fail_after(monkeypatch, *point, calls)
    with contextlib.suppress(Injected, SigBus, OSError):  # SigBus or an ioctl error wrapping it: what a caller sees
        OPERATIONS[operation](host, eid, big)
    assert fired, "the failure was never reached"
    host.check()
    monkeypatch.undo()
    host.access(PID, eid, 0, 300)  # the host still works, and gives everything back
    host.exit_task(PID)
    host.run_pending_work()
    assert pages(host, "/misc.current") == 0
    assert host.tree.root.mem_usage == 0
    host.check()


# -- M4, L10: cgroup names, the tree and file writes as the kernel bounds them --------------


def test_a_cgroup_name_over_255_bytes_is_enametoolong_and_changes_nothing() -> None:
    host = Host("1MiB")
    host.mkdir("/" + "a" * 255)
    host.mkdir("/" + "é" * 127)  # 254 bytes
    before = _fingerprint(host)
    assert _errno(lambda: host.mkdir("/" + "b" * 256)) == errno.ENAMETOOLONG
    assert _errno(lambda: host.mkdir("/" + "é" * 128)) == errno.ENAMETOOLONG  # 128 characters, 256 bytes
    assert _fingerprint(host) == before
    host.check()


def test_a_nul_in_a_cgroup_name_is_einval_and_changes_nothing() -> None:
    host = Host("1MiB")
    before = _fingerprint(host)
    assert _errno(lambda: host.mkdir("/a\x00b")) == errno.EINVAL
    assert _errno(lambda: host.mkdir("/\x00")) == errno.EINVAL
    assert _fingerprint(host) == before
    assert _errno(lambda: host.read("/a\x00b/misc.current")) == errno.ENOENT


def test_mkdir_beyond_max_cgroups_is_eagain_and_dying_cgroups_count() -> None:
    host = Host("1MiB", max_cgroups=3)
    for path in ("/a", "/a/b", "/c"):
        host.mkdir(path)
    before = _fingerprint(host)
    assert _errno(lambda: host.mkdir("/d")) == errno.EAGAIN
    assert _fingerprint(host) == before
    place(host, PID, "/c")
    eid = enclave(host, PID, 4)
    host.write("/cgroup.procs", str(PID))
    host.rmdir("/c")  # dying: it still holds the enclave's pages
    assert _errno(lambda: host.mkdir("/d")) == errno.EAGAIN
    host.release(eid)  # its last page goes, and the cgroup with it
    host.mkdir("/d")
    host.check()


def test_the_default_limit_is_10000_cgroups() -> None:
    host = Host("1MiB")
    for i in range(100):
        host.mkdir(f"/g{i}")
        for j in range(99):
            host.mkdir(f"/g{i}/c{j}")
    assert _errno(lambda: host.mkdir("/one-more")) == errno.EAGAIN
    host.rmdir("/g0/c0")
    host.mkdir("/one-more")


def test_a_write_of_more_than_4096_bytes_is_e2big_and_changes_nothing() -> None:
    host = Host("1MiB")
    host.mkdir("/a")
    padded = "sgx_epc 4096".ljust(4096)  # 4096 bytes, the trailing blanks trimmed
    host.write("/a/misc.max", padded)
    assert host.read("/a/misc.max") == "sgx_epc 4096\n"
    before = _fingerprint(host)
    assert _errno(lambda: host.write("/a/misc.max", padded + " ")) == errno.E2BIG
    assert _errno(lambda: host.write("/a/misc.max", "sgx_epc 8192".ljust(65536))) == errno.E2BIG
    assert _errno(lambda: host.write("/a/cgroup.procs", "é" * 2049)) == errno.E2BIG  # 2049 characters
    assert _errno(lambda: host.write("/a/misc.current", "x" * 5000)) == errno.EACCES  # read-only first
    assert _errno(lambda: host.write("/nope/misc.max", "x" * 5000)) == errno.ENOENT
    assert host.read("/a/misc.max") == "sgx_epc 4096\n"
    assert _fingerprint(host) == before
    assert protocol.MAX_VALUE > 4096, "the wire must let the core answer E2BIG"


# -- M2: check in slices ----------------------------------------------------------------------


def _busy_host() -> tuple[Host, int]:
    """A host with reclaimable, swapped, sparse, SECS, VA and guest pages, in three cgroups."""
    host = Host("1MiB", memory="64MiB")
    host.mkdir("/a")
    host.mkdir("/a/b")
    limit(host, "/a", 96)
    place(host, PID, "/a/b")
    eid = enclave(host, PID, 3000, size_pages=1 << 13)
    host.access(PID, eid, 0, 3000)
    host.access(PID, eid, 6000, 1)  # a sparse page
    vid = host.vepc_open(PID + 1, 1 << 20)
    host.vepc_access(PID + 1, vid, 0, 4)
    host.run_pending_work()
    return host, eid


def test_check_steps_yields_in_slices_and_checks_the_state_as_it_was() -> None:
    host, eid = _busy_host()
    steps = check_steps(host)
    next(steps)
    host.release(eid)  # the host moves on between two slices; the check goes on with its copy
    host.mkdir("/later")
    slices = 1 + sum(1 for _ in steps)
    assert slices > 3
    host.check()


def _corrupt_misc_usage(host: Host, eid: int) -> None:
    host.cgroup("/a/b").misc_usage += 1


def _corrupt_lru_link(host: Host, eid: int) -> None:
    lru = host.cgroup("/a/b").lru
    host.epc.prev[host.epc.next[lru.head]] = 7


def _corrupt_frame_owner(host: Host, eid: int) -> None:
    host.epc.index[host.enclaves[eid].page(host.enclaves[eid].resident_indexes()[0])] += 1


def _corrupt_swap_slot(host: Host, eid: int) -> None:
    encl = host.enclaves[eid]
    first, second = encl.swapped_indexes()[:2]
    encl.set_entry(second, encl.page(first))  # two pages in one VA slot


def _corrupt_sparse_page(host: Host, eid: int) -> None:
    encl = host.enclaves[eid]
    encl.set_kind(6000, 0)


def _corrupt_pcmd(host: Host, eid: int) -> None:
    encl = host.enclaves[eid]
    pcmd_no = next(iter(encl.pcmd))
    encl.pcmd[pcmd_no] += 1


def _corrupt_task_mem(host: Host, eid: int) -> None:
    host.task_mem[PID] += 1


def _corrupt_free_count(host: Host, eid: int) -> None:
    host.epc.nr_free -= 1


def _corrupt_vepc(host: Host, eid: int) -> None:
    vepc = next(iter(host.vepcs.values()))
    vepc.pages[99] = vepc.pages[0]


def _corrupt_secs_count(host: Host, eid: int) -> None:
    host.enclaves[eid].secs_child_cnt += 1


def _corrupt_backing_refs(host: Host, eid: int) -> None:
    host.backing_refs[0] += 1


CORRUPTIONS = [
    _corrupt_misc_usage,
    _corrupt_lru_link,
    _corrupt_frame_owner,
    _corrupt_swap_slot,
    _corrupt_sparse_page,
    _corrupt_pcmd,
    _corrupt_task_mem,
    _corrupt_free_count,
    _corrupt_vepc,
    _corrupt_secs_count,
    _corrupt_backing_refs,
]


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=[c.__name__.removeprefix("_corrupt_") for c in CORRUPTIONS])
def test_check_steps_finds_a_planted_corruption(corrupt: Callable[[Host, int], None]) -> None:
    host, eid = _busy_host()
    host.check()
    corrupt(host, eid)
    with pytest.raises(InvariantError):
        for _ in check_steps(host):
            pass
    with pytest.raises(InvariantError):
        host.check()


# -- ids the core keeps in bounded fields are reused ---------------------------------------


def test_mkdir_and_rmdir_churn_reuses_cgroup_ids() -> None:
    host = Host("1MiB")
    host.mkdir("/keep")
    for round_ in range(1000):
        host.mkdir("/x")
        if round_ % 100 == 0:  # now and then one that dies with pages still charged
            place(host, PID, "/x")
            eid = enclave(host, PID, 2)
            host.write("/cgroup.procs", str(PID))
            host.rmdir("/x")
            host.release(eid)
        else:
            host.rmdir("/x")
    assert len(host.tree.by_id) <= 3, "cgroup ids grew with every mkdir"
    host.check()


def _swap_out_as(host: Host, pid: int) -> int:
    """An enclave of ``pid`` in /m (8 pages of EPC) with 24 pages, so that most are written out."""
    place(host, pid, "/m")
    eid = enclave(host, pid, 24, size_pages=32)
    host.run_pending_work()
    return eid


def test_backing_owner_ids_are_reused_once_nothing_is_charged_under_them() -> None:
    host = Host("1MiB")
    host.mkdir("/m")
    limit(host, "/m", 8)
    for pid in range(100, 400):  # each task pays for its own backing, then exits
        _swap_out_as(host, pid)
        assert host.tree.root.mem_usage > 0
        host.exit_task(pid)
    assert host.tree.root.mem_usage == 0
    assert len(host.backing_owners) <= 2, "an owner id for every task that ever paid"
    host.check()


def test_when_every_backing_owner_id_is_taken_backing_fails_as_memory_max_would(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import engine.backing

    monkeypatch.setattr(engine.backing, "OWNER_MASK", 1)  # two ids
    host = Host("1MiB", inline_work=False)
    host.mkdir("/m")
    limit(host, "/m", 8)
    for pid in (100, 101):
        _swap_out_as(host, pid)
    assert len(host.backing_owners) == 2
    place(host, 102, "/m")
    with pytest.raises(Blocked):  # its reclaim gets no backing for what it would write out
        host.add_pages(102, host.ecreate(102, 32 * PAGE_SIZE), 24)
    host.run_pending_work()
    assert len(host.backing_owners) == 2
    host.check()
    for pid in (100, 101, 102):
        host.exit_task(pid)
    assert not host.enclaves and host.tree.root.mem_usage == 0 and pages(host, "/misc.current") == 0
    host.check()

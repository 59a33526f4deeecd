"""The core's read-only views (engine/views.py): a cgroup's LRU with the next batch's marks, and
the EPC frame map; neither changes anything."""

from __future__ import annotations

import errno
import random
from collections import Counter

import pytest

from engine import PAGE_SIZE, Host
from engine.check_copy import snapshot
from engine.epc import KIND_MASK, YOUNG
from engine.events import ReclaimBatch
from engine.reclaim import reclaim_pages
from engine.sgx import PageKind
from engine.views import FrameMap, frame_map_steps

from .helpers import enclave, limit, place


def indexes(host: Host, path: str, offset: int = 0, count: int = 4096) -> list[int]:
    return [index for _, _, index, _, _, _ in host.lru_view(path, offset, count).pages]


def lru_host(npages: int) -> tuple[Host, int]:
    host = Host("1MiB")
    host.mkdir("/a")
    place(host, 10, "/a")
    return host, enclave(host, 10, npages)


def state_of(host: Host) -> tuple[object, ...]:
    """Everything a view could change: the frame tables, young bits, LRUs, cgroups, enclaves, events."""
    copy = snapshot(host)
    files = {cg: {name: host.read(f"{cg}/{name}") for name in host.listdir(cg) if "." in name} for cg in host.cgroups()}
    lrus = [(cg.path, host.epc.lru_frames(cg.lru), cg.next_cg.path) for cg in host.tree.all()]
    return (
        copy.flags, copy.prev.tobytes(), copy.next.tobytes(), copy.cg.tobytes(), copy.young_more,
        [(e.pages.tobytes(), e.secs_frame, e.va_frames, e.nr_swapped) for e in copy.enclaves],
        copy.vepcs, files, lrus, host.epc.nr_free, host.progress, list(host.events),
    )  # fmt: skip


# -- the LRU ----------------------------------------------------------------------------


def test_the_lru_is_listed_head_first_and_the_first_16_pages_are_the_next_batch() -> None:
    host, eid = lru_host(20)
    view = host.lru_view("/a", 0, 100)
    assert (view.cgroup, view.size, view.offset) == ("/a", 20, 0)
    assert [page[2] for page in view.pages] == list(range(20))  # EADD order, oldest (head) first
    assert {(page[1], page[3], page[4]) for page in view.pages} == {(eid, "REG", 0)}  # EADD sets no accessed bit
    assert [page[5] for page in view.pages] == ["write"] * 16 + [""] * 4
    assert view.batch == {"rotate": 0, "write": 16}
    assert view.mms == [(eid, [(10, 0)])]
    assert view.pages[0][0] == host.enclaves[eid].pages[0]  # the frame


def test_a_faulted_page_goes_to_the_tail_young_and_the_next_batch_would_rotate_it() -> None:
    host, eid = lru_host(20)
    reclaim_pages(host, host.cgroup("/a"), None, "test")  # pages 0..15 written out
    assert indexes(host, "/a") == [16, 17, 18, 19]
    host.access(10, eid, 3, 1)  # ELDU: back at the tail, young in the faulting mm
    host.access(10, eid, 17, 1)  # resident: young where it is
    view = host.lru_view("/a", 0, 100)
    assert [(page[2], page[4], page[5]) for page in view.pages] == [
        (16, 0, "write"), (17, 1, "rotate"), (18, 0, "write"), (19, 0, "write"), (3, 1, "rotate"),
    ]  # fmt: skip
    assert view.batch == {"rotate": 2, "write": 3}


def test_a_short_page_of_the_lru_still_says_what_the_whole_next_batch_does() -> None:
    host, eid = lru_host(40)
    host.access(10, eid, 2, 1)
    host.access(10, eid, 12, 1)
    for count in (1, 4, 15, 16, 17):
        view = host.lru_view("/a", 0, count)
        assert len(view.pages) == count and view.batch == {"rotate": 2, "write": 14}, count


def test_the_marks_are_what_the_next_batch_then_does() -> None:
    host, eid = lru_host(40)
    host.access(10, eid, 2, 1)
    host.access(10, eid, 5, 1)
    host.access(10, eid, 9, 1)
    host.access(10, eid, 30, 1)  # young, but past the batch
    view = host.lru_view("/a", 0, 100)
    rotate = [page[2] for page in view.pages if page[5] == "rotate"]
    write = [page[2] for page in view.pages if page[5] == "write"]
    assert rotate == [2, 5, 9] and view.batch == {"rotate": 3, "write": 13}
    host.take_events()
    reclaim_pages(host, host.cgroup("/a"), None, "test")
    (batch,) = [e for e in host.take_events() if isinstance(e, ReclaimBatch)]
    assert (batch.rotated, batch.written) == (3, 13)
    assert indexes(host, "/a") == list(range(16, 40)) + rotate  # the young ones went to the tail, aged
    assert all(host.enclaves[eid].page(index) < 0 for index in write)  # the others were written out
    assert host.lru_view("/a", 0, 100).batch == {"rotate": 1, "write": 15}  # only page 30 is still young


def test_young_bits_are_shown_per_mm_slot_and_the_mm_table_maps_slots_to_pids() -> None:
    host, eid = lru_host(4)
    for pid in (11, 12, 13):  # three more mms map the enclave: slots 1, 2, 3 (3 lives in young_more)
        host.access(pid, eid, 0, 1)
    host.access(13, eid, 1, 1)
    host.access(10, eid, 2, 1)
    view = host.lru_view("/a", 0, 10)
    assert {page[2]: page[4] for page in view.pages} == {0: 0b1110, 1: 0b1000, 2: 0b0001, 3: 0}
    assert view.mms == [(eid, [(13, 3), (12, 2), (11, 1), (10, 0)])]  # the order the age walk takes


@pytest.mark.parametrize("seed", range(3))
def test_any_page_of_the_lru_is_the_same_walked_from_either_end(seed: int) -> None:
    host, _ = lru_host(150)
    frames = host.epc.lru_frames(host.cgroup("/a").lru)
    rng = random.Random(seed)
    for _ in range(20):
        offset, count = rng.randrange(160), rng.randrange(1, 60)
        view = host.lru_view("/a", offset, count)
        assert [page[0] for page in view.pages] == frames[offset : offset + count]
        assert view.batch == {"rotate": 0, "write": 16}  # wherever the page is
        assert all(page[5] == ("write" if pos < 16 else "") for pos, page in enumerate(view.pages, offset))


def test_the_unreclaimable_pages_are_the_secs_va_and_guest_pages_charged_to_the_cgroup() -> None:
    host = Host("4MiB")
    for path in ("/a", "/b"):
        host.mkdir(path)
    place(host, 10, "/a")
    place(host, 11, "/b")
    one = enclave(host, 10, 600, size_pages=1024)  # SECS and 2 VA pages
    other = enclave(host, 11, 10)  # /b's: not listed
    guest = host.vepc_open(10, 64 * PAGE_SIZE)
    host.vepc_touch(10, guest, [(0, 5)])
    host.write("/b/cgroup.procs", "10")  # the guest's task moves: its next pages are /b's
    host.vepc_touch(10, guest, [(5, 3)])
    host.write("/a/cgroup.procs", "10")
    host.vepc_touch(10, guest, [(8, 2)])
    view = host.lru_view("/a", 0, 4096)
    e = host.enclaves[one]
    secs_va = [(e.secs_frame, one, -1, "SECS"), *[(frame, one, n, "VA") for n, frame in enumerate(e.va_frames)]]
    guest_pages = [(host.vepcs[guest].pages[i], guest, i, "VEPC") for i in (0, 1, 2, 3, 4, 8, 9)]
    assert view.unreclaimable == secs_va + guest_pages
    assert view.nr_unreclaimable == len(view.unreclaimable) == 3 + 7
    assert [row[2] for row in host.lru_view("/b", 0, 4096).unreclaimable] == [-1, 0, 5, 6, 7]
    assert host.enclaves[other].secs_frame in [row[0] for row in host.lru_view("/b", 0, 10).unreclaimable]
    for offset in range(11):  # paged: each page of the list goes on where the last one stopped
        for limit_ in (1, 2, 4):
            assert host.lru_view("/a", 0, limit_, offset).unreclaimable == view.unreclaimable[offset : offset + limit_]
    host.check()


def test_a_guest_wholly_in_the_cgroup_is_paged_without_walking_it() -> None:
    host = Host("4MiB")
    host.mkdir("/g")
    place(host, 10, "/g")
    guest = host.vepc_open(10, 512 * PAGE_SIZE)
    host.vepc_touch(10, guest, [(100, 300), (0, 50)])
    view = host.lru_view("/g", 0, 10, 295)
    assert [row[2] for row in view.unreclaimable] == [395, 396, 397, 398, 399, 0, 1, 2, 3, 4]  # fault order
    assert view.nr_unreclaimable == 350 and view.size == 0 and view.pages == []


def test_listing_changes_nothing_at_all() -> None:
    host, eid = lru_host(40)
    host.mkdir("/a/b")
    for pid in (11, 12, 13, 14):
        host.access(pid, eid, 0, 3)  # young bits in 4 mms (one beyond the flags byte)
    limit(host, "/a", 30)
    enclave(host, 10, 2, init=False)
    guest = host.vepc_open(10, 8 * PAGE_SIZE)
    host.vepc_touch(10, guest, [(0, 4)])
    host.rmdir("/a/b")
    head = host.epc.lru_frames(host.cgroup("/a").lru)[:16]
    for frame in head[::3]:
        host.access(10, eid, host.epc.index[frame], 1)  # young in slot 0 too, in the next batch
    assert sum(1 for frame in head if host.epc.flags[frame] & YOUNG) >= 6
    host.take_events()
    before = state_of(host)
    for offset in (0, 5, 20, 39, 100):
        host.lru_view("/a", offset, 16, offset)
        host.lru_view("/", offset, 4096)
    host.frame_map(0, 256, 1)
    host.frame_map(3, 7, 5)
    assert state_of(host) == before
    host.check()


def test_no_such_cgroup_is_enoent_and_a_bad_page_is_einval() -> None:
    host, _ = lru_host(4)
    with pytest.raises(OSError) as e:
        host.lru_view("/nope", 0, 16)
    assert e.value.errno == errno.ENOENT
    for offset, count in ((-1, 16), (0, 0)):
        with pytest.raises(OSError) as e:
            host.lru_view("/a", offset, count)
        assert e.value.errno == errno.EINVAL
    host.write("/cgroup.procs", "10")
    host.rmdir("/a")  # dying: its pages still on its LRU, but it is no cgroup one can name
    with pytest.raises(OSError) as e:
        host.lru_view("/a", 0, 16)
    assert e.value.errno == errno.ENOENT


# -- the frame map -------------------------------------------------------------------------


def expected_cells(host: Host, first: int, count: int, group: int) -> list[tuple[int, str | None, int, list[int]]]:
    """(free, owner path, kind, per-kind counts) per cell, one frame at a time."""
    epc = host.epc
    out = []
    end = min(host.capacity_pages, first + count * group)
    for start in range(first, end, group):
        kinds, owners = Counter[int](), Counter[int]()
        for frame in range(start, min(end, start + group)):
            kind = epc.flags[frame] & KIND_MASK if frame < len(epc.flags) else 0
            kinds[kind] += 1
            if kind:
                owners[epc.cg[frame]] += 1
        used = {k: n for k, n in kinds.items() if k}
        main_kind = min(used, key=lambda k: (-used[k], k)) if used else 0
        main_owner = min(owners, key=lambda c: (-owners[c], c)) if owners else None
        path = host.tree.by_id[main_owner].path if main_owner is not None else None  # type: ignore[union-attr]
        out.append((kinds[0], path, main_kind, [kinds[k] for k in range(1, 7)]))
    return out


def cells_of(cells: FrameMap) -> list[tuple[int, str | None, int, list[int]]]:
    return [
        (free, cells.cgroups[owner] if owner >= 0 else None, kind, list(counts) if cells.group > 1 else [])
        for free, owner, kind, counts in zip(
            cells.free, cells.owner, cells.kind, cells.counts or [()] * cells.count, strict=True
        )
    ]


def mixed_host() -> Host:
    """Frames of /a, /b, /c and a guest, some freed (the free stack reuses them), never-used ones at the end."""
    host = Host(300 * PAGE_SIZE)
    for n, path in enumerate(("/a", "/b", "/c")):
        host.mkdir(path)
        place(host, 10 + n, path)
    eids = [enclave(host, 10 + n, 40 + 10 * n) for n in range(3)]
    guest = host.vepc_open(11, 64 * PAGE_SIZE)
    host.vepc_touch(11, guest, [(0, 20)])
    host.release(eids[1])  # /b's frames free, in the middle
    enclave(host, 12, 15)  # /c reuses some of them
    host.mkdir("/d")
    place(host, 13, "/d")
    enclave(host, 13, 30)
    host.write("/cgroup.procs", "13")
    host.rmdir("/d")  # dying, still holding its frames
    return host


@pytest.mark.parametrize("group", [1, 2, 3, 7, 16, 64, 256, 1000])
def test_each_cell_sums_up_its_frames(group: int) -> None:
    host = mixed_host()
    count = -(-host.capacity_pages // group)
    cells = host.frame_map(0, count, group)
    assert (cells.first, cells.group, cells.count, cells.frames, cells.capacity) == (0, group, count, 300, 300)
    want = expected_cells(host, 0, count, group)
    if group == 1:
        want = [(free, owner, kind, []) for free, owner, kind, _ in want]
    assert cells_of(cells) == want
    assert sum(cells.free) == host.epc.nr_free
    assert sorted(cells.cgroups) == sorted({owner for _, owner, _, _ in want if owner is not None})
    assert cells.dying == [i for i, path in enumerate(cells.cgroups) if path == "/d"]  # removed, holding frames
    if group <= 16:
        assert "/d" in cells.cgroups


def test_a_map_of_part_of_the_epc_is_clipped_at_its_end_and_built_in_steps_alike() -> None:
    host = mixed_host()
    cells = host.frame_map(250, 100, 8)  # 800 frames asked, 50 left
    assert (cells.count, cells.frames) == (7, 50)
    assert cells_of(cells) == expected_cells(host, 250, 100, 8)
    steps = frame_map_steps(host, 5, 40, 3, step_frames=10)  # 3 cells a step
    taken = 0
    while True:
        try:
            next(steps)
            taken += 1
        except StopIteration as done:
            stepped: FrameMap = done.value
            break
    assert taken == 13  # 40 cells, 3 a step: 14 steps, 13 pauses between them
    assert stepped == host.frame_map(5, 40, 3)


def test_frames_past_the_epc_are_einval() -> None:
    host = Host(16 * PAGE_SIZE)
    with pytest.raises(OSError, match="give first from 0 to 15") as e:
        host.frame_map(16, 1, 1)
    assert e.value.errno == errno.EINVAL
    with pytest.raises(OSError, match="this host has no EPC"):
        Host(0).frame_map(0, 1, 1)
    assert host.frame_map(0, 4, 4).free == [4, 4, 4, 4]  # never used: all free, no owner
    assert host.frame_map(0, 4, 4).owner == [-1] * 4 and host.frame_map(0, 1, 16).kind == [PageKind.FREE]

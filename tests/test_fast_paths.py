"""Every batch path gives what its one-page path gives (review Z4, 5.3).

The same seeded random sequence of driver calls runs on a host with its fast paths (EADD,
ELDU and allocation runs, batched frees, LRU splices, VA slot ranges, backing charged in
runs) and on one with ``fast_paths=False``, where each page goes its one-page way.  After
every call both must have given the same result (or the same error, with the same
message and progress), the same events in the same order (``to_dict()``) and the same text
in every file of every cgroup, byte for byte; and the same pages on each LRU, in order.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from engine import PAGE_SIZE, Blocked, Host, SigBus
from engine.events import Event

PIDS = (1, 2, 3, 4, 5)
CGROUPS = ("/a", "/b", "/a/c")
STEPS = 250
SEEDS = range(8)


class Twin:
    """One host and what it said: every event, and the outcome of every call."""

    def __init__(self, fast: bool, inline: bool, memory_pages: int) -> None:
        self.events: list[Event] = []
        self.host = Host(
            2048 * PAGE_SIZE,
            memory_pages * PAGE_SIZE,
            inline_work=inline,
            event_sink=self.events.append,
            fast_paths=fast,
        )

    def call(self, op: Callable[[Host], object]) -> tuple[Any, ...]:
        try:
            return ("ok", op(self.host))
        except (Blocked, SigBus, OSError) as e:
            return (
                type(e).__name__,
                getattr(e, "errno", None),
                str(e),
                getattr(e, "done", None),
                getattr(e, "faults", None),
            )

    def files(self) -> dict[str, str]:
        host = self.host
        paths = [f"{cg.rstrip('/')}/{name}" for cg in host.cgroups() for name in host.listdir(cg) if "." in name]
        return {path: host.read(path) for path in paths}

    def lrus(self) -> dict[str, list[tuple[int, int]]]:
        """Each cgroup's LRU as (owner, page index) from head to tail: which frame holds a page may differ."""
        epc = self.host.epc
        return {cg.path: [(epc.owner[f], epc.index[f]) for f in epc.lru_frames(cg.lru)] for cg in self.host.tree.all()}


def _operation(rng: random.Random, host: Host) -> tuple[str, Callable[[Host], object]]:
    """A random driver call, its arguments drawn now (from the fast host's state) for both hosts."""
    pid = rng.choice(PIDS)
    building = sorted(e.id for e in host.enclaves.values() if not e.initialized)
    running = sorted(e.id for e in host.enclaves.values() if e.initialized)
    eid = _pick(rng, running)  # add_pages and einit take one of those still building
    size = host.enclaves[eid].size_pages if eid in host.enclaves else 64
    first = rng.randrange(size)
    count = rng.randint(1, min(size - first, rng.choice((4, 64, 700))))
    ranges = [(f, rng.randint(0, min(size - f, 64))) for f in (rng.randrange(size) for _ in range(rng.randint(1, 5)))]
    cg = rng.choice(CGROUPS)
    vids = sorted(host.vepcs)
    vid = rng.choice(vids) if vids else 999
    # every value a call takes is drawn here, once: the two hosts get the same call
    misc_max = f"sgx_epc {rng.choice((60, 200, 600, 1500)) * PAGE_SIZE}"
    memory_max = str(rng.choice((8, 64, 300)) * PAGE_SIZE)
    procs = f"{rng.choice((*CGROUPS, ''))}/cgroup.procs"
    encl_size = rng.choice((64, 1024, 4096)) * PAGE_SIZE
    add, kind = rng.choice((1, 30, 300, 600)), rng.choice(("REG", "REG", "REG", "TCS"))
    limit, grow, edmm = rng.choice((None, 50)), rng.randint(1, 40), min(count, 30)
    new_kind, guest_size = rng.choice(("TCS", "TRIM")), rng.choice((8, 64)) * PAGE_SIZE
    guest_pages, guest_limit = rng.randint(1, 8), rng.choice((None, 4))
    building_eid = _pick(rng, building)
    choices: list[tuple[float, str, Callable[[Host], object]]] = [
        (3, "mkdir", lambda h: h.mkdir(cg)),
        (1, "rmdir", lambda h: h.rmdir(cg)),
        (4, "misc.max", lambda h: h.write(f"{cg}/misc.max", misc_max)),
        (1, "misc.max max", lambda h: h.write(f"{cg}/misc.max", "sgx_epc max")),
        (2, "memory.max", lambda h: h.write(f"{cg}/memory.max", memory_max)),
        (4, "move", lambda h: h.write(procs, str(pid))),
        (3, "ecreate", lambda h: h.ecreate(pid, encl_size)),
        (3, "build", lambda h: _build(h, pid, encl_size, add)),
        (8, "add_pages", lambda h: h.add_pages(pid, building_eid, add, kind)),
        (3, "einit", lambda h: h.einit(pid, building_eid)),
        (16, "access", lambda h: h.access(pid, eid, first, count)),
        (6, "touch", lambda h: h.touch(pid, eid, ranges, limit=limit)),
        (3, "augment", lambda h: h.augment(pid, eid, grow)),
        (2, "trim", lambda h: h.trim_pages(pid, eid, first, edmm)),
        (2, "modify_types", lambda h: h.modify_types(pid, eid, first, edmm, new_kind)),
        (1, "restrict", lambda h: h.restrict_permissions(pid, eid, first, edmm)),
        (2, "remove_trimmed", lambda h: h.remove_trimmed(pid, eid, first, edmm)),
        (2, "remove_pages", lambda h: h.remove_pages(pid, eid, first, edmm)),
        (1, "vepc_open", lambda h: h.vepc_open(pid, guest_size)),
        (3, "vepc_access", lambda h: h.vepc_touch(pid, vid, [(0, guest_pages)], limit=guest_limit)),
        (1, "vepc_release", lambda h: h.vepc_release(vid)),
        (4, "work_step", lambda h: h.run_work_step()),
        (3, "pending_work", lambda h: h.run_pending_work()),
        (0.5, "signal", lambda h: h.signal(pid)),
        (1, "exit", lambda h: h.exit_task(pid)),
        (0.5, "release", lambda h: h.release(eid)),
    ]
    weights = [w for w, _, _ in choices]
    _, name, op = rng.choices(choices, weights)[0]
    return name, op


def _build(host: Host, pid: int, size_bytes: int, pages: int) -> int:
    """ECREATE, EADD of up to ``pages`` pages, EINIT: an enclave ready to be touched; its id."""
    eid = host.ecreate(pid, size_bytes)
    host.add_pages(pid, eid, min(pages, size_bytes // PAGE_SIZE - 1))
    host.einit(pid, eid)
    return eid


def _pick(rng: random.Random, ids: list[int]) -> int:
    """One of ``ids``, now and then (or when there is none) an id that names nothing."""
    return rng.choice(ids) if ids and rng.random() < 0.97 else 999


def run_twins(seed: int, inline: bool, steps: int = STEPS) -> list[str]:
    """Run one sequence on both hosts, comparing after every call; returns the calls made."""
    rng = random.Random(seed)
    memory_pages = rng.choice((100_000, 600))
    fast, slow = Twin(True, inline, memory_pages), Twin(False, inline, memory_pages)
    names = []
    for step in range(steps):
        name, op = _operation(rng, fast.host)
        names.append(name)
        where = f"seed {seed}, step {step}: {name}"
        assert fast.call(op) == slow.call(op), where
        assert [e.to_dict() for e in fast.events] == [e.to_dict() for e in slow.events], where
        assert fast.files() == slow.files(), where
        assert fast.lrus() == slow.lrus(), where
    fast.host.check()
    slow.host.check()
    return names


@pytest.mark.parametrize("inline", [True, False], ids=["inline", "engine"])
@pytest.mark.parametrize("seed", SEEDS)
def test_the_fast_paths_give_what_the_one_page_paths_give(seed: int, inline: bool) -> None:
    names = run_twins(seed, inline)
    assert len(set(names)) > 15  # the sequence reached most calls

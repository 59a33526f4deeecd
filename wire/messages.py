"""The requests and replies of wire.protocol, typed: what each op carries and what it answers.

``protocol.SCHEMAS`` checks a request's values at the engine's door; these TypedDicts
name the same fields for the code on either side (a test holds the two to each other).
A reply's ``ok`` is the op's result below; ``err`` replies carry ``err`` and ``msg``.
"""

# No `from __future__ import annotations` here: TypedDict reads NotRequired from the runtime annotations.
from typing import Literal, NotRequired, TypedDict

Ranges = list[tuple[int, int]]  # [first, count] page ranges (lists on the wire)
PageKind = Literal["REG", "TCS"]


# -- requests: the arguments of each op (beside v, op and id) ---------------------------


class Hello(TypedDict):
    pid: int
    role: Literal["enclave", "vm", "client"]
    name: NotRequired[str]
    # a workload's plan, as its command line gave it (none of it changes what the engine does)
    size: NotRequired[int]  # bytes it asked for: an enclave's heap, a guest's EPC
    pattern: NotRequired[str]  # an enclave's access pattern (wire.protocol.PATTERNS)
    passes: NotRequired[int]  # times over its memory
    duration_ms: NotRequired[int]  # how long it runs instead of passes
    compute_ns: NotRequired[int]  # its compute per page accessed, in ns (docs/costs.md; default: the profile's)


class Ecreate(TypedDict):
    size: int


class AddPages(TypedDict):
    eid: int
    count: int
    kind: NotRequired[PageKind]


class Einit(TypedDict):
    eid: int


class Access(TypedDict):
    eid: int
    ranges: Ranges
    write: NotRequired[bool]
    compute_ns: NotRequired[int]  # the call's compute, paid instead of the per-page one (docs/costs.md)


class Augment(TypedDict):
    eid: int
    count: int


class PageRange(TypedDict):
    """remove_pages, restrict_permissions, remove_trimmed."""

    eid: int
    first: int
    count: int


class ModifyTypes(TypedDict):
    eid: int
    first: int
    count: int
    kind: Literal["REG", "TCS", "TRIM"]


class Release(TypedDict):
    eid: int


class VepcOpen(TypedDict):
    size: int


class VepcAccess(TypedDict):
    vid: int
    ranges: Ranges


class VepcRelease(TypedDict):
    vid: int


class Path(TypedDict):
    """read, mkdir, rmdir, listdir."""

    path: str


class Write(TypedDict):
    path: str
    value: str


class NoArgs(TypedDict):
    """snapshot, check, ping."""


class Lru(TypedDict):
    """A page of a cgroup's LRU (offset 0: its head, the next page reclaim scans) and of its
    unreclaimable pages (unreclaimable_offset), at most limit (default 256, at most 4096) of each."""

    cgroup: str
    offset: NotRequired[int]
    limit: NotRequired[int]
    unreclaimable_offset: NotRequired[int]


class Frames(TypedDict):
    """count cells of group frames each (default 1, at most 65536), from frame first (default 0)."""

    first: NotRequired[int]
    count: int
    group: NotRequired[int]


class Bye(TypedDict):
    reason: NotRequired[str]


# step mode and history


class Step(TypedDict):
    what: Literal["request", "reclaim"]


class History(TypedDict):
    what: Literal["samples", "events", "pressure"]
    after: NotRequired[int]  # the cursor: the previous page's ``next`` (0: from the oldest)


REQUESTS: dict[str, type] = {
    "hello": Hello,
    "ecreate": Ecreate,
    "add_pages": AddPages,
    "einit": Einit,
    "access": Access,
    "augment": Augment,
    "remove_pages": PageRange,
    "modify_types": ModifyTypes,
    "restrict_permissions": PageRange,
    "remove_trimmed": PageRange,
    "release": Release,
    "vepc_open": VepcOpen,
    "vepc_access": VepcAccess,
    "vepc_release": VepcRelease,
    "read": Path,
    "write": Write,
    "mkdir": Path,
    "rmdir": Path,
    "listdir": Path,
    "snapshot": NoArgs,
    "check": NoArgs,
    "lru": Lru,
    "frames": Frames,
    "ping": NoArgs,
    "bye": Bye,
    "freeze": NoArgs,
    "step": Step,
    "thaw": NoArgs,
    "history": History,
}


# -- replies: what ``ok`` carries -------------------------------------------------------


class Info(TypedDict):
    """ping's answer; hello's adds ``cgroup``."""

    engine_pid: int
    pub: str  # the PUB endpoint
    capacity: int  # bytes of EPC
    writable: list[str]  # the cgroup files with a write handler (mode 0644; the others 0444)
    frozen: bool  # step mode: the engine runs nothing by itself (docs/protocol.md, "Step mode")
    knobs: dict[str, int | bool]  # the series' knobs not at V17's values ({}: the kernel's)
    cgroup: NotRequired[str]  # hello: the cgroup the process starts in


class Created(TypedDict):
    eid: int


class Added(TypedDict):
    """add_pages and augment: the pages done (fewer than asked: a signal stopped it)."""

    added: int


class Faulted(TypedDict):
    """access and vepc_access: how many of the pages faulted (the rest were resident)."""

    faults: int


class Modified(TypedDict):
    """modify_types, restrict_permissions, remove_trimmed."""

    count: int


class Removed(TypedDict):
    removed: int


class Opened(TypedDict):
    vid: int


class Failed(TypedDict):
    """An ``err`` reply: an errno name (or EPROTO, SIGBUS, ESHUTDOWN) and a one-line message."""

    err: str
    msg: str


LruPage = tuple[int, int, int, str, int, str]
"""A page on an LRU: frame, enclave id, page index, kind (REG, TCS, TRIM), young (bit n: young in the
mm of slot n), mark (what the next reclaim batch on this LRU does with it: "rotate", "write",
"drop", or "" past that batch)."""

PinnedPage = tuple[int, int, int, str]
"""A page no LRU holds: frame, enclave or vEPC id, page index (a VA page's ordinal, -1 for the
SECS), kind (SECS, VA, VEPC)."""


class LruListing(TypedDict):
    """lru's answer."""

    cgroup: str
    size: int  # pages on its LRU
    offset: int
    pages: list[LruPage]
    nr_to_scan: int  # pages a reclaim batch isolates from the head (SGX_NR_TO_SCAN)
    batch: dict[str, int]  # what the next batch would do: {"rotate": n, "write": n}
    mms: list[tuple[int, list[tuple[int, int]]]]  # [enclave, [[pid, slot], ...] newest mm first] of the listed pages
    next_cg: str  # its reclaim cursor: the next turn of a walk rooted at it
    nr_unreclaimable: int
    unreclaimable_offset: int
    unreclaimable: list[PinnedPage]


class FrameCells(TypedDict):
    """frames' answer: per cell, columns of small ints."""

    first: int
    group: int
    count: int  # cells
    frames: int  # frames covered (clipped at the end of the EPC)
    capacity: int  # frames of the EPC
    kinds: list[str]  # PageKind names by value: FREE, SECS, REG, TCS, TRIM, VA, VEPC
    cgroups: list[str]  # the paths that ``owner`` names
    dying: list[int]  # indexes in ``cgroups`` of removed cgroups that still hold frames
    owner: list[int]  # per cell: the cgroup most of its used frames are charged to, -1 when all are free
    kind: list[int]  # per cell: the kind most of its used frames hold, 0 (FREE) when all are free
    free: list[int]  # per cell: free frames
    counts: list[tuple[int, ...]]  # per cell, group > 1 only: used frames per kind, [SECS, REG, TCS, TRIM, VA, VEPC]


# -- step mode and history --------------------------------------------------------------


class FreezeState(TypedDict):
    """freeze's and thaw's answer, and a step's ``state``: the engine's step mode and what waits."""

    frozen: bool
    pid: int  # the holder's pid (0: not frozen)
    since_ns: int  # when it froze, on the engine's clock (0: not frozen)
    steps: int  # steps run since it froze
    ready: int  # requests ready to step (new ones queued while frozen among them)
    waiting: int  # requests parked until reclaim work moves a page
    stalled: int  # requests that stall (step request retries the one due first when none is ready)
    work: int  # reclaim work items queued or in flight
    ksgxd: bool  # ksgxd is woken


class StepResult(TypedDict):
    """What one ``step`` ran (``ran`` false: nothing was there to run, ``note`` says why)."""

    what: Literal["request", "reclaim"]
    ran: bool
    note: str  # a sentence: what ran, or why nothing did
    # request: the request, its pid, and how its step ended: done (answered), failed (answered
    # ``err``), more (it goes on at its next step), waiting (parked for reclaim work), stalled,
    # dropped (its process is gone)
    op: str
    pid: int
    status: str
    err: str
    # reclaim: the worker (a cgroup's path for its work item, or ksgxd), its batches' sums, and
    # whether it stopped (its work item ran out of work)
    worker: str
    scanned: int
    rotated: int
    written: int
    stopped: bool
    nr_events: int  # the events the step caused
    kinds: dict[str, int]  # their counts by kind
    events: list[dict[str, object]]  # the first 64 of them, with their seq
    state: FreezeState


class CgroupHistory(TypedDict):
    """One cgroup's samples, oldest first, the newest at the page's ``tick``."""

    path: str
    id: int
    usage_pages: list[int]  # misc.current in pages
    reclaimed_pages: list[int]  # pages written out from its LRU since the sample before


class HistorySamples(TypedDict):
    """history what=samples: a page of cgroups' samples (4 a second, the last 10 minutes)."""

    tick: int  # samples taken since the engine started
    interval_ns: int
    t_ns: list[int]  # the time of each sample kept, oldest first; a cgroup's series ends with it
    cgroups: list[CgroupHistory]
    untracked: int  # live cgroups beyond the cap, with no history
    next: int | None  # the cursor for the next page; None: this was the last


class HistoryLog(TypedDict):
    """history what=events (the last events of event/other) or what=pressure (limit hits and pages
    reclaimed per cgroup per sample, where there were any), oldest first."""

    entries: list[dict[str, object]]
    total: int  # entries ever kept (the cursor counts on it)
    next: int | None

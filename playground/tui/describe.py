"""What the event log says about an engine event: its line, whether it is a failure, and what
the kernel did there (no textual here).

A line is ``[   83.456] kind            text``: the engine's clock as dmesg stamps the
kernel's log (seconds since the engine started, to the millisecond), the kind in a column
of its own, then a sentence that does not repeat the kind.  Workloads are named by their
name and pid, as the workloads table shows them, never by the engine's enclave ids.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from common.units import format_size

KIND_WIDTH = 15  # the kind column: the longest kind (workload_start) and a space
STAMP_WIDTH = 11  # [   83.456]
NAMES_KEPT = 4096  # pids and enclaves remembered for naming (the oldest go first)


@dataclass(slots=True)
class Known:
    """What the log learnt to name things with: each workload's name by pid (from the snapshot and
    the events that carry one) and the pid of each enclave (from ecreate until its release)."""

    names: dict[int, str] = field(default_factory=dict)
    enclaves: dict[int, int] = field(default_factory=dict)

    def learn(self, event: Mapping[str, Any]) -> None:
        kind = event.get("kind")
        if kind == "ecreate":
            _remember(self.enclaves, int(event["enclave"]), int(event["pid"]))
        elif kind == "release":
            self.enclaves.pop(int(event["enclave"]), None)
        elif "name" in event and "pid" in event and event["name"]:
            _remember(self.names, int(event["pid"]), str(event["name"]))

    def who(self, pid: int) -> str:
        """``db (pid 4102)``, or ``pid 4102`` for a workload without a name."""
        name = self.names.get(pid)
        return f"{name} (pid {pid})" if name else f"pid {pid}"

    def enclave(self, eid: int) -> str:
        """``db's enclave (pid 4102)``, or ``an enclave`` when its creation was not seen."""
        pid = self.enclaves.get(eid)
        if pid is None:
            return "an enclave"
        name = self.names.get(pid)
        return f"{name}'s enclave (pid {pid})" if name else f"the enclave of pid {pid}"


def _remember(table: dict[int, Any], key: int, value: Any) -> None:
    table.pop(key, None)
    table[key] = value
    if len(table) > NAMES_KEPT:
        del table[next(iter(table))]


NOBODY = Known()


def stamp(t_ns: int | None) -> str:
    """The engine's clock as dmesg stamps the kernel's log: ``[   83.456]`` seconds since it started."""
    if t_ns is None:
        return "[" + " " * (STAMP_WIDTH - 2) + "]"
    ms = max(int(t_ns), 0) // 1_000_000
    return f"[{ms // 1000:5d}.{ms % 1000:03d}]"


def _pages(n: int) -> str:
    return f"{n} page{'s' if n != 1 else ''}"


def _pressure(e: dict[str, Any], k: Known) -> str:
    """Limit hits on a cgroup's own limit and pages reclaimed from its own LRU, summed over a second."""
    parts = [f"limit hit x{e['hits']}"] if e["hits"] else []
    if e["reclaimed"]:
        parts.append(f"{_pages(e['reclaimed'])} reclaimed")
    return f"{e['cgroup']}: {', '.join(parts) or 'nothing'}"


def _reclaim(e: dict[str, Any], k: Known) -> str:
    stop = f" [{e['stop']}]" if e.get("stop") else ""
    failed = f", backing failed {e['backing_failed']}" if e.get("backing_failed") else ""
    return (
        f"{e['cgroup']}'s LRU, {e['context']} walk from {e.get('walk_root', '?')}: scanned {e['scanned']},"
        f" rotated {e['rotated']}{failed}, written {e['written']}; next {e.get('next_cg', '?')}{stop}"
    )


def _stall_end(e: dict[str, Any], k: Known) -> str:
    """How a stall ended, after how long and how many more failed charges."""
    how = {"resumed": "goes on", "exited": "ended by its exit"}.get(e["how"], f"failed: {e['how']}")
    after = f"after {e['stalled_ns'] / 1e9:.1f} s, {e['retries']} more tries"
    return f"{k.who(e['pid'])} in {e['cgroup']}: {e['op']} {how} {after}"


def _write(e: dict[str, Any], k: Known) -> str:
    """The value as written, and in human units when it is a size (``sgx_epc 25165824 (24 MiB)``)."""
    value = str(e["value"])
    number = value.split()[-1] if value.split() else ""
    human = ""
    if number.isdigit() and not str(e["path"]).endswith(("cgroup.procs", "cgroup.threads")):
        human = f" ({format_size(int(number))})"
    return f"{e['path']} <- {value}{human}"


def _step(e: dict[str, Any], k: Known) -> str:
    if e.get("what") == "reclaim":
        return f"reclaim: {e.get('worker', '?')} wrote {_pages(int(e.get('written', 0)))}"
    return f"request: {e.get('op', '?')} of {k.who(int(e.get('pid', 0)))}, {e.get('status', '?')}"


DESCRIBE: dict[str, Callable[[dict[str, Any], Known], str]] = {
    "pressure": _pressure,
    "limit_hit": lambda e, k: f"{e['cgroup']} refused a charge for {e['requester']}",
    "reclaim": _reclaim,
    "work_queued": lambda e, k: f"{e['cgroup']}'s reclaim work item queued",
    "work_run": lambda e, k: (
        f"{'ksgxd' if e['cgroup'] == 'ksgxd' else e['cgroup'] + chr(39) + 's work item'} ran"
        f" {e['batches']} batches, {_pages(e['written'])} written"
    ),
    "enomem": lambda e, k: f"{k.who(e['pid'])} in {e['cgroup']}: {e['op']} failed with ENOMEM",
    "sigbus": lambda e, k: f"{k.who(e['pid'])} in {e['cgroup']}: SIGBUS on {e.get('op', 'fault')} ({e['errno']})",
    "stall": lambda e, k: f"{k.who(e['pid'])} in {e['cgroup']}: {e['op']} stalls, no reclaim can help",
    "stall_end": _stall_end,
    "oom_kill": lambda e, k: (
        f"{e['cgroup']}: OOM killer picked {k.who(e['pid'])}, {format_size(int(e.get('memory_bytes', 0)))} of backing"
    ),
    "workload_start": lambda e, k: f"{e['role']} {k.who(e['pid'])} starts in {e['cgroup']}",
    "workload_exit": lambda e, k: f"{k.who(e['pid'])} exited: {e['reason']}",
    "write": _write,
    "mkdir": lambda e, k: str(e["cgroup"]),
    "rmdir": lambda e, k: f"{e['cgroup']}{' (dying: charged pages keep it)' if e['dying'] else ''}",
    "cgroup_freed": lambda e, k: f"{e['cgroup']}: its last charge went, it is gone",
    "ksgxd_wake": lambda e, k: f"woken: {_pages(e['free_pages'])} free",
    "secs_writeback": lambda e, k: f"SECS of {k.enclave(e['enclave'])} in {e['cgroup']} written out",
    "ecreate": lambda e, k: (
        f"{k.who(e['pid'])} created an enclave of {format_size(int(e.get('size_bytes', 0)))} (ELRANGE)"
    ),
    "release": lambda e, k: (
        f"{k.who(e['pid'])}'s enclave released: {_pages(e['pages_freed'])}"
        f" and {format_size(int(e.get('backing_bytes', 0)))} of backing freed"
    ),
    "freeze": lambda e, k: f"the engine is frozen (step mode) by {k.who(int(e.get('pid', 0)))}",
    "step": _step,
    "thaw": lambda e, k: (
        f"the engine runs again ({e.get('how', '?')}) after {int(e.get('frozen_ns', 0)) / 1e9:.1f} s"
        f" and {e.get('steps', 0)} steps"
    ),
    "malformed": lambda e, k: f"a {e['topic']} message from the engine could not be read, skipped ({e['error']})",
}


def _said(table: dict[str, Any], event: dict[str, Any], known: Known) -> str | None:
    """What ``table``'s entry for the event's kind says of it; None for a kind it has no entry for,
    or a field missing or not what it should be (the callers then say every field)."""
    say = table.get(str(event.get("kind")))
    if say is None:
        return None
    try:
        return str(say(event, known))
    except (KeyError, TypeError, ValueError):
        return None


def event_text(event: dict[str, Any], known: Known = NOBODY) -> str:
    """The sentence of an event's line, without its kind (every field, for a kind we do not know)."""
    said = _said(DESCRIBE, event, known)
    if said is not None:
        return said
    return ", ".join(f"{k}={v}" for k, v in event.items() if k not in ("kind", "seq", "t_ns"))


def describe(event: dict[str, Any], known: Known = NOBODY) -> str:
    """``kind            what happened``: the kind in a column of its own, then a sentence."""
    return f"{event.get('kind')!s:<{KIND_WIDTH}} {event_text(event, known)}"


def is_failure(event: Mapping[str, Any]) -> bool:
    """Something went wrong for a workload (or for the display): the log draws it in red."""
    kind = event.get("kind")
    if kind in ("sigbus", "oom_kill", "enomem", "stall", "malformed"):
        return True
    if kind == "workload_exit":
        return event.get("reason") != "ok"
    if kind == "stall_end":
        return event.get("how") not in ("resumed", "exited")
    return False


# -- what the kernel did there ---------------------------------------------------------------

WALKERS = {
    "sync": "a charge to {walk_root} (synchronous reclaim, DO_RECLAIM)",
    "async": "{walk_root}'s reclaim work item",
    "direct": "direct reclaim for {walk_root} before an EDMM ioctl",
    "global": "global reclaim",
    "ksgxd": "ksgxd",
}


def _explain_reclaim(e: dict[str, Any], k: Known) -> str:
    walker = WALKERS.get(str(e["context"]), str(e["context"]) + " reclaim").format(walk_root=e.get("walk_root", "?"))
    failed = f", {e['backing_failed']} put back (no backing RAM)" if e.get("backing_failed") else ""
    stop = {
        "nr_to_scan": "the walk stops: it scanned what it was asked to",
        "lru_empty": "the walk stops: its subtree's LRUs are empty",
    }.get(str(e.get("stop")), f"the walk goes on at {e.get('next_cg', '?')}")
    return (
        f"{walker[0].upper()}{walker[1:]} reclaimed {_pages(e['written'])} from {e['cgroup']}'s LRU:"
        f" scanned {e['scanned']}, rotated {e['rotated']} (young: accessed since the last scan, back to the"
        f" tail){failed}, written {e['written']} by EWB. One turn of {e.get('walk_root', '?')}'s walk;"
        f" {stop}. Mirrors sgx_reclaim_pages() under sgx_cgroup_reclaim_pages()."
    )


def _explain_pressure(e: dict[str, Any], k: Known) -> str:
    return (
        f"Over this second {e['cgroup']} refused {e['hits']} charges at its own misc.max and gave up"
        f" {_pages(e['reclaimed'])} from its own LRU: the log's sum of the engine's limit_hit and reclaim"
        " events (Enter: the batches). Mirrors misc_cg_try_charge() failing in __sgx_cgroup_try_charge(),"
        " and sgx_reclaim_pages()."
    )


def _explain_write(e: dict[str, Any], k: Known) -> str:
    path = str(e["path"])
    file = path.rsplit("/", 1)[-1]
    what = {
        "misc.max": "the EPC limit: charges over it now reclaim from the cgroup's subtree, or fail."
        " Mirrors misc_cg_max_write()",
        "memory.max": "the backing-RAM limit: over it, the memory cgroup's OOM killer runs. Mirrors memory_max_write()",
        "cgroup.procs": "the task moved: its pages charged from now on go to this cgroup, those charged"
        " before stay where they are. Mirrors cgroup_procs_write()",
        "cgroup.subtree_control": "the controllers its children get. Mirrors cgroup_subtree_control_write()",
    }.get(file, "Mirrors cgroup_file_write()")
    return f"{path} was written with '{e['value']}': {what}."


def _explain_work_run(e: dict[str, Any], k: Known) -> str:
    if e["cgroup"] == "ksgxd":
        return (
            f"ksgxd ran {e['batches']} reclaim batches and wrote {_pages(e['written'])} out, until free EPC was"
            " back above SGX_NR_HIGH_PAGES (64) or nothing was left to reclaim. Mirrors ksgxd()."
        )
    return (
        f"{e['cgroup']}'s reclaim work item ran {e['batches']} batches and wrote {_pages(e['written'])} out,"
        f" until {e['cgroup']} was under its limit again or nothing was left to reclaim."
        " Mirrors sgx_cgroup_reclaim_work_func()."
    )


def _explain_stall_end(e: dict[str, Any], k: Known) -> str:
    how = {"resumed": "its fault was served and it goes on", "exited": "the task is gone"}.get(
        str(e["how"]), f"the call then failed with {e['how']}"
    )
    return (
        f"The stalled {e['op']} of {k.who(e['pid'])} in {e['cgroup']} ended after"
        f" {e['stalled_ns'] / 1e9:.1f} s and {e['retries']} more failed charges: {how}."
        " Mirrors sgx_vma_fault(), which no longer answers VM_FAULT_NOPAGE for it."
    )


def _explain_workload_start(e: dict[str, Any], k: Known) -> str:
    device = "/dev/sgx_vepc (a guest's virtual EPC)" if e.get("role") == "vm" else "/dev/sgx_enclave"
    mirrors = "sgx_vepc_open()" if e.get("role") == "vm" else "sgx_open()"
    return (
        f"{k.who(e['pid'])}, {'a guest VM' if e.get('role') == 'vm' else 'an enclave'} workload, registered with"
        f" the engine and runs in {e['cgroup']}: the pages it allocates are charged there, as for a task"
        f" that opens {device} in that cgroup. Mirrors {mirrors}."
    )


EXPLAIN: dict[str, Callable[[dict[str, Any], Known], str]] = {
    "pressure": _explain_pressure,
    "limit_hit": lambda e, k: (
        f"A charge for {e['requester']} was refused at {e['cgroup']}: its misc.max (the EPC capacity at /) had"
        f" no room, counted in {e['cgroup']}'s misc.events (max). Mirrors misc_cg_try_charge() failing in"
        " __sgx_cgroup_try_charge()."
    ),
    "reclaim": _explain_reclaim,
    "work_queued": lambda e, k: (
        f"A charge in {e['cgroup']} that may not reclaim by itself (a fault: SGX_NO_RECLAIM) got EBUSY, so"
        f" {e['cgroup']}'s reclaim work item was queued to make room, and the fault is tried again."
        " Mirrors queue_work(sgx_cg_wq, &sgx_cg->reclaim_work) in sgx_cgroup_try_charge()."
    ),
    "work_run": _explain_work_run,
    "ksgxd_wake": lambda e, k: (
        f"An allocation left {_pages(e['free_pages'])} of EPC free, under SGX_NR_LOW_PAGES (32), while pages"
        " were reclaimable: ksgxd was woken to reclaim until SGX_NR_HIGH_PAGES (64) are free."
        " Mirrors wake_up(&ksgxd_waitq) in sgx_alloc_epc_page()."
    ),
    "enomem": lambda e, k: (
        f"{k.who(e['pid'])} needed an EPC page for {e['op']} in {e['cgroup']}, over the limit, and nothing on"
        f" the LRUs of {e['cgroup']}'s subtree could be reclaimed: the call fails with ENOMEM."
        " Mirrors sgx_cgroup_try_charge() returning -ENOMEM to sgx_alloc_epc_page()."
    ),
    "sigbus": lambda e, k: (
        f"A fault of {k.who(e['pid'])} in {e['cgroup']} ({e.get('op', 'fault')}) could not get an EPC page"
        f" ({e['errno']}): the fault handler returns VM_FAULT_SIGBUS and the task gets SIGBUS."
        " Mirrors sgx_vma_fault() (sgx_vepc_fault() for a guest)."
    ),
    "stall": lambda e, k: (
        f"The {e['op']} of {k.who(e['pid'])} in {e['cgroup']} gets EBUSY from its charge and no reclaim can help"
        " (the pages that fill the limit cannot be reclaimed from here): the task faults again and again,"
        " one more failed charge each time, until something frees room; it is not SIGBUS."
        " Mirrors sgx_vma_fault() returning VM_FAULT_NOPAGE."
    ),
    "stall_end": _explain_stall_end,
    "oom_kill": lambda e, k: (
        f"The backing RAM of {e['cgroup']}'s swapped EPC pages reached its memory.max: the memory cgroup's OOM"
        f" killer chose {k.who(e['pid'])}, holding {format_size(int(e.get('memory_bytes', 0)))} of backing,"
        " and sends it SIGKILL. Mirrors mem_cgroup_out_of_memory() after a refused backing charge in"
        " sgx_encl_alloc_backing()."
    ),
    "secs_writeback": lambda e, k: (
        f"The last resident page of {k.enclave(e['enclave'])} was reclaimed, so its SECS was written out by EWB"
        f" as well, its backing charged to {e['cgroup']}. Mirrors the SECS branch of sgx_reclaimer_write()."
    ),
    "ecreate": lambda e, k: (
        f"{k.who(e['pid'])} created an enclave over {format_size(int(e.get('size_bytes', 0)))} of address space"
        " (ELRANGE): ECREATE took a VA page and the SECS, charged to its cgroup."
        " Mirrors sgx_ioc_enclave_create() and sgx_encl_create()."
    ),
    "release": lambda e, k: (
        f"The last reference to {k.who(e['pid'])}'s enclave went: its {_pages(e['pages_freed'])} of EPC were"
        f" freed and uncharged, and {format_size(int(e.get('backing_bytes', 0)))} of backing RAM dropped."
        " Mirrors sgx_encl_release()."
    ),
    "workload_start": _explain_workload_start,
    "workload_exit": lambda e, k: (
        f"The process of {k.who(e['pid'])} is gone ({e['reason']}): all it held is released as on its last"
        " file reference. Mirrors sgx_mmu_notifier_release() and sgx_encl_release()"
        " (sgx_vepc_release() for a guest)."
    ),
    "write": _explain_write,
    "mkdir": lambda e, k: (
        f"{e['cgroup']} was created: misc.max starts at max, its LRU is empty."
        " Mirrors cgroup_mkdir() (and the misc controller's sgx_cgroup_alloc())."
    ),
    "rmdir": lambda e, k: (
        f"{e['cgroup']} was removed"
        + (
            ": pages still charged to it keep it alive, offline (dying), reclaimed like any other, until the"
            " last one goes"
            if e["dying"]
            else ", nothing was charged to it"
        )
        + ". Mirrors cgroup_rmdir()."
    ),
    "cgroup_freed": lambda e, k: (
        f"{e['cgroup']}, removed before, lost its last charged page and is freed."
        " Mirrors sgx_cgroup_free() when the css is released."
    ),
    "freeze": lambda e, k: (
        f"{k.who(int(e.get('pid', 0)))} froze the engine (step mode): nothing runs by itself until a step or the"
        " thaw; workloads wait for their replies. No kernel counterpart: the playground's own."
    ),
    "step": lambda e, k: (
        f"One step of the frozen engine: {_step(e, k)}, causing {e.get('events', 0)} events."
        " No kernel counterpart: the playground's own."
    ),
    "thaw": lambda e, k: (
        f"The engine thawed ({e.get('how', '?')}) and runs by itself again. No kernel counterpart: the"
        " playground's own."
    ),
    "malformed": lambda e, k: (
        f"A {e['topic']} message could not be read ({e['error']}): the display skipped it and goes on (after a"
        " bad stats message it asks for the whole snapshot). No kernel counterpart."
    ),
}


def explain(event: dict[str, Any], known: Known = NOBODY) -> str:
    """What the kernel did at this event, in a sentence or two, and the function it mirrors."""
    said = _said(EXPLAIN, event, known)
    if said is not None:
        return said
    return f"An event of kind {event.get('kind')!r} that this display has no explanation for: {event_text(event)}."

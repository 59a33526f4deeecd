"""Hardware cost profiles: what each SGX operation the emulator performs costs, in nanoseconds.

A profile is a TOML file (``common/profiles/*.toml`` are the bundled ones; a user copies one
and edits it) with a ``name``, a ``cpu`` line, and a ``[cost_ns]`` table giving every key of
``COSTS``.  ``load_profile(NAME|FILE)`` reads and checks one: an unknown key, a missing one or
a negative or non-numeric cost is a ``ProfileError`` whose message is one line naming the
key.  The figures and their sources are in docs/costs.md.

The core counts the operations it performs (``HostState.ops``, indexed by the ``OP_*``
constants here); the Session turns counts into time with a profile's weights.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

# What the core counts, one slot each in HostState.ops (the order of OPS).
OP_ECREATE = 0  # ECREATE (its VA page's EPA folded in)
OP_EADD = 1  # pages EADDed (each with its 16 EEXTENDs)
OP_EINIT = 2
OP_EAUG = 3  # pages EAUGed on a fault (each with its EACCEPT and its fault)
OP_ELDU = 4  # pages (and SECSs) loaded back by a fault or an EDMM ioctl
OP_EWB = 5  # pages (and SECSs) written out, each after its EBLOCK
OP_ETRACK = 6  # ETRACK and its IPI round: one per enclave a reclaim batch writes pages of
OP_BATCH = 7  # reclaim batches (sgx_reclaim_pages() calls that isolated a page)
OP_EREMOVE = 8  # EPC pages freed by EREMOVE (release, REMOVE_PAGES, a vEPC's release)
OP_VEPC_FAULT = 9  # guest EPC pages faulted in (an EPT fault each)
OP_ACCESS = 10  # pages accessed (the workload's compute is charged per page)
OPS = (
    "ecreate", "eadd", "einit", "eaug", "eldu", "ewb", "etrack", "batch", "eremove", "vepc_fault", "access",
)  # fmt: skip
assert len(OPS) - 1 == OP_ACCESS  # last: the Session tells a call that did no SGX operation by the counts before it

COSTS = (
    "ecreate",  # ECREATE of one enclave
    "eadd",  # EADD + 16 x EEXTEND of one 4 KiB page, with the ioctl's share
    "einit",  # EINIT of one enclave
    "eaug",  # EAUG + EACCEPT of one page (its fault is "fault")
    "eldu",  # ELDU of one page: decrypt, check the MAC, free the VA slot
    "fault",  # the fault path around an ELDU or EAUG: AEX, #PF, the driver's handler, ERESUME
    "ewb",  # EWB of one page: encrypt, MAC, write out to backing
    "eblock",  # EBLOCK of one page
    "etrack",  # ETRACK and the IPI round (TLB shootdown) of one enclave in a batch
    "batch",  # the kernel's bookkeeping per reclaim batch (isolate, age, backing lookups)
    "eremove",  # EREMOVE of one page
    "entry",  # one enclave entry and exit (EENTER + EEXIT, an ecall)
    "compute",  # default compute per page access (a workload's hello may declare its own)
)
DEFAULT_PROFILE = "sapphire-rapids"
PROFILES_DIR = Path(__file__).with_name("profiles")
MAX_COST_NS = 10**12  # a second per operation is already absurd; a thousand is a typo


class ProfileError(ValueError):
    """A profile that cannot be used; the message is one line naming the key (or the file)."""


@dataclass(frozen=True, slots=True)
class Profile:
    """A checked profile: ``cost_ns`` maps every key of COSTS to whole nanoseconds."""

    name: str
    cpu: str
    cost_ns: dict[str, int]
    source: str = ""  # the file it came from

    def weights(self) -> tuple[list[int], list[int]]:
        """The ns each counted operation (OPS order) costs: all of it, and its paging part.

        ``access`` weighs 0 here: a workload's compute per access is its own (``compute``
        is only the default), charged apart.  Paging is ELDU and its fault path, and the
        EBLOCK, EWB, ETRACK/IPI and bookkeeping of reclaim.
        """
        c = self.cost_ns
        total = [0] * len(OPS)
        paging = [0] * len(OPS)
        total[OP_ECREATE] = c["ecreate"]
        total[OP_EADD] = c["eadd"]
        total[OP_EINIT] = c["einit"]
        total[OP_EAUG] = c["eaug"] + c["fault"]
        total[OP_EREMOVE] = c["eremove"]
        total[OP_VEPC_FAULT] = c["fault"]
        for op, ns in (
            (OP_ELDU, c["eldu"] + c["fault"]),
            (OP_EWB, c["ewb"] + c["eblock"]),
            (OP_ETRACK, c["etrack"]),
            (OP_BATCH, c["batch"]),
        ):
            total[op] = paging[op] = ns
        return total, paging


def bundled_profiles() -> list[str]:
    """The names of the bundled profiles, sorted."""
    return sorted(p.stem for p in PROFILES_DIR.glob("*.toml"))


def load_profile(which: str | None = None) -> Profile:
    """The profile named ``which`` (a bundled name) or in the file ``which``; the default when None.
    ProfileError (one line) for no such profile or a bad one."""
    which = which or DEFAULT_PROFILE
    path = Path(which)
    if path.suffix != ".toml" and "/" not in which:
        path = PROFILES_DIR / f"{which}.toml"
        if not path.is_file():
            names = ", ".join(bundled_profiles())
            raise ProfileError(f"no cost profile {which!r}: give one of {names}, or a .toml file")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ProfileError(f"cost profile {which}: cannot read it ({e.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ProfileError(f"cost profile {which}: not TOML ({e})") from None
    return parse_profile(data, str(path))


def parse_profile(data: dict[str, object], source: str = "") -> Profile:
    """Check a profile's TOML table; ProfileError naming the first bad key."""
    where = f"cost profile {source}: " if source else "cost profile: "
    for key in data:
        if key not in ("name", "cpu", "description", "cost_ns"):
            raise ProfileError(f"{where}unknown key {key!r} (keys: name, cpu, description, [cost_ns])")
    name, cpu = data.get("name"), data.get("cpu", "")
    if not isinstance(name, str) or not name:
        raise ProfileError(f"{where}'name' is missing (a string, such as \"my-cpu\")")
    if not isinstance(cpu, str):
        raise ProfileError(f"{where}'cpu' must be a string")
    table = data.get("cost_ns")
    if not isinstance(table, dict):
        raise ProfileError(f"{where}the [cost_ns] table is missing: it gives every one of {', '.join(COSTS)}")
    for key in table:
        if key not in COSTS:
            raise ProfileError(f"{where}unknown cost 'cost_ns.{key}' (known: {', '.join(COSTS)})")
    cost_ns: dict[str, int] = {}
    for key in COSTS:
        if key not in table:
            raise ProfileError(f"{where}'cost_ns.{key}' is missing: give its cost in ns (0 for free)")
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ProfileError(f"{where}'cost_ns.{key}' must be a number of ns, not {value!r}")
        if not 0 <= value <= MAX_COST_NS:
            raise ProfileError(f"{where}'cost_ns.{key}' = {value} is not between 0 and {MAX_COST_NS} ns")
        cost_ns[key] = round(value)
    return Profile(name, cpu, cost_ns, source)


def format_ns(ns: int) -> str:
    """An emulated time, short: ``812 ns``, ``4.21 us``, ``3.50 ms``, ``1.234 s``."""
    if ns < 1_000:
        return f"{ns} ns"
    if ns < 1_000_000:
        return f"{ns / 1e3:.2f} us"
    if ns < 1_000_000_000:
        return f"{ns / 1e6:.2f} ms"
    return f"{ns / 1e9:.3f} s"


def slowdown(runtime_ns: int, paging_ns: int) -> float:
    """The slowdown against the same run with no limit: runtime / (runtime - paging) (docs/costs.md);
    1.0 for a run that has no time yet."""
    base = runtime_ns - paging_ns
    return runtime_ns / base if base > 0 else 1.0

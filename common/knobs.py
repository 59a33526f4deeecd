"""The SGX EPC cgroup series' constants as a host's parameters: ``Knobs``, V17's values by default.

The kernel builds them in (arch/x86/kernel/cpu/sgx/sgx.h and epc_cgroup.c); a host here
takes them as parameters so that a reviewer can ask "what if" (a smaller reclaim batch,
ksgxd waking later, no margin below a cgroup's limit, no async per-cgroup worker).  Any
value other than V17's is marked wherever a run's output could be taken for the kernel's
(``Knobs.mark()``).  Every layer reads them from here: the core, the wire, the commands.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from common.limits import MAX_PAGES
from common.units import shown

SGX_NR_TO_SCAN = 16  # pages isolated by one reclaim batch
SGX_NR_LOW_PAGES = 32  # ksgxd is woken below this many free pages
SGX_NR_HIGH_PAGES = 64  # ...and reclaims until this many are free
SGX_CG_MIN_FREE_PAGE = 32  # margin kept free below a cgroup's limit
SGX_CG_LOW_LIMIT = 128  # limits at or below this keep no margin

MAX_NR_TO_SCAN = 1024  # the kernel isolates a batch into an on-stack array: keep it modest


@dataclasses.dataclass(frozen=True, slots=True)
class Knobs:
    """The series' constants for one host, each checked: ValueError (one line) for a bad one.

    ``nr_to_scan`` (SGX_NR_TO_SCAN): pages one reclaim batch isolates, 1..1024.
    ``low_pages`` (SGX_NR_LOW_PAGES): an allocation leaving fewer free frames wakes ksgxd;
    ``high_pages`` (SGX_NR_HIGH_PAGES): ksgxd reclaims while fewer are free; 1 <= low < high.
    ``cg_margin`` (SGX_CG_MIN_FREE_PAGE): pages a cgroup's worker keeps free below its
    effective limit, 0 or more; ``cg_low_limit`` (SGX_CG_LOW_LIMIT): limits of at most
    this many pages keep no margin.  ``async_reclaim``: whether a fault's refused charge
    queues its cgroup's work item on sgx_cg_wq (False: it never does; only the caller's own
    reclaim, synchronous or direct, and ksgxd free pages).
    """

    nr_to_scan: int = SGX_NR_TO_SCAN
    low_pages: int = SGX_NR_LOW_PAGES
    high_pages: int = SGX_NR_HIGH_PAGES
    cg_margin: int = SGX_CG_MIN_FREE_PAGE
    cg_low_limit: int = SGX_CG_LOW_LIMIT
    async_reclaim: bool = True

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == "async_reclaim":
                if not isinstance(value, bool):
                    raise ValueError(f"knob async_reclaim: {shown(value)} is not true or false")
                continue
            low, high = BOUNDS[field.name]
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"knob {field.name}: {shown(value)} is not a whole number from {low} to {high}")
        if self.low_pages >= self.high_pages:
            raise ValueError(
                f"knobs low_pages ({self.low_pages}) and high_pages ({self.high_pages}):"
                " ksgxd wakes below low_pages and stops at high_pages, so low_pages must be below high_pages"
            )

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Knobs:
        """Knobs from names and values (a scenario's ``[knobs]``, a snapshot's ``knobs``); the rest
        V17's.  ValueError (one line) for an unknown name or a bad value."""
        for name in values:
            if name not in NAMES:
                raise ValueError(f"unknown knob {shown(str(name))}: the knobs are {', '.join(NAMES)}")
        return cls(**dict(values))

    def changed(self) -> dict[str, int | bool]:
        """The knobs that differ from V17's, by name, in field order; {} for the kernel's."""
        return {
            field.name: getattr(self, field.name)
            for field in dataclasses.fields(self)
            if getattr(self, field.name) != field.default
        }

    def short(self) -> str:
        """The changed knobs in a few words, e.g. ``nr_to_scan=4 async_reclaim=off``; "" for V17's."""
        return " ".join(f"{name}={_shown(value)}" for name, value in self.changed().items())

    def mark(self) -> str:
        """One line saying which knobs are not V17's, e.g. ``knobs (not the kernel's):
        nr_to_scan=4 (V17: 16), async_reclaim=off (V17: on)``; "" for V17's own values."""
        changed = self.changed()
        if not changed:
            return ""
        return "knobs (not the kernel's): " + ", ".join(
            f"{name}={_shown(value)} (V17: {_shown(getattr(V17, name))})" for name, value in changed.items()
        )


def _shown(value: int | bool) -> str:
    return ("on" if value else "off") if isinstance(value, bool) else str(value)


BOUNDS: dict[str, tuple[int, int]] = {
    "nr_to_scan": (1, MAX_NR_TO_SCAN),
    "low_pages": (1, MAX_PAGES),
    "high_pages": (2, MAX_PAGES),
    "cg_margin": (0, MAX_PAGES),
    "cg_low_limit": (0, MAX_PAGES),
}
NAMES = ("nr_to_scan", "low_pages", "high_pages", "cg_margin", "cg_low_limit", "async_reclaim")
V17 = Knobs()

"""The emulated SGX host core: EPC, misc/memory cgroups and reclaim, as the V17 series.

Standard library only, deterministic, no I/O: ``from engine import Host``.
"""

from common.knobs import Knobs
from engine.clock import MonotonicClock, VirtualClock
from engine.fault import Touched
from engine.host import Host
from engine.sgx import PAGE_SIZE, Blocked, IoctlError, SigBus

__all__ = ["PAGE_SIZE", "Blocked", "Host", "IoctlError", "Knobs", "MonotonicClock", "SigBus", "Touched", "VirtualClock"]

"""Small helpers shared by the core tests."""

from __future__ import annotations

from engine import PAGE_SIZE, Host


def value(host: Host, path: str) -> int:
    """The last number of a one-line cgroup file (``sgx_epc 4096`` -> 4096)."""
    return int(host.read(path).split()[-1])


def pages(host: Host, path: str) -> int:
    """misc.current (or any byte count) of ``path`` in pages."""
    return value(host, path) // PAGE_SIZE


def limit(host: Host, cgroup: str, npages: int) -> None:
    host.write(f"{cgroup.rstrip('/')}/misc.max", f"sgx_epc {npages * PAGE_SIZE}")


def place(host: Host, pid: int, cgroup: str) -> None:
    host.write(f"{cgroup.rstrip('/')}/cgroup.procs", str(pid))


def cgroups(host: Host, limits: dict[str, int], tasks: dict[int, str]) -> None:
    """mkdir each cgroup of ``limits`` in order, its misc.max that many pages (0: max), then each task placed."""
    for path, npages in limits.items():
        host.mkdir(path)
        if npages:
            limit(host, path, npages)
    for pid, path in tasks.items():
        place(host, pid, path)


def enclave(host: Host, pid: int, npages: int, *, init: bool = True, size_pages: int | None = None) -> int:
    """ECREATE (size: the next power of two above npages + 1), EADD npages REG pages, EINIT."""
    size = size_pages or 1 << max(1, npages.bit_length())
    eid = host.ecreate(pid, size * PAGE_SIZE)
    host.add_pages(pid, eid, npages)
    if init:
        host.einit(pid, eid)
    return eid


def resident(host: Host, eid: int) -> list[int]:
    """Indexes of the enclave's pages that hold an EPC frame."""
    return sorted(host.enclaves[eid].resident_indexes())

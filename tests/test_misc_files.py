"""The misc files, byte for byte, and writes to misc.max (reference section 2)."""

from __future__ import annotations

import errno

import pytest

from engine import Host, SigBus

from .helpers import enclave, limit, place, value


@pytest.fixture
def host() -> Host:
    h = Host("1MiB")
    h.mkdir("/a")
    return h


def test_formats_at_root_and_below(host: Host) -> None:
    assert host.read("/misc.capacity") == "sgx_epc 1048576\n"
    assert host.read("/misc.current") == "sgx_epc 0\n"
    assert host.read("/misc.peak") == "sgx_epc 0\n"
    assert host.read("/a/misc.current") == "sgx_epc 0\n"
    assert host.read("/a/misc.max") == "sgx_epc max\n"
    assert host.read("/a/misc.events") == "sgx_epc.max 0\n"
    assert host.read("/a/misc.events.local") == "sgx_epc.max 0\n"


def test_files_exist_only_where_the_kernel_has_them(host: Host) -> None:
    for missing in ("/misc.max", "/misc.events", "/misc.events.local", "/a/misc.capacity", "/memory.max"):
        with pytest.raises(OSError) as e:
            host.read(missing)
        assert e.value.errno == errno.ENOENT
    assert "misc.capacity" in host.listdir("/") and "misc.max" not in host.listdir("/")
    assert {"misc.max", "misc.events", "memory.max", "cgroup.procs"} <= set(host.listdir("/a"))


def test_max_stored_as_written_and_read_back(host: Host) -> None:
    host.write("/a/misc.max", "sgx_epc 5000")
    assert host.read("/a/misc.max") == "sgx_epc 5000\n"
    host.write("/a/misc.max", "  sgx_epc 0x1000\n")
    assert host.read("/a/misc.max") == "sgx_epc 4096\n"
    host.write("/a/misc.max", "sgx_epc 010")  # leading 0: octal
    assert host.read("/a/misc.max") == "sgx_epc 8\n"
    host.write("/a/misc.max", "sgx_epc +7")
    assert host.read("/a/misc.max") == "sgx_epc 7\n"
    host.write("/a/misc.max", "sgx_epc 99999999999999")  # may exceed capacity
    assert host.read("/a/misc.max") == "sgx_epc 99999999999999\n"
    host.write("/a/misc.max", "sgx_epc 0xffffffffffffffff")  # U64_MAX reads back as max
    assert host.read("/a/misc.max") == "sgx_epc max\n"
    host.write("/a/misc.max", "sgx_epc 12288")
    host.write("/a/misc.max", "sgx_epc max")
    assert host.read("/a/misc.max") == "sgx_epc max\n"


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("sgx_epc", errno.EINVAL),  # no value part
        ("sgx_epc ", errno.EINVAL),  # trimmed to no value
        ("", errno.EINVAL),
        ("bogus 4096", errno.EINVAL),  # unknown resource
        ("sev 4096", errno.EINVAL),  # known resource, no capacity here
        ("sgx_epc -1", errno.EINVAL),
        ("sgx_epc  4096", errno.EINVAL),  # two spaces: the value starts with one
        ("sgx_epc 4096 8192", errno.EINVAL),  # extra token
        ("sgx_epc\t4096", errno.EINVAL),  # split is at a space only
        ("sgx_epc 12k", errno.EINVAL),
        ("sgx_epc MAX", errno.EINVAL),
        ("sgx_epc 08", errno.EINVAL),  # not octal
        ("sgx_epc 0x", errno.EINVAL),
        ("sgx_epc 18446744073709551616", errno.ERANGE),  # 2**64
    ],
)
def test_bad_max_write_fails_with_kernel_errno_and_changes_nothing(host: Host, text: str, code: int) -> None:
    host.write("/a/misc.max", "sgx_epc 8192")
    events = len(host.events)
    with pytest.raises(OSError) as e:
        host.write("/a/misc.max", text)
    assert e.value.errno == code
    assert host.read("/a/misc.max") == "sgx_epc 8192\n"
    assert len(host.events) == events  # no "write" event for a failed write


def test_read_only_files_refuse_writes(host: Host) -> None:
    for path in ("/a/misc.current", "/a/misc.events", "/misc.capacity", "/a/misc.peak"):
        with pytest.raises(OSError) as e:
            host.write(path, "sgx_epc 0")
        assert e.value.errno == errno.EACCES


def test_capacity_zero_hides_sgx_epc_and_refuses_max() -> None:
    host = Host(0)
    host.mkdir("/a")
    assert host.read("/misc.capacity") == ""
    assert host.read("/misc.current") == ""
    assert host.read("/a/misc.max") == ""
    assert host.read("/a/misc.events") == ""
    with pytest.raises(OSError) as e:
        host.write("/a/misc.max", "sgx_epc 4096")
    assert e.value.errno == errno.EINVAL  # why the selftest skips without SGX cgroup support


def test_current_is_hierarchical_and_peak_is_a_watermark(host: Host) -> None:
    host.mkdir("/a/b")
    place(host, 10, "/a/b")
    eid = enclave(host, 10, 20)  # 20 REG + SECS + 1 VA
    assert host.read("/a/b/misc.current") == f"sgx_epc {22 * 4096}\n"
    assert host.read("/a/misc.current") == f"sgx_epc {22 * 4096}\n"
    assert host.read("/misc.current") == f"sgx_epc {22 * 4096}\n"
    host.release(eid)
    assert host.read("/a/misc.current") == "sgx_epc 0\n"
    assert host.read("/a/misc.peak") == f"sgx_epc {22 * 4096}\n"  # cannot be reset
    host.check()


def test_peak_raised_at_a_child_even_when_an_ancestor_refuses(host: Host) -> None:
    """misc.c raises each level's watermark as that level's add succeeds [inference]."""
    host.mkdir("/a/b")
    limit(host, "/a", 3)
    place(host, 10, "/a/b")
    host.ecreate(10, 8192)  # VA + SECS: 2 pages
    host.vepc_open(10, 4 * 4096)
    host.vepc_access(10, host._next_id - 1, 0, 1)  # a third page
    assert value(host, "/a/b/misc.peak") == 3 * 4096
    with pytest.raises(SigBus):  # nothing reclaimable: vEPC pages never are
        host.vepc_access(10, host._next_id - 1, 1, 1)
    assert value(host, "/a/b/misc.peak") == 4 * 4096  # b's add succeeded before a refused
    assert value(host, "/a/misc.peak") == 3 * 4096
    assert value(host, "/a/b/misc.current") == 3 * 4096
    host.check()


def test_capacity_zero_allocations_fail_einval_and_count_no_event() -> None:
    host = Host(0)
    host.mkdir("/a")
    host.write("/a/cgroup.procs", "5")
    with pytest.raises(OSError) as e:
        host.ecreate(5, "1MiB")
    assert e.value.errno == errno.EINVAL
    assert host.read("/a/misc.events") == "" and host.read("/a/misc.events.local") == ""
    host.check()


def test_overflow_is_erange_even_with_trailing_garbage(host: Host) -> None:
    with pytest.raises(OSError) as e:
        host.write("/a/misc.max", "sgx_epc 99999999999999999999x")
    assert e.value.errno == errno.ERANGE


def test_tdx_is_an_unknown_resource_on_v17_so_its_write_is_einval_before_the_value_is_parsed(host: Host) -> None:
    """The V17 series' misc.c knows sev, sev_es and sgx_epc; tdx came to mainline later.
    misc_cg_max_write() looks the name up before it parses the value: an unknown name is
    EINVAL even with a value too big for u64, while a known one without capacity (sev) gets
    that value's ERANGE first and EINVAL for a good value."""
    host.write("/a/misc.max", "sgx_epc 8192")
    for text, code in (
        ("tdx 4096", errno.EINVAL),
        ("tdx max", errno.EINVAL),
        ("tdx 18446744073709551616", errno.EINVAL),  # unknown before ERANGE
        ("sev 18446744073709551616", errno.ERANGE),  # known: parsed, then refused for no capacity
        ("sev_es max", errno.EINVAL),
    ):
        with pytest.raises(OSError) as e:
            host.write("/a/misc.max", text)
        assert e.value.errno == code, text
    assert host.read("/a/misc.max") == "sgx_epc 8192\n"


def test_resources_without_capacity_show_in_no_file(host: Host) -> None:
    """sev and sev_es have no capacity here and nothing charges them: misc.c prints a resource
    only when it has capacity (max, capacity) or a non-zero count (current, peak, events)."""
    for path in ("/misc.capacity", "/misc.current", "/misc.peak"):
        assert [line.split()[0] for line in host.read(path).splitlines()] == ["sgx_epc"], path
    for name in ("misc.current", "misc.peak", "misc.max", "misc.events", "misc.events.local"):
        assert [line.split()[0] for line in host.read(f"/a/{name}").splitlines()] in (["sgx_epc"], ["sgx_epc.max"])

"""A stand-in for the kernel selftest binary ``test_sgx`` (README, "cgroupfs mount and test_sgx"), as cgroups see it.

``test_sgx -t unclobbered_vdso_oversubscribed``: one enclave whose heap is the whole
EPC capacity (plus the test's TCS and code/data pages), built in the caller's cgroup
(ECREATE, ADD_PAGES, EINIT), entered, released; ``..._remove`` also trims and removes
the heap first.  Output is the kselftest harness's TAP; the exit status is the
workload's: 0 ok, 1 an ioctl error such as ENOMEM, killed by
SIGBUS on a fault the host cannot serve or by SIGKILL from the OOM killer, 2 for an
unknown test name, no engine or an engine that went away.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the workload modules load zmq: only when a test runs, not for --help
    from workloads.client import EngineClient

EXIT_OK, EXIT_USAGE = 0, 2
DESCRIPTION = (
    "Run a test of the kernel selftest binary test_sgx as cgroups see it: unclobbered_vdso_oversubscribed "
    "builds an enclave whose heap is the whole EPC in the caller's cgroup, initialises and enters it; "
    "..._remove also trims and removes the heap. Exit status: 0 passed, 1 an errno (e.g. ENOMEM), killed by "
    "SIGBUS or by the OOM killer's SIGKILL, 2 unknown test, no engine or an engine that went away."
)
FIXTURE = "enclave"  # the harness's fixture name: tests are reported as enclave.NAME
TESTS = {  # name -> what it checks
    "unclobbered_vdso_oversubscribed": "an enclave with a heap of the whole EPC: built, initialised, entered",
    "unclobbered_vdso_oversubscribed_remove": "the same, then its heap trimmed and removed (SGX2 EDMM)",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-t", dest="test", metavar="NAME", help="the test to run (exact name; -l lists them)")
    parser.add_argument("-l", dest="list_tests", action="store_true", help="list the tests and exit")
    parser.add_argument("--connect", metavar="EP", help="the engine's endpoint (default: discover it)")
    parser.set_defaults(prog=parser.prog)  # test_sgx, or epc-playground test-sgx: what its errors start with


def add_parser(sub: Any) -> None:
    """``epc-playground test-sgx``."""
    sgx = sub.add_parser(
        "test-sgx",
        help="a stand-in for the kernel selftest binary test_sgx",
        description=DESCRIPTION + " Also installed as `test_sgx`.",
        epilog="example (what the selftest's ash_cgexec.sh does):\n"
        "  sh -c 'echo 0 > /sys/fs/cgroup/pod/cgroup.procs && exec test_sgx -t unclobbered_vdso_oversubscribed'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(sgx)
    sgx.set_defaults(handler=run)


def oversubscribed(client: EngineClient, remove: bool) -> None:
    """The test's enclave: a heap of the whole EPC, so it only fits by reclaim; EngineError on any failure."""
    from workloads.enclave import EnclavePlan, run_enclave

    plan = EnclavePlan(client.capacity, passes=0, entries=2)  # entered twice: TCS and code/data, not the heap
    if remove:
        plan.trim_pages = plan.heap_pages
    run_enclave(client, plan)


def run(args: argparse.Namespace) -> int:
    if args.list_tests:
        for name in TESTS:
            print(f"{FIXTURE}.{name}")
        return EXIT_OK
    if args.test not in TESTS:
        what = f"no test {args.test!r}" if args.test else "no test named (-t NAME)"
        print(f"{args.prog}: {what}: the tests are {', '.join(TESTS)}", file=sys.stderr)
        return EXIT_USAGE
    from workloads.process import run_workload

    name = f"{FIXTURE}.{args.test}"
    started = False

    def test(client: EngineClient) -> None:
        nonlocal started  # the harness's TAP starts once there is an engine to test on
        started = True
        print(f"TAP version 13\n1..1\n# Starting 1 tests from 1 test cases.\n#  RUN           {name} ...", flush=True)
        oversubscribed(client, remove=args.test.endswith("_remove"))

    status = run_workload(test, endpoint=args.connect, role="enclave", name="test_sgx", prog=args.prog)
    if not started:  # no engine: one line on stderr said so, and no TAP
        return status
    verdict = "OK" if status == EXIT_OK else "FAIL"
    print(f"# {verdict:>12}  {name}\n{'ok' if status == EXIT_OK else 'not ok'} 1 {name}", flush=True)
    print(f"# {'PASSED' if status == EXIT_OK else 'FAILED'}: {int(status == EXIT_OK)} / 1 tests passed.", flush=True)
    return status


def main(argv: list[str] | None = None) -> int:
    """The installed ``test_sgx`` entry point."""
    parser = argparse.ArgumentParser(prog="test_sgx", description=DESCRIPTION)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

"""Hostile but valid requests over the wire, from several real processes, with `check` after each.

A hypothesis state machine sends requests that pass the protocol's schema (every op,
arguments anywhere in their allowed ranges, enclave ids of its own and of others) from
three client processes (tests.puppet) that say hello with their own pids, kills and
replaces them now and then, and after every request asks the engine to verify every
invariant.  No request may get an internal error or go unanswered.  The engine runs
under a 2 GiB address-space limit, so a request that makes it allocate without bound
(a sparse EAUG at a huge index did, C2) fails inside it instead of taking the machine.
Issue 10: "Nothing a valid request carries corrupts state".
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from wire import protocol
from workloads.client import EngineClient, NoEngine

from .puppet import Puppet

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
ADDRESS_SPACE = 2 << 30
CLIENTS = 3

PATHS = ["/", "/w", "/w/x", "/m", "/new", "/w/x/y", "/nope/z", "/" + "n" * 300]
FILES = ["misc.max", "memory.max", "cgroup.procs", "cgroup.subtree_control", "misc.current", "misc.events"]
VALUES = ["sgx_epc 1048576", "sgx_epc max", "sgx_epc 0", "sgx_epc 0x1000", "tdx 1", "sgx_epc -1", "max", "0",
          "65536", "+misc", "-memory", "x" * min(5000, protocol.MAX_VALUE),
          "sgx_epc 99999999999999999999999"]  # fmt: skip


def _biased(high: int) -> st.SearchStrategy[int]:
    """Integers in 0..high: small ones, the edges, and anywhere."""
    powers = st.integers(0, high.bit_length() - 1).map(lambda k: (1 << k) - 1)
    return st.one_of(st.integers(0, 64), st.sampled_from([high, high - 1, high // 2]), powers, st.integers(0, high))


MAX_BITS = protocol.MAX_SIZE.bit_length() - 1  # the largest enclave, as a power of two
HANDLES = st.one_of(st.integers(1, 20), st.integers(1, protocol.MAX_ID))
RANGES = st.lists(st.tuples(_biased(protocol.MAX_PAGES - 1), st.integers(1, 600)), min_size=1, max_size=4)


@pytest.fixture
def fuzz_engine() -> Iterator[tuple[subprocess.Popen[str], str]]:
    directory = tempfile.mkdtemp(prefix="epc-fuzz.")
    endpoint = f"ipc://{directory}/e.sock"
    env = {**os.environ, "XDG_RUNTIME_DIR": directory, "PYTHONPATH": str(ROOT)}
    env.pop("EPC_PLAYGROUND_ENDPOINT", None)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))

    engine = subprocess.Popen(
        [sys.executable, "-m", "playground.cli", "engine", "--bind", endpoint, "--capacity", "32MiB"],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=limit,
    )  # fmt: skip
    assert engine.stdout is not None and "serving" in engine.stdout.readline()
    with EngineClient(endpoint) as client:
        for path in ("/w", "/w/x", "/m"):
            client.mkdir(path)
        client.write("/w/misc.max", "sgx_epc 2097152")
        client.write("/m/memory.max", "262144")
    try:
        yield engine, endpoint
    finally:
        if engine.poll() is None:
            engine.kill()
        engine.communicate(timeout=20)
        shutil.rmtree(directory, ignore_errors=True)


def connect(endpoint: str, patience_s: float = 60.0) -> EngineClient:
    """A client of the fuzz engine.  Its first ping may take longer than the client's 5 s while
    the engine still deals with the last example's killed puppets on a loaded machine (seen with
    three pytest workers on two shared cores): it is tried again, for up to ``patience_s``."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            return EngineClient(endpoint, timeout_s=120)
        except NoEngine:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class WireMachine(RuleBasedStateMachine):
    endpoint = ""

    @initialize()
    def start(self) -> None:
        self.client = connect(self.endpoint)
        self.puppets = [self._puppet() for _ in range(CLIENTS)]
        self.handles: dict[str, list[list[int]]] = {
            "eid": [[] for _ in range(CLIENTS)],
            "vid": [[] for _ in range(CLIENTS)],
        }

    def _puppet(self) -> Puppet:
        puppet = Puppet(self.endpoint)
        where = ["/", "/w/x", "/m"][puppet.pid % 3]
        puppet.ok("write", path=f"{where.rstrip('/')}/cgroup.procs", value="0")
        puppet.ok("hello", pid=puppet.pid, role="enclave")
        return puppet

    def _send(self, who: int, op: str, **args: Any) -> dict[str, Any]:
        try:
            reply = self.puppets[who].send(op, **args)
        except EOFError:  # the OOM killer chose this client (the clients in /m pay for backing)
            assert self.puppets[who].process.wait(5) == -signal.SIGKILL, f"client died during {op} {args}"
            self.puppets[who] = self._puppet()
            self._forget(who)
            return {}
        assert "timeout" not in reply, f"no reply to {op} {args}"
        assert not (reply.get("err") == "EIO" and "internal error" in reply.get("msg", "")), (op, args, reply)
        assert reply.get("err") != "EPROTO", (op, args, reply)  # every request here is valid by schema
        result = reply.get("ok")
        if isinstance(result, dict):
            for kind in ("eid", "vid"):
                if kind in result:
                    self.handles[kind][who].append(result[kind])
        return reply

    def _forget(self, who: int) -> None:
        for ids in self.handles.values():
            ids[who] = []

    def _handle(self, data: st.DataObject, who: int, kind: str = "eid") -> int:
        """One of this client's newest ids, any it has, another client's, or any id at all.  The draws
        do not depend on the engine's answers, so hypothesis can replay them."""
        how, pick, anything = data.draw(st.tuples(st.integers(0, 3), st.integers(0, 1 << 16), HANDLES))
        mine, every = self.handles[kind][who], [h for hs in self.handles[kind] for h in hs]
        if how == 0 and mine:
            return mine[-1 - pick % min(len(mine), 2)]
        if how == 1 and mine:
            return mine[pick % len(mine)]
        if how == 2 and every:
            return every[pick % len(every)]
        return anything

    @rule(who=st.integers(0, CLIENTS - 1), size=st.one_of(st.integers(13, 43).map(lambda b: 1 << b),
                                                         st.integers(4096, protocol.MAX_SIZE)))  # fmt: skip
    def ecreate(self, who: int, size: int) -> None:
        self._send(who, "ecreate", size=size)

    @rule(who=st.integers(0, CLIENTS - 1), bits=st.one_of(st.integers(13, 30), st.integers(13, MAX_BITS),
                                                         st.integers(MAX_BITS - 8, MAX_BITS)),
          pages=st.integers(1, 64))  # fmt: skip
    def build(self, who: int, bits: int, pages: int) -> None:
        """An enclave as a program builds one: ECREATE, EADD, EINIT."""
        eid = self._send(who, "ecreate", size=1 << bits).get("ok", {}).get("eid")
        if eid is not None:
            self._send(who, "add_pages", eid=eid, count=min(pages, (1 << bits >> 12) - 1) or 1, kind="TCS")
            self._send(who, "einit", eid=eid)

    @rule(who=st.integers(0, CLIENTS - 1), k=st.one_of(st.integers(0, 30), st.integers(20, MAX_BITS - 12)),
          write=st.booleans())  # fmt: skip
    def touch_far(self, who: int, k: int, write: bool) -> None:
        """A fault far into the newest enclave of this client: an EAUG at a sparse index when it is big."""
        if self.handles["eid"][who]:
            self._send(who, "access", eid=self.handles["eid"][who][-1], ranges=[[(1 << k) - 1, 1]], write=write)

    @rule(who=st.integers(0, CLIENTS - 1), data=st.data(), count=_biased(protocol.MAX_PAGES),
          kind=st.sampled_from(["REG", "TCS"]))  # fmt: skip
    def add_pages(self, who: int, data: st.DataObject, count: int, kind: str) -> None:
        self._send(who, "add_pages", eid=self._handle(data, who), count=max(count, 1), kind=kind)

    @rule(who=st.integers(0, CLIENTS - 1), data=st.data())
    def einit(self, who: int, data: st.DataObject) -> None:
        self._send(who, "einit", eid=self._handle(data, who))

    @rule(who=st.integers(0, CLIENTS - 1), data=st.data(), vepc=st.booleans(),
          ranges=RANGES)  # fmt: skip
    def access(self, who: int, data: st.DataObject, vepc: bool, ranges: list[tuple[int, int]]) -> None:
        pairs = [[first, count] for first, count in ranges]
        if vepc:
            self._send(who, "vepc_access", vid=self._handle(data, who, "vid"), ranges=pairs)
        else:
            self._send(who, "access", eid=self._handle(data, who), ranges=pairs, write=data.draw(st.booleans()))

    @rule(who=st.integers(0, CLIENTS - 1), data=st.data(), count=st.integers(1, 600))
    def augment(self, who: int, data: st.DataObject, count: int) -> None:
        self._send(who, "augment", eid=self._handle(data, who), count=count)

    @rule(who=st.integers(0, CLIENTS - 1), data=st.data(), first=_biased(protocol.MAX_PAGES - 1),
          count=st.integers(1, 300))  # fmt: skip
    def remove_pages(self, who: int, data: st.DataObject, first: int, count: int) -> None:
        self._send(who, "remove_pages", eid=self._handle(data, who), first=first, count=count)

    @rule(who=st.integers(0, CLIENTS - 1), data=st.data(), first=_biased(protocol.MAX_PAGES - 1),
          count=st.integers(1, 300), op=st.sampled_from(["modify_types", "restrict_permissions", "remove_trimmed"]),
          kind=st.sampled_from(["TRIM", "TCS", "REG"]))  # fmt: skip
    def edmm(self, who: int, data: st.DataObject, first: int, count: int, op: str, kind: str) -> None:
        args = {"kind": kind} if op == "modify_types" else {}
        self._send(who, op, eid=self._handle(data, who), first=first, count=count, **args)

    @rule(who=st.integers(0, CLIENTS - 1), data=st.data(), vepc=st.booleans())
    def release(self, who: int, data: st.DataObject, vepc: bool) -> None:
        if vepc:
            self._send(who, "vepc_release", vid=self._handle(data, who, "vid"))
        else:
            self._send(who, "release", eid=self._handle(data, who))

    @rule(who=st.integers(0, CLIENTS - 1), size=st.one_of(st.integers(1, 2048).map(lambda p: p * 4096),
                                                         st.integers(4096, protocol.MAX_SIZE)))  # fmt: skip
    def vepc_open(self, who: int, size: int) -> None:
        self._send(who, "vepc_open", size=size)

    @rule(who=st.integers(0, CLIENTS - 1), path=st.sampled_from(PATHS), name=st.sampled_from(FILES),
          value=st.sampled_from(VALUES))  # fmt: skip
    def write(self, who: int, path: str, name: str, value: str) -> None:
        self._send(who, "write", path=f"{path.rstrip('/')}/{name}", value=value)

    @rule(who=st.integers(0, CLIENTS - 1), path=st.sampled_from(PATHS), make=st.booleans())
    def mkdir_rmdir(self, who: int, path: str, make: bool) -> None:
        if path in ("/w", "/w/x", "/m"):
            return  # keep the fixture's cgroups
        self._send(who, "mkdir" if make else "rmdir", path=path)

    @rule(who=st.integers(0, CLIENTS - 1), pid=st.one_of(st.integers(1, protocol.MAX_PID), st.just(1)),
          role=st.sampled_from(["enclave", "vm", "client"]))  # fmt: skip
    def hello_as_another(self, who: int, pid: int, role: str) -> None:
        if pid != self.puppets[who].pid:
            assert self._send(who, "hello", pid=pid, role=role)["err"] == "EPERM"

    @rule(who=st.integers(0, CLIENTS - 1))
    def kill_and_replace(self, who: int) -> None:
        self.puppets[who].kill()
        self.puppets[who] = self._puppet()
        self._forget(who)

    @invariant()
    def host_is_consistent(self) -> None:
        if hasattr(self, "client"):
            assert self.client.call("check") == "ok"

    def teardown(self) -> None:
        for puppet in getattr(self, "puppets", []):
            puppet.kill()
        if hasattr(self, "client"):
            self.client.close()


def test_no_valid_request_corrupts_the_engine(fuzz_engine: tuple[subprocess.Popen[str], str]) -> None:
    engine, endpoint = fuzz_engine
    WireMachine.endpoint = endpoint
    runner = WireMachine.TestCase
    budget = settings.get_profile(f"{settings.get_current_profile_name()}-engine")  # tests/conftest.py
    examples = int(os.environ.get("EPC_FUZZ_EXAMPLES", budget.max_examples))  # EPC_FUZZ_EXAMPLES=500: a long fuzz
    runner.settings = settings(budget, max_examples=examples, derandomize=True)
    runner("runTest").runTest()
    with EngineClient(endpoint) as client:  # every client is gone: nothing may stay charged
        deadline = time.monotonic() + 10
        while client.read("/misc.current") != "sgx_epc 0\n" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.read("/misc.current") == "sgx_epc 0\n"
        assert client.call("check") == "ok"
    engine.terminate()
    _, err = engine.communicate(timeout=20)
    assert engine.returncode == 0, err[-3000:]
    assert "internal error" not in err and "Traceback" not in err, err[-3000:]

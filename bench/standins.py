"""Many cheap registered workloads: one parent process that forks them, each registering itself.

The engine takes a workload's pid from the kernel (the socket's peer credentials), so
a stand-in must be a process of its own that says hello itself.  Forking them from one
parent that imported zmq and msgpack (but made no zmq context before forking) costs a
few milliseconds and a few hundred KiB each, where a Python process each would cost
tens of MiB.  Each child moves itself to its cgroup, says hello, builds one small
enclave, reports ready and sleeps until the parent goes.

``python -m bench.standins ENDPOINT PAGES CGROUP...`` (one child per CGROUP argument);
``start(endpoint, cgroups, pages)`` does that and waits until all are ready.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import msgpack
import zmq


def _child(endpoint: str, cgroup: str, pages: int, ready_fd: int) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(endpoint)

    def call(op: str, **args: object) -> object:
        sock.send(msgpack.packb({"v": 1, "id": 1, "op": op, **args}))
        if not sock.poll(30_000):
            os._exit(3)
        reply = msgpack.unpackb(sock.recv())
        if "err" in reply:
            os.write(2, f"stand-in {os.getpid()}: {op}: {reply['err']} {reply.get('msg')}\n".encode())
            os._exit(1)
        return reply.get("ok")

    call("write", path=f"{cgroup.rstrip('/')}/cgroup.procs", value="0")
    call("hello", pid=os.getpid(), role="enclave", name=f"standin-{os.getpid()}")
    eid = call("ecreate", size=max(2, 1 << (pages + 1).bit_length()) * 4096)["eid"]  # type: ignore[index]
    call("add_pages", eid=eid, count=pages)
    os.write(ready_fd, b"r")
    while os.getppid() != 1:  # the parent went away: so do we
        time.sleep(0.5)
    os._exit(0)


def main(endpoint: str, pages: int, cgroups: list[str]) -> None:
    read_fd, ready_fd = os.pipe()
    children = []
    for cgroup in cgroups:
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            _child(endpoint, cgroup, pages, ready_fd)
        children.append(pid)
    os.close(ready_fd)
    ready = 0
    while ready < len(children):
        got = os.read(read_fd, 4096)
        if not got:
            break
        ready += len(got)
    print("ready" if ready == len(children) else f"only {ready} of {len(children)} ready", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        sys.stdin.read()  # until our parent closes it (or kills us)
    finally:
        for pid in children:
            os.kill(pid, signal.SIGKILL)
        for pid in children:
            os.waitpid(pid, 0)


def start(endpoint: str, cgroups: list[str], pages: int = 8) -> subprocess.Popen[str]:
    """One stand-in per entry of ``cgroups``, all registered when this returns; stop() them after."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.standins", endpoint, str(pages), *cgroups],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=repo,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != "ready":
        stop(proc)
        raise RuntimeError(f"stand-ins did not start: {line or proc.poll()}")
    return proc


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3:])

"""End to end over ipc: the engine process against a raw pyzmq echo, measured in the same run.

1. Lock-step single-page requests (an access to one resident page) against a raw
   DEALER/ROUTER echo of a frame of the same size: req/s and the ratio (target >= 0.8x).
2. Batched faults from 4 workload processes: each faults its swapped-out heap back in
   batches of 256 pages under a cgroup limit, so every fault also reclaims: pages/s in
   all (target >= 400k pages/s).
3. Single-page fault latency with every allocation reclaiming against none: p99 ratio
   (target <= 1.1x).

``.venv/bin/python bench/e2e.py [--quick] [--json FILE]``
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import zmq

from bench import _common
from playground.launch import start_engine_process
from wire import protocol
from workloads.client import EngineClient

MiB = 1 << 20
PAGE = 4096


SERVER_CPUS: set[int] | None = None  # --pin: servers on CPU 1, this client on CPU 0


def start_engine(directory: str, capacity: str) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "XDG_RUNTIME_DIR": directory, "PYTHONPATH": str(_common.REPO)}
    return start_engine_process(["--capacity", capacity], env, cpus=SERVER_CPUS)  # type: ignore[no-any-return]


def _echo_server(endpoint: str, cpus: set[int] | None) -> None:
    if cpus:
        os.sched_setaffinity(0, cpus)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.bind(endpoint)
    while True:
        frames = sock.recv_multipart()
        if frames[-1] == b"stop":
            break
        sock.send_multipart(frames)
    sock.close(linger=0)
    ctx.term()


def raw_echo_rate(directory: str, n: int, frame: bytes) -> float:
    endpoint = f"ipc://{directory}/echo.sock"
    server = multiprocessing.get_context("spawn").Process(target=_echo_server, args=(endpoint, SERVER_CPUS))
    server.start()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(endpoint)
    for _ in range(200):  # warm up, and wait for the server
        sock.send(frame)
        sock.recv()
    start = time.perf_counter()
    for _ in range(n):
        sock.send(frame)
        sock.recv()
    elapsed = time.perf_counter() - start
    sock.send(b"stop")
    server.join(5)
    sock.close()
    ctx.term()
    return n / elapsed


def engine_lockstep_rate(endpoint: str, n: int) -> float:
    with EngineClient(endpoint) as client:
        client.hello("enclave", "lockstep")
        eid = client.call("ecreate", size=64 * PAGE)["eid"]
        client.call("add_pages", eid=eid, count=16)
        client.call("einit", eid=eid)
        for _ in range(200):
            client.call("access", eid=eid, ranges=[[3, 1]])
        start = time.perf_counter()
        for _ in range(n):
            client.call("access", eid=eid, ranges=[[3, 1]])
        elapsed = time.perf_counter() - start
        client.call("release", eid=eid)
    return n / elapsed


def _fault_worker(endpoint: str, heap_pages: int, pressure: bool, seconds: float, go: Any, out: Any) -> None:
    """Build an enclave whose heap is all swapped out, then fault it back in 256-page batches.

    Without ``pressure`` the cgroup's limit is lifted before the clock starts, so faults
    only load pages back (one pass); with it every fault also makes the cgroup reclaim.
    """
    cgroup = f"/faults-{os.getpid()}"
    with EngineClient(endpoint, timeout_s=None) as client:
        client.mkdir(cgroup)
        client.write(f"{cgroup}/misc.max", f"sgx_epc {256 * PAGE}")  # room for the VA pages, not the heap
        client.write(f"{cgroup}/cgroup.procs", str(os.getpid()))
        client.hello("enclave", f"faulter-{os.getpid()}")
        eid = client.call("ecreate", size=1 << (heap_pages * PAGE * 2 - 1).bit_length())["eid"]
        client.call("add_pages", eid=eid, count=heap_pages)
        client.call("einit", eid=eid)
        client.call("access", eid=eid, ranges=[[0, 1]])
        limit = heap_pages * PAGE // 4 if pressure else None
        client.write(f"{cgroup}/misc.max", f"sgx_epc {limit}" if limit else "sgx_epc max")
        go.wait()
        pages = 0
        start = time.perf_counter()
        deadline = start + seconds
        while True:
            for first in range(0, heap_pages, 256):
                pages += client.call("access", eid=eid, ranges=[[first, 256]])["faults"]
            if not pressure or time.perf_counter() >= deadline:
                break
        out.put((pages, time.perf_counter() - start))
        client.call("release", eid=eid)


def batched_fault_rate(endpoint: str, procs: int, heap_pages: int, pressure: bool, seconds: float) -> dict[str, float]:
    ctx = multiprocessing.get_context("spawn")
    go, out = ctx.Event(), ctx.Queue()
    args = (endpoint, heap_pages, pressure, seconds, go, out)
    workers = [ctx.Process(target=_fault_worker, args=args) for _ in range(procs)]
    for w in workers:
        w.start()
    with EngineClient(endpoint) as client:
        while len([w for w in client.snapshot()["workloads"] if w["state"] == "running"]) < procs:
            time.sleep(0.05)
    time.sleep(0.2 + procs * heap_pages / 100_000)  # let them finish building
    go.set()
    results = [out.get(timeout=300) for _ in workers]
    for w in workers:
        w.join(30)
    pages = sum(p for p, _ in results)
    return {"pages_per_s": pages / max(t for _, t in results), "faults": pages}


def fault_latencies(endpoint: str, n: int, reclaim: bool) -> list[float]:
    """Single-page faults on swapped pages; with ``reclaim`` the cgroup is at its limit for each one."""
    path = "/lat-reclaim" if reclaim else "/lat-free"
    heap = 4096
    with EngineClient(endpoint) as client:
        client.mkdir(path)
        client.write(f"{path}/cgroup.procs", str(os.getpid()))
        client.hello("enclave", path)
        eid = client.call("ecreate", size=2 * heap * PAGE)["eid"]
        client.call("add_pages", eid=eid, count=heap)
        client.call("einit", eid=eid)
        # Every page out to backing: a limit of a few pages, one touch, then the real limit.
        client.write(f"{path}/misc.max", f"sgx_epc {64 * PAGE}")
        client.call("access", eid=eid, ranges=[[0, heap]])
        client.write(f"{path}/misc.max", f"sgx_epc {64 * PAGE}" if reclaim else "sgx_epc max")
        samples = []
        for i in range(n):
            page = (i * 7) % heap
            start = time.perf_counter()
            client.call("access", eid=eid, ranges=[[page, 1]])
            samples.append(time.perf_counter() - start)
        client.call("release", eid=eid)
        client.write("/cgroup.procs", str(os.getpid()))
    return samples


def p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[98]


def main() -> None:
    p = _common.parser("The engine end to end over ipc, each figure against a baseline measured in the same run.")
    p.add_argument(
        "--no-pin",
        action="store_true",
        help="let the scheduler place the processes (default: servers on CPU 1, the lock-step client on CPU 0)",
    )
    args = p.parse_args()
    global SERVER_CPUS
    pinned = not args.no_pin and (os.cpu_count() or 1) >= 2
    if pinned:
        SERVER_CPUS = {1}
        os.sched_setaffinity(0, {0})
    n, seconds, heap, rounds = (3_000, 1.0, 8192, 1) if args.quick else (20_000, 3.0, 32768, 3)
    info = _common.machine()
    _common.print_header("e2e: the engine over ipc, against raw pyzmq in the same run", info)
    results: dict[str, Any] = {"benchmark": "e2e", "machine": info}
    with tempfile.TemporaryDirectory(prefix="epc-bench-") as directory:
        engine, endpoint = start_engine(directory, "1GiB")
        try:
            frame = protocol.request("access", 1, eid=1, ranges=[[3, 1]])
            ratios, raw_rates, engine_rates = [], [], []
            for _ in range(rounds):
                raw = raw_echo_rate(directory, n, frame)
                mine = engine_lockstep_rate(endpoint, n)
                raw_rates.append(raw)
                engine_rates.append(mine)
                ratios.append(mine / raw)
            ratio = statistics.median(ratios)
            placement = "engine and echo on CPU 1, client on CPU 0" if pinned else "placed by the scheduler"
            print(f"-- 1. lock-step single-page requests ({placement})")
            _common.print_table(
                ["", "req/s", "us/req"],
                [
                    ["raw DEALER/ROUTER echo", statistics.median(raw_rates), 1e6 / statistics.median(raw_rates)],
                    [
                        "engine: access of 1 page",
                        statistics.median(engine_rates),
                        1e6 / statistics.median(engine_rates),
                    ],
                ],
            )
            print(f"  engine / raw echo = {ratio:.2f}x  (target >= 0.8x): {'ok' if ratio >= 0.8 else 'MISSED'}")
            results["lockstep"] = {"raw": raw_rates, "engine": engine_rates, "ratio": ratio, "pinned": pinned}
            if pinned:
                os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))  # the workload processes: anywhere

            faults = batched_fault_rate(endpoint, 4, heap, False, seconds)
            pressed = batched_fault_rate(endpoint, 4, heap // 4, True, seconds)
            ok = faults["pages_per_s"] >= 400_000
            print("-- 2. batched faults, 4 workload processes, 256 pages per request")
            _common.print_table(
                ["", "faults/s", "faults"],
                [
                    ["swapped heap loaded back", faults["pages_per_s"], faults["faults"]],
                    ["at a limit: each fault reclaims", pressed["pages_per_s"], pressed["faults"]],
                ],
            )
            print(f"  loading back: target >= 400,000 pages/s: {'ok' if ok else 'MISSED'}")
            results["batched_faults"] = {"no_pressure": faults, "pressure": pressed}

            with_reclaim, without = [], []
            for _ in range(rounds):
                without.append(p99(fault_latencies(endpoint, n // 2, reclaim=False)))
                with_reclaim.append(p99(fault_latencies(endpoint, n // 2, reclaim=True)))
                for path in ("/lat-free", "/lat-reclaim"):
                    with EngineClient(endpoint) as client:
                        client.rmdir(path)
            lat_ratio = statistics.median(w / o for w, o in zip(with_reclaim, without, strict=True))
            print("-- 3. single-page fault latency, p99")
            _common.print_table(
                ["", "p99 us"],
                [
                    ["no reclaim", statistics.median(without) * 1e6],
                    ["every fault reclaims", statistics.median(with_reclaim) * 1e6],
                ],
            )
            verdict = "ok" if lat_ratio <= 1.1 else "MISSED"
            print(f"  with / without reclaim = {lat_ratio:.2f}x  (target <= 1.1x): {verdict}")
            results["fault_p99"] = {"without_s": without, "with_s": with_reclaim, "ratio": lat_ratio}
        finally:
            engine.terminate()
            engine.wait(10)
    _common.write_json(args.json, results)


if __name__ == "__main__":
    main()

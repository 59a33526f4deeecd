"""The reliability soak (issue 10): hostile frames and random kills against one engine, checked after each batch.

One engine (64 MiB of EPC, under RLIMIT_AS of 3 GiB, in a private runtime directory)
with /k/a 8 MiB, /k/b 12 MiB, /k/m 8 MiB and memory.max 4 MiB (the OOM path), /k/v
16 MiB for VMs, and root unlimited.  Two things at once:

- Kill soak (bench/soak_batch.py): batches of 20 real workload processes, forked from
  a pre-imported forkserver (bench/soak_forkserver.py), each moving itself into its
  cgroup (--cgroup) and saying hello itself; each gets SIGKILL at a random 0.05-1.0 s
  after it started (seeded).  After each batch: every workload of it exited in the
  engine's snapshot, misc.current and memory.current 0 in every /k cgroup and root's
  own pages 0 (read from the files and the snapshot), and `check` answers "ok".  It
  goes on until --kills kills went to live, registered workloads.
- Hostile frames: 4 lock-step fuzzer processes (bench/soak_fuzzer.py, their frames from
  bench/soak_frames.py and bench/soak_requests.py) send --frames frames in all, each
  reply matched by its id, from their own cgroups under /f; a fuzzer the OOM killer
  takes (its hostile memory.max writes can do that) is replaced and the rest of its
  share sent.  While they run, root and /f hold their pages: those two are checked
  at the end, when every fuzzer is gone.

At the end every fuzzer and workload is gone, root's misc.current is 0, `check` is ok
and the engine alive; then SIGTERM must stop it with status 0.  It prints a line per
batch and a summary, and exits 1 on any leak, hang, lost reply, internal error
(a reply or the engine's log) or failed check.

``.venv/bin/python bench/soak.py [--frames N] [--kills N] [--json F] [--seed N] [--deadline S] [--keep]``
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import zmq

from bench import _common
from bench.soak_batch import BATCH, NOTES, Run, Soak, check_engine, check_leaks, make_cgroups, run_batch
from bench.soak_procs import Engine, EventFeed, Forkserver, Fuzzers, wait_for
from workloads.client import EngineClient, NoEngine

SETTLE_S = 10.0  # at the end: fuzzers and workloads gone by then
DEADLINE_S = 600.0  # the whole soak, unless --deadline: what is not done by then is a hang


# -- the whole soak -------------------------------------------------------------------


def soak_loop(run: Run, deadline: float) -> None:
    """Batches until enough kills went to live workloads; the fuzzers run alongside, tended between batches."""
    soak = run.soak
    number = 0
    while soak.kills_live_registered < soak.kills_target and time.monotonic() < deadline:
        run_batch(run, number)
        number += 1
        _tend(run)
        print(f"   batch {number:3d}: kills {soak.kills_live_registered:5,}/{soak.kills_target:,}, frames "
              f"{run.fuzzers.sent():7,}/{soak.frames_target:,}, {soak.batch_s[-1]:4.2f} s (drain "
              f"{soak.drain_ms[-1]:3.0f} ms, check {soak.check_ms[-1]:3.0f} ms), engine RSS "
              f"{run.engine.rss_mb():5.1f} MB, {time.monotonic() - run.started:5.1f} s", flush=True)  # fmt: skip
    if soak.kills_live_registered < soak.kills_target:
        soak.fail("hangs", f"only {soak.kills_live_registered} kills by the deadline")
    while not run.fuzzers.done() and time.monotonic() < deadline:
        _tend(run)
        time.sleep(0.2)
    _tend(run)
    if not run.fuzzers.done():
        soak.fail("hangs", f"the fuzzers sent {run.fuzzers.sent():,} of {soak.frames_target:,} frames by the deadline")


def _tend(run: Run) -> None:
    oom_killed, failed = run.fuzzers.tend(run.events)
    run.soak.fuzzer_oom_kills += oom_killed
    for line in failed:
        run.soak.fail("fuzzer_deaths", line)


def take_fuzz_reports(soak: Soak, reports: list[dict[str, Any]]) -> None:
    """The fuzzers' counts, and their failures, into the soak's."""
    fields = {"lost": "lost_replies", "wrong_id": "wrong_ids", "bad_reply": "bad_replies",
              "disconnected": "disconnects", "internal": "internal_errors", "broken": "check_failures",
              "foreign_ok": "foreign_ok", "setup": "fuzzer_deaths"}  # fmt: skip
    slowest = []
    for report in reports:
        soak.frames += int(report.get("sent", 0))
        for category, codes in report.get("codes", {}).items():
            into = soak.by_category.setdefault(category, {})
            for code, n in codes.items():
                into[code] = into.get(code, 0) + n
                soak.replies[code] += n
        for name, failure in fields.items():
            if report.get(name):
                setattr(soak.failures, failure, getattr(soak.failures, failure) + int(report[name]))
        soak.notes.extend(report.get("notes", [])[: max(0, NOTES - len(soak.notes))])
        slowest.extend(report.get("slowest", []))
    soak.slowest_frames = sorted(slowest, reverse=True)[:5]


def finish(run: Run) -> None:
    """Everything gone, nothing charged, check ok, the engine alive; then SIGTERM must stop it with 0."""
    soak = run.soak

    def running() -> list[str]:
        return [row["name"] for row in run.client.snapshot()["workloads"] if row["state"] != "exited"]

    if not wait_for(lambda: not running(), SETTLE_S, 0.05):
        soak.fail("hangs", f"still running at the end: {running()[:5]}")
    soak.cgroups_at_end = len(run.client.snapshot()["cgroups"])
    root = run.client.read("/misc.current")
    if root.split() != ["sgx_epc", "0"]:
        soak.fail("leaks", f"the end: root misc.current {root.strip()!r} with every workload gone")
    check_leaks(run, "the end")
    check_engine(run, "the end")
    if run.engine.process.poll() is not None:
        soak.fail("engine", f"the engine died (status {run.engine.process.returncode})")
    soak.rss_mb["end"] = run.engine.rss_mb()
    soak.engine_cpu_s = run.engine.cpu_s()
    soak.rss_mb["max"] = run.engine.rss_mb("VmHWM")


def stop_engine(run: Run) -> None:
    status = run.engine.stop()
    if status != 0:
        run.soak.fail("engine", f"SIGTERM: the engine exited with {status}")
    for line in run.engine.logged_errors():
        run.soak.fail("internal_errors", f"engine log: {line}")


def summary(soak: Soak) -> dict[str, Any]:
    out = {name: getattr(soak, name) for name in Soak.__dataclass_fields__}
    out["failures"] = asdict(soak.failures)
    for name in ("phases", "exits", "replies"):
        out[name] = dict(getattr(soak, name).most_common())
    out["exits_by_kind"] = {kind: dict(ends.most_common()) for kind, ends in soak.exits_by_kind.items()}
    out["failed"] = soak.failed()
    out["drain_ms"] = _spread(soak.drain_ms)
    out["release_ms"] = _spread(soak.release_ms)
    out["hello_ms"] = _spread(soak.hello_ms)
    out["check_ms"] = _spread(soak.check_ms)
    out["batch_s"] = _spread(soak.batch_s)
    out["spawn_ms"] = _spread(soak.spawn_ms)
    out["after_ms"] = _spread(soak.after_ms)
    return out


def _spread(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    return {"median": statistics.median(ordered), "p99": ordered[int(0.99 * (len(ordered) - 1))],
            "max": ordered[-1]}  # fmt: skip


def print_summary(result: dict[str, Any]) -> None:
    failures = result["failures"]
    print(f"== soak: {result['seconds']:.1f} s, {result['batches']} batches, engine CPU {result['engine_cpu_s']:.1f} s")
    print(f"   kills: {result['kills_live_registered']:,} to live registered workloads of {result['kills_sent']:,} "
          f"sent; phases {dict(result['phases'])}")  # fmt: skip
    print(f"   workloads ended: {dict(result['exits'])}")
    print(f"   by kind: {result['exits_by_kind']}")
    print(f"   frames: {result['frames']:,} sent and answered by code {dict(result['replies'])}")
    print(f"   fuzzers replaced after an OOM kill: {result['fuzzer_oom_kills']}; cgroups at the end "
          f"{result['cgroups_at_end']}; slowest replies: "
          f"{[(round(s, 3), what[:80]) for s, what in result['slowest_frames'][:3]]}")  # fmt: skip
    for name, what in [
        ("batch_s", "batch s"),
        ("spawn_ms", "spawn ms"),
        ("after_ms", "last kill to checked ms"),
        ("drain_ms", "drain ms"),
        ("check_ms", "check ms"),
        ("release_ms", "release ms (kill to workload_exit)"),
        ("hello_ms", "registration ms (start to workload_start)"),
    ]:
        spread = result[name]
        print(f"   {what}: " + ", ".join(f"{key} {value:.3g}" for key, value in spread.items()))
    print(f"   engine RSS MB: start {result['rss_mb'].get('start', 0):.1f}, max {result['rss_mb'].get('max', 0):.1f}, "
          f"end {result['rss_mb'].get('end', 0):.1f}")  # fmt: skip
    print("   failures: " + ", ".join(f"{name} {n}" for name, n in failures.items()))
    for note in result["notes"]:
        print(f"   ! {note[:400]}")
    zero = "ok: zero leaks, hangs, lost replies, internal errors and failed checks"
    print(f"   {zero if not result['failed'] else 'FAILED'}")


def _count(text: str) -> int:
    if not (text.isascii() and text.isdigit() and len(text) <= 12):
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a whole number >= 0")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < 1e6:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a number of seconds > 0")
    return value


def _writable(path: Path) -> bool:
    """Whether a file can be written at ``path``: tried at once (making its directories), not after the run."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a"):
            return True
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=_count, default=100_000, help="hostile frames in all (100,000)")
    parser.add_argument("--kills", type=_count, default=1_000, help="kills of live registered workloads (1,000)")
    parser.add_argument("--seed", type=_count, default=1, help="of the kill times and the fuzzers (1)")
    parser.add_argument("--deadline", type=_seconds, default=DEADLINE_S, help="seconds for it all (600)")
    parser.add_argument("--json", metavar="FILE", help="also write the summary as JSON to FILE")
    parser.add_argument("--keep", action="store_true", help="keep the engine's log and directory")
    args = parser.parse_args(argv)
    if args.json and not _writable(Path(args.json)):
        parser.error(f"--json {args.json}: cannot write a file there")
    soak = Soak(args.frames, args.kills)
    directory = tempfile.mkdtemp(prefix="epc-soak.")
    try:
        result = _soak(soak, directory, args.seed, args.deadline)
    finally:
        if not args.keep and not soak.failed():
            shutil.rmtree(directory, ignore_errors=True)
        else:
            print(f"   the engine's log and directory: {directory}")
    print_summary(result)
    _common.write_json(args.json, result)
    return 1 if result["failed"] else 0


def _soak(soak: Soak, directory: str, seed: int, deadline_s: float) -> dict[str, Any]:
    started = time.monotonic()
    os.makedirs(f"{directory}/run", mode=0o700)
    os.makedirs(f"{directory}/w")
    env = {**os.environ, "XDG_RUNTIME_DIR": f"{directory}/run", "PYTHONPATH": str(_common.REPO)}
    env.pop("EPC_PLAYGROUND_ENDPOINT", None)
    print(f"== soak: {soak.frames_target:,} hostile frames from 4 fuzzers, batches of {BATCH} workloads until "
          f"{soak.kills_target:,} kills, seed {seed}", flush=True)  # fmt: skip
    engine = Engine(directory, env)
    forkserver = Forkserver(env)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    client = EngineClient(engine.endpoint, timeout_s=60)
    events = EventFeed(ctx, client.pub_endpoint)
    fuzzers = None
    try:
        make_cgroups(client)
        events.start()
        soak.rss_mb["start"] = engine.rss_mb()
        fuzzers = Fuzzers(engine.endpoint, env, soak.frames_target, seed)
        run = Run(soak, directory, engine, client, forkserver, events, fuzzers, random.Random(seed), started)
        try:
            soak_loop(run, started + deadline_s)
            finish(run)
        except NoEngine as e:
            soak.fail("engine", f"the engine went away: {e}")
        take_fuzz_reports(soak, fuzzers.reports())
        stop_engine(run)
    finally:
        if fuzzers is not None:
            fuzzers.stop()
        forkserver.stop()
        events.stop()
        client.close()
        ctx.term()
        if engine.process.poll() is None:
            engine.process.kill()
            engine.process.wait()
    soak.seconds = time.monotonic() - started
    return summary(soak)


if __name__ == "__main__":
    sys.exit(main())

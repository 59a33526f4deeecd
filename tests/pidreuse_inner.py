"""Run inside a fresh pid namespace (``unshare --pid --fork --mount-proc``): a pid used twice.

Starts an engine, a workload A that registers and holds an enclave, kills A, then makes
the next process get A's pid (``ns_last_pid``) and registers it as workload B.  Prints
the engine's records of that pid as JSON: the test checks B got a record of its own.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from playground.launch import start_engine_process
from tests.puppet import Puppet
from workloads.client import EngineClient


def main() -> None:
    directory = tempfile.mkdtemp(prefix="epc-pidreuse.")
    env = {**os.environ, "XDG_RUNTIME_DIR": directory}
    env.pop("EPC_PLAYGROUND_ENDPOINT", None)
    engine, endpoint = start_engine_process(["--capacity", "16MiB"], env)
    try:
        a = Puppet(endpoint, env)
        a.ok("hello", pid=a.pid, role="enclave", name="first")
        a.ok("ecreate", size=1 << 20)
        reused = a.pid
        a.kill()
        with EngineClient(endpoint) as client:
            deadline = time.monotonic() + 10
            while any(w["state"] == "running" for w in client.snapshot()["workloads"]):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            Path("/proc/sys/kernel/ns_last_pid").write_text(str(reused - 1))
            b = Puppet(endpoint, env)
            b.ok("hello", pid=b.pid, role="enclave", name="second")
            b.ok("ecreate", size=1 << 20)
            records = [w for w in client.snapshot()["workloads"] if w["pid"] == reused]
            print(json.dumps({"reused": b.pid == reused, "records": records}))
            b.close()
    finally:
        engine.terminate()
        engine.wait(10)


if __name__ == "__main__":
    main()

"""Draw docs/tui.svg from a live session: a real engine, real workloads, the TUI headless.

``.venv/bin/python tools/screenshot.py [OUT.svg]`` (about 15 s).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from playground.launch import start_engine_process  # noqa: E402
from playground.tui.app import EpcApp  # noqa: E402
from workloads.client import EngineClient  # noqa: E402

SCENE = [  # cgroup, misc.max, workloads (kind, size, extra arguments)
    ("/pods", "24MiB", []),
    ("/pods/web", None, [("enclave", "12MiB", ["--pattern", "hotcold", "--name", "web"])]),
    ("/pods/db", "8MiB", [("enclave", "16MiB", ["--pattern", "random", "--name", "db"])]),
    ("/batch", None, [("enclave", "8MiB", ["--pattern", "sequential", "--name", "etl"])]),
    ("/guests", "12MiB", [("vm", "16MiB", ["--name", "guest"])]),
]


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "tui.svg"
    with tempfile.TemporaryDirectory(prefix="epc-shot-") as directory:
        env = {**os.environ, "XDG_RUNTIME_DIR": directory, "PYTHONPATH": str(ROOT)}
        engine, endpoint = start_engine_process(["--capacity", "64MiB"], env)
        workloads = []
        try:
            with EngineClient(endpoint) as client:
                for path, limit, _ in SCENE:
                    client.mkdir(path)
                    if limit:
                        client.write(f"{path}/misc.max", f"sgx_epc {parse(limit)}")
            for path, _, jobs in SCENE:
                for kind, size, extra in jobs:
                    argv = [kind, "--size", size, "--cgroup", path, "--connect", endpoint, "--duration", "30", *extra]
                    workloads.append(
                        subprocess.Popen(
                            [sys.executable, "-m", "playground.cli", *argv],
                            env=env,
                            stderr=subprocess.DEVNULL,
                        )
                    )
            asyncio.run(shoot(endpoint, out))
        finally:
            for w in workloads:
                w.kill()
            engine.terminate()
            engine.wait(10)
    print(f"wrote {out}")


def parse(size: str) -> int:
    from common.units import parse_size

    return parse_size(size)


async def shoot(endpoint: str, out: Path) -> None:
    app = EpcApp(endpoint)
    async with app.run_test(size=(150, 40)) as pilot:
        await pilot.pause(5.0)
        app.find_cgroup("/pods/db")
        await pilot.pause(3.0)
        app.save_screenshot(filename=out.name, path=str(out.parent))


if __name__ == "__main__":
    main()

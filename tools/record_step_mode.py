"""Record step mode as an animated SVG (docs/step-mode.svg): a real engine, a real workload, the
TUI headless; the engine is frozen, the workload is stepped request by request and a reclaim
batch at a time, and each screen becomes a frame.

``.venv/bin/python tools/record_step_mode.py [OUT.svg]`` (about 20 s).  The frames are Textual's
own SVG screenshots, shown in turn by SMIL (any browser plays it; GitHub shows it in the README).
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from playground.launch import start_engine_process  # noqa: E402
from playground.tui.app import EpcApp  # noqa: E402
from workloads.client import EngineClient  # noqa: E402

SIZE = (120, 34)
SECONDS_A_FRAME = 1.6
STEPS = [  # the key pressed before each frame after the first, and how many times
    ("z", 1),  # freeze
    ("full_stop", 1),  # the workload's hello
    ("full_stop", 1),  # ecreate
    ("full_stop", 3),  # EADDs
    ("full_stop", 6),
    ("full_stop", 12),  # faults under the limit: reclaim is queued, the call waits
    ("comma", 1),  # one reclaim batch
    ("comma", 2),
    ("full_stop", 6),
    ("z", 1),  # thaw
]


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "step-mode.svg"
    with tempfile.TemporaryDirectory(prefix="epc-rec-") as directory:
        env = {**os.environ, "XDG_RUNTIME_DIR": directory, "PYTHONPATH": str(ROOT)}
        engine, endpoint = start_engine_process(["--capacity", "16MiB"], env)
        try:
            with EngineClient(endpoint) as client:
                client.mkdir("/pod")
                client.write("/pod/misc.max", f"sgx_epc {64 * 4096}")
            frames = asyncio.run(record(endpoint, env))
        finally:
            engine.terminate()
            engine.wait(10)
    out.write_text(animate(frames))
    if os.environ.get("EPC_RECORD_FRAMES"):  # each frame on its own too, to look at one by one
        for i, frame in enumerate(frames):
            out.with_name(f"{out.stem}-{i:02}.svg").write_text(frame)
    print(f"wrote {out} ({len(frames)} frames, {out.stat().st_size // 1024} KiB)")


async def record(endpoint: str, env: dict[str, str]) -> list[str]:
    app = EpcApp(endpoint)
    frames: list[str] = []
    workload = None
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(1.0)
        app.find_cgroup("/pod")
        await pilot.pause(0.5)
        frames.append(app.export_screenshot(title="step mode", simplify=True))
        for key, times in STEPS:
            for _ in range(times):
                await pilot.press(key)
                await pilot.pause(0.15)
            if key == "z" and workload is None:  # frozen: now the workload comes, and waits
                argv = ["enclave", "--size", "512KiB", "--cgroup", "/pod", "--name", "stepped", "--connect", endpoint]
                workload = subprocess.Popen([sys.executable, "-m", "playground.cli", *argv], env=env)
                await pilot.pause(1.0)
            await pilot.pause(0.6)  # the next stats tick draws what the step did
            frames.append(app.export_screenshot(title="step mode", simplify=True))
        await pilot.press("q")
    if workload is not None:
        workload.wait(30)
    return frames


def animate(frames: list[str]) -> str:
    """One SVG that shows ``frames`` in turn, forever."""
    width, height = re.search(r'viewBox="0 0 ([\d.]+) ([\d.]+)"', frames[0]).groups()  # type: ignore[union-attr]
    total = SECONDS_A_FRAME * len(frames)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}">'
    ]
    for i, frame in enumerate(frames):
        start, end = i / len(frames), (i + 1) / len(frames)
        times, values = (
            (f"0;{end:.4f}", "visible;hidden") if i == 0 else (f"0;{start:.4f};{end:.4f}", "hidden;visible;hidden")
        )
        parts.append(
            f'<g visibility="{"visible" if i == 0 else "hidden"}"><animate attributeName="visibility" dur="{total}s" '
            f'repeatCount="indefinite" calcMode="discrete" keyTimes="{times}" values="{values}"/>'
        )
        parts.append(re.sub(r"^<\?xml[^>]*>", "", frame.strip()))
        parts.append("</g>")
    parts.append("</svg>")
    return "\n".join(parts)


if __name__ == "__main__":
    main()

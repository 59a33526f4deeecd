"""The TUI never crashes and never leaks (issue 13, and bugs 1-4, 7 and 8 of the new-user review):
nested cgroups removed within one refresh, a new engine after a lost one with a nested tree,
SIGTERM/SIGHUP to a real TUI process, k/K on exited workloads, spawned children reaped, the
engine it attached to named, screenshots where the user is."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyte
import pytest
from textual.widgets import Tree

from playground.tui.app import DISCONNECTED, EpcApp
from playground.tui.screens.spawn import SpawnScreen
from playground.tui.widgets.workload_table import NAMES
from workloads.client import EngineClient

from .engine_fixture import ROOT, RunningEngine, private_env, start_engine
from .test_tui_snapshots import fixed_feed
from .tui_helpers import Notes, until

SIZE = (150, 40)


def tree_paths(app: EpcApp) -> set[str]:
    """The cgroups the tree shows, read from the Tree widget itself."""
    tree = app.query_one("#cgroups", Tree)
    paths, todo = set(), [tree.root]
    while todo:
        node = todo.pop()
        paths.add(str(node.data))
        todo.extend(node.children)
    return paths


def test_nested_cgroups_removed_within_one_refresh_leave_the_tree_without_a_crash() -> None:
    """Bug 1: ``rmdir a/b a`` between two refreshes (the kselftest's cleanup) crashed the app."""
    feed = fixed_feed()
    notes = Notes()

    async def scenario() -> set[str]:
        app = EpcApp("ipc:///nowhere", feed=feed)
        async with app.run_test(size=SIZE, message_hook=notes) as pilot:
            await until(pilot, lambda: {"/pods", "/pods/web", "/pods/db"} <= tree_paths(app), "the tree")
            gone = ("/pods", "/pods/web", "/pods/db")
            snapshot = dict(feed.snapshot)
            snapshot["cgroups"] = [cg for cg in feed.snapshot["cgroups"] if cg["path"] not in gone]
            feed.snapshot = snapshot  # type: ignore[assignment]
            await until(pilot, lambda: not tree_paths(app) & set(gone), "the removed subtree gone")
            await pilot.pause(0.3)  # another refresh or two
            assert app.is_running
            paths = tree_paths(app)
            await pilot.press("q")
            return paths

    assert asyncio.run(scenario()) == {"/", "/guests"}
    assert not [note for note in notes if "failed" in note], notes


def test_r_after_a_lost_engine_with_a_nested_tree_starts_a_new_engine_and_quit_stops_it(tmp_path: Path) -> None:
    """Bug 2: r crashed with a nested tree and left the engine it had just started running."""
    env = private_env(tmp_path)
    running = start_engine(tmp_path, "--capacity", "4MiB")
    with EngineClient(running.endpoint) as client:
        for path in ("/a", "/a/b", "/a/b/c"):
            client.mkdir(path)
    started: list[Any] = []

    async def scenario() -> None:
        app = EpcApp(running.endpoint)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: "/a/b/c" in tree_paths(app), "the nested tree")
            running.process.kill()
            running.process.wait()
            await until(pilot, lambda: app.sub_title == DISCONNECTED, "disconnected")
            await pilot.press("r")
            await until(pilot, lambda: app.feed is not None and app.feed.connected, "the new engine's feed")
            assert app.is_running and tree_paths(app) == {"/"}
            started.append(app.owns_engine)
            await pilot.press("q")

    old = os.environ.get("XDG_RUNTIME_DIR")
    os.environ["XDG_RUNTIME_DIR"] = env["XDG_RUNTIME_DIR"]
    try:
        asyncio.run(scenario())
    finally:
        if old is not None:
            os.environ["XDG_RUNTIME_DIR"] = old
    [engine] = started
    assert engine is not None and engine.poll() is not None  # q stopped the engine r started
    assert not (Path(env["XDG_RUNTIME_DIR"]) / "epc-playground" / "engine.json").exists()


def test_k_and_K_refuse_a_workload_that_has_exited_and_signal_nothing() -> None:
    """Bug 4: K sent SIGKILL to the pid of an exited row, which may be another process by now."""
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        feed = fixed_feed()
        snapshot = dict(feed.snapshot)
        snapshot["workloads"] = [
            w | {"pid": bystander.pid} if w["name"] == "guest" else w for w in feed.snapshot["workloads"]
        ]  # the exited guest's pid is now the bystander's
        feed.snapshot = snapshot  # type: ignore[assignment]
        notes = Notes()

        async def scenario() -> None:
            app = EpcApp("ipc:///nowhere", feed=feed)
            async with app.run_test(size=SIZE, message_hook=notes) as pilot:
                table = app.workload_table
                await until(pilot, lambda: table.row_count == 4, "the rows")
                await pilot.press("tab")
                name = NAMES.index("name")
                for _ in range(table.row_count):  # down to the guest's row (bounded: never a hang)
                    if str(table.get_row_at(table.cursor_row)[name]) == "guest":
                        break
                    await pilot.press("down")
                assert str(table.get_row_at(table.cursor_row)[name]) == "guest"
                await pilot.press("K")
                await until(pilot, lambda: any("has exited" in note for note in notes), "the refusal")
                await pilot.press("k")
                await until(pilot, lambda: sum("has exited" in note for note in notes) == 2, "the second refusal")
                assert app.screen is app.screen_stack[0]  # no signal list for an exited workload
                await pilot.press("q")

        asyncio.run(scenario())
        assert bystander.poll() is None, "the bystander was signalled"
        assert not any("sent to pid" in note for note in notes), notes
    finally:
        bystander.kill()
        bystander.wait()


def zombies() -> list[int]:
    """Children of this process that ended and were not waited for."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                fields = stat[stat.rindex(")") + 2 :].split()
                if fields[0] == "Z" and int(fields[1]) == os.getpid():
                    out.append(int(entry.name))
    return out


@pytest.mark.slow
def test_spawned_workloads_that_end_are_reaped_while_the_tui_runs(engine: RunningEngine) -> None:
    """Bug 4: each workload the TUI spawned stayed a zombie until the TUI quit."""

    async def scenario() -> None:
        app = EpcApp(engine.endpoint)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.feed is not None and "/" in app.feed.usage, "the feed")
            await pilot.press("e")
            await pilot.pause(0.2)
            await pilot.press("tab", *["backspace"] * 6, *"1MiB", "enter")
            await until(pilot, lambda: bool(app.children_spawned) or app.workload_table.row_count, "the spawn")
            await until(
                pilot,
                lambda: (
                    app.workload_table.row_count == 1
                    and app.workload_table.workloads[next(iter(app.workload_table.workloads))]["state"] == "exited"
                ),
                "the enclave's exit",
                timeout=60,
            )
            await until(pilot, lambda: not zombies(), "no zombie child")
            await pilot.press("q")

    asyncio.run(scenario())


def test_a_refresh_that_raises_is_a_notification_and_the_app_goes_on() -> None:
    """Issue 13: any exception in a refresh becomes a notification and a log line, never a crash."""
    feed = fixed_feed()
    notes = Notes()

    async def scenario() -> None:
        app = EpcApp("ipc:///nowhere", feed=feed)
        async with app.run_test(size=SIZE, message_hook=notes) as pilot:
            await until(pilot, lambda: "/pods/db" in tree_paths(app), "the tree")
            broken = dict(feed.snapshot)
            broken["cgroups"] = [*feed.snapshot["cgroups"], {"path": "/broken"}]  # a row without its fields
            feed.snapshot = broken  # type: ignore[assignment]
            await until(pilot, lambda: any("drawing the screen failed" in note for note in notes), "the note")
            await pilot.pause(0.6)
            assert sum("drawing the screen failed" in note for note in notes) == 1  # said once, not per tick
            assert app.is_running
            await pilot.press("q")

    asyncio.run(scenario())


def test_screenshots_go_to_the_current_directory_and_say_where(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bug 8: the palette's Screenshot wrote to ~/Downloads, and failed without a reason where there is none."""
    monkeypatch.chdir(tmp_path)
    notes = Notes()

    async def scenario() -> None:
        app = EpcApp("ipc:///nowhere", feed=fixed_feed())
        async with app.run_test(size=SIZE, message_hook=notes) as pilot:
            await pilot.press("ctrl+p")
            await pilot.pause(0.2)
            await pilot.press(*"Screenshot")
            await pilot.pause(0.3)
            await pilot.press("enter")
            await until(pilot, lambda: list(tmp_path.glob("*.svg")), "the SVG in the current directory")
            await until(pilot, lambda: any(str(tmp_path) in note for note in notes), "the path in a note")
            await pilot.press("q")

    asyncio.run(scenario())
    [svg] = tmp_path.glob("*.svg")
    assert "<svg" in svg.read_text()[:200]


# -- a real TUI process on a terminal ---------------------------------------


class Terminal:
    """A TUI process on a pseudo-terminal of 120x35; what it draws is kept (``output``) and
    read through a terminal emulator (``text()``: the screen as a person sees it)."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 35, 120, 0, 0))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "playground.cli", *args],
            stdin=slave, stdout=slave, stderr=slave, env=env, cwd=ROOT, start_new_session=True,
        )  # fmt: skip
        os.close(slave)
        self.master = master
        self.output = bytearray()
        self.screen = pyte.Screen(120, 35)
        self.stream = pyte.ByteStream(self.screen)
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                return
            if not chunk:
                return
            with self.lock:
                self.output.extend(chunk)
                self.stream.feed(chunk)

    def text(self) -> str:
        with self.lock:
            return "\n".join(self.screen.display)

    def wait_for(self, text: str, timeout: float = 30) -> None:
        """Until ``text`` is on the screen (one line of it)."""
        deadline = time.monotonic() + timeout
        while text not in self.text():
            assert self.process.poll() is None, f"the TUI exited ({self.process.returncode}) before {text!r}"
            assert time.monotonic() < deadline, f"waited {timeout:.0f} s for {text!r}; the screen:\n{self.text()}"
            time.sleep(0.05)

    def type(self, keys: bytes) -> None:
        """One key at a time, as a person types.  (Textual drops keys that come in a burst: a read
        of several keys can lose some, so a test types at a person's pace.)"""
        for key in keys:
            os.write(self.master, bytes([key]))
            time.sleep(0.1)

    def close(self) -> None:
        """Stop the TUI as a person's kill would (SIGTERM: it stops its engine), SIGKILL only if that fails."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.reader.join(5)
        os.close(self.master)


@contextlib.contextmanager
def terminal(args: list[str], env: dict[str, str]) -> Iterator[Terminal]:
    term = Terminal(args, env)
    try:
        yield term
    except BaseException:  # a failed test: no engine of its TUI may outlive it
        term.close()
        runtime = Path(env["XDG_RUNTIME_DIR"]) / "epc-playground" / "engine.json"
        with contextlib.suppress(OSError, ValueError, KeyError):
            os.kill(int(json.loads(runtime.read_text())["pid"]), signal.SIGTERM)
        raise
    term.close()


def engine_info(env: dict[str, str], timeout: float = 30) -> dict[str, Any]:
    path = Path(env["XDG_RUNTIME_DIR"]) / "epc-playground" / "engine.json"
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, "no engine started"
        time.sleep(0.05)
    return dict(json.loads(path.read_text()))


def gone(pid: int, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists() and "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_or_sighup_to_the_tui_stops_its_engine_and_restores_the_terminal(tmp_path: Path, signum: int) -> None:
    """Bug 3: kill, timeout and systemd stops left the engine running and the terminal unrestored."""
    env = private_env(tmp_path)
    with terminal(["tui", "--capacity", "64MiB"], env) as term:
        engine = engine_info(env)
        term.wait_for("workloads running")
        before = len(term.output)
        os.kill(term.process.pid, signum)
        assert term.process.wait(20) == 0
        assert gone(int(engine["pid"])), "the engine outlived the TUI"
        assert not (Path(env["XDG_RUNTIME_DIR"]) / "epc-playground" / "engine.json").exists()
        assert b"\x1b[?1049l" in term.output[before:]  # the alternate screen left: the terminal restored


@pytest.mark.slow
def test_sigterm_stops_the_workloads_the_tui_spawned(engine: RunningEngine) -> None:
    """Bug 3: the workloads the TUI had spawned kept running after a SIGTERM."""
    pids: list[int] = []

    async def scenario() -> None:
        app = EpcApp(engine.endpoint)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.feed is not None and "/" in app.feed.usage, "the feed")
            await pilot.press("e")
            await until(pilot, lambda: isinstance(app.screen, SpawnScreen), "the spawn form")
            await pilot.press("tab", "tab", "tab", *["backspace"] * 3, *"99999", "enter")  # passes 99999
            table = app.workload_table
            await until(pilot, lambda: any(w["state"] == "running" for w in table.workloads.values()), "it runs")
            pids.extend(table.workloads)
            os.kill(os.getpid(), signal.SIGTERM)  # to this process, where the app runs: its handler quits
            await until(pilot, lambda: not app.is_running, "the app's exit")

    asyncio.run(scenario())
    [pid] = pids
    assert gone(pid), "the workload outlived the TUI"


@pytest.mark.slow
def test_a_tui_that_attaches_to_a_running_engine_says_so_and_that_capacity_does_not_apply(tmp_path: Path) -> None:
    """Bug 7: --capacity was ignored without a word when a default engine was running."""
    env = private_env(tmp_path)
    engine = subprocess.Popen(
        [sys.executable, "-m", "playground.cli", "engine", "--capacity", "16MiB"],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        info = engine_info(env)
        with terminal(["tui", "--capacity", "1GiB"], env) as term:
            term.wait_for("attached to the engine")
            term.wait_for("--capacity")
            term.type(b"q")
            assert term.process.wait(20) == 0
        assert engine.poll() is None and int(info["pid"]) == engine.pid  # q left the engine it did not start
    finally:
        engine.terminate()
        engine.wait(10)

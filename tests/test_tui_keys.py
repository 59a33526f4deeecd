"""Keys are handled in the order they were typed, also when they come in one burst (tmux
send-keys, a fast typist, a loaded machine): playground/tui/keys.py over Textual 8.2.8,
which lets a printable key overtake a bound one (Textualize/textual#6605)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from textual import events
from textual.app import App, ComposeResult
from textual.widgets import Input

from playground.tui.app import EpcApp
from playground.tui.keys import InOrderKeys
from playground.tui.screens.prompt import PromptScreen
from workloads.client import EngineClient

from .engine_fixture import private_env
from .test_tui_robust import engine_info, gone, terminal, until
from .test_tui_snapshots import fixed_feed


class _OneInput(App[None]):
    def compose(self) -> ComposeResult:
        yield Input()


class _OneInputInOrder(InOrderKeys):
    def compose(self) -> ComposeResult:
        yield Input()


def _burst(app_class: type[App[None]], keys: list[tuple[str, str | None]]) -> str:
    """Post ``keys`` to the app all at once (as a read of several keys from the terminal does)
    and return what the Input holds once they are handled."""

    async def scenario() -> str:
        app = app_class()
        async with app.run_test() as pilot:
            await pilot.pause()
            for key, character in keys:
                app.post_message(events.Key(key, character))
            value = app.query_one(Input)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:  # until nothing changes for a while
                before = value.value
                await pilot.pause(0.1)
                if value.value == before and len(before) >= 4:
                    break
            return value.value

    return asyncio.run(scenario())


BURST = [(c, c) for c in "100000"] + [("backspace", None), ("backspace", None), ("6", "6")]


def test_keys_in_one_burst_are_handled_in_the_order_they_came() -> None:
    """Textual handles a printable key in the Input at once but a bound key (backspace) only
    after it bubbled up to the App: ``100000``, backspace twice, ``6`` gave ``10000``."""
    assert _burst(_OneInputInOrder, BURST) == "10006"


@pytest.mark.xfail(strict=True, reason="Textualize/textual#6605: bound keys overtaken by printable ones")
def test_upstream_textual_handles_a_burst_of_keys_in_order() -> None:
    """The same burst on a plain Textual App: when this passes, upstream fixed it and InOrderKeys can go."""
    assert _burst(_OneInput, BURST) == "10006"


def test_keys_typed_after_the_key_that_opens_a_dialog_go_into_the_dialog() -> None:
    """UX 10: fast keys into the spawn form (tab, ctrl+u, text) landed empty."""

    async def scenario() -> str:
        app = EpcApp("ipc:///nowhere", feed=fixed_feed())
        async with app.run_test(size=(160, 45)) as pilot:
            await until(pilot, lambda: "/guests" in app.cgroup_tree.nodes, "the tree")
            for key, character in [("f", "f"), *[(c, c) for c in "guz"], ("backspace", None), ("e", "e")]:
                app.post_message(events.Key(key, character))
            await until(pilot, lambda: isinstance(app.screen, PromptScreen), "the find prompt")
            typed = lambda: [field.value for field in app.screen.query(Input)]  # noqa: E731
            await until(pilot, lambda: typed() == ["gue"], "all of it typed", timeout=5)
            app.post_message(events.Key("enter", "\r"))
            await until(pilot, lambda: app.selected == "/guests", "/guests found")
            await pilot.press("q")
            return app.selected

    assert asyncio.run(scenario()) == "/guests"


def test_in_order_keys_do_not_hold_up_keys_when_a_widget_goes_away() -> None:
    """A key whose widget is removed before it is handled lets the next keys go on."""

    async def scenario() -> str:
        app = _OneInputInOrder()
        async with app.run_test() as pilot:
            await pilot.pause()
            field = app.query_one(Input)
            app.post_message(events.Key("a", "a"))
            await field.remove()
            await app.mount(Input(id="again"))
            app.query_one("#again", Input).focus()
            await pilot.pause(0.05)
            for c in "bc":
                app.post_message(events.Key(c, c))
            again = app.query_one("#again", Input)
            await until(pilot, lambda: again.value == "bc", "the keys after", timeout=5)
            return again.value

    assert asyncio.run(scenario()) == "bc"


@pytest.mark.slow
def test_a_real_tui_on_a_terminal_takes_a_burst_of_keys_in_order(tmp_path: Path) -> None:
    """What tmux send-keys does: n, a name with two backspaces in it, and Enter in one write."""
    env = private_env(tmp_path)
    with terminal(["tui", "--capacity", "16MiB"], env) as term, engine_stopped(env) as info:
        term.wait_for("workloads running")
        os.write(term.master, b"nburst\x7f\x7fxy\r")
        with EngineClient(str(info["endpoint"])) as client:
            deadline = time.monotonic() + 20
            while "burxy" not in client.listdir("/"):
                names = [name for name in client.listdir("/") if "." not in name]
                assert time.monotonic() < deadline, f"no /burxy: {names}; the screen:\n{term.text()}"
                time.sleep(0.05)
            names = [name for name in client.listdir("/") if "." not in name]
        term.type(b"q")
        assert term.process.wait(20) == 0
    assert names == ["burxy"]


@contextlib.contextmanager
def engine_stopped(env: dict[str, str]) -> Iterator[dict[str, Any]]:
    """The engine a TUI process on a terminal started (its runtime file); stopped after the
    block if the TUI did not stop it (a failed test kills the TUI, which cannot)."""
    info = engine_info(env)
    try:
        yield info
    finally:
        pid = int(info["pid"])
        if not gone(pid, timeout=0):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

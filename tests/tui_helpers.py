"""What the TUI tests share: waiting on the app's state, and the notifications it posts."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from textual.message import Message
from textual.notifications import Notify
from textual.pilot import Pilot


async def until(pilot: Pilot[Any], holds: Callable[[], object], what: str, timeout: float = 20.0) -> None:
    """Let the app run until ``holds()`` is true; after ``timeout`` seconds fail, saying what it waited for."""
    deadline = time.monotonic() + timeout
    while not holds():
        assert time.monotonic() < deadline, f"waited {timeout:.0f} s for {what}"
        await pilot.pause(0.05)


class Notes(list[str]):
    """The message of every notification the app posts: a ``run_test(message_hook=...)``."""

    def __call__(self, message: Message) -> None:
        if isinstance(message, Notify):
            self.append(str(message.notification.message))

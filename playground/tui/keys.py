"""Keys handled in the order they were typed, also when they arrive in one burst.

Textual 8.2.8 reorders keys that come in one read (tmux ``send-keys``, a paste without
bracketed paste, a fast typist, a loaded machine): a printable key is handled by the
focused Input at once, in the Input's own message queue, while a key that a *binding*
handles (backspace, tab, enter, ctrl+u, the arrows, every app key) bubbles through the
message queue of each ancestor up to the App, which only then runs the binding.  So in
``100000`` + backspace + backspace + ``6`` typed at once, the ``6`` overtakes the two
backspaces and the Input shows ``10000``, not ``10006``; ``tab`` then text sends the
text to the field tab leaves; a key typed right after the one that opens a dialog goes
to a screen that has no focused widget yet.  Upstream: Textualize/textual#6605 (open;
PR #6631 runs only the Input's and TextArea's own bindings inline, which leaves tab
and app keys out of order).

``InOrderKeys`` delivers one key at a time: the next key of a burst waits until the one
before has gone all the way (through the focused widget and each ancestor to the App,
or until a handler stopped it), then until what it set off in that chain has been
handled (a barrier passed through the same queues: an Enter's ``Submitted`` message and
the dialog it closes), and until a newly pushed screen is mounted and focused.  A key
typed on its own is delivered at once, exactly as Textual does; only the keys behind it
wait, a millisecond or so each.  A key whose journey cannot be followed (its widget went
away) releases the next after ``KEY_TIMEOUT_S``.
"""

from __future__ import annotations

import time
from collections import deque

from textual import events
from textual.app import App
from textual.message_pump import MessagePump

KEY_TIMEOUT_S = 0.5  # the longest a key waits for the one before it
SCREEN_WAIT_S = 0.005  # how often a key behind a screen that is still mounting looks again


class InOrderKeys(App[None]):
    """An App whose keys are handled one after another, in the order they came."""

    _key_in_flight: events.Key | None = None  # delivered, its journey not over yet
    _key_since = 0.0  # time.monotonic() when it was delivered, or when the last one was over
    _key_next_queued = False  # _next_key is queued (or waits for a screen)
    _key_watchdog = False  # a timer looks after a key that takes too long
    _key_backlog: deque[events.Key] | None = None  # keys that came while one was in flight

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.Key) and not event.is_forwarded:
            if self._key_backlog is None:
                self._key_backlog = deque()
            if self._key_in_flight is not None or self._key_next_queued or self._key_backlog:
                self._key_backlog.append(event)
                self._watch_keys()
                return
            await self._deliver_key(event)
            return
        await super().on_event(event)

    async def _deliver_key(self, key: events.Key) -> None:
        """Textual's own handling of a key (priority bindings, else forward to the focused
        widget), then follow the key through the queues it goes through."""
        self._key_in_flight, self._key_since = key, time.monotonic()
        await super().on_event(key)
        if not key.is_forwarded:  # a priority binding took it (or escape left a maximized widget)
            self._key_done(key)
            return
        start = self.focused or self.screen  # where super() sent it: nothing has run since
        self._follow(key, start, start, barrier=False)

    def _follow(self, key: events.Key, node: MessagePump, start: MessagePump, barrier: bool) -> None:
        """Queue a look at ``key`` behind what ``node`` has queued (its queue is first in, first out)."""
        if not node.call_later(self._key_seen, key, node, start, barrier):
            self._key_done(key)  # node is closing: nothing more comes of it

    def _key_seen(self, key: events.Key, node: MessagePump, start: MessagePump, barrier: bool) -> None:
        """In ``node``'s task, after it handled ``key`` (or, for the barrier, after everything
        queued there before).  Go on to the parent where the key bubbled; once the key's
        journey is over, send the barrier the same way from where it started."""
        if key is not self._key_in_flight:
            return  # released already (it took too long)
        over = node is self or (not barrier and key._stop_propagation)
        parent = None if over else node._parent
        if parent is None or not (node.is_parent_active and node.is_attached):
            if barrier:
                self._key_done(key)
            else:
                self._follow(key, start, start, barrier=True)
            return
        self._follow(key, parent, start, barrier)

    def _key_done(self, key: events.Key | None) -> None:
        if key is None or key is not self._key_in_flight:
            return
        self._key_in_flight, self._key_since = None, time.monotonic()
        if self._key_backlog and not self._key_next_queued:
            self._key_next_queued = True
            self.call_later(self._next_key)  # behind what the App has queued

    async def _next_key(self) -> None:
        """Deliver the oldest waiting key, once the screen it goes to is up."""
        self._key_next_queued = False
        if self._key_in_flight is not None or not self._key_backlog:
            return
        if not self.screen.is_mounted and time.monotonic() - self._key_since < KEY_TIMEOUT_S:
            self._key_next_queued = True
            self.set_timer(SCREEN_WAIT_S, self._next_key)
            return
        await self._deliver_key(self._key_backlog.popleft())

    def _watch_keys(self) -> None:
        """While keys wait, make sure none waits longer than KEY_TIMEOUT_S for the one before."""
        if self._key_watchdog:
            return
        self._key_watchdog = True

        def look() -> None:
            self._key_watchdog = False
            if self._key_in_flight is not None and time.monotonic() - self._key_since >= KEY_TIMEOUT_S:
                self._key_done(self._key_in_flight)  # lost track of it: let the next go
            if self._key_backlog:
                self._watch_keys()

        self.set_timer(KEY_TIMEOUT_S / 2, look)

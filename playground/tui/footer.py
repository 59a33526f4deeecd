"""The footer: ``?`` (help) and ``q`` (quit) first, so that a narrow terminal still shows them."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import Footer

FIRST = ("help", "quit")  # the actions whose keys come first, in this order


class ShellFooter(Footer):
    """Textual's footer, compact, with the keys of FIRST moved to the front (the others keep their order:
    the focused panel's keys, then the app's)."""

    def __init__(self) -> None:
        super().__init__(compact=True)

    def compose(self) -> ComposeResult:
        widgets = list(super().compose())

        def rank(widget: object) -> int:
            action = getattr(widget, "action", "")  # a key's (FooterKey); a group or label has none
            return FIRST.index(action) if action in FIRST else len(FIRST)

        yield from sorted(widgets, key=rank)  # stable: the rest as Textual orders them

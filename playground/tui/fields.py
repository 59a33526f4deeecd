"""What a form's checks raise: ``FieldError``, naming the field that does not hold (textual-free,
so the checks of each form can be tested without an app)."""

from __future__ import annotations


class FieldError(ValueError):
    """A field of a form that does not hold: its id and what is wrong, in one line."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field

"""argparse types for what people type on every command line: sizes, whole numbers, durations.

Each turns a bad value into ``argparse.ArgumentTypeError`` with one line that quotes at
most the first 40 characters of it, so argparse prints ``PROG: error: argument --X: ...``.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence

from common.limits import MAX_SIZE, PAGE_SIZE
from common.units import parse_size, shown

EXIT_USAGE = 2  # a usage error, as argparse exits on one; a command also says no engine with it


class SubcommandParser(argparse.ArgumentParser):
    """A subcommand's parser that refuses arguments it does not take itself, with its own usage.

    argparse leaves them to the top-level parser, whose usage (``epc-playground [-h]
    [--version] COMMAND ...``) says nothing of ``cg tree``'s.  Give it as
    ``add_subparsers(parser_class=SubcommandParser)``; nested subcommands inherit it.
    """

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {shown(' '.join(extras))}")
        return parsed, extras


def size(text: str) -> int:
    """Bytes from ``4096``, ``64KiB``, ``128MiB``, ``1GiB`` (K, M, G too)."""
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def capacity(text: str) -> int:
    """An EPC size: whole 4 KiB pages, at least one and at most MAX_SIZE (8 TiB), as a host can hold."""
    nbytes = size(text)
    if nbytes < PAGE_SIZE or nbytes % PAGE_SIZE or nbytes > MAX_SIZE:
        raise argparse.ArgumentTypeError(
            f"{shown(text)} is not an EPC size: whole 4 KiB pages, from {PAGE_SIZE} bytes to {MAX_SIZE} (8 TiB)"
        )
    return nbytes


def whole(text: str, low: int, high: int | None = None) -> int:
    """An int in low..high (bounded: a 5,000-digit number is refused, not echoed)."""
    digits = text.strip().lstrip("+-")
    value = int(text) if digits.isascii() and digits.isdigit() and len(digits) <= 30 else None
    if value is None or value < low or (high is not None and value > high):
        span = f"from {low} to {high}" if high is not None else f">= {low}"
        raise argparse.ArgumentTypeError(f"{shown(text)} is not a whole number {span}")
    return value


def positive(text: str) -> int:
    return whole(text, 1)


def count(text: str) -> int:
    return whole(text, 0)


def profile(text: str) -> str:
    """A cost profile: a bundled one's name or a TOML file (common/costs.py), checked now; the text
    given, to hand on to an engine process."""
    from common.costs import ProfileError, load_profile

    try:
        load_profile(text)
    except ProfileError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def seconds(text: str) -> float:
    """A duration in seconds, ``5`` or ``2.5s``, above 0."""
    try:
        value = float(text.removesuffix("s"))
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{shown(text)} is not a duration in seconds, like 5 or 2.5s")
    return value

"""argparse types for what people type on every command line: sizes, whole numbers, durations.

Each turns a bad value into ``argparse.ArgumentTypeError`` with one line that quotes at
most the first 40 characters of it, so argparse prints ``PROG: error: argument --X: ...``.
"""

from __future__ import annotations

import argparse
import math

from common.units import parse_size, shown

EXIT_USAGE = 2  # a usage error, as argparse exits on one; a command also says no engine with it


def size(text: str) -> int:
    """Bytes from ``4096``, ``64KiB``, ``128MiB``, ``1GiB`` (K, M, G too)."""
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


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


def seconds(text: str) -> float:
    """A duration in seconds, ``5`` or ``2.5s``, above 0."""
    try:
        value = float(text.removesuffix("s"))
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{shown(text)} is not a duration in seconds, like 5 or 2.5s")
    return value

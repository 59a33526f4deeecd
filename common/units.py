"""Sizes in bytes: parsing the IEC forms people type, and printing them back."""

from __future__ import annotations

import re

from common.limits import MAX_COMPUTE_NS

_UNITS = {"": 0, "b": 0, "k": 10, "ki": 10, "kib": 10, "m": 20, "mi": 20, "mib": 20}
_UNITS |= {"g": 30, "gi": 30, "gib": 30, "t": 40, "ti": 40, "tib": 40, "p": 50, "pi": 50, "pib": 50}
_SIZE_RE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*")
_SIZE_HINT = "use bytes or an IEC unit such as 4096, 64KiB, 128MiB or 1GiB"
MAX_DIGITS = 40  # far more than any size needs (2**64 has 20), far fewer than int()'s own limit
_SHOWN = 40  # characters of a bad value quoted back in an error


def parse_size(value: int | str) -> int:
    """Return a size in bytes from an int or a string like ``"128MiB"``, ``"64K"`` or ``"4096"``.

    Units are binary (K = KiB = 1024).  Raises ValueError with a one-line hint that
    quotes at most the first 40 characters of ``value``.
    """
    if isinstance(value, bool):
        raise ValueError(f"bad size {value!r}: {_SIZE_HINT}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"bad size {value}: sizes cannot be negative")
        return int(value)
    if not isinstance(value, str):
        raise ValueError(f"bad size {shown(value)}: {_SIZE_HINT}")
    m = _SIZE_RE.fullmatch(value)
    shift = _UNITS.get(m.group(2).lower()) if m else None
    if m is None or shift is None:
        raise ValueError(f"bad size {shown(value)}: {_SIZE_HINT}")
    number = m.group(1)
    if len(number) > MAX_DIGITS:
        raise ValueError(f"bad size {shown(value)}: more than {MAX_DIGITS} digits")
    if "." not in number:
        return int(number) << shift
    whole, frac = number.split(".")
    scaled, rest = divmod(int(whole + frac) << shift, 10 ** len(frac))
    if rest:
        raise ValueError(f"bad size {shown(value)}: not a whole number of bytes")
    return int(scaled)


def shown(value: object) -> str:
    """``repr(value)``, cut to its first 40 characters (and the length) when longer: for quoting bad input."""
    text = repr(value)
    if len(text) <= _SHOWN:
        return text
    return f"{text[:_SHOWN]}... ({len(text)} characters)"


def format_size(nbytes: int) -> str:
    """Return ``nbytes`` in the largest IEC unit that keeps it readable, e.g. ``"128 MiB"``."""
    for unit, shift in (("PiB", 50), ("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if abs(nbytes) >= 1 << shift:
            value = nbytes / (1 << shift)
            text = f"{value:.0f}" if nbytes % (1 << shift) == 0 else f"{value:.1f}"
            return f"{text} {unit}"
    return f"{nbytes} B"


_COMPUTE_RE = re.compile(r"\s*([0-9]{1,15}(?:\.[0-9]{1,9})?)\s*(ns|us|µs|ms|s)\s*")
_COMPUTE_NS = {"ns": 1, "us": 10**3, "µs": 10**3, "ms": 10**6, "s": 10**9}
_COMPUTE_HINT = "give a time with its unit, like 250ns, 2us or 1.5ms"


def parse_compute(value: object) -> int:
    """A workload's compute per page accessed, in whole ns, from ``"250ns"``, ``"2us"``, ``"1.5ms"``; at
    most MAX_COMPUTE_NS (1 s).  ValueError with a one-line hint (a unit is required: ``250`` is refused)."""
    m = _COMPUTE_RE.fullmatch(value) if isinstance(value, str) else None
    if m is None:
        raise ValueError(f"bad compute time {shown(value)}: {_COMPUTE_HINT}")
    ns = float(m.group(1)) * _COMPUTE_NS[m.group(2)]
    if ns > MAX_COMPUTE_NS:
        raise ValueError(f"bad compute time {shown(value)}: at most 1s per page accessed")
    return round(ns)


def format_compute(ns: int) -> str:
    """A compute time per page as --compute takes it back: ``250ns``, ``2us``, ``1.5us``, ``3ms``."""
    for unit, scale in (("s", 10**9), ("ms", 10**6), ("us", 10**3)):
        if ns >= scale:
            return f"{ns / scale:g}{unit}"
    return f"{ns}ns"

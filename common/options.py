"""argparse types for what people type on every command line: sizes, whole numbers, durations.

Each turns a bad value into ``argparse.ArgumentTypeError`` with one line that quotes at
most the first 40 characters of it, so argparse prints ``PROG: error: argument --X: ...``.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence

from common.knobs import BOUNDS, Knobs
from common.limits import MAX_SIZE, PAGE_SIZE
from common.units import parse_compute, parse_size, shown

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


def compute(text: str) -> int:
    """A workload's compute per page accessed, in ns, from ``250ns``, ``2us``, ``1.5ms`` (at most 1s)."""
    try:
        return parse_compute(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def seconds(text: str) -> float:
    """A duration in seconds, ``5`` or ``2.5s``, above 0."""
    try:
        value = float(text.removesuffix("s"))
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{shown(text)} is not a duration in seconds, like 5 or 2.5s")
    return value


# -- the series' knobs (common.knobs), one group shared by every command that makes a host --------

_KNOB_OPTIONS = (
    ("nr_to_scan", "--nr-to-scan", "SGX_NR_TO_SCAN: pages one reclaim batch isolates (V17: 16; 1..1024)"),
    ("low_pages", "--low-pages", "SGX_NR_LOW_PAGES: ksgxd wakes when an allocation leaves fewer free (V17: 32)"),
    ("high_pages", "--high-pages", "SGX_NR_HIGH_PAGES: ksgxd reclaims until this many are free (V17: 64)"),
    ("cg_margin", "--cg-margin", "SGX_CG_MIN_FREE_PAGE: pages a cgroup's worker keeps free below its limit (V17: 32)"),
    ("cg_low_limit", "--cg-low-limit", "SGX_CG_LOW_LIMIT: limits of at most this many pages keep no margin (V17: 128)"),
)


def add_knob_options(parser: argparse.ArgumentParser) -> None:
    """The options of the series' knobs, in a group of their own; read them with ``parsed_knobs``."""
    group = parser.add_argument_group(
        "the series' knobs",
        'V17\'s constants, for asking "what if" (docs/knobs.md). Any value other\n'
        "than V17's is shown in the TUI's status line, `cg tree`, KTAP and JSON Lines\n"
        "output, so a run is never taken for the kernel's.",
    )
    for name, flag, text in _KNOB_OPTIONS:
        group.add_argument(flag, dest=f"knob_{name}", metavar="N", type=_knob_type(*BOUNDS[name]), help=text)
    group.add_argument(
        "--no-async-reclaim",
        dest="knob_async_reclaim",
        action="store_const",
        const=False,
        help="a fault's refused charge queues no per-cgroup work item (V17 queues it): only the caller's own "
        "reclaim and ksgxd free pages",
    )
    parser.set_defaults(knob_parser=parser)


def _knob_type(low: int, high: int) -> Callable[[str], int]:
    def knob(text: str) -> int:
        return whole(text, low, high)

    return knob


def given_knobs(args: argparse.Namespace) -> dict[str, int | bool]:
    """The knobs given on the command line, by name (common.knobs.NAMES), none of them checked together."""
    given: dict[str, int | bool] = {}
    for name in (*(option[0] for option in _KNOB_OPTIONS), "async_reclaim"):
        value = getattr(args, f"knob_{name}", None)
        if value is not None:
            given[name] = value
    return given


def parsed_knobs(args: argparse.Namespace, base: dict[str, int | bool] | None = None) -> Knobs:
    """The Knobs of ``base`` (a scenario's ``[knobs]``) with the command line's over them; a bad
    combination (``--low-pages`` not below ``--high-pages``) is a usage error: one line, exit 2."""
    try:
        return Knobs.from_mapping({**(base or {}), **given_knobs(args)})
    except ValueError as e:
        args.knob_parser.error(str(e))
        raise  # error() exits


def knob_argv(knobs: Knobs) -> list[str]:
    """The command line options that give ``knobs`` (only those that are not V17's)."""
    argv: list[str] = []
    for name, value in knobs.changed().items():
        if name == "async_reclaim":
            argv.append("--no-async-reclaim")
        else:
            argv += [f"--{name.replace('_', '-')}", str(value)]
    return argv

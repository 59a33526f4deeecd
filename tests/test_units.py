"""Size parsing, and the command line's help (the layering is tests/test_layering.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from common.units import format_size, parse_size

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("text", "nbytes"),
    [
        ("4096", 4096),
        ("64KiB", 65536),
        ("64K", 65536),
        ("128MiB", 128 << 20),
        ("1GiB", 1 << 30),
        ("1g", 1 << 30),
        (" 2 MiB ", 2 << 20),
        ("1.5KiB", 1536),
        ("512GiB", 512 << 30),
        (4096, 4096),
    ],
)
def test_parse_size_accepts_bytes_and_iec_units(text: str | int, nbytes: int) -> None:
    assert parse_size(text) == nbytes


@pytest.mark.parametrize("text", ["", "-1", "12 parsecs", "1.2.3K", "0.1B", "KiB", -5, True])
def test_parse_size_rejects_with_a_hint(text: str | int) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(text)


def test_format_size_is_human() -> None:
    assert format_size(128 << 20) == "128 MiB"
    assert format_size(1536) == "1.5 KiB"
    assert format_size(100) == "100 B"


def test_the_command_line_teaches_with_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "playground.cli", "--help"], check=True, capture_output=True, text=True, cwd=ROOT
    ).stdout
    assert "usage: epc-playground" in out and "Enclave Page Cache" in out


@pytest.mark.parametrize("command", ["enclave", "vm"])
def test_the_workloads_have_their_own_entry_point_with_the_same_options(command: str) -> None:
    """``python -m workloads enclave|vm`` is what ``epc-playground enclave|vm`` dispatches to."""

    def help_text(*module: str) -> str:
        run = subprocess.run(
            [sys.executable, "-m", *module, command, "--help"], capture_output=True, text=True, cwd=ROOT
        )
        return " ".join(run.stdout.split())  # argparse wraps the usage by the program name's length

    ours = help_text("workloads")
    assert "--size SIZE" in ours and ours.replace("python -m workloads", "epc-playground") == help_text(
        "playground.cli"
    )

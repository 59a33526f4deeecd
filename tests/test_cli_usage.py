"""The command line without an engine: usage errors, each exit 2 before anything starts or connects; cg tree's rows.

(The newcomer review's bug 14.)  Where an engine would be reached, the environment has
none, so a check that came after connecting would say "no engine" instead.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import cast

import pytest

from common.limits import U64_MAX
from playground.cli import main
from wire.snapshot import NAME_COLUMN, Snapshot, format_tree
from workloads.cli import main as workloads_main

from .engine_fixture import CLI, ROOT, private_env


@pytest.mark.parametrize(
    ("argv", "usage"),
    [
        (["cg", "tree", "/pod", "extra"], "usage: epc-playground cg tree [-h] [--wide]\n"),
        (["cg", "tree", "/pod"], "usage: epc-playground cg tree [-h] [--wide]\n"),
        (["cg", "mkdir", "/a", "/b"], "usage: epc-playground cg mkdir [-h] path\n"),
        (["cg", "write", "/p/misc.max", "sgx_epc 1", "extra"], "usage: epc-playground cg write [-h] PATH VALUE\n"),
        (["run", "--inproc", "sgx2", "extra"], "usage: epc-playground run [-h]"),
    ],
)
def test_extra_arguments_get_the_subcommands_usage_not_the_top_levels(
    argv: list[str], usage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.startswith(usage) and "COMMAND ..." not in err, err
    assert err.splitlines()[-1].startswith(f"epc-playground {' '.join(argv[:2] if argv[0] == 'cg' else argv[:1])}: ")


def test_python_m_workloads_gives_its_subcommands_usage_too(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        workloads_main(["vm", "--size", "4KiB", "extra"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("usage: python -m workloads vm [-h]"), err
    assert err.splitlines()[-1] == "python -m workloads vm: error: unrecognized arguments: 'extra'"


@pytest.mark.parametrize("capacity", ["0", "4095", "9TiB"])
def test_an_engine_capacity_that_no_host_can_have_is_a_usage_error(capacity: str, tmp_path: Path) -> None:
    """It used to start an engine with 0 B of EPC (that one would still be serving: the timeout says so)."""
    done = subprocess.run(
        [*CLI, "engine", "--capacity", capacity],
        env=private_env(tmp_path),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2 and done.stdout == ""
    last = done.stderr.splitlines()[-1]
    assert last == (
        f"epc-playground engine: error: argument --capacity: {capacity!r} is not an EPC size: "
        "whole 4 KiB pages, from 4096 bytes to 8796093022208 (8 TiB)"
    )


def test_a_trim_larger_than_the_heap_is_a_usage_error_before_any_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """It was clamped to the heap without a word; now it is refused before connecting (there is no engine here)."""
    for key, value in private_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("EPC_PLAYGROUND_ENDPOINT", raising=False)
    assert main(["enclave", "--size", "2MiB", "--trim", "4MiB"]) == 2
    assert capsys.readouterr().err == (
        "epc-playground enclave: --trim 4 MiB: more than the heap it trims, --size 2 MiB; give at most that\n"
    )
    assert main(["enclave", "--size", "2MiB", "--trim", "2MiB"]) == 2  # the whole heap is fine: then no engine
    assert "no engine" in capsys.readouterr().err


def test_mount_on_a_file_says_so_with_advice_that_can_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """It said "is not a directory: create it first (mkdir FILE)", which fails on a file."""
    file = tmp_path / "file"
    file.write_text("")
    assert main(["mount", str(file)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"epc-playground mount: {file} exists and is not a directory: mount on a directory "
        "(mkdir /tmp/cg, then epc-playground mount /tmp/cg)\n"
    )
    assert main(["mount", str(tmp_path / "missing")]) == 2
    assert "create it first (mkdir " in capsys.readouterr().err


def _snapshot(*paths: str) -> Snapshot:
    row = {"misc_max": U64_MAX, "misc_current": 0, "misc_peak": 0, "misc_events": 0, "memory_current": 0, "procs": []}
    cgroups = [{**row, "path": path} for path in ("/", *paths)]
    return cast(Snapshot, {"cgroups": cgroups, "capacity": 16 << 20, "free": 16 << 20, "ksgxd": False})


def test_cg_tree_cuts_long_names_in_the_middle_instead_of_padding_every_row_to_them() -> None:
    """A 255-byte name made every row of `cg tree` over 255 columns wide (newcomer review bug 13)."""
    pod = "kubepods-burstable-pod3f9c1b2e_8a4d_4c1e_9b7a_2d6e5f4a3c21.slice"
    lines = format_tree(_snapshot("/k", f"/k/{pod}", "/" + "y" * 255)).splitlines()
    assert max(len(line) for line in lines) < 110
    assert lines[3].startswith("  kubepods-burstable-pod3…b7a_2d6e5f4a3c21.slice ")  # its start and its end
    assert len(lines[3].split()[0]) == NAME_COLUMN - 2 and lines[4].startswith("y" * 24 + "…" + "y" * 23 + " ")
    wide = format_tree(_snapshot("/k", f"/k/{pod}"), name_column=None).splitlines()  # cg tree --wide
    assert wide[3].split()[0] == pod

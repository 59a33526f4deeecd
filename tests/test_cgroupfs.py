"""`epc-playground mount`: the engine's cgroup tree as a real FUSE filesystem, used by real shell tools.

Each test starts a real engine (16 MiB of EPC), mounts it on a temporary directory
and drives it with sh, bash, cat, grep, awk, wc, find, mkdir and rmdir.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .cgroupfs_fixture import Mount, is_mounted, mounted, start_mount, stop_mount
from .engine_fixture import CLI, ROOT, RunningEngine, start_engine, stop_engine

pytestmark = pytest.mark.slow  # an engine, a mount and shells: real processes

CAPACITY = 16 << 20


@pytest.fixture
def mnt(engine: RunningEngine, tmp_path: Path) -> Iterator[Mount]:
    with mounted(engine, tmp_path) as m:
        yield m
    engine.check()


def test_root_and_child_have_the_kernels_files_with_their_modes(mnt: Mount) -> None:
    (mnt.path / "pod").mkdir()
    root = sorted(os.listdir(mnt.path))
    assert "misc.capacity" in root and "misc.current" in root and "pod" in root
    assert "misc.max" not in root and "misc.events" not in root
    child = sorted(os.listdir(mnt.path / "pod"))
    assert {"misc.max", "misc.events", "misc.events.local", "memory.max", "memory.events", "cgroup.procs"} <= set(child)
    assert "misc.capacity" not in child
    assert stat.S_ISDIR(os.stat(mnt.path / "pod").st_mode)
    assert stat.S_IMODE(os.stat(mnt.path / "pod/misc.max").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(mnt.path / "pod/misc.current").st_mode) == 0o444
    assert os.stat(mnt.path / "misc.capacity").st_size == 0  # as cgroupfs; readers read to end of file


def test_cat_grep_awk_and_wc_see_the_whole_content(mnt: Mount) -> None:
    assert mnt.sh("cat misc.capacity").stdout == f"sgx_epc {CAPACITY}\n"
    assert mnt.sh("awk '$1 == \"sgx_epc\" { print $2 }' misc.capacity").stdout == f"{CAPACITY}\n"
    assert mnt.sh("grep -c sgx_epc misc.capacity misc.current").stdout == "misc.capacity:1\nmisc.current:1\n"
    assert mnt.sh("wc -c < misc.capacity").stdout.strip() == str(len(f"sgx_epc {CAPACITY}\n"))
    assert mnt.sh("head -c 7 misc.capacity").stdout == "sgx_epc"
    assert (mnt.path / "misc.capacity").read_text() == f"sgx_epc {CAPACITY}\n"


def test_echo_writes_a_limit_and_cat_reads_it_back(mnt: Mount) -> None:
    result = mnt.sh("mkdir pod && echo 'sgx_epc 65536' > pod/misc.max && cat pod/misc.max")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "sgx_epc 65536\n"
    assert mnt.sh("echo max > pod/memory.max && cat pod/memory.max").stdout == "max\n"


def test_a_bad_write_fails_in_the_shell_with_invalid_argument_and_changes_nothing(mnt: Mount) -> None:
    (mnt.path / "pod").mkdir()
    plain = mnt.sh("echo bogus > pod/misc.max")
    assert plain.returncode != 0  # dash's echo reports every write error as "I/O error"
    bash = mnt.sh("echo bogus > pod/misc.max", shell="bash")
    assert bash.returncode != 0 and "Invalid argument" in bash.stderr, bash.stderr
    coreutils = mnt.sh("/bin/echo 'sgx_epc -1' > pod/misc.max")
    assert coreutils.returncode != 0 and "Invalid argument" in coreutils.stderr
    too_big = mnt.sh(f"/bin/echo 'sgx_epc {1 << 64}' > pod/misc.max")
    assert "Numerical result out of range" in too_big.stderr  # ERANGE
    assert mnt.sh("cat pod/misc.max").stdout == "sgx_epc max\n"


def test_read_only_files_and_new_files_are_refused_as_by_the_kernel(mnt: Mount) -> None:
    assert "Permission denied" in mnt.sh("echo 1 > misc.current", shell="bash").stderr
    assert "Permission denied" in mnt.sh("echo 1 > no.such.file", shell="bash").stderr
    assert "Operation not permitted" in mnt.sh("rm -f misc.current").stderr
    assert "Permission denied" in mnt.sh("echo +memory > cgroup.controllers", shell="bash").stderr


def test_mkdir_and_rmdir_with_ebusy_and_eexist(mnt: Mount) -> None:
    assert mnt.sh("mkdir -p a/b").returncode == 0
    assert "File exists" in mnt.sh("mkdir a").stderr
    busy = mnt.sh("rmdir a")
    assert busy.returncode != 0 and "Device or resource busy" in busy.stderr
    assert "No such file or directory" in mnt.sh("rmdir nothere").stderr
    assert mnt.sh("rmdir a/b && rmdir a").returncode == 0
    assert not (mnt.path / "a").exists()


def test_a_cgroup_name_over_255_bytes_is_enametoolong_through_the_mount_as_on_the_vfs(mnt: Mount) -> None:
    long = mnt.sh(f"mkdir {'x' * 256}")
    assert long.returncode != 0 and "File name too long" in long.stderr
    assert mnt.sh(f"mkdir {'y' * 255}").returncode == 0
    assert sorted(os.listdir(mnt.path / ("y" * 255)))[:1] == ["cgroup.controllers"]


def test_mv_of_a_cgroup_or_a_file_is_not_permitted(mnt: Mount) -> None:
    assert mnt.sh("mkdir a").returncode == 0
    for what in ("a b", "a/misc.max a/misc.old"):
        moved = mnt.sh(f"mv {what}")
        assert moved.returncode != 0 and "Operation not permitted" in moved.stderr, moved.stderr
    assert (mnt.path / "a").is_dir() and not (mnt.path / "b").exists()


def test_rmdir_of_a_cgroup_with_a_task_is_ebusy_until_it_exits(mnt: Mount) -> None:
    (mnt.path / "pod").mkdir()
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        assert mnt.sh(f"echo {sleeper.pid} > pod/cgroup.procs").returncode == 0
        assert mnt.sh("cat pod/cgroup.procs").stdout == f"{sleeper.pid}\n"
        assert "Device or resource busy" in mnt.sh("rmdir pod").stderr
    finally:
        sleeper.kill()
        sleeper.wait()
    assert mnt.sh("cat pod/cgroup.procs").stdout == ""  # only live pids
    assert mnt.sh("rmdir pod").returncode == 0


def test_subtree_control_takes_plus_and_minus(mnt: Mount) -> None:
    assert mnt.sh("echo '+misc +memory' > cgroup.subtree_control").returncode == 0
    assert mnt.sh("mkdir pod && echo -misc > pod/cgroup.subtree_control && cat pod/cgroup.subtree_control").stdout == (
        "memory\n"
    )
    assert mnt.sh("echo +misc > pod/cgroup.subtree_control && cat pod/cgroup.subtree_control").stdout == (
        "memory misc\n"
    )
    assert "Invalid argument" in mnt.sh("echo +bogus > pod/cgroup.subtree_control", shell="bash").stderr
    assert "No such file" in mnt.sh("echo +cpu > pod/cgroup.subtree_control", shell="bash").stderr  # not offered


def test_echo_0_moves_the_writing_shell_and_what_it_starts_is_charged_there(mnt: Mount) -> None:
    (mnt.path / "pod").mkdir()
    script = (
        "echo 0 > pod/cgroup.procs || exit 9\n"
        'echo "shell $$"\n'
        "cat pod/cgroup.procs\n"
        f"{' '.join(CLI)} enclave --size 1MiB --name child\n"  # a child, not exec: it inherits the cgroup
    )
    result = subprocess.run(["sh", "-c", script], cwd=mnt.path, env={**mnt.env, "PYTHONPATH": str(ROOT)}, **_OUT)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split()
    shell = lines[1]
    assert shell in lines[2:]  # the shell, and the cat it ran, are in pod
    assert len(lines[2:]) == 2
    assert _bytes(mnt.sh("cat pod/misc.peak").stdout) >= 1 << 20  # the enclave was charged to pod
    assert mnt.sh("cat pod/misc.current").stdout == "sgx_epc 0\n"
    assert _bytes(mnt.sh("cat misc.peak").stdout) >= 1 << 20


def test_find_and_grep_walk_the_tree_for_the_selftests_misc_files(mnt: Mount) -> None:
    mnt.sh("mkdir -p k/sgx_test_a/sgx_test_b k/sgx_test_c && echo 'sgx_epc 4096' > k/sgx_test_c/misc.max")
    found = mnt.sh("find . -wholename '*/sgx_test*/misc.max' | sort").stdout.split()
    assert found == ["./k/sgx_test_a/misc.max", "./k/sgx_test_a/sgx_test_b/misc.max", "./k/sgx_test_c/misc.max"]
    shown = mnt.sh("find . -wholename '*/sgx_test_c/misc.max' -exec sh -c 'echo \"$1:\"; cat \"$1\"' _ {} \\;")
    assert shown.stdout == "./k/sgx_test_c/misc.max:\nsgx_epc 4096\n"
    recursive = mnt.sh("grep -r . k/sgx_test_c").stdout.splitlines()
    assert "k/sgx_test_c/misc.max:sgx_epc 4096" in recursive and "k/sgx_test_c/misc.current:sgx_epc 0" in recursive


def test_reads_are_fresh_after_changes_made_elsewhere(mnt: Mount, engine: RunningEngine) -> None:
    assert not (mnt.path / "elsewhere").exists()
    with engine.client() as client:
        client.mkdir("/elsewhere")
        assert (mnt.path / "elsewhere").is_dir()  # no stale negative lookup
        with open(mnt.path / "elsewhere/misc.max") as f:  # the same open file, read twice
            assert f.read() == "sgx_epc max\n"
            client.write("/elsewhere/misc.max", "sgx_epc 8192")
            f.seek(0)
            assert f.read() == "sgx_epc 8192\n"
        client.rmdir("/elsewhere")
        assert not (mnt.path / "elsewhere").exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_the_mount_unmounts_cleanly_on_sigterm_and_sigint(engine: RunningEngine, tmp_path: Path, signum: int) -> None:
    path = tmp_path / "cgroup"
    path.mkdir()
    process = start_mount(engine, path)
    assert (path / "misc.capacity").read_text() == f"sgx_epc {CAPACITY}\n"
    assert stop_mount(process, path, signum) == 0
    assert not is_mounted(path)
    assert os.listdir(path) == []


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_an_idle_mount_unmounts_and_exits_2_with_one_line_when_its_engine_goes(tmp_path: Path, signum: int) -> None:
    """No one reads the mount: it notices the engine going by itself (DESIGN.md section 3's exit 2)."""
    engine = start_engine(tmp_path, "--capacity", "16MiB")
    path = tmp_path / "cgroup"
    path.mkdir()
    process = start_mount(engine, path)
    try:
        engine.process.send_signal(signum)
        engine.process.wait(timeout=10)
        assert process.wait(timeout=10) == 2
        assert not is_mounted(path)
        assert process.communicate()[1] == f"epc-playground mount: the engine (pid {engine.process.pid}) is gone\n"
    finally:
        stop_mount(process, path)  # a no-op when it went away by itself
        stop_engine(engine)


def test_a_second_mount_on_the_same_directory_is_refused(mnt: Mount, engine: RunningEngine) -> None:
    again = engine.cli("mount", str(mnt.path))
    assert again.returncode == 2 and "cgroups already" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1


def test_missing_libfuse_is_one_clear_line(engine: RunningEngine, tmp_path: Path) -> None:
    env = {**engine.env, "FUSE_LIBRARY_NAME": "fuse-not-installed"}  # mfusepy then finds no libfuse
    result = subprocess.run([*CLI, "mount", str(tmp_path)], env=env, cwd=ROOT, **_OUT)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "libfuse 3 is not installed" in result.stderr
    assert "apt-get install fuse3" in result.stderr
    assert not is_mounted(tmp_path)


def test_missing_dev_fuse_is_one_clear_line(engine: RunningEngine, tmp_path: Path) -> None:
    # a private mount namespace with an empty /dev: the same check a container without FUSE meets
    script = f"mount -t tmpfs none /dev && exec {' '.join(CLI)} mount {tmp_path}"
    result = subprocess.run(["unshare", "-m", "sh", "-c", script], env=engine.env, cwd=ROOT, **_OUT)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "/dev/fuse is missing" in result.stderr, result.stderr


def test_no_engine_and_no_directory_are_one_clear_line(engine: RunningEngine, tmp_path: Path) -> None:
    missing = engine.cli("mount", str(tmp_path / "nothere"))
    assert missing.returncode == 2 and "is not a directory" in missing.stderr
    no_engine = engine.cli("mount", str(tmp_path), "--connect", f"ipc://{tmp_path}/none.sock")
    assert no_engine.returncode == 2 and no_engine.stderr.count("\n") == 1 and "no engine" in no_engine.stderr


_OUT: dict[str, object] = {"capture_output": True, "text": True, "timeout": 60}


def _bytes(line: str) -> int:
    return int(line.split()[1])

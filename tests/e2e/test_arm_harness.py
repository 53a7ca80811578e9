"""The pieces under the arm64 worker test that can be checked without emulation.

tests/support/cached_directory.py: the rootfs cache is never trusted half-built, even
when its builder is killed; tests/support/arm_host.py: the Debian mirror is read from
apt sources in both formats.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.arm_host import ArmUnavailable, debian_mirror
from tests.support.bazel import REPO_ROOT
from tests.support.cached_directory import cached_directory, prune_unused

KILLED_BUILDER = """
import sys, time
from pathlib import Path
from tests.support.cached_directory import cached_directory, prune_unused

def build(staging):
    (staging / "half").write_text("written before the kill")
    print("building", flush=True)
    time.sleep(600)

cached_directory(Path(sys.argv[1]), build)
"""


def fill(staging: Path) -> None:
    (staging / "complete").write_text("yes")


def test_a_cached_directory_is_built_once_and_then_reused(tmp_path: Path) -> None:
    builds: list[Path] = []

    def build(staging: Path) -> None:
        builds.append(staging)
        fill(staging)

    final = tmp_path / "cache-key"
    assert cached_directory(final, build) == final
    assert cached_directory(final, build) == final
    assert len(builds) == 1 and not builds[0].exists()
    assert (final / "complete").read_text() == "yes"


def test_a_failed_build_leaves_nothing_that_a_later_run_would_trust(tmp_path: Path) -> None:
    final = tmp_path / "cache-key"

    def broken(staging: Path) -> None:
        (staging / "half").write_text("partial")
        raise RuntimeError("mmdebstrap failed")

    with pytest.raises(RuntimeError, match="mmdebstrap failed"):
        cached_directory(final, broken)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache-key.lock"]
    cached_directory(final, fill)
    assert sorted(p.name for p in final.iterdir()) == ["complete"]


def test_a_killed_build_is_thrown_away_by_the_next_one(tmp_path: Path) -> None:
    final = tmp_path / "cache-key"
    builder = subprocess.Popen([sys.executable, "-c", KILLED_BUILDER, str(final)], cwd=REPO_ROOT,
                               stdout=subprocess.PIPE, text=True)
    try:
        assert builder.stdout is not None and builder.stdout.readline() == "building\n"
        staging = [p for p in tmp_path.iterdir() if ".building-" in p.name]
        assert len(staging) == 1 and (staging[0] / "half").exists()
    finally:
        os.kill(builder.pid, signal.SIGKILL)
        builder.wait(10)
    assert not final.exists()
    cached_directory(final, fill)  # the dead builder's lock went with it (else this would hang)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache-key", "cache-key.lock"]
    assert sorted(p.name for p in final.iterdir()) == ["complete"]


def test_read_only_directories_in_a_failed_build_are_removed_too(tmp_path: Path) -> None:
    def read_only(staging: Path) -> None:
        locked = staging / "usr" / "share"
        locked.mkdir(parents=True)
        (locked / "file").write_text("x")
        locked.chmod(0o555)
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        cached_directory(tmp_path / "key", read_only)
    assert [p.name for p in tmp_path.iterdir()] == ["key.lock"]


def test_caches_of_other_keys_go_only_when_unused_for_long_and_not_being_built(tmp_path: Path) -> None:
    week = 7 * 24 * 3600
    current = cached_directory(tmp_path / "rootfs-new", fill)
    old, busy, recent = (cached_directory(tmp_path / f"rootfs-{name}", fill) for name in ("old", "busy", "recent"))
    for stale in (old, busy, current):
        os.utime(stale, (time.time() - 2 * week,) * 2)
    (tmp_path / "rootfs-dead.building-1").mkdir()
    (tmp_path / "other-old").mkdir()
    os.utime(tmp_path / "other-old", (time.time() - 2 * week,) * 2)
    with open(tmp_path / "rootfs-busy.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        assert prune_unused(tmp_path, "rootfs-", current, week) == [old]
    assert current.is_dir() and busy.is_dir() and recent.is_dir() and (tmp_path / "other-old").is_dir()
    assert (tmp_path / "rootfs-dead.building-1").is_dir()  # the next builder of that key removes it
    assert cached_directory(busy, fill) == busy  # a use marks it used
    assert prune_unused(tmp_path, "rootfs-", current, week) == []


def test_the_debian_mirror_comes_from_the_hosts_apt_sources(tmp_path: Path) -> None:
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    (apt / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\n# a comment\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n"
        "Components: main\n\n"
        "Types: deb deb-src\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main contrib\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )
    assert debian_mirror("bookworm", apt) == "http://mirror.example/debian"
    (apt / "sources.list.d" / "debian.sources").unlink()
    (apt / "sources.list").write_text(
        "# deb http://old.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://other.example/debian bookworm main non-free\n"
    )
    assert debian_mirror("bookworm", apt) == "http://other.example/debian"
    with pytest.raises(ArmUnavailable, match="no apt source"):
        debian_mirror("trixie", apt)

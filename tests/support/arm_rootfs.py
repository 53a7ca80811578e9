"""An arm64 Debian bookworm rootfs holding reapi's dependencies, and commands that run in it.

    rootfs = prepare_arm_rootfs(REPO_ROOT)        # minutes the first time, then cached
    subprocess.run(rootfs.command(["uname", "-m"], workdir=tmp_path))   # prints aarch64

Two directories under the temp dir, each built atomically (tests/support/cached_directory.py)
and named by a key of what went into it, so a change rebuilds only what it affects:

- ``reapi-arm64-rootfs-<key>``: ``mmdebstrap --variant=extract`` of python3 and the few
  packages the worker and the tests' actions use, with their dependencies, from the
  host's own apt mirror. Extracting runs nothing arm64: no maintainer script is needed
  to run Python, and configuring packages under qemu-user (debootstrap's second stage)
  took 4-12 minutes here against about 25 s for the extraction.
- ``reapi-arm64-venv-<key>``: a venv made by the rootfs's python (``--without-pip``),
  with pyproject.toml's dependencies installed into it by the HOST's pip for the arm64
  platform (``--platform manylinux_*_aarch64 --only-binary=:all:``, so every dependency
  must ship an aarch64 wheel and a missing one fails the build with pip's message);
  pip also byte-compiles them, which CPython's .pyc format allows across machines.
  Bound at /opt/reapi-venv, where its scripts expect it.

At run time the rootfs and the venv are bound read-only (a run cannot spoil the cache),
the checkout read-only at /reapi (a ``.pth`` file puts it on the venv's path, so the
worker runs the code under test, as an editable install would), the caller's work
directory read-write at /worker, a fresh /proc, /dev and /tmp. The network is the
host's: the worker reaches a server on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import json
import os
import ssl
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.arm_host import (
    SUITE, ArmUnavailable, debian_mirror, ensure_arm64_execution, is_root, require_tools,
)
from tests.support.cached_directory import cached_directory, prune_unused

# Bump when the build steps change, so caches made by older steps are not trusted.
RECIPE = 4
# Caches of other keys (older recipes, other dependencies) are removed after this long unused.
UNUSED_CACHE_S = 7 * 24 * 3600
# python3, the system users (base-passwd) and what the worker runs (sh, setpriv for the process sandbox) and the tests'
# actions use (coreutils); grpcio's wheel needs libstdc++.
PACKAGES = ("python3", "python3-venv", "base-passwd", "libstdc++6", "dash", "bash", "coreutils", "util-linux", "libc-bin")
# Wheel tags bookworm's glibc 2.36 can load, newest first.
GLIBC_TAGS = ("manylinux_2_36", "manylinux_2_34", "manylinux_2_28", "manylinux_2_17", "manylinux2014")
VENV = "/opt/reapi-venv"
CHECKOUT = "/reapi"
WORKDIR = "/worker"
MOUNT_POINTS = (VENV, CHECKOUT, WORKDIR)
PATH = f"{VENV}/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
BUILD_TIMEOUT_S = 1800


@dataclass(frozen=True)
class ArmRootfs:
    root: Path
    venv: Path
    checkout: Path

    @property
    def python(self) -> str:
        """The venv's python, as seen inside."""
        return f"{VENV}/bin/python"

    def command(self, argv: Sequence[str], *, workdir: Path) -> list[str]:
        """``argv`` run inside the rootfs, ``workdir`` bound read-write at /worker."""
        binds = ["--ro-bind", str(self.venv), VENV, "--ro-bind", str(self.checkout), CHECKOUT,
                 "--bind", str(workdir), WORKDIR, "--chdir", WORKDIR]
        return bwrap_in(self.root, argv, binds)

    def environment(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """A clean environment for commands inside (nothing of the host's leaks in)."""
        return {"PATH": PATH, "HOME": "/tmp", "LANG": "C.UTF-8", **(extra or {})}


def prepare_arm_rootfs(checkout: Path) -> ArmRootfs:
    """The cached rootfs and venv for ``checkout``'s dependencies, built when missing."""
    require_tools()
    ensure_arm64_execution()
    cache = Path(tempfile.gettempdir())
    dependencies = project_dependencies(checkout / "pyproject.toml")
    rootfs_key = key_of({"recipe": RECIPE, "suite": SUITE, "packages": PACKAGES})
    root = cached_directory(cache / f"reapi-arm64-rootfs-{rootfs_key}", build_rootfs)
    venv_key = key_of({"recipe": RECIPE, "rootfs": rootfs_key, "dependencies": dependencies})
    venv = cached_directory(cache / f"reapi-arm64-venv-{venv_key}", lambda d: build_venv(root, d, dependencies))
    for kind, current in (("rootfs", root), ("venv", venv)):
        prune_unused(cache, f"reapi-arm64-{kind}-", current, UNUSED_CACHE_S)
    return ArmRootfs(root, venv, checkout.resolve())


def project_dependencies(pyproject: Path) -> list[str]:
    with pyproject.open("rb") as f:
        return sorted(tomllib.load(f)["project"]["dependencies"])


def key_of(recipe: object) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def build_rootfs(staging: Path) -> None:
    if not is_root():
        raise ArmUnavailable("building the arm64 rootfs needs root (mmdebstrap --mode=root extracts owners and devices)")
    checked(["mmdebstrap", "--variant=extract", f"--include={','.join(PACKAGES)}", "--architectures=arm64",
             "--mode=root", "--quiet", SUITE, str(staging), debian_mirror()], "mmdebstrap")
    # What base-passwd's maintainer script would do: the system users and groups (root, nobody).
    for table in ("passwd", "group"):
        (staging / "etc" / table).write_bytes((staging / "usr/share/base-passwd" / f"{table}.master").read_bytes())
    for mount_point in ("proc", "dev", "tmp", *MOUNT_POINTS):
        (staging / mount_point.lstrip("/")).mkdir(parents=True, exist_ok=True)
    machine = checked(bwrap_in(staging, ["uname", "-m"]), "uname -m in the rootfs").strip()
    if machine != "aarch64":
        raise ArmUnavailable(f"the arm64 rootfs reports machine {machine!r}, not aarch64")


def build_venv(root: Path, staging: Path, dependencies: Sequence[str]) -> None:
    checked(bwrap_in(root, ["python3", "-m", "venv", "--without-pip", VENV], ["--bind", str(staging), VENV]),
            "creating the arm64 venv", env={"PATH": PATH, "HOME": "/tmp", "LANG": "C.UTF-8"})
    (site_packages,) = staging.glob("lib/python3*/site-packages")
    version = site_packages.parent.name.removeprefix("python")  # the rootfs's Python, e.g. 3.11
    platforms = [arg for glibc in GLIBC_TAGS for arg in ("--platform", f"{glibc}_aarch64")]
    checked([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-cache-dir",
             "--only-binary=:all:", *platforms, "--python-version", version, "--implementation", "cp",
             "--target", str(site_packages), *dependencies], "installing arm64 wheels")
    (site_packages / "reapi-checkout.pth").write_text(f"{CHECKOUT}\n")


def bwrap_in(root: Path, argv: Sequence[str], binds: Sequence[str] = ()) -> list[str]:
    """``argv`` in ``root`` (read-only) with fresh /proc, /dev and /tmp, then ``binds``."""
    return ["bwrap", "--ro-bind", str(root), "/", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
            *binds, "--die-with-parent", "--", *argv]


def checked(args: Sequence[str], what: str, env: Mapping[str, str] | None = None) -> str:
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
                            env=dict(env) if env is not None else None, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()
        raise ArmUnavailable(f"{what} failed (exit {result.returncode}):\n" + "\n".join(output[-30:]))
    return result.stdout

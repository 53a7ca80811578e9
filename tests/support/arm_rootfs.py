"""An arm64 Debian bookworm rootfs holding reapi's dependencies, and commands that run in it.

    rootfs = prepare_arm_rootfs(REPO_ROOT)        # minutes the first time, then cached
    subprocess.run(rootfs.command(["uname", "-m"], workdir=tmp_path))   # prints aarch64

Two directories under the temp dir, each built atomically (tests/support/cached_directory.py)
and named by a key of what went into it, so a change rebuilds only what it affects:

- ``reapi-arm64-rootfs-<key>``: ``debootstrap --arch=arm64 --variant=minbase`` with
  python3 and python3-venv, from the host's own apt mirror. The first stage unpacks
  (``--foreign``); the second runs arm64 dpkg (under qemu-user on an x86-64 host)
  inside bwrap, so that no mount it makes can outlive it.
- ``reapi-arm64-venv-<key>``: a venv made by the rootfs's python, with pyproject.toml's
  dependencies installed from PyPI with ``--only-binary=:all:`` (the rootfs has no
  compiler, so every dependency must ship an aarch64 wheel, and a missing one fails the
  build with pip's message). Bound at /opt/reapi-venv, where its scripts expect it.

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
RECIPE = 2
# Caches of other keys (older recipes, other dependencies) are removed after this long unused.
UNUSED_CACHE_S = 7 * 24 * 3600
PACKAGES = ("python3", "python3-venv")
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
        raise ArmUnavailable("building the arm64 rootfs needs root (debootstrap creates devices and owners)")
    # Always in two stages, the second in bwrap, even on an arm64 host: a one-stage
    # debootstrap mounts /proc and /sys into the target, and a killed build would leave
    # those mounts inside a directory that the next build deletes.
    checked(["debootstrap", "--arch=arm64", "--variant=minbase", f"--include={','.join(PACKAGES)}", "--foreign",
             SUITE, str(staging), debian_mirror()], "debootstrap")
    # dpkg (emulated on x86-64) is the slow part; it need not fsync a rootfs that is
    # thrown away whole if the build fails.
    unsafe_io = staging / "etc" / "dpkg" / "dpkg.cfg.d" / "reapi-build-unsafe-io"
    unsafe_io.write_text("force-unsafe-io\n")
    proc = staging / "proc"
    if proc.is_symlink():  # the first stage links it to the host's /proc
        proc.unlink()
    proc.mkdir(exist_ok=True)  # bwrap mounts a fresh one there
    checked(["bwrap", "--dev-bind", str(staging), "/", "--proc", "/proc", "--dev", "/dev", "--cap-add", "ALL",
             "--die-with-parent", "/debootstrap/debootstrap", "--second-stage"], "debootstrap --second-stage")
    unsafe_io.unlink()
    for downloaded in ("var/cache/apt/archives", "var/lib/apt/lists"):  # ~90 MB nothing inside uses
        for path in (staging / downloaded).glob("*"):
            if path.is_file():
                path.unlink()
    for mount_point in MOUNT_POINTS:
        (staging / mount_point.lstrip("/")).mkdir(parents=True, exist_ok=True)
    (staging / "etc" / "resolv.conf").touch()  # a place to bind the host's while pip runs
    machine = checked(bwrap_in(staging, ["uname", "-m"]), "uname -m in the rootfs").strip()
    if machine != "aarch64":
        raise ArmUnavailable(f"the arm64 rootfs reports machine {machine!r}, not aarch64")


def build_venv(root: Path, staging: Path, dependencies: Sequence[str]) -> None:
    pip = [f"{VENV}/bin/python", "-m", "pip", "install", "--no-cache-dir", "--only-binary=:all:", *dependencies]
    script = f"python3 -m venv {VENV} && {' '.join(quote(a) for a in pip)}"
    binds = ["--bind", str(staging), VENV, "--ro-bind", "/etc/resolv.conf", "/etc/resolv.conf"]
    env = {"PATH": PATH, "HOME": "/tmp", "LANG": "C.UTF-8", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    ca_bundle = host_ca_bundle()
    if ca_bundle is not None:
        # The host may reach PyPI through a proxy its own CA bundle trusts: use that bundle.
        binds += ["--ro-bind", str(ca_bundle), "/tmp/host-ca.pem"]
        env["PIP_CERT"] = "/tmp/host-ca.pem"
    if os.environ.get("PIP_INDEX_URL", "").startswith("http"):  # a local file:// index is not inside
        env["PIP_INDEX_URL"] = os.environ["PIP_INDEX_URL"]
    checked(bwrap_in(root, ["sh", "-c", script], binds), "creating the arm64 venv", env=env)
    (site_packages,) = staging.glob("lib/python3*/site-packages")
    (site_packages / "reapi-checkout.pth").write_text(f"{CHECKOUT}\n")


def bwrap_in(root: Path, argv: Sequence[str], binds: Sequence[str] = ()) -> list[str]:
    """``argv`` in ``root`` (read-only) with fresh /proc, /dev and /tmp, then ``binds``."""
    return ["bwrap", "--ro-bind", str(root), "/", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
            *binds, "--die-with-parent", "--", *argv]


def host_ca_bundle() -> Path | None:
    candidates = [os.environ.get("PIP_CERT"), os.environ.get("SSL_CERT_FILE"),
                  ssl.get_default_verify_paths().openssl_cafile]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate).resolve()
    return None


def quote(arg: str) -> str:
    return "'" + arg.replace("'", "'\\''") + "'"


def checked(args: Sequence[str], what: str, env: Mapping[str, str] | None = None) -> str:
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
                            env=dict(env) if env is not None else None, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()
        raise ArmUnavailable(f"{what} failed (exit {result.returncode}):\n" + "\n".join(output[-30:]))
    return result.stdout

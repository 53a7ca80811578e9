"""What an x86-64 Debian host needs to run an arm64 worker, checked and (as root) set up.

- arm64 programs run under qemu-user through binfmt_misc: the filesystem is mounted
  at /proc/sys/fs/binfmt_misc and the ``qemu-aarch64`` entry (from Debian's
  qemu-user-static + binfmt-support) is enabled with the F ("fix binary") flag, so
  the kernel opens the emulator at registration time and an arm64 rootfs needs no
  copy of it inside;
- ``mmdebstrap`` builds the rootfs, ``bwrap`` runs programs in it in a private mount
  namespace (no mount can outlive a killed test), ``aarch64-linux-gnu-gcc``
  cross-compiles test programs;
- a Debian mirror: the one the host's own apt sources name, so the rootfs comes from
  where the host's packages come from.

``ArmUnavailable`` names what is missing; ``make test`` (deploy/bootstrap.sh --test,
as root) installs every package named here.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from pathlib import Path

BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
QEMU_ENTRY = "qemu-aarch64"
APT_SOURCES = Path("/etc/apt")
SUITE = "bookworm"
# The Debian package that brings each tool (for the messages).
TOOLS = {"mmdebstrap": "mmdebstrap", "bwrap": "bubblewrap", "aarch64-linux-gnu-gcc": "gcc-aarch64-linux-gnu"}


class ArmUnavailable(RuntimeError):
    """This machine cannot run the arm64 worker; the message says what is missing."""


def is_root() -> bool:
    return os.geteuid() == 0


def native_arm64() -> bool:
    return platform.machine().lower() in ("aarch64", "arm64")


def require_tools() -> None:
    missing = [package for tool, package in TOOLS.items() if shutil.which(tool) is None]
    if missing:
        raise ArmUnavailable(f"missing Debian packages: {' '.join(missing)} (`make test` installs them as root)")


def ensure_arm64_execution() -> None:
    """Make the kernel run arm64 ELF files (through qemu-user unless the host is arm64)."""
    if native_arm64():
        return
    if not (BINFMT_DIR / "status").exists():
        if not is_root():
            raise ArmUnavailable(f"binfmt_misc is not mounted at {BINFMT_DIR} (as root: "
                                 f"mount -t binfmt_misc binfmt_misc {BINFMT_DIR})")
        run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_DIR)])
    entry = BINFMT_DIR / QEMU_ENTRY
    if not binfmt_enabled(entry):
        if not is_root() or shutil.which("update-binfmts") is None:
            raise ArmUnavailable(f"the binfmt_misc entry {QEMU_ENTRY} is not enabled (install qemu-user-static "
                                 f"and binfmt-support, then `update-binfmts --enable {QEMU_ENTRY}` as root)")
        run(["update-binfmts", "--enable", QEMU_ENTRY])
        if not binfmt_enabled(entry):
            raise ArmUnavailable(f"`update-binfmts --enable {QEMU_ENTRY}` did not enable it:\n{read(entry)}")
    flags = re.search(r"^flags:\s*(\S*)", read(entry), re.MULTILINE)
    if flags is None or "F" not in flags.group(1):
        raise ArmUnavailable(f"{entry} lacks the F flag, so its interpreter would have to exist inside the "
                             "rootfs; qemu-user-static's entry has it (update-binfmts --import qemu-aarch64)")


def binfmt_enabled(entry: Path) -> bool:
    return entry.exists() and read(entry).startswith("enabled")


def debian_mirror(suite: str = SUITE, apt_dir: Path = APT_SOURCES) -> str:
    """The URI of the first apt source that serves ``suite`` with the main component."""
    for uri, suites, components in apt_sources(apt_dir):
        if suite in suites and "main" in components:
            return uri
    raise ArmUnavailable(f"no apt source in {apt_dir} serves Debian {suite} main (the rootfs is built from a mirror)")


def apt_sources(apt_dir: Path) -> list[tuple[str, list[str], list[str]]]:
    """(URI, suites, components) of every binary source, one-line and deb822 formats."""
    found: list[tuple[str, list[str], list[str]]] = []
    files = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]
    for path in files:
        for line in read(path).splitlines():
            words = re.sub(r"\[[^\]]*\]", "", line.split("#", 1)[0]).split()
            if len(words) >= 3 and words[0] == "deb":
                found.append((words[1], [words[2]], words[3:]))
    for path in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", read(path)):
            fields = deb822_fields(stanza)
            if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes") != "no":
                for uri in fields.get("uris", "").split():
                    found.append((uri, fields.get("suites", "").split(), fields.get("components", "").split()))
    return found


def deb822_fields(stanza: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    key = ""
    for line in stanza.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        if line[0].isspace() and key:
            fields[key] += " " + line.strip()
            continue
        key, _, value = line.partition(":")
        key = key.strip().lower()
        fields[key] = value.strip()
    return fields


def read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def run(args: list[str]) -> None:
    result = subprocess.run(args, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise ArmUnavailable(f"`{' '.join(args)}` failed: {result.stderr.strip() or result.stdout.strip()}")

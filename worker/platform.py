"""What this worker is: OSFamily, ISA (with CPU extensions), cores and memory.

Schedulers match an action's platform properties against what a worker reports,
so detection has to be exact: an architecture we cannot name is reported as
``unknown-<machine>``, which matches no request, rather than guessed. Aliases
(aarch64, arm64, amd64, x86_64) are normalised to the REAPI standard names.
Configured properties replace detected ones key by key (``--property ISA=arm-a64``
replaces every detected ISA value) and add new keys.

Detection is split into pure functions over text (cpuinfo, uname, auxv) so tests can
feed them other machines; ``detect_host`` does the reading.

CPU extensions come from what the kernel tells the process it may execute: on arm64
the hwcap words of the auxiliary vector (/proc/self/auxv), elsewhere /proc/cpuinfo's
line for the running ISA only ("flags" on x86, "Features" on ARM). The difference
matters under emulation: an arm64 worker run by qemu-user on an x86-64 host sees the
host's /proc/cpuinfo (x86 flags), while qemu fills the auxv with the hwcaps of the CPU
it emulates. So such a worker reports arm64 extensions it can really run, and never
an x86 one.
"""

from __future__ import annotations

import os
import platform as std_platform
import struct
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

OS_FAMILY = "OSFamily"
ISA = "ISA"
CPU_COUNT = "cpu_count"
MEMORY_BYTES = "memory_bytes"

_ISA_ALIASES = {
    "x86_64": "x86-64", "amd64": "x86-64", "x86-64": "x86-64", "x64": "x86-64",
    "aarch64": "arm-a64", "arm64": "arm-a64", "arm-a64": "arm-a64", "armv8": "arm-a64",
    "i386": "x86-32", "i686": "x86-32", "x86": "x86-32", "x86-32": "x86-32",
    "armv7l": "arm-a32", "armv7": "arm-a32", "arm": "arm-a32", "arm-a32": "arm-a32",
    "riscv64": "riscv64", "ppc64le": "ppc64le", "s390x": "s390x",
}
_OS_ALIASES = {"linux": "linux", "darwin": "macos", "macos": "macos", "osx": "macos", "mac": "macos",
               "win32": "windows", "windows": "windows", "freebsd": "freebsd", "openbsd": "openbsd"}

# /proc/cpuinfo flag -> REAPI ISA extension name.
_X86_FLAGS = {"sse4_2": "x86-sse4.2", "avx": "x86-avx", "avx2": "x86-avx2", "avx512f": "x86-avx-512"}
_ARM_FLAGS = {"asimd": "arm-neon", "sve": "arm-sve", "sve2": "arm-sve2"}
# Linux arm64 hwcap bits (arch/arm64/include/uapi/asm/hwcap.h) -> cpuinfo feature names.
_AT_HWCAP, _AT_HWCAP2 = 16, 26
_ARM64_HWCAP = {1 << 1: "asimd", 1 << 22: "sve"}
_ARM64_HWCAP2 = {1 << 1: "sve2"}
# macOS sysctl machdep.cpu features / leaf7 features use upper case names.
_MAC_X86_FLAGS = {"SSE4.2": "x86-sse4.2", "AVX1.0": "x86-avx", "AVX2": "x86-avx2", "AVX512F": "x86-avx-512"}


def normalise_isa(value: str) -> str:
    """The standard name for an architecture alias; extensions and unknown names pass through."""
    return _ISA_ALIASES.get(value.strip().lower(), value.strip())


def normalise_os(value: str) -> str:
    return _OS_ALIASES.get(value.strip().lower(), value.strip().lower())


def base_isa(machine: str) -> str:
    """The ISA for ``uname -m``; never a guess: unknown machines get an unmatchable name."""
    return _ISA_ALIASES.get(machine.strip().lower(), f"unknown-{machine.strip() or 'machine'}")


def isa_extensions(isa: str, cpu_flags: Iterable[str]) -> list[str]:
    """Extension names for the CPU flags of the given base ISA, in a stable order."""
    flags = set(cpu_flags)
    table = _X86_FLAGS if isa.startswith("x86") else _ARM_FLAGS if isa.startswith("arm") else {}
    if isa == "arm-a64":
        flags.add("asimd")  # Advanced SIMD is mandatory in AArch64.
    return [name for flag, name in table.items() if flag in flags]


def cpu_flags_from_cpuinfo(text: str, isa: str | None = None) -> set[str]:
    """The flags of the first processor in /proc/cpuinfo (x86 "flags", ARM "Features").

    Given the running ``isa``, only that ISA's line counts: a cpuinfo that describes
    another architecture (the host's, seen through qemu-user) gives no flags.
    """
    keys = {"flags", "features"}
    if isa is not None:
        keys = {"flags"} if isa.startswith("x86") else {"features"} if isa.startswith("arm") else set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in keys:
            return set(value.split())
    return set()


def hwcaps_from_auxv(data: bytes) -> dict[int, int]:
    """The (type -> value) entries of /proc/self/auxv: native unsigned long pairs."""
    pair = struct.calcsize("@LL")
    whole = len(data) - len(data) % pair
    return {key: value for key, value in struct.iter_unpack("@LL", data[:whole]) if key}


def arm64_flags_from_hwcaps(auxv: dict[int, int]) -> set[str]:
    """cpuinfo-style feature names for the arm64 hwcap bits set in ``auxv``."""
    hwcap, hwcap2 = auxv.get(_AT_HWCAP, 0), auxv.get(_AT_HWCAP2, 0)
    return ({name for bit, name in _ARM64_HWCAP.items() if hwcap & bit}
            | {name for bit, name in _ARM64_HWCAP2.items() if hwcap2 & bit})


@dataclass
class PlatformProperties:
    """Property name -> values. ISA has several (all must be offered); others one."""

    values: dict[str, list[str]] = field(default_factory=dict)

    def with_overrides(self, overrides: Mapping[str, list[str]]) -> PlatformProperties:
        merged = {k: list(v) for k, v in self.values.items()}
        for key, values in overrides.items():
            merged[key] = normalised(key, values)
        return PlatformProperties(merged)

    def pairs(self) -> list[tuple[str, str]]:
        """(name, value) pairs sorted by name, values in their own order."""
        return [(key, value) for key in sorted(self.values) for value in self.values[key]]

    def get(self, key: str) -> list[str]:
        return self.values.get(key, [])


def normalised(key: str, values: Iterable[str]) -> list[str]:
    if key == ISA:
        return list(dict.fromkeys(normalise_isa(v) for v in values))
    if key == OS_FAMILY:
        return [normalise_os(v) for v in values]
    return list(values)


def parse_property_args(args: Iterable[str]) -> dict[str, list[str]]:
    """``KEY=VALUE`` strings to a mapping; repeated keys (and comma lists) give several values."""
    out: dict[str, list[str]] = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"platform property {arg!r} is not KEY=VALUE")
        out.setdefault(key.strip(), []).extend(v.strip() for v in value.split(",") if v.strip())
    return out


def describe(os_family: str, machine: str, cpu_flags: Iterable[str], cpu_count: int, memory_bytes: int) -> PlatformProperties:
    """The properties of a host described by plain values."""
    isa = base_isa(machine)
    return PlatformProperties({
        OS_FAMILY: [normalise_os(os_family)],
        ISA: [isa, *isa_extensions(isa, cpu_flags)],
        CPU_COUNT: [str(cpu_count)],
        MEMORY_BYTES: [str(memory_bytes)],
    })


def host_cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def host_memory_bytes() -> int:
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 0


def _host_cpu_flags(os_family: str, isa: str) -> set[str]:
    if os_family == "linux":
        if isa == "arm-a64":
            try:
                with open("/proc/self/auxv", "rb") as f:
                    return arm64_flags_from_hwcaps(hwcaps_from_auxv(f.read()))
            except OSError:
                pass
        try:
            with open("/proc/cpuinfo") as f:
                return cpu_flags_from_cpuinfo(f.read(), isa)
        except OSError:
            return set()
    if os_family == "macos":
        try:
            out = subprocess.run(["sysctl", "-n", "machdep.cpu.features", "machdep.cpu.leaf7_features"],
                                 capture_output=True, text=True, timeout=5).stdout
        except (OSError, subprocess.SubprocessError):
            return set()
        return {_mac_flag(w) for w in out.split() if w in _MAC_X86_FLAGS}
    return set()


def _mac_flag(word: str) -> str:
    """Map a macOS feature word back to the Linux flag name used by the tables."""
    target = _MAC_X86_FLAGS[word]
    return next(flag for flag, name in _X86_FLAGS.items() if name == target)


def detect_host() -> PlatformProperties:
    """Read this machine's properties (the only function here that does I/O)."""
    os_family = normalise_os(sys.platform if sys.platform != "linux2" else "linux")
    machine = std_platform.machine()
    flags = _host_cpu_flags(os_family, base_isa(machine))
    return describe(os_family, machine, flags, host_cpu_count(), host_memory_bytes())

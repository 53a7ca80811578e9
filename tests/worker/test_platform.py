"""Platform detection from CPU descriptions, overrides, and the real host."""

from __future__ import annotations

import os
import platform as std_platform
import struct

import pytest

from worker.platform import (
    ISA, OS_FAMILY, arm64_flags_from_hwcaps, cpu_flags_from_cpuinfo, describe, detect_host, hwcaps_from_auxv,
    normalise_isa, parse_property_args,
)

X86_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
flags\t\t: fpu vme sse sse2 ssse3 sse4_1 sse4_2 avx avx2 avx512f avx512bw
"""
ARM_CPUINFO = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics sve
"""


def test_x86_host_with_extensions() -> None:
    props = describe("linux", "x86_64", cpu_flags_from_cpuinfo(X86_CPUINFO), 8, 1 << 34)
    assert props.get(OS_FAMILY) == ["linux"]
    assert props.get(ISA) == ["x86-64", "x86-sse4.2", "x86-avx", "x86-avx2", "x86-avx-512"]
    assert props.get("cpu_count") == ["8"] and props.get("memory_bytes") == [str(1 << 34)]


def test_arm_host_aliases_and_extensions() -> None:
    for machine in ("aarch64", "arm64", "AArch64"):
        props = describe("darwin", machine, cpu_flags_from_cpuinfo(ARM_CPUINFO), 4, 0)
        assert props.get(OS_FAMILY) == ["macos"]
        assert props.get(ISA) == ["arm-a64", "arm-neon", "arm-sve"]

# AT_HWCAP / AT_HWCAP2 as qemu-aarch64 7.2 (Debian bookworm, CPU model "max") fills them.
QEMU_HWCAP, QEMU_HWCAP2 = 0xECFFFFFB, 0x7F877FFF
# A Cortex-A72 (Raspberry Pi 4): fp asimd evtstrm crc32 cpuid, no SVE.
CORTEX_A72_HWCAP = 1 << 0 | 1 << 1 | 1 << 2 | 1 << 7 | 1 << 11
AT_PAGESZ, AT_HWCAP, AT_HWCAP2 = 6, 16, 26


def auxv(*entries: tuple[int, int]) -> bytes:
    """/proc/self/auxv as the kernel writes it: native pairs, ended by AT_NULL."""
    return b"".join(struct.pack("@LL", key, value) for key, value in (*entries, (0, 0)))


def test_an_arm64_worker_under_qemu_user_reads_the_hosts_x86_cpuinfo_and_reports_no_x86_extension() -> None:
    flags = cpu_flags_from_cpuinfo(X86_CPUINFO, "arm-a64")
    assert flags == set()
    assert describe("linux", "aarch64", flags, 2, 0).get(ISA) == ["arm-a64", "arm-neon"]


def test_arm64_extensions_come_from_the_hwcaps_in_the_auxiliary_vector() -> None:
    emulated = arm64_flags_from_hwcaps(hwcaps_from_auxv(auxv((AT_PAGESZ, 4096), (AT_HWCAP, QEMU_HWCAP),
                                                             (AT_HWCAP2, QEMU_HWCAP2))))
    assert emulated == {"asimd", "sve", "sve2"}
    assert describe("linux", "aarch64", emulated, 2, 0).get(ISA) == ["arm-a64", "arm-neon", "arm-sve", "arm-sve2"]
    a72 = arm64_flags_from_hwcaps(hwcaps_from_auxv(auxv((AT_HWCAP, CORTEX_A72_HWCAP))))
    assert a72 == {"asimd"}
    assert arm64_flags_from_hwcaps(hwcaps_from_auxv(b"")) == set()


def test_an_x86_worker_reads_only_the_x86_line_of_cpuinfo() -> None:
    assert cpu_flags_from_cpuinfo(ARM_CPUINFO, "x86-64") == set()
    assert {"sse4_2", "avx2", "avx512f"} <= cpu_flags_from_cpuinfo(X86_CPUINFO, "x86-64")
    assert cpu_flags_from_cpuinfo(X86_CPUINFO, "riscv64") == set()


def test_an_unknown_architecture_never_looks_like_a_known_one() -> None:
    props = describe("linux", "mips64", {"sse4_2", "avx2"}, 1, 0)
    assert props.get(ISA) == ["unknown-mips64"]  # and no x86 extensions borrowed from flags


def test_a_property_override_replaces_the_detected_values_and_normalises_them() -> None:
    detected = describe("linux", "x86_64", {"avx2"}, 2, 0)
    overridden = detected.with_overrides(parse_property_args(["ISA=aarch64", "pool=big", "OSFamily=Linux"]))
    assert overridden.get(ISA) == ["arm-a64"]
    assert overridden.get(OS_FAMILY) == ["linux"]
    assert overridden.get("pool") == ["big"]
    assert overridden.get("cpu_count") == ["2"]
    assert ("ISA", "arm-a64") in overridden.pairs() and ("ISA", "x86-64") not in overridden.pairs()


def test_property_arguments_repeat_and_reject_garbage() -> None:
    assert parse_property_args(["ISA=x86-64", "ISA=x86-avx2", "k=a,b"]) == {"ISA": ["x86-64", "x86-avx2"], "k": ["a", "b"]}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_property_args(["novalue"])


def test_normalise_isa_keeps_extension_names() -> None:
    assert normalise_isa("amd64") == "x86-64" and normalise_isa("x86-avx2") == "x86-avx2"


def test_the_real_host() -> None:
    props = detect_host()
    machine = std_platform.machine().lower()
    expected = {"x86_64": "x86-64", "amd64": "x86-64", "aarch64": "arm-a64", "arm64": "arm-a64"}.get(machine)
    assert props.get(ISA)[0] == expected
    assert props.get(OS_FAMILY) == ["linux"]
    assert int(props.get("cpu_count")[0]) == len(os.sched_getaffinity(0))
    assert int(props.get("memory_bytes")[0]) > 0
    with open("/proc/cpuinfo") as f:
        flags = cpu_flags_from_cpuinfo(f.read())
    assert ("x86-avx2" in props.get(ISA)) == ("avx2" in flags)

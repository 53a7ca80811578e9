"""Platform detection from CPU descriptions, overrides, and the real host."""

from __future__ import annotations

import os
import platform as std_platform

import pytest

from worker.platform import (
    ISA, OS_FAMILY, cpu_flags_from_cpuinfo, describe, detect_host, normalise_isa, parse_property_args,
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

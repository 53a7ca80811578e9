"""FastCDC 2020 boundaries (cas/chunking/fastcdc.py) equal an independent implementation's.

The reference is pyfastcdc, a port of the Rust crate REv2 names as a reference
implementation; on REv2's published test vectors (fastcdc2020_test_vectors.txt, the
SekienAkashita.jpg input, seeds 0 and 666) it gives exactly the listed chunks, so
agreeing with it on many inputs is agreeing with REv2.
"""

from __future__ import annotations

import random
import shutil

import pyfastcdc
import pytest
from pyfastcdc.py import constants as reference_tables

from cas.chunking.fastcdc import NATIVE, FastCdc, FastCdcParams
from cas.chunking.gear import GEAR, MASKS

# Both ways of cutting: the C loop (built wherever a C compiler is, as on every machine
# the project runs its tests on; the next test holds that) and the numpy scan.
WAYS = ([pytest.param(True, id="c")] if NATIVE else []) + [pytest.param(False, id="numpy")]


def test_the_c_loop_was_built_where_a_compiler_is() -> None:
    assert NATIVE or shutil.which("cc") is None and shutil.which("gcc") is None


def reference(data: bytes, params: FastCdcParams) -> list[int]:
    chunker = pyfastcdc.FastCDC(
        params.avg_size, min_size=params.min_chunk, max_size=params.max_chunk, normalized_chunking=2, seed=params.seed
    )
    return [chunk.length for chunk in chunker.cut_buf(data)] if data else []


def inputs(rng: random.Random, size: int) -> dict[str, bytes]:
    words = [rng.randbytes(rng.randint(2, 9)).hex().encode() for _ in range(400)]
    text = b" ".join(rng.choice(words) for _ in range(size // 8))[:size]
    block = rng.randbytes(5000)
    edited = bytearray(text)
    for at in rng.sample(range(len(edited)), 20):
        edited[at : at + 3] = rng.randbytes(rng.randint(0, 6))  # insertions and deletions shift content
    return {
        "random": rng.randbytes(size),
        "text": text,
        "edited text": bytes(edited),
        "repeated block": (block * (size // len(block) + 1))[:size],
        "zeros": bytes(size),
        "mixed": rng.randbytes(size // 3) + bytes(size // 3) + text[: size // 3],
    }


def test_the_tables_are_the_papers() -> None:
    assert list(GEAR) == list(reference_tables.GEAR)
    assert all(MASKS[bits] == reference_tables.MASKS[bits] for bits in MASKS)


@pytest.mark.parametrize("native", WAYS)
@pytest.mark.parametrize("avg_size", [1 << 10, 16 << 10, 64 << 10])
@pytest.mark.parametrize("seed", [0, 666, 0xDEADBEEF])  # REv2 seeds are 32-bit
def test_boundaries_equal_the_reference_on_many_inputs(avg_size: int, seed: int, native: bool) -> None:
    params = FastCdcParams(avg_size, seed=seed)
    cdc = FastCdc(params, native)
    rng = random.Random(avg_size ^ seed)
    for name, data in inputs(rng, avg_size * 40).items():
        ours = cdc.split(data)
        assert ours == reference(data, params), name
        assert sum(ours) == len(data)


@pytest.mark.parametrize("native", WAYS)
def test_the_rev2_parameters_on_large_inputs(native: bool) -> None:
    params = FastCdcParams()  # 512 KiB average, min 128 KiB, max 2 MiB, seed 0
    assert (params.min_chunk, params.max_chunk) == (128 << 10, 2 << 20)
    cdc = FastCdc(params, native)
    for name, data in inputs(random.Random(7), 12 << 20).items():
        assert cdc.split(data) == reference(data, params), name


@pytest.mark.parametrize("native", WAYS)
def test_explicit_sizes_as_in_the_published_test_vectors(native: bool) -> None:
    params = FastCdcParams(16384, min_size=4096, max_size=65535, seed=666)
    data = random.Random(11).randbytes(300_000)
    assert FastCdc(params, native).split(data) == reference(data, params)


@pytest.mark.parametrize("native", WAYS)
@pytest.mark.parametrize("size", [0, 1, 100, 4095, 4096, 4097, 16383, 65536, 65537, 200_001])
def test_short_inputs_and_sizes_at_the_edges(size: int, native: bool) -> None:
    params = FastCdcParams(16384)
    data = random.Random(size).randbytes(size)
    assert FastCdc(params, native).split(data) == reference(data, params)


@pytest.mark.parametrize("native", WAYS)
def test_fed_in_any_pieces_the_chunks_are_the_same(native: bool) -> None:
    params = FastCdcParams(16 << 10)
    cdc = FastCdc(params, native)
    rng = random.Random(5)
    data = inputs(rng, 2 << 20)["edited text"]
    chunker = cdc.chunker()
    chunks: list[bytes] = []
    at = 0
    while at < len(data):
        step = rng.choice([1, 7, 63, 64, 1000, 70_000, 300_000])
        chunks += chunker.feed(data[at : at + step])
        at += step
    chunks += chunker.finish()
    assert b"".join(chunks) == data
    assert [len(c) for c in chunks] == reference(data, params)


def test_parameters_outside_the_algorithm_are_refused() -> None:
    with pytest.raises(ValueError, match="not a power of two"):
        FastCdcParams(3000)
    with pytest.raises(ValueError, match="no masks"):
        FastCdcParams(1 << 30)
    with pytest.raises(ValueError, match="min"):
        FastCdcParams(1024, min_size=2048)

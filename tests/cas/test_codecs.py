"""cas/compression/codecs.py: zstd and deflate round trips, and decoders that refuse bad streams
(corrupt, cut short, longer than the digest says) without ever holding much more than that."""

from __future__ import annotations

import random
import zlib

import pytest
import zstandard

from cas.compression.codecs import ZSTD_SLICE, Codecs, DeflateCodec, ZstdCodec
from cas.errors import InvalidArgument
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2

CODECS = [ZstdCodec(), DeflateCodec()]
TEXT = b"".join(b"compile unit %d: object file section .text %x\n" % (i, i * 7919) for i in range(20_000))


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)
def test_round_trip_whole_and_streamed(codec: ZstdCodec | DeflateCodec) -> None:
    form = codec.compress(TEXT)
    assert len(form) < len(TEXT) // 4
    assert codec.decompress(form, len(TEXT)) == TEXT
    encoder = codec.encoder()
    streamed = b"".join(encoder.compress(TEXT[i : i + 7000]) for i in range(0, len(TEXT), 7000)) + encoder.flush()
    decoder = codec.decoder(len(TEXT))
    pieces = [p for i in range(0, len(streamed), 999) for p in decoder.decompress(streamed[i : i + 999])]
    decoder.finish()
    assert b"".join(pieces) == TEXT
    assert codec.decompress(codec.compress(b""), 0) == b""


def test_the_wire_formats_are_the_standard_ones() -> None:
    """zstd frames any zstd decoder reads; raw deflate (RFC 1951, no zlib or gzip header)."""
    assert zstandard.ZstdDecompressor().decompress(ZstdCodec().compress(TEXT)) == TEXT
    assert zlib.decompress(DeflateCodec().compress(TEXT), -zlib.MAX_WBITS) == TEXT
    other = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    assert DeflateCodec().decompress(other.compress(TEXT) + other.flush(), len(TEXT)) == TEXT


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)
def test_more_than_the_digest_says_is_refused(codec: ZstdCodec | DeflateCodec) -> None:
    with pytest.raises(InvalidArgument, match=f"{codec.name} stream decompresses to more than the {len(TEXT) - 1} bytes"):
        codec.decompress(codec.compress(TEXT), len(TEXT) - 1)


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)
def test_a_stream_cut_short_is_refused_at_its_end(codec: ZstdCodec | DeflateCodec) -> None:
    form = codec.compress(TEXT)
    decoder = codec.decoder(len(TEXT))
    decoder.decompress(form[:-5])
    with pytest.raises(InvalidArgument, match="ends"):
        decoder.finish()


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)
def test_corrupt_streams_are_refused_naming_the_codec(codec: ZstdCodec | DeflateCodec) -> None:
    form = bytearray(codec.compress(TEXT))
    rng = random.Random(3)
    for i in rng.sample(range(len(form) // 4, len(form)), 40):
        form[i] ^= 0xFF
    with pytest.raises(InvalidArgument, match=f"{codec.name} stream"):
        codec.decompress(bytes(form), len(TEXT))
    with pytest.raises(InvalidArgument, match=f"{codec.name} stream is corrupt"):
        codec.decompress(b"\x00garbage that is no stream at all" * 3, 1000)


def test_zstd_frames_may_follow_one_another_but_deflate_ends_at_its_final_block() -> None:
    zstd, deflate = ZstdCodec(), DeflateCodec()
    assert zstd.decompress(zstd.compress(b"first ") + zstd.compress(b"second"), 12) == b"first second"
    with pytest.raises(InvalidArgument, match="data after the end of the deflate stream"):
        deflate.decompress(deflate.compress(b"first ") + deflate.compress(b"second"), 12)


def test_a_zstd_bomb_is_stopped_at_the_limit_a_slice_at_a_time() -> None:
    """A few KiB that expand to 256 MiB: refused, and no step decodes more than a slice's worth."""
    bomb = zstandard.ZstdCompressor(level=19).compress(bytes(256 << 20))
    assert len(bomb) < 64 << 10
    decoder = ZstdCodec().decoder(1 << 20)
    with pytest.raises(InvalidArgument, match="more than the 1048576 bytes"):
        decoder.decompress(bomb)
    assert decoder.produced <= (1 << 20) + ZSTD_SLICE * 32768


def test_codecs_list_what_they_serve_and_refuse_the_rest_by_name() -> None:
    codecs = Codecs()
    assert codecs.values == [re_pb2.Compressor.ZSTD, re_pb2.Compressor.DEFLATE]
    assert codecs.require(re_pb2.Compressor.ZSTD, "x").name == "zstd"
    with pytest.raises(InvalidArgument, match="x: compressor BROTLI is not supported by this server "
                                              r"\(supported: IDENTITY, ZSTD, DEFLATE\)"):
        codecs.require(re_pb2.Compressor.BROTLI, "x")
    with pytest.raises(InvalidArgument, match=r"supported: IDENTITY, none"):
        Codecs([]).require(re_pb2.Compressor.ZSTD, "x")


async def test_streams_of_one_codec_may_run_at_once_in_threads() -> None:
    """One codec serves many concurrent transfers (zstd contexts are not shared)."""
    import asyncio

    from cas.compression.streams import compressed

    async def chunks(data: bytes):  # type: ignore[no-untyped-def]
        for i in range(0, len(data), 200_000):
            yield data[i : i + 200_000]

    codec = ZstdCodec()
    datas = [TEXT * 3 + bytes([i]) for i in range(6)]

    async def one(data: bytes) -> bytes:
        return b"".join([piece async for piece in compressed(chunks(data), codec)])

    forms = await asyncio.gather(*(one(d) for d in datas), *(asyncio.to_thread(codec.compress, d) for d in datas))
    for form, data in zip(forms, datas + datas):
        assert codec.decompress(form, len(data)) == data

"""The compressors REv2 names that we serve: zstd (the ``zstandard`` binding) and deflate
(raw RFC 1951, from zlib).

A codec makes encoders and decoders. Decoders are where the danger is: the client
says how large the blob is, and a few bytes of zstd can expand to megabytes, so a
decoder is given that size as a hard limit and checks it as it goes, feeding zstd
at most ``ZSTD_SLICE`` bytes at a time (zstd's worst expansion, about 32,768 to 1,
then bounds one step's output to ~32 MiB before the limit is checked). A stream that
is corrupt, longer than the limit, or ends mid-frame is INVALID_ARGUMENT, as REv2
asks of compressed uploads.

zstd frames may follow one another (the content is the concatenation, which a
resumed upload and some clients' encoders produce); raw deflate has no framing, so
bytes after its final block are an error.
"""

from __future__ import annotations

import zlib
from abc import ABC, abstractmethod
from typing import Protocol

import zstandard

from cas.errors import InvalidArgument
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2

IDENTITY = re_pb2.Compressor.IDENTITY
ZSTD = re_pb2.Compressor.ZSTD
DEFLATE = re_pb2.Compressor.DEFLATE

ZSTD_SLICE = 1 << 10
# zstd level 1: on this project's 2-core machine it compresses build outputs to ~40%
# at several times the speed of level 3, which only gets to ~33% (docs/BENCHMARKS.md).
DEFAULT_ZSTD_LEVEL = 1
DEFAULT_DEFLATE_LEVEL = 1


class Encoder(Protocol):
    def compress(self, data: bytes | memoryview, /) -> bytes: ...
    def flush(self) -> bytes: ...


class Decoder(ABC):
    """Decompresses one stream, refusing output past ``limit`` bytes."""

    def __init__(self, codec_name: str, limit: int) -> None:
        self.codec_name = codec_name
        self.limit = limit
        self.produced = 0
        self.consumed = 0

    def decompress(self, data: bytes | memoryview) -> list[bytes]:
        """The content ``data`` decodes to (possibly nothing yet)."""
        self.consumed += len(data)
        pieces = self._decompress(data)
        return pieces

    @abstractmethod
    def _decompress(self, data: bytes | memoryview) -> list[bytes]: ...

    @abstractmethod
    def finish(self) -> None:
        """Raise unless the data so far was whole streams (nothing cut off mid-frame)."""

    def _count(self, piece: bytes) -> bytes:
        self.produced += len(piece)
        if self.produced > self.limit:
            raise InvalidArgument(
                f"the {self.codec_name} stream decompresses to more than the {self.limit} bytes its digest says"
            )
        return piece

    def _corrupt(self, problem: object) -> InvalidArgument:
        return InvalidArgument(f"the {self.codec_name} stream is corrupt after {self.consumed} bytes: {problem}")


class Codec(ABC):
    """One compressor: its REv2 enum value, its resource-name spelling, its streams."""

    value: int
    name: str  # lowercase, as in resource names: "zstd", "deflate"

    @abstractmethod
    def encoder(self) -> Encoder: ...

    @abstractmethod
    def decoder(self, limit: int) -> Decoder: ...

    def compress(self, data: bytes | memoryview) -> bytes:
        """One whole value, compressed."""
        encoder = self.encoder()
        return encoder.compress(data) + encoder.flush()

    def decompress(self, data: bytes | memoryview, limit: int) -> bytes:
        """One whole compressed value, at most ``limit`` bytes once decompressed."""
        decoder = self.decoder(limit)
        pieces = decoder.decompress(data)
        decoder.finish()
        return b"".join(pieces)

    def __repr__(self) -> str:
        return f"Codec({self.name})"


class _ZstdDecoder(Decoder):
    def __init__(self, limit: int) -> None:
        super().__init__("zstd", limit)
        self._frame = zstandard.ZstdDecompressor().decompressobj()
        self._mid_frame = False  # bytes of a frame seen, its end not yet

    def _decompress(self, data: bytes | memoryview) -> list[bytes]:
        view = memoryview(data)
        out: list[bytes] = []
        for start in range(0, len(view), ZSTD_SLICE):
            pending = view[start : start + ZSTD_SLICE]
            while pending:
                self._mid_frame = True
                try:
                    piece = self._frame.decompress(pending)
                except zstandard.ZstdError as err:
                    raise self._corrupt(err) from None
                if piece:
                    out.append(self._count(piece))
                if not self._frame.eof:
                    break
                # A frame ended; whatever follows it starts the next one.
                self._mid_frame = False
                pending = memoryview(self._frame.unused_data)
                self._frame = zstandard.ZstdDecompressor().decompressobj()
        return out

    def finish(self) -> None:
        if self._mid_frame:
            raise InvalidArgument(f"the zstd stream ends in the middle of a frame after {self.consumed} bytes")


class _DeflateDecoder(Decoder):
    # Deflate expands at most ~1,032 to 1: one call's output is bounded by its input.
    def __init__(self, limit: int) -> None:
        super().__init__("deflate", limit)
        self._stream = zlib.decompressobj(-zlib.MAX_WBITS)

    def _decompress(self, data: bytes | memoryview) -> list[bytes]:
        if self._stream.eof:
            if data:
                raise self._corrupt("data after the end of the deflate stream")
            return []
        try:
            piece = self._stream.decompress(data, self.limit - self.produced + 1)
        except zlib.error as err:
            raise self._corrupt(err) from None
        out = [self._count(piece)] if piece else []
        if self._stream.unconsumed_tail:
            raise InvalidArgument(
                f"the deflate stream decompresses to more than the {self.limit} bytes its digest says"
            )
        if self._stream.eof and self._stream.unused_data:
            raise self._corrupt("data after the end of the deflate stream")
        return out

    def finish(self) -> None:
        if self.consumed and not self._stream.eof:
            raise InvalidArgument(f"the deflate stream ends before its final block after {self.consumed} bytes")


class ZstdCodec(Codec):
    value = ZSTD
    name = "zstd"

    # A ZstdCompressor is one zstd context: its compressobj()s share it and it is not
    # thread-safe, so every stream and every one-shot call gets its own.
    def __init__(self, level: int = DEFAULT_ZSTD_LEVEL) -> None:
        self.level = level

    def encoder(self) -> Encoder:
        return zstandard.ZstdCompressor(level=self.level).compressobj()

    def decoder(self, limit: int) -> Decoder:
        return _ZstdDecoder(limit)

    def compress(self, data: bytes | memoryview) -> bytes:
        # One call writes the content size in the frame header.
        return zstandard.ZstdCompressor(level=self.level).compress(data)


class DeflateCodec(Codec):
    value = DEFLATE
    name = "deflate"

    def __init__(self, level: int = DEFAULT_DEFLATE_LEVEL) -> None:
        self.level = level

    def encoder(self) -> Encoder:
        return zlib.compressobj(self.level, zlib.DEFLATED, -zlib.MAX_WBITS)

    def decoder(self, limit: int) -> Decoder:
        return _DeflateDecoder(limit)


def compressor_name(value: int) -> str:
    """The enum's name for messages ("ZSTD", "BROTLI", or the number if unknown)."""
    return re_pb2.Compressor.Value.Name(value) if value in re_pb2.Compressor.Value.values() else str(value)


class Codecs:
    """The codecs a server or client uses, by enum value; IDENTITY is never among them."""

    def __init__(self, codecs: list[Codec] | None = None) -> None:
        chosen = codecs if codecs is not None else [ZstdCodec(), DeflateCodec()]
        self._by_value = {c.value: c for c in chosen}

    @property
    def values(self) -> list[int]:
        """What Capabilities lists: the enum values, in ascending order."""
        return sorted(self._by_value)

    def get(self, value: int) -> Codec | None:
        return self._by_value.get(value)

    def require(self, value: int, what: str) -> Codec:
        """The codec for ``value``; INVALID_ARGUMENT naming what is served otherwise."""
        codec = self._by_value.get(value)
        if codec is None:
            served = ", ".join(compressor_name(v) for v in self.values) or "none"
            raise InvalidArgument(
                f"{what}: compressor {compressor_name(value)} is not supported by this server "
                f"(supported: IDENTITY, {served})"
            )
        return codec

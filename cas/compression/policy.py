"""When a client (the worker's RemoteStore) compresses what it moves.

Compression pays on a slow link and costs CPU on both ends, so a blob goes
compressed only when the server offers the compressor, the blob is at least
``min_size`` bytes, and (for what the client sends) a sample of it shrinks by at
least ``1 - MAX_RATIO``: already-compressed outputs (jars, images, archives) go as
they are.
"""

from __future__ import annotations

from dataclasses import dataclass

from cas.compression.codecs import Codec

DEFAULT_MIN_SIZE = 128 << 10
SAMPLE_BYTES = 64 << 10
MAX_RATIO = 0.9


@dataclass(frozen=True)
class TransferCompression:
    """What a client may compress: ``codec`` on ByteStream, and in batches if ``batches``."""

    codec: Codec
    min_size: int = DEFAULT_MIN_SIZE
    batches: bool = False  # the server takes this codec in BatchUpdateBlobs

    def wanted(self, size: int) -> bool:
        """Whether ``size`` bytes are worth moving compressed."""
        return size >= self.min_size

    def pays(self, data: bytes | memoryview) -> bool:
        """Whether a sample of ``data`` shrinks enough to be worth compressing."""
        sample = data[:SAMPLE_BYTES]
        return bool(sample) and len(self.codec.compress(sample)) <= MAX_RATIO * len(sample)

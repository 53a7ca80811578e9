"""What one ByteStream Write call's data is: the blob's bytes, or a compressed stream of them.

server/uploads.py speaks the Write protocol; a payload says what the offsets in one
call count and what bytes reach the upload. Plain data counts blob bytes. A
compressed call (REv2's ``compressed-blobs``) starts at the uncompressed offset the
upload has reached, counts the compressed bytes it sends from there, and decodes
them with a decoder limited to the bytes the blob still lacks; a stream that fails
to decode raises ``BadPayload``, after which the upload is dropped.
"""

from __future__ import annotations

import asyncio

from cas.compression.codecs import Codec
from cas.digest import Digest
from cas.errors import InvalidArgument

# Messages at least this large are decompressed in a thread (zstandard and zlib release the GIL).
THREADED_THRESHOLD = 128 << 10


class BadPayload(InvalidArgument):
    """A compressed stream that does not decode to the blob its digest names."""


class WritePayload:
    """Plain data: each message's bytes are the blob's, and offsets count them."""

    def __init__(self, digest: Digest, start: int) -> None:
        self.digest = digest
        self.start = start  # the first message's write_offset
        self.sent = 0  # data bytes of this call so far

    @property
    def next_offset(self) -> int:
        """The write_offset the next message must carry."""
        return self.start + self.sent

    @property
    def committed_size(self) -> int:
        """What the call answers once the blob is stored."""
        return self.digest.size_bytes

    def describe_received(self) -> str:
        return f"{self.next_offset} bytes received"

    async def take(self, data: bytes | memoryview, received: int) -> list[bytes | memoryview]:
        """The blob bytes in ``data``, given ``received`` blob bytes already in the upload
        (plain data: ``data`` itself, a view of the received message left uncopied)."""
        if received + len(data) > self.digest.size_bytes:
            raise InvalidArgument(
                f"digest size {self.digest.size_bytes} does not match the data: {received + len(data)} "
                f"bytes received for {self.digest.hash}"
            )
        self.sent += len(data)
        return [data]

    def finish(self) -> None:
        """Check the call's data ended cleanly (finish_write)."""

    async def whole(self, data: bytes | memoryview) -> bytes | None:
        """The blob, if one message's ``data`` is all of it; None to take the streaming way.
        It is ``bytes``: a whole blob goes to ``put_bytes``, whose stores may keep it as it is."""
        return bytes(data) if len(data) == self.digest.size_bytes else None


class CompressedPayload(WritePayload):
    """A compressed stream of the blob's bytes from ``start`` (an uncompressed offset) on."""

    def __init__(self, digest: Digest, start: int, codec: Codec) -> None:
        super().__init__(digest, start)
        self.codec = codec
        self._decoder = codec.decoder(max(0, digest.size_bytes - start))

    @property
    def committed_size(self) -> int:
        # The end of what this call sent, in its own offsets (what Bazel and Buck2 check).
        return self.next_offset

    def describe_received(self) -> str:
        return f"{self.start} bytes committed before this call and {self.sent} {self.codec.name} bytes sent in it"

    async def take(self, data: bytes | memoryview, received: int) -> list[bytes | memoryview]:
        self.sent += len(data)
        try:
            if len(data) >= THREADED_THRESHOLD:
                return list(await asyncio.to_thread(self._decoder.decompress, data))
            return list(self._decoder.decompress(data))
        except InvalidArgument as err:
            raise BadPayload(f"{err.message} (blob {self.digest})") from None

    def finish(self) -> None:
        try:
            self._decoder.finish()
        except InvalidArgument as err:
            raise BadPayload(f"{err.message} (blob {self.digest})") from None
        if self.start + self._decoder.produced != self.digest.size_bytes:
            raise BadPayload(
                f"digest size {self.digest.size_bytes} does not match the data: the {self.codec.name} stream "
                f"decompresses to {self.start + self._decoder.produced} bytes for {self.digest.hash}"
            )

    async def whole(self, data: bytes | memoryview) -> bytes | None:
        pieces = await self.take(data, 0)
        self.finish()
        return b"".join(pieces)


def payload_for(digest: Digest, start: int, codec: Codec | None) -> WritePayload:
    return WritePayload(digest, start) if codec is None else CompressedPayload(digest, start, codec)

"""Reading an action's protos from an instance's CAS for the pages (absent: None)."""

from __future__ import annotations

from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from cas.digest import Digest
from cas.store import BlobStore

M = TypeVar("M", bound=Message)

# Pages show protos and text files up to this size; larger ones are downloads.
SHOW_LIMIT = 1 << 20


async def read_proto(cas: BlobStore, digest: Digest, kind: type[M]) -> M | None:
    if digest.size_bytes > SHOW_LIMIT * 16:
        return None
    data = await cas.get_or_none(digest)
    if data is None:
        return None
    message = kind()
    try:
        message.ParseFromString(data)
    except DecodeError:
        return None
    return message

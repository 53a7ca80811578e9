"""The blobs a lease carries inline: its action's Command and input Directories.

A bot that asks for inline blobs (docs/BOTS_PROTOCOL.md section 7) gets, with each
lease, the Command and as many of the input tree's Directories as validation has
just read (server/scheduler/input_cache.py), so it can lay out the exec root
without first calling BatchReadBlobs and GetTree. They travel as a serialized
``BatchReadBlobsResponse`` in the answer's trailing metadata, which is where the
lease's other extension data already is; whatever is missing there the bot reads
from the CAS as usual. What a bot session was sent once is not sent again (a
toolchain's dozens of Directories would otherwise travel with every lease).
"""

from __future__ import annotations

from google.protobuf.message import DecodeError

from cas.digest import Digest
from cas.errors import ReapiError
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from server.scheduler.input_cache import InputCache, SentBlobs
from server.scheduler.sessions import LeaseView


def lease_inputs(view: LeaseView, cache: InputCache, limit: int, sent: SentBlobs | None = None) -> bytes:
    """A serialized BatchReadBlobsResponse with at most ``limit`` bytes of blob data
    (empty bytes when there is nothing to send), leaving out what ``sent`` says the bot
    was sent before (and adding what is sent now)."""
    if view.cancelled or limit <= 0:
        return b""
    action = re_pb2.Action()
    try:
        action.ParseFromString(view.action_bytes)
        command = Digest.from_proto(action.command_digest, view.digest_function)
        root = Digest.from_proto(action.input_root_digest, view.digest_function)
    except (DecodeError, ReapiError):
        return b""  # validation accepted it, so this does not happen; the bot reads the CAS then
    blobs = cache.tree_blobs(command, root, limit, sent)
    if not blobs:
        return b""
    response = re_pb2.BatchReadBlobsResponse()
    add = response.responses.add
    for digest, data in blobs.items():
        add(digest=re_pb2.Digest(hash=digest.hash, size_bytes=digest.size_bytes), data=data)
    return response.SerializeToString()

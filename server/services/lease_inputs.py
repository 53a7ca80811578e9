"""The blobs a lease carries inline: its action's Command, input Directories and, if asked, small input files.

A bot that asks for inline blobs (docs/BOTS_PROTOCOL.md section 7) gets, with each
lease, the Command and as many of the input tree's Directories as validation has
just read (server/scheduler/input_cache.py), so it can lay out the exec root
without first calling BatchReadBlobs and GetTree. A bot that also asks for inline
files gets the tree's small files after them, read from the CAS while the answer is
made, so a cold input tree needs no round trip of the bot's at all before its first
file is written. They travel as a serialized ``BatchReadBlobsResponse`` in the
answer's trailing metadata, which is where the lease's other extension data already
is; whatever is missing there the bot reads from the CAS as usual. What a bot
session was sent once is not sent again (a toolchain's dozens of Directories would
otherwise travel with every lease, and an unchanged input file with every action).
Nor is a file the bot's cache summary (docs/BOTS_PROTOCOL.md section 8) says it holds:
a Bloom filter may be wrong that way, and then the bot reads that file from the CAS
as it would any file the lease did not carry.
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections import deque
from collections.abc import Sequence
from itertools import accumulate
from operator import add, attrgetter

from google.protobuf.message import DecodeError

from cas.blob_run import RUN_HEADER, encode_run
from cas.digest import Digest
from cas.digest_filter import holds_each
from cas.errors import ReapiError
from cas.store import BlobStore
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from server.encoded_responses import encode_blobs
from server.scheduler.input_cache import InputCache, SentBlobs, wire_size
from server.scheduler.sessions import LeaseView

log = logging.getLogger("reapi.server.bots")

# Files up to this size go inline: the ones whose round trip costs more than their bytes.
MAX_INLINE_FILE = 64 << 10
_ENTRY_COST = 100  # wire_size's overhead of a blob with a SHA-256 hash, for choosing files
_SIZE = attrgetter("size_bytes")
_HASH = attrgetter("hash")


def lease_digests(view: LeaseView) -> tuple[Digest, Digest] | None:
    """The lease's Command and input root digests (None: not a well-formed Action)."""
    if view.cancelled:
        return None
    action = re_pb2.Action()
    try:
        action.ParseFromString(view.action_bytes)
        return (Digest.from_proto(action.command_digest, view.digest_function),
                Digest.from_proto(action.input_root_digest, view.digest_function))
    except (DecodeError, ReapiError):
        return None  # validation accepted it, so this does not happen; the bot reads the CAS then


def lease_files(view: LeaseView, cache: InputCache, limit: int, sent: SentBlobs | None = None,
                held: bytes | None = None) -> list[Digest]:
    """The input files a lease may carry inline: those of the tree's cached Directories
    (breadth-first) of at most ``MAX_INLINE_FILE`` bytes that neither ``sent`` lists nor
    the bot's cache summary ``held`` (a checked DigestFilter wire form) holds, about
    ``limit`` bytes of them once serialized."""
    digests = lease_digests(view)
    if digests is None or limit <= 0:
        return []
    root = digests[1]
    out: dict[Digest, None] = {}
    budget = limit
    seen = {root}
    queue = deque([root])
    while queue and budget > 0:
        entry = cache.directory(queue.popleft())
        if entry is None:
            continue
        files: Sequence[Digest] = entry.files if sent is None else sent.unsent(entry.files)
        if held is not None and files:  # one whole-array test per Directory
            files = [file for file, holds in zip(files, holds_each(held, list(map(_HASH, files)))) if not holds]
        fresh = dict.fromkeys(files)
        if (fresh and max(map(_SIZE, fresh)) <= MAX_INLINE_FILE and out.keys().isdisjoint(fresh)
                and (cost := sum(map(_SIZE, fresh)) + _ENTRY_COST * len(fresh)) <= budget):
            out.update(fresh)  # the usual: all of the Directory's files, in C-level passes
            budget -= cost
        else:
            for file in files:
                size = file.size_bytes + _ENTRY_COST
                if file.size_bytes > MAX_INLINE_FILE or size > budget or file in out:
                    continue
                out[file] = None
                budget -= size
        for _, child in entry.children:
            if child not in seen:
                seen.add(child)
                queue.append(child)
    return list(out)


async def read_files(cas: BlobStore, digests: list[Digest]) -> dict[Digest, bytes]:
    """What the CAS has of ``digests``. Best effort: a read that fails sends none (the
    bot reads them itself), and never fails the answer that carries the lease."""
    if not digests:
        return {}
    try:
        return await cas.get_many(digests)
    except Exception as exc:  # noqa: BLE001 - the lease must still go out
        log.warning("inline input files for a lease not read (%s); the bot reads them from the CAS", exc)
        return {}


def _fitting(files: dict[Digest, bytes], budget: int, overhead: int = 32) -> dict[Digest, bytes]:
    """The first of ``files`` that fit ``budget`` bytes, each costing its data, its hash
    and ``overhead`` bytes (32: tags and lengths of a BatchReadBlobsResponse entry; 4:
    a size in a run, cas/blob_run.py), in C-level passes (a lease may carry a thousand
    files); a file whose data is not its digest's size is not passed on."""
    digests = list(files)
    datas = list(files.values())
    sizes = list(map(len, datas))
    if sizes != list(map(_SIZE, digests)):
        return _fitting({d: data for d, data in files.items() if d.size_bytes == len(data)}, budget, overhead)
    costs = list(accumulate(map(add, sizes, map(overhead.__add__, map(len, map(_HASH, digests))))))
    count = bisect_right(costs, budget)
    return dict(zip(digests[:count], datas[:count])) if count < len(digests) else files


def lease_inputs(view: LeaseView, cache: InputCache, limit: int, sent: SentBlobs | None = None,
                 files: dict[Digest, bytes] | None = None, run: bool = False) -> tuple[bytes, bytes]:
    """A serialized BatchReadBlobsResponse with at most ``limit`` bytes of blob data
    (empty bytes when there is nothing to send): the Command and Directories, then
    ``files`` (read already) as far as they fit, leaving out what ``sent`` says the bot
    was sent before (and adding what is sent now). With ``run`` the files go in the
    second value instead, as one run (cas/blob_run.py) for a bot that reads that form
    (in the first still if they cannot make a run: a bot that reads runs reads both);
    the two together stay within ``limit``."""
    digests = lease_digests(view)
    if digests is None or limit <= 0:
        return b"", b""
    command, root = digests
    blobs = cache.tree_blobs(command, root, limit, sent)
    files_run = b""
    if files:
        room = limit - sum(wire_size(digest, data) for digest, data in blobs.items())
        if run:
            chosen = _fitting(files, room - RUN_HEADER, overhead=4)
            files_run = encode_run(list(map(_HASH, chosen)), list(chosen.values())) or b""
        if not files_run:  # the message form: asked for, or files a run cannot hold
            chosen = _fitting(files, room)
            blobs.update(chosen)
        if sent is not None:
            sent.add_soon(chosen)  # once the answer is on its way
    return _encoded(blobs), files_run


def _encoded(blobs: dict[Digest, bytes]) -> bytes:
    if not blobs:
        return b""
    encoded = encode_blobs([digest.hash for digest in blobs], list(blobs.values()))
    if encoded is not None:
        return encoded
    response = re_pb2.BatchReadBlobsResponse()  # an empty blob among them: through the message class
    add = response.responses.add
    for digest, data in blobs.items():
        add(digest=re_pb2.Digest(hash=digest.hash, size_bytes=digest.size_bytes), data=data)
    return response.SerializeToString()

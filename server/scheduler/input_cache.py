"""InputCache: Commands and Directories that validation has already read and checked.

The actions of one build share most of their input trees (toolchains, the packages
they depend on), and every action is validated before it is queued. A Directory is
content-addressed, so once one has been read, parsed and found well formed, that
verdict holds for every later action naming its digest: the walk then needs only
what it learned (the file and child digests) and one existence check against the
instance's CAS, which the preparer still makes, since a digest says nothing about
whether a particular CAS still holds the blob.

The bytes are kept as well, so a lease can carry its action's Command and input
Directories to a bot that asked for them (docs/BOTS_PROTOCOL.md, "Inline blobs"),
which saves the bot its first round trips. Bounded by bytes, least recently used
first out.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import islice

from cas.digest import Digest
from cas.lru import Lru

# What one entry costs beyond its bytes (the record, the key, the digest tuples).
ENTRY_OVERHEAD = 200
DEFAULT_MAX_BYTES = 64 << 20


@dataclass(frozen=True, slots=True)
class CheckedDirectory:
    """A Directory that passed ``check_directory``, with what the tree walk needs from it."""

    data: bytes
    files: tuple[Digest, ...]
    children: tuple[tuple[str, Digest], ...]  # (name, digest) of each subdirectory
    # For input sketches (locality.py): its largest files and the bytes of all of them.
    largest: tuple[Digest, ...] = ()
    file_bytes: int = 0


@dataclass(frozen=True, slots=True)
class CheckedCommand:
    """A Command that parsed, with the platform properties it names."""

    data: bytes
    platform: tuple[tuple[str, str], ...]


def wire_size(digest: Digest, data: bytes) -> int:
    """An upper bound of one blob's bytes in a serialized BatchReadBlobsResponse
    (data, hash, size and the field tags around them)."""
    return len(data) + len(digest.hash) + 32


def _cost(entry: CheckedDirectory | CheckedCommand) -> int:
    return len(entry.data) + ENTRY_OVERHEAD


class InputCache:
    """Checked Directories and Commands by digest, at most ``max_bytes`` of them (LRU)."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._entries: Lru[Digest, CheckedDirectory | CheckedCommand] = Lru(_cost)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def total_bytes(self) -> int:
        return self._entries.total

    def directory(self, digest: Digest) -> CheckedDirectory | None:
        entry = self._entries.peek(digest)
        if not isinstance(entry, CheckedDirectory):
            return None
        self._entries.get(digest)  # a use: refresh it
        return entry

    def command(self, digest: Digest) -> CheckedCommand | None:
        entry = self._entries.peek(digest)
        if not isinstance(entry, CheckedCommand):
            return None
        self._entries.get(digest)  # a use: refresh it
        return entry

    def add(self, digest: Digest, entry: CheckedDirectory | CheckedCommand) -> None:
        if _cost(entry) > self.max_bytes or digest in self._entries:
            return
        self._entries.put(digest, entry)
        self._entries.evict(self.max_bytes)

    def tree_blobs(
        self, command: Digest, root: Digest, max_bytes: int, sent: SentBlobs | None = None
    ) -> dict[Digest, bytes]:
        """The Command and the Directories under ``root`` that are cached, root first
        (breadth-first), up to ``max_bytes`` once serialized as a BatchReadBlobsResponse
        (each blob costs its data and ``wire_size`` overhead): what a lease may carry inline.
        Those in ``sent`` (the bot had them from an earlier lease) are left out, and
        the ones returned are added to it.

        Whatever is not cached, or does not fit, is left out; the bot reads it from
        the CAS as usual."""
        out: dict[Digest, bytes] = {}
        budget = max_bytes
        checked_command = self._entries.peek(command)
        if isinstance(checked_command, CheckedCommand) and wire_size(command, checked_command.data) <= budget:
            if sent is None or not sent.has(command):
                out[command] = checked_command.data
                budget -= wire_size(command, checked_command.data)
        seen = {root}
        queue = deque([root])
        while queue:
            digest = queue.popleft()
            entry = self._entries.peek(digest)
            if not isinstance(entry, CheckedDirectory):
                continue
            if sent is None or not sent.has(digest):
                size = wire_size(digest, entry.data)
                if size > budget:
                    break
                out[digest] = entry.data
                budget -= size
            for _, child in entry.children:  # below a sent one may be unsent ones (a budget cut them off)
                if child not in seen:
                    seen.add(child)
                    queue.append(child)
        if sent is not None:
            sent.add(out)
        return out


class SentBlobs:
    """The blobs one bot session has been sent inline, most recent ``max_entries``.

    A bot keeps the Directories and Commands it parsed, so sending them again with
    every lease (a toolchain's dozens of directories) would only cost bytes and
    parsing; an entry forgotten here is merely sent again.

    A plain dict in use order (a hit is moved to the end), added to and trimmed in
    whole-batch C-level passes: a cold lease asks about, and adds, a thousand input
    files while its answer is made (``Lru`` cost a Python call per entry each way)."""

    def __init__(self, max_entries: int = 20_000) -> None:
        self.max_entries = max_entries
        self._digests: dict[Digest, None] = {}
        self._soon: list[Iterable[Digest]] = []  # ``add_soon``: added before anyone asks

    def __len__(self) -> int:
        self._flush()
        return len(self._digests)

    def has(self, digest: Digest) -> bool:
        """Whether it was sent (and, if so, it is now the most recently used)."""
        self._flush()
        digests = self._digests
        if digest not in digests:
            return False
        del digests[digest]
        digests[digest] = None
        return True

    def unsent(self, digests: Iterable[Digest]) -> list[Digest]:
        """Those of ``digests`` not sent (in their order); the sent ones are now the most
        recently used, as ``has`` leaves them."""
        self._flush()
        known = self._digests
        digests = list(digests)
        again = known.keys() & digests
        if not again:
            return digests
        deque(map(known.pop, again), maxlen=0)
        known.update(dict.fromkeys(again))
        return [digest for digest in digests if digest not in again]

    def add_soon(self, digests: Iterable[Digest]) -> None:
        """``add`` at the event loop's next turn: after the answer carrying them has
        left, not while it is made (a cold lease's thousand files cost ~0.2 ms to add).
        Whatever asks before then sees them added."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a test, a tool): at once
            self.add(digests)
            return
        if not self._soon:
            loop.call_soon(self._flush)
        self._soon.append(digests)

    def _flush(self) -> None:
        if self._soon:
            soon, self._soon = self._soon, []
            for digests in soon:
                self.add(digests)

    def add(self, digests: Iterable[Digest]) -> None:
        self._flush()
        known = self._digests
        new = dict.fromkeys(digests)
        again = new.keys() & known.keys()
        if again:  # sent before: they move to the most recent end
            deque(map(known.pop, again), maxlen=0)
        known.update(new)
        excess = len(known) - self.max_entries
        if excess > 0:  # the oldest go
            deque(map(known.pop, list(islice(known, excess))), maxlen=0)

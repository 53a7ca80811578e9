"""Locality: how much of an action's input a bot already holds, and where dispatch sends it.

With ``[execution] dispatch = "locality"``, the scheduler places an action on the bot
that holds most of its input bytes, then on the least loaded one, instead of on the
first bot that asks (``"fifo"``). Three pieces, each bounded whatever the sizes:

- An action's **input sketch**, made at validation (validation.py) from the Directories
  it walks anyway: the total bytes of its input files and its ``SAMPLE`` largest files,
  as bytes (``sketch_of``): 8 + 16 per file, so 100,000 queued actions cost 26 MiB more.
  Records: ``h1``, ``h2`` (the probe seeds of cas/digest_filter.py, 4 bytes each) and
  the size (8 bytes), big-endian, after the total (8 bytes).
- A bot's **cache summary**: a DigestFilter of the blobs it holds (docs/BOTS_PROTOCOL.md
  section 8), and its load (CPU and memory pressure, 0 to 1); the latest it sent.
- ``held_bytes``: the sampled files the filter holds, scaled to the total: the bytes
  the bot would not fetch, estimated (false positives make it a little optimistic).
  A bot's summary says what it held at its last call; the files of the actions given
  to it since (``Expected``, the sketches' records, the newest ``EXPECTED`` kept)
  count as held too: it is fetching them, and its next action with the same big
  headers should not go to a bot that would fetch them again.

The rules (``Dispatch``), applied by the scheduler state in its transitions:

- **Placement tiers** (``tier``): for a bot that might run an action, ``THEIRS`` if
  another bot that can run it holds materially more of it (``material``: ``min_gain``
  bytes, or a quarter of its inputs if more), else ``MINE``; between them ``NEXT``,
  a ``THEIRS`` that no third bot holds materially more of either (the next best
  place once the holder's wait is over: idle bots share out a busy bot's work
  instead of each fetching all of it); an action under
  ``min_home`` input bytes is ``MINE`` to every bot (cheap to fetch anywhere). An
  action nobody holds is ``MINE`` to every bot, and the first bot given it owns it
  from that moment (its ``expected`` files), before it has fetched a byte: the next
  actions with the same big inputs are ``THEIRS`` to the others. Ownership thus
  follows demand: a new component goes to a bot that had nothing better to do.
- **Urgent actions are placed as fifo places them** (``urgent``): an action of a
  better priority than the default (below 0; REAPI: lower runs sooner) goes to the
  bot waiting longest, and a bot asking for work takes the oldest of them, whatever
  anyone holds: no tiers, no wait for a holder. Whoever asks for an urgent action
  wants it soon: a holder saves a fetch of milliseconds, a busy one can take seconds.
- **A new or requeued action, several bots waiting** (``choose_bot``): among the first
  ``max_idle_scored`` waiting bots that can run it, those of the best tier; of them
  those within ``min_gain`` bytes of the best estimate; of them the least loaded
  (share of its slots in use, then CPU, then memory pressure), then the one waiting
  longest. A bot that answered a call in the last ``return_window`` seconds with a
  slot free, and keeps calling (it holds calls while busy, or runs nothing), counts
  as waiting too, after those in a held call: it is on its way back (reapi-worker
  reports on a quick call, then opens a held one), and the action whose inputs it
  just produced should not go elsewhere for that millisecond. It gets the lease in
  the answer to its next call.
- **A bot asks for work, actions queued** (``choose_placed``): it looks at up to
  ``window`` queued actions of the best priority it may run, oldest first; of those
  of its best tier, it takes the one it holds most of if that beats the oldest of
  them by ``min_gain`` bytes, else that oldest. Priorities are never crossed, so an
  urgent action still overtakes a deep queue. Fairness: an action passed over
  ``max_passes`` times is taken by the next bot that can run it, whatever it holds:
  no action waits more than that many dispatches behind better-placed ones (one that
  waits for its holder is passed over too when a bot takes a later one).
- **The bounded wait** (``wait``, ``[execution] locality_wait``): a bot takes an action
  that is ``THEIRS`` to it only once the action has waited ``wait`` seconds (from
  when a bot it is ``THEIRS`` to could first have taken it) for a better-placed bot;
  with no wait, once the bot holding most of it has moved on (``holder_moved_on``,
  ``wait_for_holder``: given as many actions as it has slots since, other than those
  waiting for it or held by it already (``own_work``), once per ``holder_wait_bytes``
  of the action's inputs (``holder_wait_mark``), or at most ``holder_wait_max``
  seconds; no more than
  ``holder_backlog`` per slot wait for one holder, ``backlog_full``; none begins in
  a deep queue, ``deep_queue``), or at once when it has nothing ``MINE`` and
  ``wait_for_holder`` is off. It trades idle
  time for fewer such steals (docs/BENCHMARKS.md, "Locality dispatch").
- A bot that sends no summary holds nothing as far as dispatch knows (BuildGrid's
  bots): it gets work as before, when no better-placed bot is waiting.
"""

from __future__ import annotations

import heapq
import struct
from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass

from cas.digest import Digest
from cas.digest_filter import HEADER, MAX_BITS, MAX_PROBES, MIN_BITS, VERSION, probe_seeds
from server.scheduler.sketch_probes import plan_of

SAMPLE = 16  # input files per sketch
EXPECTED = 4096  # sketch records of the actions given to a bot since its summary, kept per bot
_TOTAL = struct.Struct(">Q")
_RECORD = struct.Struct(">IIQ")


@dataclass(frozen=True)
class Dispatch:
    """``[execution] dispatch`` and its bounds (docs/SCHEDULER.md, "Dispatch")."""

    locality: bool = False  # False: "fifo", the first waiting bot, the oldest queued action
    window: int = 16  # queued actions a bot chooses among
    max_passes: int = 32  # times an action may be passed over before it is taken first
    min_gain: int = 4096  # bytes an estimate must beat another's by to count as better
    min_home: int = 64 << 10  # input bytes below which an action is cheap anywhere: it never waits for a bot
    max_idle_scored: int = 64  # waiting bots compared for one new action
    return_window: float = 1.0  # seconds a bot that just called counts as waiting (it is about to call again)
    wait: float = 0.0  # seconds an action may wait for a bot holding materially more of it (0: never)
    wait_for_holder: bool = True  # with no ``wait``: wait for the holder until it moves on (``holder_moved_on``)
    holder_wait_max: float = 10.0  # seconds that wait lasts at most (a holder running a long action)
    holder_backlog: int = 12  # actions that may wait for one holder at once, per slot (``backlog_full``)
    holder_wait_bytes: int = 256 << 10  # input bytes per slot's worth of the holder's progress waited for


URGENT_BELOW = 0  # REAPI's default priority: an action of a lower (better) one is urgent (``urgent``)


def urgent(priority: int) -> bool:
    """Whether an action is placed first come, first served even with locality (the
    rules above): its priority is better than the default. Its client wants it soon,
    not cheap: the fetch a holder would save is small beside a wait for a busy holder
    (docs/BENCHMARKS.md, "Priority and fairness under locality")."""
    return priority < URGENT_BELOW


FIFO = Dispatch()
LOCALITY = Dispatch(locality=True)


def largest_files(files: Iterable[Digest], count: int = SAMPLE) -> tuple[Digest, ...]:
    """The ``count`` largest non-empty files, largest first (ties by hash)."""
    unique = {d for d in files if d.size_bytes}
    return tuple(heapq.nlargest(count, unique, key=lambda d: (d.size_bytes, d.hash)))


def sketch_of(samples: Iterable[Digest], total: int) -> bytes:
    """An action's input sketch from candidate files (the largest of each directory) and its total bytes."""
    chosen = largest_files(samples)
    if not chosen:
        return b""
    parts = [_TOTAL.pack(total)]
    for digest in chosen:
        h1, h2 = probe_seeds(digest.hash)
        parts.append(_RECORD.pack(h1, h2, digest.size_bytes))
    return b"".join(parts)


def valid_summary(summary: bytes) -> str | None:
    """None if ``summary`` is a DigestFilter's wire form this scheduler can read, else why not."""
    if len(summary) < HEADER:
        return "it is shorter than its two header bytes"
    if summary[0] != VERSION:
        return f"version {summary[0]} is unknown (1 is)"
    bits = (len(summary) - HEADER) * 8
    if not MIN_BITS <= bits <= MAX_BITS:
        return f"{bits} bits is outside {MIN_BITS} to {MAX_BITS}"
    if not 1 <= summary[1] <= MAX_PROBES:
        return f"{summary[1]} probes is outside 1 to {MAX_PROBES}"
    return None


def held_bytes(sketch: bytes, summary: bytes | None, expected: Container[int] = ()) -> int:
    """Estimated input bytes of the sketched action that a bot with ``summary`` holds
    (0 without either; ``summary`` must have passed ``valid_summary``), counting the
    files of actions given to it since (``expected``, ``record_keys``) as held. The
    records' probe positions are the sketch's plan for filters of this size, worked
    out once (sketch_probes.plan_of), not once per estimate."""
    if not sketch or not summary:
        return 0
    total, sampled, records = plan_of(sketch, summary)
    held = 0
    for spots, key, size in records:
        if key in expected:
            held += size
            continue
        for index, mask in spots:
            if not summary[index] & mask:
                break
        else:
            held += size
    return total * held // sampled if sampled else 0


def held_bytes_each(sketch: bytes, summaries: Sequence[bytes | None], expected: Sequence[Container[int]]) -> list[int]:
    """``held_bytes`` of one sketch for several bots (``summaries[i]``, ``expected[i]``):
    the sketch's plan is worked out once for all those of one filter size."""
    return [held_bytes(sketch, summary, keys) for summary, keys in zip(summaries, expected, strict=True)]


def sketch_total(sketch: bytes) -> int:
    """The input bytes of a sketched action (0 for no sketch)."""
    return _TOTAL.unpack_from(sketch)[0] if sketch else 0


MINE, NEXT, THEIRS = 0, 1, 2  # placement tiers, best first (``tier``)


def tier(dispatch: Dispatch, total: int, own: int, rival: int, second: int | None = None) -> int:
    """How well a bot fits an action it might run, from the bytes of it the bot holds
    (``own``), the most any other bot that can run it holds (``rival``) and the most
    held by any bot but those two (``second``; None: unknown):
    ``THEIRS`` if the other holds materially more of it (``material``): running it
    here would fetch bytes already fetched there; of those, ``NEXT`` if no third bot
    holds materially more of it either (``second``): when the holder is busy and its
    wait is over, this bot is as good a place as any other, and a bot taking such
    work takes it before what a third bot holds too, so two idle bots share out what
    one busy bot holds instead of both fetching each of it; else ``MINE``, and always
    for an action cheap to fetch anywhere (under ``min_home`` input bytes) or of
    which this bot lacks little (under ``min_gain``). An action nobody holds is
    ``MINE`` to every bot: the first it is given to owns it (its ``expected`` files)
    before it has fetched a byte, so the next actions with the same big inputs follow it."""
    if total < dispatch.min_home or total - own < dispatch.min_gain:
        return MINE
    threshold = material(dispatch, total)
    if rival - own < threshold:
        return MINE
    return NEXT if second is not None and second - own < threshold else THEIRS


def tiers_among(dispatch: Dispatch, total: int, held: Sequence[int], everyone: Sequence[int]) -> list[int]:
    """The tier (``tier``) of each bot that might take an action, ``held`` being what
    each of them holds of it and ``everyone`` what every bot that can run it holds,
    those bots included (each once)."""
    top = sorted(everyone, reverse=True)[:3]
    tiers = []
    for own in held:
        others = list(top)
        if own in others:
            others.remove(own)
        others += [0, 0]
        tiers.append(tier(dispatch, total, own, others[0], others[1]))
    return tiers


def material(dispatch: Dispatch, total: int) -> int:
    """How many more bytes of an action another bot must hold to be better placed for
    it: ``min_gain``, or a quarter of its input bytes if more (a few object files more
    of a link's inputs are not worth a wait)."""
    return max(dispatch.min_gain, total // 4)


def holder_wait_mark(dispatch: Dispatch, total: int, given: int, slots: int) -> int:
    """The mark a wait for a holder starts from (``holder_moved_on`` counts the holder's
    progress from it), the holder having been given ``given`` actions so far: an action
    of ``total`` input bytes waits one slot's worth of the holder's other work per
    ``holder_wait_bytes`` of them (at least one). A library's compile (200 KiB) waits as
    before; a compile that sees every component's headers (1.1 MiB) waits five times
    as long, since an idle bot taking it would fetch most of them again (a second bot
    holding everything: docs/BENCHMARKS.md, "Where the bytes go")."""
    units = max(1, -(-total // max(dispatch.holder_wait_bytes, 1)))
    return given + (units - 1) * max(slots, 1)


def own_work(dispatch: Dispatch, total: int, held: int) -> bool:
    """Whether an action given to a bot is one it held already (all but ``min_gain``
    of an action of ``min_home`` bytes or more): working on it is working through what
    it holds, like the actions waiting for it, not moving on (``holder_moved_on``). A
    burst of one component's compiles, given to its holder one by one, would otherwise
    end the waits of the rest of the burst, and the idle bots would fetch it too."""
    return total >= dispatch.min_home and total - held < dispatch.min_gain


def holder_moved_on(given_since: int, slots: int) -> bool:
    """Whether an action that is ``THEIRS`` to idle bots has waited long enough for the
    bot holding it (``Dispatch.wait_for_holder``): once that bot has been given as many
    actions as it has slots since the wait began (``given_since``), not counting those
    that waited for it too (its own backlog, which it is working through), it has
    moved on to other work and would not reach this one soon, so an idle bot may take
    it. A wait measured in the holder's progress, not in seconds, whatever the pace."""
    return given_since >= max(slots, 1)


def deep_queue(dispatch: Dispatch, visible: int) -> bool:
    """Whether a bot asking for work sees a deep queue: a full ``window`` of queued
    actions it may run, of the best priority, none of them waiting for a holder. Then
    no wait for a holder begins: the holders are far behind, every bot has work for a
    while, and an idle bot waiting for them only lowers the rate at which the queue
    drains (``bench_redis_locality``'s drain ran at 0.04x fifo's rate when waits could
    fill the queue's head). A build's burst fits in the window unless Bazel's
    ``--jobs`` is well above it plus the free slots; then the tiers still hold (a bot
    takes its own first) and the saving mostly did (docs/BENCHMARKS.md, "A deep build queue")."""
    return visible >= dispatch.window


def backlog_full(dispatch: Dispatch, waiting: int, slots: int) -> bool:
    """Whether a holder that ``waiting`` actions already wait for may be waited for by
    one more (``Dispatch.wait_for_holder``): not once they are ``holder_backlog`` per
    slot. It will not reach the next one soon, and a deep queue of actions all held by
    busy bots would otherwise leave every other bot idle behind them (a drain)."""
    return waiting >= dispatch.holder_backlog * max(slots, 1)


def record_keys(sketch: bytes) -> Iterable[int]:
    """One key per sampled file of a sketch, for ``held_bytes``' ``expected``."""
    if sketch:
        for h1, h2, _ in _RECORD.iter_unpack(memoryview(sketch)[_TOTAL.size:]):
            yield h1 << 32 | h2


Load = tuple[float, float, float]  # (share of slots in use, CPU pressure, memory pressure): lower is less loaded


def choose_bot(dispatch: Dispatch, held: Sequence[int], loads: Sequence[Load],
               tiers: Sequence[int] | None = None) -> int:
    """Index of the bot to give a new action to, among bots in waiting order (longest first).

    Of those of the best ``tiers`` (``tier``; all if not given), the ones within
    ``min_gain`` of the best estimate, then the least loaded, then the first."""
    candidates: Sequence[int] = range(len(held))
    if tiers is not None:
        best_tier = min(tiers)
        candidates = [i for i in candidates if tiers[i] == best_tier]
    best = max(held[i] for i in candidates)
    eligible = [i for i in candidates if held[i] >= best - dispatch.min_gain]
    return min(eligible, key=lambda i: (loads[i], i))


def choose_queued(dispatch: Dispatch, held: Sequence[int], passes: Sequence[int]) -> int:
    """Index of the queued action a bot takes, among candidates oldest first (one priority),
    with no tiers (``choose_placed`` with every candidate ``MINE`` and takeable)."""
    chosen = choose_placed(dispatch, held, passes)
    assert chosen is not None
    return chosen


def choose_placed(dispatch: Dispatch, held: Sequence[int], passes: Sequence[int],
                  tiers: Sequence[int] | None = None, takeable: Sequence[bool] | None = None) -> int | None:
    """Index of the queued action a bot takes, among candidates oldest first (one
    priority), or None if it may take none of them now.

    One passed over ``max_passes`` times first, whatever its tier (fairness). Else,
    among those the bot may take now (``takeable``: it needs no wait for a better
    bot, or the wait is over; all if not given), those of the best ``tiers`` (``tier``;
    all one tier if not given); of them, the one it holds most of if that beats the
    oldest of them by ``min_gain``, else that oldest."""
    for i, count in enumerate(passes):
        if count >= dispatch.max_passes:
            return i
    allowed = [i for i in range(len(held)) if takeable is None or takeable[i]]
    if not allowed:
        return None
    if tiers is not None:
        best_tier = min(tiers[i] for i in allowed)
        allowed = [i for i in allowed if tiers[i] == best_tier]
    best = max(allowed, key=lambda i: (held[i], -i))
    return best if held[best] - held[allowed[0]] >= dispatch.min_gain else allowed[0]

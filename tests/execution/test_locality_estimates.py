"""Locality's estimates kept between claims give the figures of a fresh estimate.

A sketch's probe positions are worked out once per filter size (sketch_probes.plan_of)
and the memory state's sessions keep their estimates by sketch until their summary or
expected keys change (records.BotSession.held). Neither may ever answer with a figure
a fresh estimate would not give: placement decisions must not change. The figures are
checked against a reference built on DigestFilter's own membership test."""

from __future__ import annotations

from cas.digest import Digest
from cas.digest_filter import DigestFilter
from server.scheduler import sketch_probes
from server.scheduler.locality import EXPECTED, SAMPLE, held_bytes, largest_files, record_keys, sketch_of
from server.scheduler.platform import WorkerOffer
from server.scheduler.sessions import BotRegistration, BotSummary
from server.scheduler.state.memory.records import BotSession


def files(tag: str, count: int = 2 * SAMPLE) -> list[Digest]:
    return [Digest.of(f"{tag}-{i}".encode() * (40 + 7 * i)) for i in range(count)]


def reference(inputs: list[Digest], total: int, summary: bytes | None, expected: frozenset[int] = frozenset()) -> int:
    """What held_bytes estimates, from first principles: the sampled files the filter
    holds (DigestFilter's own test) or that are expected, scaled to the total."""
    if summary is None:
        return 0
    bloom = DigestFilter.from_bytes(summary)
    sampled = largest_files(inputs)
    keys = dict(zip(sampled, record_keys(sketch_of(inputs, total)), strict=True))
    held = sum(d.size_bytes for d in sampled if d.hash in bloom or keys[d] in expected)
    return total * held // sum(d.size_bytes for d in sampled)


def summary_of(held: list[Digest], bits: int = 8192 * 8, probes: int = 7) -> bytes:
    bloom = DigestFilter(bits, probes)
    bloom.add_all(d.hash for d in held)
    return bloom.to_bytes()


def test_one_sketch_against_filters_of_several_sizes_gives_each_its_own_figures() -> None:
    """A plan is per filter size: the same sketch tested against filters of other sizes
    and probe counts, in turn and again, gives the reference figure every time."""
    inputs = files("a")
    total = 10 * sum(d.size_bytes for d in inputs)
    sketch = sketch_of(inputs, total)
    keys = list(record_keys(sketch))
    shapes = [(8192 * 8, 7), (512, 3), (65536, 5), (8192 * 8, 2), (64, 1)]
    for _ in range(2):  # the second time from the plans kept
        for bits, probes in shapes:
            for held in (inputs[::2], inputs[5:9], inputs, []):
                summary = summary_of(held, bits, probes)
                for expected in (frozenset(), frozenset(keys[1::3])):
                    assert held_bytes(sketch, summary, expected) == reference(inputs, total, summary, expected)


def test_the_plans_kept_are_bounded() -> None:
    summary = summary_of([])
    for i in range(sketch_probes.PLANS + 10):
        inputs = files(f"bound-{i}", 2)
        held_bytes(sketch_of(inputs, 1000), summary)
    assert sketch_probes.plans_kept() <= sketch_probes.PLANS


def session() -> BotSession:
    return BotSession("s", BotRegistration("bot", "", WorkerOffer()), expires_at=0.0)


def test_a_sessions_kept_estimate_follows_its_new_summary() -> None:
    inputs = files("b")
    total = sum(d.size_bytes for d in inputs)
    sketch = sketch_of(inputs, total)
    bot = session()
    assert bot.held(sketch) == 0  # no summary yet: holds nothing
    for held in ([], inputs[::2], inputs, inputs[3:4]):
        bot.take_summary(BotSummary(cache=summary_of(held)))
        assert bot.held(sketch) == reference(inputs, total, bot.cache)
        assert bot.held(sketch) == held_bytes(sketch, bot.cache, bot.expected)
    bot.take_summary(BotSummary(cpu=0.5))  # no filter sent: what it holds is as before
    assert bot.held(sketch) == reference(inputs, total, summary_of(inputs[3:4]))


def test_a_sessions_kept_estimate_follows_what_it_was_given_and_what_it_forgot() -> None:
    """Keys it is given count as held from then on; once EXPECTED newer keys pushed them
    out they count no more; a key given again that it expected already changes nothing."""
    inputs = files("c")
    total = sum(d.size_bytes for d in inputs)
    sketch = sketch_of(inputs, total)
    bot = session()
    bot.take_summary(BotSummary(cache=summary_of([])))
    assert bot.held(sketch) == 0
    other = sketch_of(files("d"), 5000)
    before = bot.held(other)
    bot.expect(sketch)
    assert bot.held(sketch) == total
    bot.expect(sketch)  # nothing new
    assert bot.held(sketch) == total and bot.held(other) == before
    for i in range(EXPECTED // SAMPLE):  # EXPECTED newer keys
        bot.expect(sketch_of(files(f"newer-{i}"), 1000))
    assert bot.held(sketch) == held_bytes(sketch, bot.cache, bot.expected) == 0

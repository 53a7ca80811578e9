"""The requirement sets and worker offers the fleet has seen, and which satisfy which.

Matching needs the PlatformMatcher (policies per property key, from the config),
which Lua does not have, so it is computed here, once per (requirement set, offer)
pair, when either is first seen by a replica, and recorded in Redis (``match:REQ``
the offers that satisfy a set, ``offreq:OFFER`` the sets an offer satisfies). The
scripts then dispatch with set lookups only. Every replica must run the same
[execution.platform] policies.

A set and an offer first seen at once on two replicas: each writes itself before it
reads the other kind (one script, ``register``), so at least one of the two sees the
other and records the pair.
"""

from __future__ import annotations

from server.scheduler.platform import PlatformMatcher, RequirementSet, WorkerOffer
from server.scheduler.state.redis.codec import (
    json_id, offer_from_json, offer_json, requirements_from_json, requirements_json, text,
)
from server.scheduler.state.redis.scripts import Scripts


class Catalog:
    def __init__(self, matcher: PlatformMatcher, scripts: Scripts) -> None:
        self.matcher = matcher
        self.scripts = scripts
        self._requirement_ids: dict[RequirementSet, str] = {}  # registered and matched by this replica
        self._requirements: dict[str, RequirementSet] = {}  # by id: any the state named
        self._offer_ids: dict[str, str] = {}  # canonical JSON -> id, registered and matched here
        self._offers: dict[str, WorkerOffer] = {}

    async def requirement_id(self, requirements: RequirementSet) -> str:
        """The set's id, once it is registered and matched against every known offer."""
        known = self._requirement_ids.get(requirements)
        if known is not None:
            return known
        data = requirements_json(requirements)
        rid = json_id(data)
        reply = await self.scripts.call("register", "req", rid, data)
        pairs = []
        for i in range(0, len(reply), 2):
            offer = self._remember_offer(text(reply[i]), reply[i + 1])
            if self.matcher.satisfies(offer, requirements):
                pairs += [rid, text(reply[i])]
        if pairs:
            await self.scripts.call("add_matches", *pairs)
        self._requirement_ids[requirements] = rid
        self._requirements[rid] = requirements
        return rid

    async def offer_id(self, offer: WorkerOffer) -> str:
        """The offer's id, once it is registered and matched against every known set."""
        data = offer_json(offer)
        known = self._offer_ids.get(data)
        if known is not None:
            return known
        oid = json_id(data)
        reply = await self.scripts.call("register", "offer", oid, data)
        pairs = []
        for i in range(0, len(reply), 2):
            requirements = self._remember_requirements(text(reply[i]), reply[i + 1])
            if self.matcher.satisfies(offer, requirements):
                pairs += [text(reply[i]), oid]
        if pairs:
            await self.scripts.call("add_matches", *pairs)
        self._offer_ids[data] = oid
        self._offers[oid] = offer
        return oid

    async def requirements(self, rid: str) -> RequirementSet:
        """The set named ``rid`` (registered by some replica)."""
        known = self._requirements.get(rid)
        if known is not None:
            return known
        data = await self.scripts.command(f"reading requirement set {rid}", "HGET", self.scripts.prefix + "req", rid)
        return self._remember_requirements(rid, data)

    async def offers(self, ids: list[str]) -> list[WorkerOffer]:
        missing = [oid for oid in ids if oid not in self._offers]
        if missing:
            datas = await self.scripts.command("reading worker offers", "HMGET", self.scripts.prefix + "offer", *missing)
            for oid, data in zip(missing, datas):
                if data is not None:
                    self._remember_offer(oid, data)
        return [self._offers[oid] for oid in ids if oid in self._offers]

    def _remember_offer(self, oid: str, data: bytes) -> WorkerOffer:
        offer = self._offers.get(oid)
        if offer is None:
            offer = self._offers[oid] = offer_from_json(data)
        return offer

    def _remember_requirements(self, rid: str, data: bytes) -> RequirementSet:
        requirements = self._requirements.get(rid)
        if requirements is None:
            requirements = self._requirements[rid] = requirements_from_json(data)
        return requirements

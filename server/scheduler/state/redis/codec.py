"""What the Redis state stores as strings, and the views it builds from script replies.

Requirement sets, offers and registrations are stored as canonical JSON (the same
value is the same string on every replica, so it names itself: ``requirement_id``,
``offer_id``); protos as their serialized bytes; times as the float's repr. Script
replies are flat arrays in the orders lua/prelude.lua documents (``op_state``,
``session_view``, a lease); the functions here turn them into the views of
state/views.py and sessions.py.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from typing import Any

from cas.digest import Digest
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from server.scheduler.operation import OperationState, Stage
from server.scheduler.platform import RequirementSet, WorkerOffer
from server.scheduler.sessions import BotRegistration, LeaseView
from server.scheduler.state.views import DedupKey, SessionView


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def number(now: float) -> str:
    """A time as scripts receive it: exact, and kept as given in hashes."""
    return repr(float(now))


def dedup_arg(key: DedupKey | None) -> str:
    """An execution's dedup key as scripts keep it in ``P:inflight`` ('' for none)."""
    if key is None:
        return ""
    instance, digest = key
    return f"{digest.function}/{digest.hash}/{digest.size_bytes}/{instance}"


def _short_hash(data: str) -> str:
    return hashlib.sha1(data.encode()).hexdigest()[:20]


def requirements_json(requirements: RequirementSet) -> str:
    return json.dumps([[key, list(values)] for key, values in requirements.items], separators=(",", ":"))


def requirements_from_json(data: bytes | str) -> RequirementSet:
    return RequirementSet(tuple((key, tuple(values)) for key, values in json.loads(data)))


def offer_json(offer: WorkerOffer) -> str:
    return json.dumps([[key, sorted(offer.values[key])] for key in sorted(offer.values)], separators=(",", ":"))


def offer_from_json(data: bytes | str) -> WorkerOffer:
    return WorkerOffer({key: frozenset(values) for key, values in json.loads(data)})


def json_id(data: str) -> str:
    """The id of a requirement set or an offer: a hash of its canonical JSON."""
    return _short_hash(data)


def registration_json(registration: BotRegistration) -> str:
    return json.dumps({
        "bot": registration.bot_id, "instance": registration.instance_name,
        "offer": json.loads(offer_json(registration.offer)), "capacity": registration.capacity,
        "healthy": registration.healthy, "hold_when_busy": registration.hold_when_busy,
        "inline_limit": registration.inline_limit, "owner": registration.owner,
    }, separators=(",", ":"))


class Registrations:
    """Registrations decoded once per distinct JSON (every bot call reads its session's)."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self._decoded: OrderedDict[bytes, BotRegistration] = OrderedDict()
        self.max_entries = max_entries

    def decode(self, data: bytes) -> BotRegistration:
        registration = self._decoded.get(data)
        if registration is None:
            fields = json.loads(data)
            registration = BotRegistration(
                bot_id=fields["bot"], instance_name=fields["instance"],
                offer=WorkerOffer({key: frozenset(values) for key, values in fields["offer"]}),
                capacity=fields["capacity"], healthy=fields["healthy"], hold_when_busy=fields["hold_when_busy"],
                inline_limit=fields["inline_limit"], owner=fields.get("owner", ""),
            )
            self._decoded[data] = registration
            if len(self._decoded) > self.max_entries:
                self._decoded.popitem(last=False)
        return registration


def timeout_arg(timeout: float | None) -> str:
    """An action's timeout as scripts keep it: '' for none."""
    return "" if timeout is None else number(timeout)


def timeout_of(value: bytes) -> float | None:
    return float(value) if value else None


def digest_of(hash_: bytes, size: bytes, function: bytes) -> Digest:
    return Digest(hash_.decode(), int(size), int(function))  # type: ignore[arg-type]


def operation_state(reply: list[Any]) -> OperationState:
    """``op_state``: name, instance, hash, size, function, stage, done, response,
    stdout, stderr, partial metadata, owner."""
    name, instance, hash_, size, function, stage, done, response, stdout, stderr, partial, owner = reply
    return OperationState(
        name=text(name),
        instance_name=text(instance),
        action_digest=digest_of(hash_, size, function),
        stage=Stage(int(stage)),
        done=done == b"1",
        response=re_pb2.ExecuteResponse.FromString(response) if done == b"1" else None,
        stdout_name=text(stdout),
        stderr_name=text(stderr),
        partial_metadata=re_pb2.ExecutedActionMetadata.FromString(partial) if partial else None,
        owner=text(owner),
    )


def session_view(reply: list[Any], registrations: Registrations) -> SessionView:
    """``session_view``: name, registration, healthy, lease ids, untold cancellations, holding."""
    name, registration, healthy, lease_ids, untold, holding = reply
    return SessionView(
        text(name), registrations.decode(registration), healthy == b"1",
        tuple(lease_id.decode() for lease_id in lease_ids), untold == b"1", holding == b"1",
    )


def lease_view(reply: list[Any]) -> LeaseView:
    """A lease of ``answer``: id, cancelled, instance, hash, size, function, action,
    stdout write name, stderr write name."""
    lease_id, cancelled, instance, hash_, size, function, action, stdout, stderr = reply
    digest = digest_of(hash_, size, function)
    return LeaseView(
        lease_id=text(lease_id), cancelled=cancelled == b"1", instance_name=text(instance),
        action_digest_proto=digest.to_proto(), digest_function=digest.function, action_bytes=action,
        stdout_write_name=text(stdout or b""), stderr_write_name=text(stderr or b""),
    )

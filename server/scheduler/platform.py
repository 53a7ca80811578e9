"""Platform properties: normalising requirements and worker offers, and matching them.

An action asks for properties (``Action.platform``, else ``Command.platform``, which
is all Buck2 fills); a worker offers properties. Both sides are normalised the same
way before they meet, so a build configured for another server runs here unchanged:

- key spellings other servers' users write map to the standard key
  (``Arch``/``cpu_arch`` -> ``ISA``, ``os`` -> ``OSFamily``);
- ``OSFamily`` values compare case-insensitively; ISA aliases (amd64, x86_64 ->
  x86-64; aarch64, arm64 -> arm-a64) become the standard names.

Matching is a policy per key: ``exact`` (the default: the worker offers the value),
``all_of`` (multi-valued keys such as ISA: the worker offers every value asked),
``minimum`` (numeric: the worker offers at least this much), ``ignore``. A
normalised requirement set is hashable: the scheduler keeps one queue per set.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from cas.errors import InvalidArgument

OS_FAMILY = "OSFamily"
ISA = "ISA"

# Lower-cased key spelling -> standard key.
KEY_ALIASES = {
    "isa": ISA, "arch": ISA, "cpu_arch": ISA, "architecture": ISA,
    "osfamily": OS_FAMILY, "os": OS_FAMILY, "os_family": OS_FAMILY,
}
_ISA_ALIASES = {
    "x86_64": "x86-64", "amd64": "x86-64", "x86-64": "x86-64", "x64": "x86-64",
    "aarch64": "arm-a64", "arm64": "arm-a64", "arm-a64": "arm-a64",
    "i386": "x86-32", "i686": "x86-32", "x86-32": "x86-32",
}
_OS_ALIASES = {"darwin": "macos", "osx": "macos", "mac": "macos", "win32": "windows"}


class MatchPolicy(enum.Enum):
    EXACT = "exact"
    ALL_OF = "all_of"
    MINIMUM = "minimum"
    IGNORE = "ignore"


DEFAULT_POLICIES: dict[str, MatchPolicy] = {
    ISA: MatchPolicy.ALL_OF,
    OS_FAMILY: MatchPolicy.EXACT,
    "cpu_count": MatchPolicy.MINIMUM,
    "memory_bytes": MatchPolicy.MINIMUM,
}


def normalise_key(key: str) -> str:
    return KEY_ALIASES.get(key.strip().lower(), key.strip())


def normalise_value(key: str, value: str) -> str:
    """``key`` is already normalised."""
    if key == ISA:
        return _ISA_ALIASES.get(value.strip().lower(), value.strip().lower())
    if key == OS_FAMILY:
        lowered = value.strip().lower()
        return _OS_ALIASES.get(lowered, lowered)
    return value


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


@dataclass(frozen=True)
class RequirementSet:
    """What an action needs, normalised: sorted ``(key, sorted values)`` pairs."""

    items: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # Hashed on every queue and index lookup: computed once.
    _hash: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash(self.items))

    def __hash__(self) -> int:
        return self._hash

    def describe(self) -> str:
        if not self.items:
            return "no platform properties"
        return ", ".join(f"{key}={value}" for key, values in self.items for value in values)

    def __str__(self) -> str:
        return self.describe()


@dataclass(frozen=True)
class WorkerOffer:
    """What a worker offers, normalised: key -> the set of values it lists."""

    values: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def describe(self) -> str:
        return ", ".join(f"{k}={'|'.join(sorted(v))}" for k, v in sorted(self.values.items())) or "nothing"


class PlatformMatcher:
    """Normalises both sides and decides matches, with a policy per property key."""

    def __init__(
        self,
        policies: Mapping[str, MatchPolicy] | None = None,
        default_policy: MatchPolicy = MatchPolicy.EXACT,
    ) -> None:
        self.policies = dict(DEFAULT_POLICIES)
        for key, policy in (policies or {}).items():
            self.policies[normalise_key(key)] = policy
        self.default_policy = default_policy

    def policy(self, key: str) -> MatchPolicy:
        return self.policies.get(key, self.default_policy)

    def requirements(self, properties: Iterable[tuple[str, str]]) -> RequirementSet:
        """Normalise an action's (name, value) pairs; INVALID_ARGUMENT for bad numbers."""
        wanted: dict[str, set[str]] = {}
        for raw_key, raw_value in properties:
            key = normalise_key(raw_key)
            policy = self.policy(key)
            if policy is MatchPolicy.IGNORE:
                continue
            value = normalise_value(key, raw_value)
            if policy is MatchPolicy.MINIMUM and _number(value) is None:
                raise InvalidArgument(
                    f"platform property {raw_key}={raw_value!r}: {key} is matched as a minimum, "
                    "so its value must be a number"
                )
            wanted.setdefault(key, set()).add(value)
        items = []
        for key in sorted(wanted):
            values = wanted[key]
            if self.policy(key) is MatchPolicy.MINIMUM:
                # Several minimums for one key: the largest is what counts.
                values = {max(values, key=lambda v: _number(v) or 0.0)}
            items.append((key, tuple(sorted(values))))
        return RequirementSet(tuple(items))

    def offer(self, properties: Iterable[tuple[str, str]]) -> WorkerOffer:
        values: dict[str, set[str]] = {}
        for raw_key, raw_value in properties:
            key = normalise_key(raw_key)
            values.setdefault(key, set()).add(normalise_value(key, raw_value))
        return WorkerOffer({k: frozenset(v) for k, v in values.items()})

    def satisfies_one(self, offer: WorkerOffer, key: str, values: tuple[str, ...]) -> bool:
        offered = offer.values.get(key, frozenset())
        if self.policy(key) is MatchPolicy.MINIMUM:
            have = [n for n in map(_number, offered) if n is not None]
            need = max(_number(v) or 0.0 for v in values)
            return bool(have) and max(have) >= need
        return all(v in offered for v in values)

    def satisfies(self, offer: WorkerOffer, requirements: RequirementSet) -> bool:
        return all(self.satisfies_one(offer, key, values) for key, values in requirements.items)

    def explain(self, requirements: RequirementSet, offers: Iterable[WorkerOffer]) -> str:
        """Why no worker in ``offers`` can run an action needing ``requirements``."""
        offers = list(offers)
        if not offers:
            return f"no worker is connected (the action needs {requirements.describe()})"
        unmet = []
        for key, values in requirements.items:
            if not any(self.satisfies_one(o, key, values) for o in offers):
                offered = sorted({v for o in offers for v in o.values.get(key, ())})
                have = f"workers offer {key}: {', '.join(offered)}" if offered else f"no worker offers {key} at all"
                unmet.append(f"{key}={','.join(values)} ({have})")
        if unmet:
            return "no connected worker offers " + "; ".join(unmet)
        return f"no single connected worker offers all of {requirements.describe()}"


"""Bearer tokens that are JWTs: signature, ``exp``, ``nbf``, ``aud`` and ``iss`` checked
by PyJWT against keys from a JWKS file that is re-read when it changes.

The key is chosen by the token's ``kid`` (or is the only key when there is one), and
must be a key for the algorithm the token names, so a token cannot pick a weaker
reading of a key (an RSA public key used as an HMAC secret). A verified token is
remembered until it expires, so a client that sends the same JWT on every call pays
for one signature check, not one per call.
"""

from __future__ import annotations

import datetime
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import jwt

from server.auth.config import JwtConfig
from server.auth.errors import Unauthenticated
from cas.file_watch import FileWatch
from server.auth.permissions import ALL_INSTANCES, Identity, InstanceScope, Permission, parse_permissions
from server.auth.tokens import RELOAD_INTERVAL

log = logging.getLogger("reapi.server.auth")

CACHE_LIMIT = 10_000


def looks_like_jwt(token: str) -> bool:
    """Three base64url parts: a JWT, as opposed to an opaque static token."""
    return token.count(".") == 2 and token.startswith("eyJ")


def _when(seconds: Any) -> str:
    try:
        return datetime.datetime.fromtimestamp(float(seconds), datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (TypeError, ValueError, OverflowError):
        return repr(seconds)


def read_jwks(path: Any) -> list[jwt.PyJWK]:
    """The usable keys of a JWKS file; ValueError naming the problem."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"JWKS file {path}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ValueError(f"JWKS file {path}: expected an object with a 'keys' list")
    keys = []
    for i, entry in enumerate(data["keys"]):
        try:
            keys.append(jwt.PyJWK(entry))
        except jwt.PyJWTError as exc:
            raise ValueError(f"JWKS file {path}: key #{i + 1}: {exc}") from None
    if not keys:
        raise ValueError(f"JWKS file {path}: no keys")
    return keys


class JwtVerifier:
    def __init__(self, config: JwtConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self._watch = FileWatch(config.jwks, min_interval=RELOAD_INTERVAL)
        self._watch.changed()
        self._keys = read_jwks(config.jwks)  # unreadable at start: the server does not start
        self._verified: dict[str, tuple[Identity, float, float]] = {}  # token -> (identity, exp, nbf)
        if config.audience is None:
            log.warning("[server.auth.jwt] has no audience: JWTs issued for other services are accepted too")

    def identity(self, token: str) -> Identity:
        """The token's identity, or Unauthenticated naming what was wrong with it."""
        if self._watch.changed():
            self._reload()
        now = self.clock()
        known = self._verified.get(token)
        if known is not None:
            identity, expires, not_before = known
            if not_before - self.config.leeway <= now < expires + self.config.leeway:
                return identity
            del self._verified[token]
        payload = self._verify(token)
        identity = self._identity_of(payload)
        if len(self._verified) >= CACHE_LIMIT:
            self._verified.pop(next(iter(self._verified)))
        self._verified[token] = (identity, float(payload["exp"]), float(payload.get("nbf", 0)))
        return identity

    def _reload(self) -> None:
        try:
            keys = read_jwks(self.config.jwks)
        except ValueError as exc:
            log.error("JWKS not reloaded, the keys read before stay in force: %s", exc)
            return
        self._keys = keys
        self._verified.clear()
        log.info("JWKS file %s reloaded: %d keys", self.config.jwks, len(keys))

    def _key(self, header: dict[str, Any]) -> jwt.PyJWK:
        kid = header.get("kid")
        algorithm = header.get("alg")
        if algorithm not in self.config.algorithms:
            raise Unauthenticated(
                f"JWT algorithm {algorithm!r} is not accepted (accepted: {', '.join(self.config.algorithms)})"
            )
        if kid is not None:
            matches = [k for k in self._keys if k.key_id == kid]
            if not matches:
                raise Unauthenticated(f"JWT key id {kid!r} is not in the JWKS file (unknown or rotated-out key)")
        else:
            matches = [k for k in self._keys if k.algorithm_name == algorithm]
            if len(matches) != 1:
                raise Unauthenticated("JWT has no key id ('kid') and the JWKS file has more than one key for it")
        key = matches[0]
        if key.algorithm_name != algorithm:
            raise Unauthenticated(f"JWT says {algorithm} but key {kid!r} is a {key.algorithm_name} key")
        return key

    def _verify(self, token: str) -> dict[str, Any]:
        config = self.config
        try:
            key = self._key(jwt.get_unverified_header(token))
            return jwt.decode(
                token, key, algorithms=[key.algorithm_name], audience=config.audience, issuer=config.issuer,
                leeway=config.leeway, options={"require": ["exp"]},
            )
        except jwt.ExpiredSignatureError:
            expired = jwt.decode(token, options={"verify_signature": False}).get("exp")
            raise Unauthenticated(f"expired JWT (it expired at {_when(expired)})") from None
        except jwt.ImmatureSignatureError:
            start = jwt.decode(token, options={"verify_signature": False}).get("nbf")
            raise Unauthenticated(f"JWT not valid yet (nbf {_when(start)})") from None
        except jwt.InvalidSignatureError:
            raise Unauthenticated("JWT with a bad signature (it does not verify with the key it names)") from None
        except jwt.InvalidAudienceError:
            audience = jwt.decode(token, options={"verify_signature": False}).get("aud")
            raise Unauthenticated(f"JWT with the wrong audience {audience!r} (this server is {config.audience!r})") from None
        except jwt.InvalidIssuerError:
            issuer = jwt.decode(token, options={"verify_signature": False}).get("iss")
            raise Unauthenticated(f"JWT from the wrong issuer {issuer!r} (this server trusts {config.issuer!r})") from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthenticated(f"JWT without the {exc.claim!r} claim") from None
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"invalid JWT: {exc}") from None

    def _identity_of(self, payload: dict[str, Any]) -> Identity:
        config = self.config
        name = payload.get(config.identity_claim)
        if not isinstance(name, str) or not name:
            raise Unauthenticated(f"JWT without a {config.identity_claim!r} claim naming the identity")
        permissions = self._permissions(_strings(payload.get(config.permissions_claim), config.permissions_claim))
        instances = _strings(payload.get(config.instances_claim), config.instances_claim) or [ALL_INSTANCES]
        return Identity(name, permissions, InstanceScope(tuple(instances)), method="jwt")

    def _permissions(self, values: list[str]) -> frozenset[Permission]:
        claim = self.config.permissions_claim
        if not self.config.roles:
            try:
                return parse_permissions(values, f"JWT claim {claim!r}")
            except ValueError as exc:
                raise Unauthenticated(str(exc)) from None
        granted: set[Permission] = set()
        for role in values:  # roles unknown to this server grant nothing
            granted |= parse_permissions(self.config.roles.get(role, []), f"role {role!r}")
        return frozenset(granted)


def _strings(value: Any, claim: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise Unauthenticated(f"JWT claim {claim!r} must be a list of strings or a space-separated string")

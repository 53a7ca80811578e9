"""A test JWT issuer: signing keys (HS256, RS256, ES256) made at test time, their
public half written as a JWKS file for the server, and tokens signed with PyJWT.

    issuer = TestIssuer(tmp_path / "jwks.json")
    token = issuer.token("alice", ["read"], algorithm="ES256")
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

AUDIENCE = "reapi-test"
ISSUER = "https://issuer.test"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TestIssuer:
    __test__ = False

    def __init__(self, jwks_path: Path, generation: int = 1) -> None:
        self.jwks_path = jwks_path
        self.generation = generation
        self.hmac_secret = secrets.token_bytes(32)
        self.rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec_key = ec.generate_private_key(ec.SECP256R1())
        self.write()

    def kid(self, algorithm: str) -> str:
        return f"{algorithm.lower()}-{self.generation}"

    def public_jwks(self) -> dict[str, Any]:
        rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.rsa_key.public_key()))
        ec_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.ec_key.public_key()))
        return {"keys": [
            {**rsa_jwk, "kid": self.kid("RS256"), "alg": "RS256", "use": "sig"},
            {**ec_jwk, "kid": self.kid("ES256"), "alg": "ES256", "use": "sig"},
            {"kty": "oct", "k": _b64(self.hmac_secret), "kid": self.kid("HS256"), "alg": "HS256"},
        ]}

    def write(self) -> None:
        temporary = self.jwks_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.public_jwks()))
        os.replace(temporary, self.jwks_path)

    def signing_key(self, algorithm: str) -> Any:
        return {"HS256": self.hmac_secret, "RS256": self.rsa_key, "ES256": self.ec_key}[algorithm]

    def token(self, subject: str, permissions: list[str] | str | None = None, *, algorithm: str = "RS256",
              audience: str | None = AUDIENCE, issuer: str | None = ISSUER, lifetime: float = 600,
              not_before: float | None = None, kid: str | None = None, **claims: Any) -> str:
        now = time.time()
        payload: dict[str, Any] = {"sub": subject, "iat": int(now), "exp": int(now + lifetime), **claims}
        if permissions is not None:
            payload["permissions"] = permissions
        if audience is not None:
            payload["aud"] = audience
        if issuer is not None:
            payload["iss"] = issuer
        if not_before is not None:
            payload["nbf"] = int(not_before)
        headers = {"kid": kid or self.kid(algorithm)}
        return jwt.encode(payload, self.signing_key(algorithm), algorithm=algorithm, headers=headers)

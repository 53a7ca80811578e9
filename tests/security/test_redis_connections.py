"""The Redis store already reaches a Redis that wants TLS and a password: ``rediss://``
with the CA in ``?ssl_ca_certs=``, the password in the URL (or from ``${VAR}``), and
the password never in an error message."""

from __future__ import annotations

from pathlib import Path

import pytest

from cas.digest import Digest
from cas.errors import ReapiError
from cas.redis.store import RedisStore
from tests.support.certificates import TestPki
from tests.support.processes import redis_server


async def test_rediss_with_a_password(tmp_path: Path) -> None:
    pki = TestPki(tmp_path / "pki")
    pair = pki.server_certificate("redis")
    tls = ["--tls-cert-file", str(pair.cert), "--tls-key-file", str(pair.key), "--tls-ca-cert-file", str(pki.ca_cert),
           "--tls-auth-clients", "no", "--requirepass", "s3cret-pass"]
    with redis_server(tmp_path / "redis", tls, tls=True) as url:
        assert url.startswith("rediss://")
        host = url.removeprefix("rediss://")
        good = RedisStore.from_url(f"rediss://:s3cret-pass@{host}?ssl_ca_certs={pki.ca_cert}")
        digest = Digest.of(b"over tls")
        try:
            await good.put_bytes(digest, b"over tls")
            assert await good.get_bytes(digest) == b"over tls"
        finally:
            await good.aclose()
        wrong = RedisStore.from_url(f"rediss://:wrong-pass@{host}?ssl_ca_certs={pki.ca_cert}", retries=0)
        try:
            with pytest.raises(ReapiError) as caught:
                await wrong.get_bytes(digest)
            assert "wrong-pass" not in str(caught.value)
        finally:
            await wrong.aclose()

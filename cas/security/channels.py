"""``grpc://`` and ``grpcs://`` addresses, and the channel a client opens to one.

One way for every client of another REAPI endpoint to connect: the worker to its
server, a ``grpc`` store (a frontend) to a storage node. ``grpcs://`` speaks TLS,
trusting ``tls_ca`` (default: the system's roots), with a client certificate for
servers that require one (mTLS); a ``token_file`` puts its bearer token on every
call. The files are checked when the channel is made, so a missing file or a key
that is not the certificate's is a one-line error at start, not a failed handshake
later. Certificates are read once: a new client certificate takes a restart, a new
token does not (cas/security/bearer.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from cas.config.values import ConfigError
from cas.security.bearer import BearerToken
from cas.security.pem import read_certificates, read_key_pair

_SCHEMES = (("grpc://", False), ("grpcs://", True), ("http://", False), ("https://", True))


def target_of(address: str) -> tuple[str, bool]:
    """``grpc://HOST:PORT`` (or ``grpcs://``, or plain ``HOST:PORT``) -> (gRPC target, use TLS)."""
    for scheme, secure in _SCHEMES:
        if address.startswith(scheme):
            target = address[len(scheme):].rstrip("/")
            break
    else:
        if "://" in address:
            raise ConfigError(f"server {address!r}: use grpc://HOST:PORT or grpcs://HOST:PORT")
        target, secure = address, False
    if not target:
        raise ConfigError(f"server {address!r} names no host")
    return target, secure


def check_link(address: str, tls_ca: Path | None, tls_cert: Path | None, tls_key: Path | None) -> None:
    """ValueError for a store address that is not gRPC, or keys that cannot work together:
    half a client certificate, or TLS files for plain text."""
    scheme = address.partition("://")[0] if "://" in address else ""
    if scheme not in ("", "grpc", "grpcs") or not address.removeprefix(f"{scheme}://"):
        raise ValueError(f"address {address!r} is not grpc://HOST:PORT or grpcs://HOST:PORT")
    if (tls_cert is None) != (tls_key is None):
        raise ValueError("tls_cert and tls_key go together: give both or neither")
    _, secure = target_of(address)
    if not secure and any(p is not None for p in (tls_ca, tls_cert, tls_key)):
        raise ValueError(f"tls_ca, tls_cert and tls_key need a grpcs:// address, not {address!r}")


def channel_credentials(ca: Path | None, cert: Path | None, key: Path | None) -> grpc.ChannelCredentials:
    """TLS: trust ``ca`` (default: the system's roots), and present a client certificate if given.
    ConfigError naming the file when one cannot be read or is not what it should be."""
    if (cert is None) != (key is None):
        raise ConfigError("tls_cert and tls_key go together: give both or neither")
    try:
        root = read_certificates(ca, "tls_ca")[0] if ca is not None else None
        chain, private_key = (None, None)
        if cert is not None and key is not None:
            chain, private_key, _ = read_key_pair(cert, key, "tls_cert", "tls_key")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return grpc.ssl_channel_credentials(root_certificates=root, private_key=private_key, certificate_chain=chain)


def open_channel(
    address: str,
    options: Sequence[tuple[str, Any]] = (),
    *,
    tls_ca: Path | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    token_file: Path | None = None,
) -> grpc.aio.Channel:
    """A channel to ``address``: TLS for ``grpcs://``, the token on every call if a
    token file is given. Makes no connection (that happens on the first call)."""
    target, secure = target_of(address)
    interceptors = BearerToken(token_file).interceptors() if token_file is not None else None
    if secure:
        credentials = channel_credentials(tls_ca, tls_cert, tls_key)
        return grpc.aio.secure_channel(target, credentials, options=list(options), interceptors=interceptors)
    if any(p is not None for p in (tls_ca, tls_cert, tls_key)):
        raise ConfigError(f"tls_ca, tls_cert and tls_key need a grpcs:// address, not {address!r}")
    return grpc.aio.insecure_channel(target, options=list(options), interceptors=interceptors)

"""reapi-server's security flags: ``--tls-cert --tls-key --tls-client-ca --auth-tokens``,
which override ``[server.tls]`` and ``[server.auth]`` of the config (or secure the
zero-config server)."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from cas.config import ConfigError
from server.auth.config import AuthConfig, TlsConfig


def add_security_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tls-cert", type=Path, help="TLS certificate chain (PEM), overriding [server.tls] cert")
    parser.add_argument("--tls-key", type=Path, help="TLS private key (PEM), overriding [server.tls] key")
    parser.add_argument("--tls-client-ca", type=Path,
                        help="CA (PEM) that signs client certificates; clients must present one (mTLS)")
    parser.add_argument("--auth-tokens", type=Path,
                        help="token file (sha256 hashes and permissions), overriding [server.auth] tokens")


def with_security_flags(tls: TlsConfig, auth: AuthConfig, args: argparse.Namespace) -> tuple[TlsConfig, AuthConfig]:
    """The sections with the flags given applied; ConfigError for a combination they refuse."""
    changes = {k: v for k, v in (("cert", args.tls_cert), ("key", args.tls_key), ("client_ca", args.tls_client_ca))
               if v is not None}
    try:
        if changes:
            tls = replace(tls, **changes)
        if args.auth_tokens is not None:
            auth = replace(auth, tokens=args.auth_tokens)
    except ValueError as exc:
        raise ConfigError(f"--tls-*: {exc}") from None
    return tls, auth

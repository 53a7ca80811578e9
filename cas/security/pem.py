"""PEM files read and checked before gRPC sees them, so a wrong file is a one-line
error naming it at start, instead of a failed handshake later.

gRPC takes certificates and keys as bytes and parses them only when it connects or
accepts a connection; a key that is not the certificate's, or a CA file that holds
something else, would surface as every call failing with UNAVAILABLE. The server's
TLS files (server/auth/tls.py) and every client's (cas/security/channels.py) go
through here.
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization


def read_file(path: Path, what: str) -> bytes:
    """The file's bytes; ValueError naming ``what`` and the file when it cannot be read."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{what} {path}: {exc.strerror or exc}") from None


def read_certificates(path: Path, what: str) -> tuple[bytes, list[x509.Certificate]]:
    """One or more PEM certificates (a chain, or a bundle of CAs): the bytes and the parsed list."""
    data = read_file(path, what)
    try:
        return data, x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise ValueError(f"{what} {path}: not PEM certificates ({exc})") from None


def read_key_pair(cert: Path, key: Path, cert_what: str = "certificate", key_what: str = "key") -> tuple[bytes, bytes, x509.Certificate]:
    """A certificate chain and its unencrypted private key, checked to belong together:
    (chain bytes, key bytes, the leaf certificate)."""
    chain = read_file(cert, cert_what)
    key_bytes = read_file(key, key_what)
    try:
        certificates = x509.load_pem_x509_certificates(chain)
    except ValueError as exc:
        raise ValueError(f"{cert_what} {cert}: not a PEM certificate chain ({exc})") from None
    try:
        private_key = serialization.load_pem_private_key(key_bytes, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{key_what} {key}: not an unencrypted PEM private key ({exc})") from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if private_key.public_key().public_bytes(der, public) != certificates[0].public_key().public_bytes(der, public):
        raise ValueError(f"{key_what} {key} does not belong to {cert_what} {cert}")
    return chain, key_bytes, certificates[0]

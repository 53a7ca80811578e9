"""The port's TLS credentials, re-read when the certificate files change.

gRPC asks ``ReloadingTls.fetch`` for new material at every TLS handshake (on one of
its threads); it answers None unless a file changed, so a renewed certificate, key or
client CA is used from the next connection on, with no restart. New material is
checked first (the key must belong to the certificate): a rotation caught half-way,
a new certificate beside the old key, keeps the old pair until the key arrives too.
Connections already open keep the certificate they were made with.
"""

from __future__ import annotations

import datetime
import logging
import threading
from dataclasses import dataclass

import grpc

from cas.config import ConfigError
from server.auth.config import TlsConfig
from cas.file_watch import FileWatch
from cas.security.pem import read_certificates, read_key_pair

log = logging.getLogger("reapi.server.tls")


@dataclass(frozen=True)
class TlsMaterial:
    key: bytes
    chain: bytes
    client_ca: bytes | None
    summary: str

    def configuration(self) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration([(self.key, self.chain)], root_certificates=self.client_ca)


def read_material(config: TlsConfig) -> TlsMaterial:
    """The files as PEM bytes, checked; ValueError naming the file and the problem."""
    assert config.cert is not None and config.key is not None
    chain, key, leaf = read_key_pair(config.cert, config.key)
    client_ca = None
    if config.client_ca is not None:
        client_ca, _ = read_certificates(config.client_ca, "client CA")
    until = leaf.not_valid_after_utc
    summary = f"{leaf.subject.rfc4514_string()}, valid until {until:%Y-%m-%d %H:%M} UTC"
    if until < datetime.datetime.now(datetime.UTC):
        summary += " (EXPIRED: clients will refuse it)"
    return TlsMaterial(key, chain, client_ca, summary)


class ReloadingTls:
    def __init__(self, config: TlsConfig) -> None:
        assert config.cert is not None and config.key is not None
        self.config = config
        paths = [config.cert, config.key] + ([config.client_ca] if config.client_ca is not None else [])
        self._watch = FileWatch(*paths)
        self._lock = threading.Lock()
        self._watch.changed()
        try:
            self.material = read_material(config)
        except ValueError as exc:
            raise ConfigError(f"[server.tls]: {exc}") from None
        self.reloads = 0
        log.info("TLS certificate: %s", self.material.summary)

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self.material.configuration(), self.fetch,
            require_client_authentication=self.config.requires_client_certificates,
        )

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC's question at each handshake: new material, or None to keep the current one."""
        try:
            with self._lock:
                if not self._watch.changed():
                    return None
                material = read_material(self.config)
                self.material = material
                self.reloads += 1
            log.info("TLS certificate reloaded: %s", material.summary)
            return material.configuration()
        except ValueError as exc:
            log.warning("TLS files changed but were not reloaded (the previous ones stay in use): %s", exc)
        except Exception:  # noqa: BLE001 - a handshake must never fail because of this
            log.exception("TLS reload failed; the previous certificate stays in use")
        return None

"""Client certificates: the verified certificate's subject -> an identity.

gRPC has verified the certificate against ``[server.tls] client_ca`` during the TLS
handshake (a certificate it cannot verify never gets a call through). What is left is
naming it: the rules are tried in order against the certificate's common name and
each subject alternative name (DNS, URI, e-mail, IP); the first rule whose ``subject``
pattern matches one of them gives the identity.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence

from server.auth.config import CertificateRule
from server.auth.permissions import Identity, parse_permissions

AuthContext = Mapping[str, Sequence[bytes]]


def certificate_names(auth_context: AuthContext) -> list[str]:
    """The CN and SANs of the peer's verified certificate, CN first; [] without one."""
    names = [v.decode(errors="replace") for v in auth_context.get("x509_common_name", ())]
    names += [v.decode(errors="replace") for v in auth_context.get("x509_subject_alternative_name", ())]
    return names


def certificate_subject(auth_context: AuthContext) -> str:
    subject = auth_context.get("x509_subject", ())
    return subject[0].decode(errors="replace") if subject else ""


class CertificateRules:
    def __init__(self, rules: Sequence[CertificateRule]) -> None:
        self._rules = [
            (rule, parse_permissions(rule.permissions, f"certificate rule {rule.subject!r}")) for rule in rules
        ]

    def __bool__(self) -> bool:
        return bool(self._rules)

    def identity(self, names: Sequence[str]) -> Identity | None:
        for rule, permissions in self._rules:
            for name in names:
                if fnmatch.fnmatchcase(name, rule.subject):
                    return Identity(rule.name or name, permissions, rule.scope, method="certificate")
        return None

"""What the server prints under its "listening on" line: what it serves and where.

A new user sees at once which instances and stores are in use (and where on disk),
whether remote execution is on with or without its local worker, and the URL of the
console and metrics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cas.config.stores import type_of, typed_specs
from server.local_worker import LocalWorkerConfig

if TYPE_CHECKING:
    from server.app import ReapiServer


def security_line(server: ReapiServer) -> str:
    """``security: TLS (client certificates required); tokens, JWT; anonymous callers: read``."""
    tls, auth = server.config.tls, server.config.auth
    parts = ["TLS (client certificates required)" if tls.requires_client_certificates else "TLS" if tls.enabled
             else "no TLS"]
    methods = [name for name, on in (("tokens", auth.tokens is not None), ("JWT", auth.jwt is not None),
                                     ("client certificates", bool(auth.certificates))) if on]
    if not auth.enabled:
        parts.append("no authentication (every caller may do everything)")
    else:
        anonymous = ", ".join(auth.anonymous.permissions) if auth.anonymous and auth.anonymous.permissions else "nothing"
        parts.append(f"{', '.join(methods) or 'anonymous only'}; anonymous callers: {anonymous}")
    return "security: " + "; ".join(parts) + " (docs/SECURITY.md)"


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << (shift - 4)) == 0:
            return f"{n / (1 << shift):g} {unit}"
    return f"{n} B"


def describe_store(name: str, spec: object) -> str:
    parts = [type_of(spec)]  # type: ignore[arg-type]
    for key in ("path", "url", "address"):
        value = getattr(spec, key, None)
        if value:
            parts.append(str(value))
    max_size = getattr(spec, "max_size", None)
    if isinstance(max_size, int) and getattr(spec, "path", None) is not None:
        parts.append(f"up to {_size(max_size)}")
    return f"{name} ({', '.join(parts)})"


def startup_summary(server: ReapiServer, local_worker: LocalWorkerConfig | None) -> list[str]:
    config = server.config
    lines = []
    for instance in config.instances:
        shown = "any name" if instance.name == "*" else repr(instance.name)
        lines.append(f"instance {shown}: CAS {instance.cas!r}, action cache {instance.ac!r}")
    specs = typed_specs(config.stores)
    lines.append("stores: " + "; ".join(describe_store(name, spec) for name, spec in specs.items()))
    if server.execution is None:
        lines.append("remote execution: off ([execution] enabled = false)")
    elif local_worker is None:
        scheme = "grpcs" if config.tls.enabled else "grpc"
        lines.append(f"remote execution: on; start workers with reapi-worker --server {scheme}://THIS_HOST:PORT")
    else:
        slots = local_worker.concurrency or "one per CPU"
        lines.append(f"remote execution: on, with a local worker ({slots} slots)")
    if server.assets is not None:
        lines.append("remote asset API: on")
    lines.append(security_line(server))
    if server.http is not None:
        lines.append(f"console: {server.http.url}/   metrics: {server.http.url}/metrics")
    else:
        lines.append("console and metrics: off (--http-listen ADDR turns them on)")
    return lines

"""The address check every fetch passes after DNS, before it connects.

A host name says nothing about where a connection goes: ``metadata.example`` may
resolve to 169.254.169.254, and a name may resolve to a public address when it is
checked and to 127.0.0.1 a second later (DNS rebinding). So names are resolved
here, every address is judged (``addresses.rule_for``), and the caller connects to
exactly the addresses returned: the HTTP client through ``GuardedResolver``
(server/assets/resolver.py), git through ``http.curloptResolve`` pins.

A host listed in ``allowed_hosts`` (by name or address; not by a bare "*") is
trusted wherever it resolves; ``allow_private_networks`` opens loopback and the
private ranges but not link-local, multicast or reserved addresses. The server's
own listening ports on this machine are refused whatever the settings: they speak
gRPC, and a fetch of them could only loop requests back into the server.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

from server.assets.addresses import IPAddress, LOOPBACK, UNSPECIFIED, embedded_ipv4, looks_numeric, parse_address, rule_for
from server.assets.policy import FetchPolicy

# host, port -> the addresses the name resolves to (as strings)
Resolve = Callable[[str, int], Awaitable[list[str]]]


class AddressRefused(Exception):
    """A fetch would connect where the policy forbids; ``reason`` completes "fetch of URI refused: ..."."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def system_resolve(host: str, port: int) -> list[str]:
    """The system resolver (getaddrinfo in a thread), every address once, in its order."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def is_this_machine(address: IPAddress) -> bool:
    """True if ``address`` is one of this machine's (a socket can be bound to it)."""
    if rule_for(address) in (LOOPBACK, UNSPECIFIED):
        return True
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((str(address), 0))
        except OSError:
            return False
    return True


class NetworkGuard:
    """Resolves hosts and judges the addresses; AddressRefused names host, address and rule."""

    def __init__(self, policy: FetchPolicy, resolve: Resolve = system_resolve, own_ports: set[int] | None = None) -> None:
        self.policy = policy
        self._resolve = resolve
        self.own_ports: set[int] = own_ports if own_ports is not None else set()
        """The ports this server listens on; the server adds them once it has bound them."""

    def check(self, host: str, address: IPAddress, port: int) -> None:
        """AddressRefused unless a fetch of ``host`` may connect to ``address``:``port``."""
        named = host if parse_address(host) is None else None
        inner = embedded_ipv4(address) if address.version == 6 else None
        shown = f"{address} (IPv4 {inner})" if inner is not None else str(address)
        subject = f"{named} resolves to {shown}, which" if named else shown
        if port in self.own_ports and is_this_machine(address):
            raise AddressRefused(f"{subject} is this machine, and port {port} is this server's own port")
        if self.policy.host_denied(str(address)):
            raise AddressRefused(f"{subject} is in [assets] denied_hosts")
        if self.policy.names_host(host) or self.policy.names_host(str(address)):
            return
        rule = rule_for(address)
        if rule is None or (rule.private_network and self.policy.allow_private_networks):
            return
        if rule.private_network:
            remedy = "set [assets] allow_private_networks = true or list the host in allowed_hosts to permit it"
        else:
            remedy = "list the host in [assets] allowed_hosts to permit it"
        raise AddressRefused(f"{subject} is {rule} ({remedy})")

    def check_literal(self, host: str, port: int) -> IPAddress | None:
        """For a host written as an address (any spelling): the address, checked. None for a name."""
        address = parse_address(host)
        if address is None:
            if looks_numeric(host):
                # HTTP clients treat such hosts as addresses and never resolve them as names.
                raise AddressRefused(f"{host} is not a valid IP address")
            return None
        self.check(host, address, port)
        return address

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        """The addresses to connect to for ``host``; AddressRefused if any of them is forbidden."""
        literal = self.check_literal(host, port)
        if literal is not None:
            return [literal]
        try:
            resolved = await self._resolve(host, port)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot resolve {host}: {exc.strerror or exc}") from None
        addresses = [address for address in (parse_address(a) for a in resolved) if address is not None]
        if not addresses:
            raise OSError(f"cannot resolve {host}: no addresses")
        for address in addresses:
            self.check(host, address, port)  # a name with one forbidden address is refused whole
        return addresses

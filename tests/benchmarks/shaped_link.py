"""A bandwidth-limited link between the server and the workers, for benchmarks.

On one host the workers read the CAS over loopback, where bytes cost almost
nothing; a farm's workers read it across a network. This puts the workers in
their own network namespace, joined to the host by a veth pair whose both ends
are rate-limited with a token bucket (``tbf``), so a benchmark can ask what the
bytes a placement saves are worth on a slower link. The server listens on the
host's end of the pair; the build tool stays on the host and is not limited.

Needs root and iproute2. This kernel has no ``netem``, so the link limits
bandwidth only and adds no latency.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

# A per-process /30 inside 10.213.0.0/16: two benchmarks at once do not collide.
SUBNET = ipaddress.ip_network("10.213.0.0/16")


@dataclass(frozen=True)
class ShapedLink:
    namespace: str
    host_address: str  # the server listens here
    worker_address: str  # the workers' side (their metrics listen here)
    rate: str

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside the workers' namespace (network only: mounts and cgroups stay the host's)."""
        return ["nsenter", f"--net=/run/netns/{self.namespace}", *argv]


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def limit(device: str, rate: str, namespace: str | None = None) -> None:
    """A token bucket on ``device``'s egress; the burst holds a whole GSO packet (64 KiB) and more."""
    where = ["-n", namespace] if namespace else []
    subprocess.run(["tc", *where, "qdisc", "add", "dev", device, "root", "tbf", "rate", rate,
                    "burst", "256kb", "latency", "50ms"], check=True, capture_output=True, text=True)


@contextmanager
def shaped_link(rate: str) -> Iterator[ShapedLink]:
    """A namespace and a veth pair limited to ``rate`` (tc's syntax, e.g. ``100mbit``) each way; removed on exit."""
    if os.geteuid() != 0:
        raise SystemExit("a shaped link needs root (ip netns, tc)")
    tag = os.getpid() % 16000
    namespace, host_end, worker_end = f"reapi-bench-{tag}", f"rbh{tag}", f"rbw{tag}"
    base = SUBNET.network_address + 4 * tag
    host_address, worker_address = str(base + 1), str(base + 2)
    ip("netns", "add", namespace)
    try:
        ip("link", "add", host_end, "type", "veth", "peer", "name", worker_end)
        ip("link", "set", worker_end, "netns", namespace)
        ip("addr", "add", f"{host_address}/30", "dev", host_end)
        ip("link", "set", host_end, "up")
        ip("-n", namespace, "addr", "add", f"{worker_address}/30", "dev", worker_end)
        ip("-n", namespace, "link", "set", worker_end, "up")
        ip("-n", namespace, "link", "set", "lo", "up")
        limit(host_end, rate)
        limit(worker_end, rate, namespace)
        yield ShapedLink(namespace, host_address, worker_address, rate)
    finally:
        subprocess.run(["ip", "link", "del", host_end], capture_output=True)
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True)

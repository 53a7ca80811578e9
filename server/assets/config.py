"""The ``[assets]`` section: the Remote Asset services' settings (docs/CONFIG.md).

    [assets]
    index = "assets"                  # store for the asset index (a plain store)
    allowed_schemes = ["http", "https"]
    allowed_hosts = []                # empty: any host not denied
    denied_hosts = ["*.internal"]
    allow_private_networks = false    # loopback and private ranges stay unreachable
    max_download_size = "16GiB"
    max_unpacked_size = "8GiB"        # unset: 1/8 of the CAS
    default_timeout = "10m"

Without an ``[assets]`` section the services run if a store named "assets" exists
(the zero-config server has one on disk) and are left out otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from cas.config import Above, AtLeast, ConfigError, Duration, Size, read_table
from cas.store import BlobStore
from cas.decorators.verify import VerifyingStore
from server.assets.limits import DEFAULT_MAX_COMPRESSION_RATIO, DEFAULT_MAX_ENTRIES, UnpackLimits
from server.assets.policy import DEFAULT_MAX_DOWNLOAD_SIZE, DEFAULT_MAX_REDIRECTS, DEFAULT_SCHEMES, FetchPolicy
from server.assets.spool import DEFAULT_MEMORY_LIMIT

DEFAULT_INDEX_STORE = "assets"
KNOWN_SCHEMES = frozenset({"http", "https", "file", "git", "ssh"})
Seconds = Annotated[Duration, Above(0)]


@dataclass(frozen=True)
class AssetsSection:
    """``[assets]`` as written in the file; ``AssetsConfig.parse`` adds the stores."""

    enabled: bool = True
    """Serve Fetch and Push."""
    index: str = DEFAULT_INDEX_STORE
    """The store holding the asset index (a plain store, not verify)."""
    allow_push: bool = True
    """Accept PushBlob and PushDirectory."""
    allowed_schemes: tuple[str, ...] = tuple(sorted(DEFAULT_SCHEMES))
    """URI schemes the server may fetch (of KNOWN_SCHEMES)."""
    allowed_hosts: tuple[str, ...] = ()
    """If not empty, the only hosts fetched from: names, addresses or "*.example.com"."""
    denied_hosts: tuple[str, ...] = ()
    """Hosts never fetched from; wins over allowed_hosts."""
    allow_private_networks: bool = False
    """Let fetches reach loopback, private (RFC 1918, unique local) and CGNAT addresses."""
    max_download_size: Size = DEFAULT_MAX_DOWNLOAD_SIZE
    """Larger downloads fail with RESOURCE_EXHAUSTED."""
    max_redirects: Annotated[int, AtLeast(0)] = DEFAULT_MAX_REDIRECTS
    """Redirect hops followed per URI."""
    default_timeout: Seconds = 600.0
    """The fetch timeout when a request sets none."""
    max_timeout: Seconds = 3600.0
    """Longer request timeouts are clamped to this."""
    spool_dir: Path | None = None
    """Where downloads, archives and clones are kept while in use; default the system's temp dir."""
    spool_memory_limit: Size = DEFAULT_MEMORY_LIMIT
    """Spooled content up to this size stays in memory."""
    max_unpacked_size: Size | None = None
    """An archive or git tree whose files add up to more fails; unset: 1/8 of the CAS (server/assets/limits.py)."""
    max_archive_entries: Annotated[int, AtLeast(1)] = DEFAULT_MAX_ENTRIES
    """An archive or git tree with more entries fails."""
    max_compression_ratio: Annotated[int, AtLeast(0)] = DEFAULT_MAX_COMPRESSION_RATIO
    """Unpacked content past 64 MiB may be at most this many times the archive; 0: no limit."""
    git: str = "git"
    """The git executable."""

    def __post_init__(self) -> None:
        schemes = {s.lower() for s in self.allowed_schemes}
        if schemes - KNOWN_SCHEMES:
            raise ValueError(f"allowed_schemes: unknown schemes {sorted(schemes - KNOWN_SCHEMES)} (known: {sorted(KNOWN_SCHEMES)})")


def read_assets_section(section: Mapping[str, Any]) -> AssetsSection:
    return read_table(AssetsSection, section, "[assets]")


@dataclass(frozen=True)
class AssetsConfig:
    enabled: bool = True
    index: str = DEFAULT_INDEX_STORE
    allow_push: bool = True
    policy: FetchPolicy = field(default_factory=FetchPolicy)
    default_timeout: float = 600.0
    max_timeout: float = 3600.0
    spool_dir: Path | None = None
    spool_memory_limit: int = DEFAULT_MEMORY_LIMIT
    limits: UnpackLimits = field(default_factory=UnpackLimits)
    git: str = "git"

    @classmethod
    def parse(cls, section: Mapping[str, Any], stores: Mapping[str, BlobStore]) -> AssetsConfig | None:
        """The settings, or None when the services are off; ConfigError naming the bad key."""
        read = read_assets_section(section)
        if not read.enabled:
            return None
        if read.index not in stores:
            if not section:
                return None  # no [assets] section and no "assets" store: the services stay off
            raise ConfigError(f"[assets] index = {read.index!r} is not defined under [stores]")
        if isinstance(stores[read.index], VerifyingStore):
            raise ConfigError(f"[assets] index = {read.index!r} is a verify store; the index needs a plain store (memory, disk, redis)")
        policy = FetchPolicy(
            allowed_schemes=frozenset(s.lower() for s in read.allowed_schemes),
            allowed_hosts=read.allowed_hosts,
            denied_hosts=read.denied_hosts,
            max_download_size=read.max_download_size,
            max_redirects=read.max_redirects,
            allow_private_networks=read.allow_private_networks,
        )
        return cls(
            index=read.index,
            allow_push=read.allow_push,
            policy=policy,
            default_timeout=read.default_timeout,
            max_timeout=read.max_timeout,
            spool_dir=read.spool_dir,
            spool_memory_limit=read.spool_memory_limit,
            limits=UnpackLimits(read.max_unpacked_size, read.max_archive_entries, read.max_compression_ratio),
            git=read.git,
        )

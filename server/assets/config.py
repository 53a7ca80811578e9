"""The ``[assets]`` section: the Remote Asset services' settings (docs/CONFIG.md).

    [assets]
    index = "assets"                  # store for the asset index (a plain store)
    allowed_schemes = ["http", "https"]
    allowed_hosts = []                # empty: any host not denied
    denied_hosts = ["*.internal"]
    max_download_size = "16GiB"
    default_timeout = "10m"

Without an ``[assets]`` section the services run if a store named "assets" exists
(the zero-config server has one on disk) and are left out otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cas.config import ConfigError, expand_path, parse_duration, parse_size
from cas.store import BlobStore
from cas.decorators.verify import VerifyingStore
from server.assets.archive import DEFAULT_MAX_ENTRIES, DEFAULT_MAX_UNPACKED_SIZE
from server.assets.policy import DEFAULT_MAX_DOWNLOAD_SIZE, DEFAULT_MAX_REDIRECTS, DEFAULT_SCHEMES, FetchPolicy
from server.assets.spool import DEFAULT_MEMORY_LIMIT

DEFAULT_INDEX_STORE = "assets"
KNOWN_SCHEMES = frozenset({"http", "https", "file", "git", "ssh"})


def positive_duration(value: object, where: str) -> float:
    seconds = parse_duration(value, where)  # type: ignore[arg-type]
    if seconds <= 0:
        raise ConfigError(f"{where}: the duration must be positive")
    return seconds


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
    max_unpacked_size: int = DEFAULT_MAX_UNPACKED_SIZE
    max_archive_entries: int = DEFAULT_MAX_ENTRIES
    git: str = "git"

    @classmethod
    def parse(cls, section: Mapping[str, Any], stores: Mapping[str, BlobStore]) -> AssetsConfig | None:
        """The settings, or None when the services are off; ConfigError naming the bad key."""
        known = {
            "enabled", "index", "allow_push", "allowed_schemes", "allowed_hosts", "denied_hosts", "max_download_size",
            "max_redirects", "default_timeout", "max_timeout", "spool_dir", "spool_memory_limit", "max_unpacked_size",
            "max_archive_entries", "git",
        }
        unknown = sorted(set(section) - known)
        if unknown:
            raise ConfigError(f"[assets]: unknown keys {unknown}")
        if not section.get("enabled", True):
            return None
        index = str(section.get("index", DEFAULT_INDEX_STORE))
        if index not in stores:
            if not section:
                return None  # no [assets] section and no "assets" store: the services stay off
            raise ConfigError(f"[assets] index = {index!r} is not defined under [stores]")
        if isinstance(stores[index], VerifyingStore):
            raise ConfigError(f"[assets] index = {index!r} is a verify store; the index needs a plain store (memory, disk, redis)")
        schemes = frozenset(s.lower() for s in _strings(section, "allowed_schemes", sorted(DEFAULT_SCHEMES)))
        if schemes - KNOWN_SCHEMES:
            raise ConfigError(f"[assets] allowed_schemes: unknown schemes {sorted(schemes - KNOWN_SCHEMES)} (known: {sorted(KNOWN_SCHEMES)})")
        max_redirects = section.get("max_redirects", DEFAULT_MAX_REDIRECTS)
        if not isinstance(max_redirects, int) or isinstance(max_redirects, bool) or max_redirects < 0:
            raise ConfigError(f"[assets] max_redirects: expected a whole number >= 0, got {max_redirects!r}")
        entries = section.get("max_archive_entries", DEFAULT_MAX_ENTRIES)
        if not isinstance(entries, int) or isinstance(entries, bool) or entries < 1:
            raise ConfigError(f"[assets] max_archive_entries: expected a whole number >= 1, got {entries!r}")
        policy = FetchPolicy(
            allowed_schemes=schemes,
            allowed_hosts=tuple(_strings(section, "allowed_hosts", [])),
            denied_hosts=tuple(_strings(section, "denied_hosts", [])),
            max_download_size=parse_size(section.get("max_download_size", DEFAULT_MAX_DOWNLOAD_SIZE), "[assets] max_download_size"),
            max_redirects=max_redirects,
        )
        spool_dir = section.get("spool_dir", "")
        return cls(
            index=index,
            allow_push=bool(section.get("allow_push", True)),
            policy=policy,
            default_timeout=positive_duration(section.get("default_timeout", 600), "[assets] default_timeout"),
            max_timeout=positive_duration(section.get("max_timeout", 3600), "[assets] max_timeout"),
            spool_dir=expand_path(str(spool_dir)) if spool_dir else None,
            spool_memory_limit=parse_size(section.get("spool_memory_limit", DEFAULT_MEMORY_LIMIT), "[assets] spool_memory_limit"),
            max_unpacked_size=parse_size(section.get("max_unpacked_size", DEFAULT_MAX_UNPACKED_SIZE), "[assets] max_unpacked_size"),
            max_archive_entries=entries,
            git=str(section.get("git", "git")),
        )


def _strings(section: Mapping[str, Any], key: str, default: list[str]) -> list[str]:
    value = section.get(key, default)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"[assets] {key}: expected a list of strings, got {value!r}")
    return value

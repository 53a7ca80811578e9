"""The [execution] section of the server config (docs/CONFIG.md, "Execution").

    [execution]
    enabled = true
    max_action_timeout = "2h"
    max_retries = 3
    worker_grace = 60
    [execution.platform]
    container-image = "ignore"       # exact | all_of | minimum | ignore
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cas.config import ConfigError, parse_duration, parse_size
from server.scheduler.interface import SchedulerSettings
from server.scheduler.platform import MatchPolicy, PlatformMatcher


@dataclass(frozen=True)
class ExecutionConfig:
    enabled: bool = True
    settings: SchedulerSettings = SchedulerSettings()
    max_action_timeout: float = 7200.0
    min_priority: int = -1000
    max_priority: int = 1000
    policies: Mapping[str, MatchPolicy] = field(default_factory=dict)
    default_policy: MatchPolicy = MatchPolicy.EXACT
    logstream_max_bytes: int = 16 << 20
    logstream_retention: float = 600.0
    tick_interval: float = 1.0
    input_cache_size: int = 64 << 20
    inline_blob_limit: int = 1 << 20

    def matcher(self) -> PlatformMatcher:
        return PlatformMatcher(self.policies, self.default_policy)


_SETTINGS_KEYS = {f for f in SchedulerSettings.__dataclass_fields__}
_KEYS = _SETTINGS_KEYS | {
    "enabled", "max_action_timeout", "min_priority", "max_priority", "platform", "default_matching",
    "logstream_max_bytes", "logstream_retention", "tick_interval", "input_cache_size", "inline_blob_limit",
}


def _seconds(section: Mapping[str, Any], key: str, default: float) -> float:
    """A duration: seconds, or a string such as "250ms", "90s", "10m"."""
    seconds = parse_duration(section.get(key, default), f"[execution] {key}")
    if seconds < 0:
        raise ConfigError(f"[execution] {key}: must not be negative")
    return seconds


def _int(section: Mapping[str, Any], key: str, default: int) -> int:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"[execution] {key}: expected a whole number, got {value!r}")
    return value


def _policy(value: Any, where: str) -> MatchPolicy:
    try:
        return MatchPolicy(value)
    except ValueError:
        known = ", ".join(p.value for p in MatchPolicy)
        raise ConfigError(f"{where}: unknown matching policy {value!r} (known: {known})") from None


def parse_execution_config(section: Mapping[str, Any]) -> ExecutionConfig:
    unknown = sorted(set(section) - _KEYS)
    if unknown:
        raise ConfigError(f"[execution]: unknown keys {unknown}")
    defaults = SchedulerSettings()
    settings = SchedulerSettings(
        max_retries=_int(section, "max_retries", defaults.max_retries),
        operation_retention=_seconds(section, "operation_retention", defaults.operation_retention),
        bot_session_timeout=_seconds(section, "bot_session_timeout", defaults.bot_session_timeout),
        bot_long_poll_timeout=_seconds(section, "bot_long_poll_timeout", defaults.bot_long_poll_timeout),
        worker_grace=_seconds(section, "worker_grace", defaults.worker_grace),
        progress_interval=_seconds(section, "progress_interval", defaults.progress_interval),
    )
    if settings.max_retries < 0:
        raise ConfigError("[execution] max_retries must not be negative")
    if settings.progress_interval <= 0 or settings.progress_interval > 30:
        raise ConfigError("[execution] progress_interval must be above 0 and at most 30 (clients time out at 60s)")
    platform = section.get("platform", {})
    if not isinstance(platform, dict):
        raise ConfigError("[execution.platform] must be a table of property name = matching policy")
    policies = {key: _policy(value, f"[execution.platform] {key}") for key, value in platform.items()}
    config = ExecutionConfig(
        enabled=bool(section.get("enabled", True)),
        settings=settings,
        max_action_timeout=_seconds(section, "max_action_timeout", 7200.0),
        min_priority=_int(section, "min_priority", -1000),
        max_priority=_int(section, "max_priority", 1000),
        policies=policies,
        default_policy=_policy(section.get("default_matching", "exact"), "[execution] default_matching"),
        logstream_max_bytes=parse_size(section.get("logstream_max_bytes", 16 << 20), "[execution] logstream_max_bytes"),
        logstream_retention=_seconds(section, "logstream_retention", 600.0),
        tick_interval=_seconds(section, "tick_interval", 1.0),
        input_cache_size=parse_size(section.get("input_cache_size", 64 << 20), "[execution] input_cache_size"),
        inline_blob_limit=parse_size(section.get("inline_blob_limit", 1 << 20), "[execution] inline_blob_limit"),
    )
    if config.min_priority > config.max_priority:
        raise ConfigError("[execution] min_priority is above max_priority")
    if config.tick_interval <= 0:
        raise ConfigError("[execution] tick_interval must be above 0")
    return config

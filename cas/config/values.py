"""The scalar forms a config value may take: sizes, durations, ``${VAR}`` and paths.

Each parser takes ``where`` (the section and key, e.g. ``[server] key 'listen'``) so
that its error names the place in the file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path


class ConfigError(ValueError):
    """A configuration mistake, with the place it was found: one line, for the CLI."""


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$", re.IGNORECASE)
_SECONDS = {"": 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
# "$$", a well-formed "${NAME}", or a malformed "${..." (reported rather than kept).
_BRACED = r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)\}|(\{[^}]*\}?))"
_REFERENCE = re.compile(_BRACED)
# Paths also expand a bare "$NAME", as they always have.
_PATH_REFERENCE = re.compile(_BRACED + r"|\$([A-Za-z_][A-Za-z0-9_]*)")


def parse_size(value: int | str, where: str = "size") -> int:
    """Bytes from an int or a string like "512MiB", "20GiB", "4MB"."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a size, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ConfigError(f"{where}: size {value} is negative")
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise ConfigError(f"{where}: {value!r} is not a size (examples: 1048576, \"512MiB\", \"20GiB\")")
    number, unit = match.groups()
    return int(float(number) * _UNITS[(unit or "").lower()])


def parse_duration(value: int | float | str, where: str = "duration") -> float:
    """Seconds from a number of seconds or a string like "90s", "30m", "3h", "7d"."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a duration, got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ConfigError(f"{where}: duration {value} is negative")
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ConfigError(f"{where}: {value!r} is not a duration (examples: 3600, \"90s\", \"30m\", \"3h\", \"7d\")")
    number, unit = match.groups()
    return float(number) * _SECONDS[(unit or "").lower()]


def expand_env(text: str, where: str = "value", env: Mapping[str, str] | None = None, bare: bool = False) -> str:
    """``${NAME}`` replaced by the environment variable (unset: ConfigError naming it);
    ``$$`` is a literal ``$``; any other ``$`` is kept. With ``bare`` (paths), ``$NAME`` too."""
    variables = os.environ if env is None else env

    def replace(match: re.Match[str]) -> str:
        dollar, name, malformed, bare_name = (match.groups() + (None,))[:4]
        if dollar:
            return "$"
        if malformed is not None:
            raise ConfigError(f"{where}: '${malformed}' is not a ${{NAME}} reference (write $$ for a literal $)")
        name = name or bare_name
        assert name is not None
        if name not in variables:
            raise ConfigError(f"{where}: environment variable {name} is not set (used as ${{{name}}})")
        return variables[name]

    return (_PATH_REFERENCE if bare else _REFERENCE).sub(replace, text)


def expand_path(value: str, where: str = "path") -> Path:
    """A path from config or the command line: ``~``, ``${NAME}`` and ``$NAME`` expanded."""
    return Path(os.path.expanduser(expand_env(value, where, bare=True)))


def cache_home() -> Path:
    """The per-user cache directory ($XDG_CACHE_HOME or ~/.cache) for reapi."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "reapi"

"""The config file as a whole: TOML, its sections, and errors that name the file.

One file format serves both programs: ``reapi-server`` reads every section but
``[worker]``, ``reapi-worker`` reads ``[worker]``, and each accepts (without reading)
the other's sections, so one file may hold both. A section neither knows is an error.
"""

from __future__ import annotations

import contextlib
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from cas.config.reader import check_known
from cas.config.values import ConfigError

# Every top-level table, as it is written in the file.
FILE_SECTIONS = {
    "server": "[server]",
    "stores": "[stores.NAME]",
    "instances": "[[instances]]",
    "execution": "[execution]",
    "assets": "[assets]",
    "local_worker": "[local_worker]",
    "worker": "[worker]",
}


def read_toml(path: Path) -> dict[str, Any]:
    """The parsed file; ConfigError naming it if it cannot be read or parsed."""
    try:
        return tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc


@contextlib.contextmanager
def errors_in(path: Path) -> Iterator[None]:
    """Put the file's name in front of every ConfigError raised inside."""
    try:
        yield
    except ConfigError as exc:
        message = str(exc)
        if message.startswith(f"{path}: "):
            raise
        raise ConfigError(f"{path}: {message}") from exc


def check_sections(data: Mapping[str, Any]) -> None:
    """ConfigError for a top-level key that is not one of ``FILE_SECTIONS``."""
    strays = [key for key in data if key not in FILE_SECTIONS and not isinstance(data[key], Mapping | list)]
    if strays:
        key = strays[0]
        raise ConfigError(
            f"top-level key {key!r} belongs in a section (known sections: {', '.join(FILE_SECTIONS.values())})"
        )
    check_known(data.keys(), FILE_SECTIONS, "", what="section", show=lambda name: FILE_SECTIONS.get(name, f"[{name}]"))


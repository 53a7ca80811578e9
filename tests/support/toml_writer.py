"""Write the small TOML documents tests hand to real server and worker processes.

The standard library reads TOML (tomllib) but cannot write it, and the configs
tests need are simple: tables of scalars, nested tables ([stores.cas]) and arrays
of tables ([[instances]]). That subset is all this supports.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

Scalar = str | int | float | bool


def _value(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)) and all(not isinstance(v, (dict, list, tuple)) for v in value):
        return "[" + ", ".join(_value(v, where) for v in value) + "]"
    raise TypeError(f"{where}: cannot write {type(value).__name__} {value!r} as TOML")


def _key(key: str) -> str:
    return key if key and all(c.isalnum() or c in "-_" for c in key) else json.dumps(key)


def _is_table_array(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(v, Mapping) for v in value)


def _table(data: Mapping[str, Any], path: list[str], out: list[str]) -> None:
    scalars = [(k, v) for k, v in data.items() if not isinstance(v, Mapping) and not _is_table_array(v)]
    for key, value in scalars:
        out.append(f"{_key(key)} = {_value(value, '.'.join(path + [key]))}")
    for key, value in data.items():
        sub = path + [_key(key)]
        if isinstance(value, Mapping):
            out.append(f"\n[{'.'.join(sub)}]")
            _table(value, sub, out)
        elif _is_table_array(value):
            for item in value:
                out.append(f"\n[[{'.'.join(sub)}]]")
                _table(item, sub, out)


def dumps(data: Mapping[str, Any]) -> str:
    """TOML text for ``data``; TypeError for values outside the supported subset."""
    out: list[str] = []
    _table(data, [], out)
    return "\n".join(out).lstrip("\n") + "\n"

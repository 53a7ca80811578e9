"""One typed reader for every table of a config file.

A section is described once, as a frozen dataclass: its fields are the keys, their
defaults the defaults, their annotations the kinds of value::

    @dataclass(frozen=True)
    class ServerSection:
        listen: str = "127.0.0.1:8980"
        max_batch_total_size_bytes: Size = 4 << 20

``read_table(ServerSection, table, "[server]")`` then refuses unknown keys (suggesting
the closest known one), converts each value by its annotation, and names the section
and key in every error. Kinds: ``bool``, ``int``, ``float``, ``str``, ``Path``, an
``Enum`` (its values are the choices), ``Size``, ``Duration``, ``StoreName``,
``list[...]`` / ``tuple[..., ...]``, ``dict[str, ...]`` (a table of free keys), a
nested dataclass (a sub-table), ``X | None``; ``Annotated`` bounds (``AtLeast``,
``Above``, ``AtMost``) check ranges. Every string value is ``${VAR}``-expanded first.
A dataclass may refuse a combination in ``__post_init__`` with a ValueError.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin, get_type_hints

from cas.config.values import ConfigError, expand_env, expand_path, parse_duration, parse_size

T = TypeVar("T")


class _Mark(enum.Enum):
    SIZE = "a size"
    DURATION = "a duration"
    STORE_NAME = "the name of a store"
    ONE_OR_MORE = "one or a list"  # a list that may also be written as its one element


@dataclass(frozen=True)
class AtLeast:
    bound: float


@dataclass(frozen=True)
class Above:
    bound: float


@dataclass(frozen=True)
class AtMost:
    bound: float


@dataclass(frozen=True)
class Noun:
    """What an Enum's values are called in errors ("unknown matching policy 'x'")."""

    noun: str


Size = Annotated[int, _Mark.SIZE]
"""Bytes: a number, or a string such as "512MiB" or "20GiB"."""
Duration = Annotated[float, _Mark.DURATION]
"""Seconds: a number, or a string such as "250ms", "90s", "10m", "3h", "7d"."""
StoreName = Annotated[str, _Mark.STORE_NAME]
"""The name of another store under [stores] (a composite store's child)."""
ONE_OR_MORE = _Mark.ONE_OR_MORE


def read_table(
    cls: type[T], table: object, where: str, title: str | None = None, defaults: Mapping[str, Any] | None = None
) -> T:
    """An instance of the dataclass ``cls`` from one TOML table.

    ``where`` starts every message about a key (``[server] key 'listen': ...``);
    ``title`` (default ``where``) those about the table itself; ``defaults`` give
    keys a default that depends on the caller (already typed values)."""
    title = title or where
    if not isinstance(table, Mapping):
        raise ConfigError(f"{title} must be a table, got {table!r}")
    hints = _hints(cls)
    check_known(table.keys(), hints.keys(), title)
    values = dict(defaults or {})
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]  # any dataclass
        if field.name in table:
            hint = hints[field.name]
            place = table_place(where, field.name) if _is_table(hint) else key_place(where, field.name)
            values[field.name] = convert(hint, table[field.name], place)
        elif (field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
              and field.name not in values):
            raise ConfigError(f"{title}: missing required key {field.name!r}")
    try:
        return cls(**values)
    except ValueError as exc:  # __post_init__ refusing a combination of values (or a ConfigError of its own)
        raise ConfigError(f"{where}: {exc}") from None


def check_known(
    keys: Iterable[str], known: Iterable[str], title: str, what: str = "key", show: Callable[[str], str] | None = None
) -> None:
    """ConfigError listing the unknown ``keys``, with the closest known one for each;
    ``show`` writes a name (default: quoted, and plain in the list of known ones)."""
    known = list(known)
    quote, listed = (show, show) if show else (repr, str)
    unknown = sorted(set(keys) - set(known), key=str)
    if not unknown:
        return
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(str(key), known, n=1)
        if close:
            hints.append(quote(close[0]) if len(unknown) == 1 else f"{quote(close[0])} for {quote(key)}")
    suggestion = f"did you mean {', '.join(hints)}? " if hints else ""
    plural = "s" if len(unknown) > 1 else ""
    names = ", ".join(quote(str(k)) for k in unknown)
    message = f"unknown {what}{plural} {names} ({suggestion}known: {', '.join(map(listed, known))})"
    raise ConfigError(f"{title}: {message}" if title else message)


def key_place(where: str, key: str) -> str:
    return f"{where} key {key!r}"


def table_place(where: str, key: str) -> str:
    """The place of a sub-table: ``[worker]`` + properties -> ``[worker.properties]``."""
    if where.startswith("[") and where.endswith("]") and not where.startswith("[["):
        return f"{where[:-1]}.{key}]"
    return key_place(where, key)


def children_keys(cls: type) -> list[str]:
    """The keys of a dataclass that name other stores (annotated ``StoreName``)."""
    return [name for name, hint in _hints(cls).items() if _Mark.STORE_NAME in _split(hint)[1]]


def describe(hint: Any) -> str:
    """What a value of this kind looks like, for "expected ..." messages."""
    base, marks = _split(hint)
    for mark in marks:
        if isinstance(mark, _Mark) and mark is not _Mark.ONE_OR_MORE:
            return mark.value
    optional = _optional(base)
    if optional is not None:
        return describe(optional)
    origin = get_origin(base)
    if origin in (list, tuple):
        element = describe(get_args(base)[0]).removeprefix("a ").removeprefix("an ")
        prefix = "a string or " if _Mark.ONE_OR_MORE in marks else ""
        return f"{prefix}a list of {element}s"
    if isinstance(base, type) and issubclass(base, enum.Enum):
        return "one of: " + ", ".join(str(m.value) for m in base)
    simple = {bool: "true or false", int: "a whole number", float: "a number", str: "a string", Path: "a path"}
    return simple.get(base, "a table")


def convert(hint: Any, value: Any, where: str) -> Any:
    """``value`` as the kind ``hint`` describes; ConfigError naming ``where``."""
    base, marks = _split(hint)
    optional = _optional(base)
    if optional is not None:
        if value == "" and _split(optional)[0] is Path:
            return None  # an empty path means "the default"
        return convert(Annotated[(optional, *marks)] if marks else optional, value, where)
    if isinstance(value, str):
        if base is Path:
            return expand_path(value, where)
        value = expand_env(value, where)
    _check_bounds(marks, value, where)  # numbers are checked before their parser calls them negative
    result = _convert(base, marks, value, where, hint)
    _check_bounds(marks, result, where)
    return result


def _convert(base: Any, marks: tuple[Any, ...], value: Any, where: str, hint: Any) -> Any:
    if _Mark.SIZE in marks:
        return parse_size(value, where)
    if _Mark.DURATION in marks:
        return parse_duration(value, where)
    origin = get_origin(base)
    if origin in (list, tuple):
        if _Mark.ONE_OR_MORE in marks and not isinstance(value, list):
            value = [value]
        element = get_args(base)[0]
        if not isinstance(value, list) or not all(_plain_type_ok(element, item) for item in value):
            raise ConfigError(f"{where}: expected {describe(hint)}, got {value!r}")
        items = [convert(element, item, where) for item in value]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a table, got {value!r}")
        item_hint = get_args(base)[1]
        return {str(k): convert(item_hint, v, key_place(where, str(k))) for k, v in value.items()}
    if dataclasses.is_dataclass(base) and isinstance(base, type):
        return read_table(base, value, where)
    if isinstance(base, type) and issubclass(base, enum.Enum):
        return _choice(base, marks, value, where)
    if base is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if base is int or base is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (base is int and not isinstance(value, int)):
            raise ConfigError(f"{where}: expected {describe(base)}, got {value!r}")
        return base(value)
    if base is str or base is Path:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected {describe(hint)}, got {value!r}")
        return value
    raise TypeError(f"{where}: no config reader for {base!r}")


def _choice(enum_type: type[enum.Enum], marks: tuple[Any, ...], value: Any, where: str) -> enum.Enum:
    known = [str(member.value) for member in enum_type]
    for member in enum_type:
        if member.value == value:
            return member
    noun = next((m.noun for m in marks if isinstance(m, Noun)), "value")
    close = difflib.get_close_matches(str(value), known, n=1) if isinstance(value, str) else []
    suggestion = f"did you mean '{close[0]}'? " if close else ""
    raise ConfigError(f"{where}: unknown {noun} {value!r} ({suggestion}known: {', '.join(known)})")


def _check_bounds(marks: tuple[Any, ...], value: Any, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    for mark in marks:
        if isinstance(mark, AtLeast) and value < mark.bound:
            raise ConfigError(f"{where}: must be at least {_number(mark.bound)}, got {value!r}")
        if isinstance(mark, Above) and value <= mark.bound:
            wanted = "positive" if mark.bound == 0 else f"above {_number(mark.bound)}"
            raise ConfigError(f"{where}: must be {wanted}, got {value!r}")
        if isinstance(mark, AtMost) and value > mark.bound:
            raise ConfigError(f"{where}: must be at most {_number(mark.bound)}, got {value!r}")


def _number(bound: float) -> str:
    return str(int(bound)) if bound == int(bound) else str(bound)


def _is_table(hint: Any) -> bool:
    base = _split(hint)[0]
    base = _optional(base) or base
    return get_origin(base) in (dict, Mapping) or (isinstance(base, type) and dataclasses.is_dataclass(base))


def _plain_type_ok(hint: Any, value: Any) -> bool:
    """A list item's type at a glance, so that "expected a list of strings" names the list."""
    base = _split(hint)[0]
    if base is str or base is Path:
        return isinstance(value, str)
    return True


def _split(hint: Any) -> tuple[Any, tuple[Any, ...]]:
    """``Annotated[int, SIZE, AtLeast(1)]`` -> (int, (SIZE, AtLeast(1)))."""
    if get_origin(hint) is Annotated:
        base, *marks = get_args(hint)
        return base, tuple(marks)
    return hint, ()


def _optional(hint: Any) -> Any | None:
    """X for ``X | None``; None for anything else."""
    if get_origin(hint) in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(get_args(hint)) == 2:
            return args[0]
    return None


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    """The dataclass's field annotations, resolved (with their Annotated marks) once."""
    if cls not in _HINTS:
        hints = get_type_hints(cls, include_extras=True)
        _HINTS[cls] = {field.name: hints[field.name] for field in dataclasses.fields(cls)}
    return _HINTS[cls]

"""One loader for every config dataclass: from a dict, JSON or TOML text, or a .json/.toml file.

Why one: each config used to parse itself, and some took a raw ``**dict``, so a typo ended in a TypeError
traceback. Here an unknown key is refused with the list of known ones, and every value is checked against the
field's annotation (int, float, bool, str, tuples, lists, dicts, Literal, Optional, nested config
dataclasses), so the message names the key, what was expected and what was given. Checks of ranges and choices
between fields stay in each dataclass's ``__post_init__``.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar

T = TypeVar("T")
FORMATS = ("json", "toml")


class ConfigError(ValueError):
    """A config that cannot be used: unknown key, wrong type, unreadable text; the message says which."""


class LoadableConfig:
    """Mixin for a config dataclass: ``from_dict``, ``from_text`` and ``from_file`` through the one loader.

    ``SECTION`` names the table a TOML/JSON file may nest the settings under (``[teacher]``); top-level
    keys are used when the file has no such table."""

    SECTION: ClassVar[str | None] = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        return config_from_dict(cls, data)

    @classmethod
    def from_text(cls, text: str, fmt: str = "json") -> Self:
        return config_from_text(cls, text, fmt=fmt, section=cls.SECTION)

    @classmethod
    def from_file(cls, path: str | Path) -> Self:
        return config_from_file(cls, path, section=cls.SECTION)


def config_from_dict(cls: type[T], data: Mapping[str, Any], *, where: str | None = None) -> T:
    """An instance of the dataclass ``cls`` from ``data``; unset fields keep their defaults."""
    where = where or cls.__name__
    if isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a table of settings; got {_shown(data)}")
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"unknown {where} key(s) {unknown}; known keys: {sorted(known)}")
    missing = sorted(name for name, f in known.items() if name not in data and _required(f))
    if missing:
        raise ConfigError(f"{where} needs key(s) {missing}")
    hints = typing.get_type_hints(cls)
    values = {name: _checked(hints[name], value, f"{where}.{name}") for name, value in data.items()}
    try:
        return cls(**values)
    except ConfigError:
        raise
    except (TypeError, ValueError) as error:  # a __post_init__ check: keep its message, say where
        message = str(error)
        raise ConfigError(message if where in message else f"{where}: {message}") from None


def settings_table(text_or_path: str, *, section: str | None = None) -> dict[str, Any]:
    """The settings a command line ``--config`` gives: inline JSON, or the path of a .json/.toml file
    (with ``section``, that table when the text has one). Returns the raw table, checked later by the
    config it feeds."""
    path = Path(text_or_path)
    if path.suffix in (".json", ".toml") and path.is_file():
        text, fmt = path.read_text(encoding="utf-8"), path.suffix[1:]
    else:
        text, fmt = text_or_path, "json"
    data = _parsed(text, fmt, "--config")
    if not isinstance(data, dict):
        raise ConfigError(f"--config must be a table of settings ({{...}}); got {_shown(data)}")
    if section is not None and isinstance(data.get(section), dict):
        data = data[section]
    return data


def config_from_text(cls: type[T], text: str, *, fmt: str = "json", section: str | None = None) -> T:
    """Parse JSON or TOML text; with ``section``, a table of that name is used when the text has one."""
    if fmt not in FORMATS:
        raise ConfigError(f"config format {fmt!r} is unknown; expected one of {list(FORMATS)}")
    data = _parsed(text, fmt, f"{cls.__name__} config")
    if section is not None and isinstance(data, Mapping) and isinstance(data.get(section), Mapping):
        data = data[section]
    return config_from_dict(cls, data)


def config_from_file(cls: type[T], path: str | Path, *, section: str | None = None) -> T:
    """Read a ``.toml`` file as TOML and anything else as JSON (see ``config_from_text``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    fmt = "toml" if path.suffix == ".toml" else "json"
    return config_from_text(cls, path.read_text(encoding="utf-8"), fmt=fmt, section=section)


def _parsed(text: str, fmt: str, what: str) -> Any:
    try:
        return tomllib.loads(text) if fmt == "toml" else json.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"{what} is not valid {fmt.upper()}: {error}") from None


def _required(field: dataclasses.Field) -> bool:
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


def _checked(hint: Any, value: Any, where: str) -> Any:
    """``value`` converted to the annotated type (lists to tuples, ints to floats), or a ConfigError."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        return _first_match(args, value, where, hint)
    if origin is typing.Literal:
        if value in args:
            return value
        raise ConfigError(f"{where} must be one of {list(args)}; got {_shown(value)}")
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return config_from_dict(hint, value, where=where)
    if origin in (tuple, list):
        return _checked_sequence(hint, origin, args, value, where)
    if origin is dict or hint is dict:
        return _checked_mapping(args, value, where)
    return _checked_scalar(hint, value, where)


def _first_match(options: tuple, value: Any, where: str, hint: Any) -> Any:
    if value is None and type(None) in options:
        return None
    for option in options:
        if option is type(None):
            continue
        try:
            return _checked(option, value, where)
        except ConfigError:
            continue
    raise ConfigError(f"{where} must be {_type_name(hint)}; got {_shown(value)}")


def _checked_sequence(hint: Any, origin: type, args: tuple, value: Any, where: str) -> Any:
    if not isinstance(value, list | tuple):
        raise ConfigError(f"{where} must be {_type_name(hint)}; got {_shown(value)}")
    if origin is tuple and args and args[-1] is not Ellipsis:
        if len(value) != len(args):
            raise ConfigError(f"{where} must be {_type_name(hint)}; got {_shown(value)}")
        items = [
            _checked(arg, item, f"{where}[{i}]")
            for i, (arg, item) in enumerate(zip(args, value, strict=True))
        ]
    else:
        item_hint = args[0] if args else Any
        items = [_checked(item_hint, item, f"{where}[{i}]") for i, item in enumerate(value)]
    return tuple(items) if origin is tuple else items


def _checked_mapping(args: tuple, value: Any, where: str) -> dict:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a table (dict); got {_shown(value)}")
    value_hint = args[1] if len(args) == 2 else Any
    return {key: _checked(value_hint, item, f"{where}.{key}") for key, item in value.items()}


def _checked_scalar(hint: Any, value: Any, where: str) -> Any:
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint in (bool, str) and isinstance(value, hint):
        return value
    if hint not in (float, int, bool, str) and isinstance(hint, type) and isinstance(value, hint):
        return value  # any other class (e.g. a Path): accepted as an instance only
    raise ConfigError(f"{where} must be {_type_name(hint)}; got {_shown(value)}")


def _type_name(hint: Any) -> str:
    names = {int: "a whole number (int)", float: "a number (float)", bool: "true or false (bool)"}
    if hint in names:
        return names[hint]
    if hint is str:
        return "a string (str)"
    if hint is type(None):
        return "null (None)"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in args)
    if origin in (tuple, list):
        return f"a list of {_type_name(args[0]) if args else 'values'}"
    return getattr(hint, "__name__", str(hint))


def _shown(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"

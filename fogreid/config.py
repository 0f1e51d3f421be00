"""Typed configuration: dataclasses filled from plain dicts or YAML files.

Unknown keys and wrong types are errors that name the key and the file, so a typo in a
YAML file never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from fogreid.errors import FogreidError

T = TypeVar("T")


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build dataclass `cls` from `data`, checking keys and converting lists to tuples."""
    if not isinstance(data, dict):
        raise FogreidError(f"{where}: expected a mapping of settings, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise FogreidError(
            f"{where}: unknown setting(s) {', '.join(unknown)}; "
            f"known settings of {cls.__name__}: {', '.join(fields)}"
        )
    values = {name: _convert(hints[name], value, f"{where}.{name}") for name, value in data.items()}
    return cls(**values)


def to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass as plain JSON/YAML-friendly data (tuples become lists)."""
    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value
    return plain(obj)


def load_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FogreidError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise FogreidError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise FogreidError(f"{path}: the top level must be a mapping of settings")
    return data


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise FogreidError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, where) for v in value)
        if len(value) != len(args):
            raise FogreidError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_convert(a, v, where) for a, v in zip(args, value))
    if hint is float:
        # YAML 1.1 reads "3e-4" (no dot) as a string: accept any spelling Python parses.
        if isinstance(value, bool):
            raise FogreidError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise FogreidError(f"{where}: expected a number, got {value!r}") from None
    if hint in (int, str, bool) and not (isinstance(value, hint) and not (hint is int and isinstance(value, bool))):
        raise FogreidError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value

"""Typed-config machinery, no settings of its own: dataclasses filled from plain dicts or YAML files.

Unknown keys and wrong types are errors that name the key and the file, so a typo in a
YAML file never silently falls back to a default. Numbers are range-checked: a field declared
with `ranged(...)` carries its `Range`, and every float must be finite (NaN and inf never
pass), whether it comes from YAML, `--set` or a checkpoint. The command line's argparse types
(fogreid/cli/common.py) are built from the same `Range`, so a limit is stated once.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from fogreid.errors import FogreidError

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Range:
    """The accepted values of a number: `low`/`high` (None: unbounded), each end open or closed;
    `integer` for whole numbers. Always finite: NaN and +-inf are outside every range."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False

    def __contains__(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return False
        return True

    def describe(self) -> str:
        """'a whole number from 0 to 4294967295', 'a number > 0 and <= 604800', 'a finite number', ..."""
        kind = "a whole number" if self.integer else "a number" if (self.low, self.high) != (None, None) \
            else "a finite number"
        low, high = _show(self.low), _show(self.high)
        if self.low is not None and self.high is not None:
            if not self.low_open and not self.high_open:
                return f"{kind} from {low} to {high}"
            return f"{kind} {'>' if self.low_open else '>='} {low} and {'<' if self.high_open else '<='} {high}"
        if self.low is not None:
            return f"{kind} {'>' if self.low_open else '>='} {low}"
        if self.high is not None:
            return f"{kind} {'<' if self.high_open else '<='} {high}"
        return kind

    def check(self, value: Any, where: str) -> None:
        if value not in self:
            raise FogreidError(f"{where}: {value!r} is out of range; give {self.describe()}")


def _show(bound: float | None) -> str:
    if bound is None:
        return ""
    return str(int(bound)) if float(bound).is_integer() else f"{bound:g}"


FINITE = Range()


def ranged(default: Any = dataclasses.MISSING, low: float | None = None, high: float | None = None, *,
           low_open: bool = False, high_open: bool = False, integer: bool = False, **kwargs: Any) -> Any:
    """A dataclass field whose value (or each value of a tuple) must lie in the range."""
    metadata = {"range": Range(low, high, low_open, high_open, integer)}
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


def check_ranges(obj: Any, where: str) -> None:
    """Every `ranged` field of dataclass `obj` in its range, every float finite (nested
    dataclasses are checked by their own `from_dict`/`__post_init__`)."""
    for f in dataclasses.fields(obj):
        _check_numbers(f.metadata.get("range"), getattr(obj, f.name), f"{where}.{f.name}")


def _check_numbers(rng: Range | None, value: Any, where: str) -> None:
    """A number (or each number of a list) in `rng`; without one, a float must still be finite."""
    for item in value if isinstance(value, (tuple, list)) else [value]:
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            continue
        if rng is not None:
            rng.check(item, where)
        elif isinstance(item, float):
            FINITE.check(item, where)


def renamed_keys(cls: type, data: dict[str, Any], where: str = "config", stacklevel: int = 3) -> dict[str, Any]:
    """`data` with the old name of each renamed field of dataclass `cls` (its `RENAMED_FIELDS`,
    old -> new, kept for one release) replaced by the new one, with a DeprecationWarning."""
    from fogreid._deprecated import renamed

    for old, new in getattr(cls, "RENAMED_FIELDS", {}).items():
        if old in data:
            if new in data:
                raise FogreidError(f"{where}: both {old} and {new} are set; {old} is the old name of {new}: keep {new}")
            renamed(f"{where}: {old}", new, stacklevel=stacklevel + 1)
            data = {(new if key == old else key): value for key, value in data.items()}
    return data


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build dataclass `cls` from `data`, checking keys and converting lists to tuples."""
    if not isinstance(data, dict):
        raise FogreidError(f"{where}: expected a mapping of settings, got {type(data).__name__}")
    data = renamed_keys(cls, data, where)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise FogreidError(
            f"{where}: unknown setting(s) {', '.join(unknown)}; "
            f"known settings of {cls.__name__}: {', '.join(fields)}"
        )
    values = {name: _convert(hints[name], value, f"{where}.{name}") for name, value in data.items()}
    for name, value in values.items():  # before the class's own checks, which may assume sane numbers
        _check_numbers(fields[name].metadata.get("range"), value, f"{where}.{name}")
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

    from fogreid.file_kinds import expect

    path = Path(path)
    expect(path, "", "text", "YAML config")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise FogreidError(f"{path}: not a text file (not UTF-8); give a YAML config") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise FogreidError(f"{path}: not valid YAML ({problem}{where}); fix the file") from None
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
        return tuple(_convert(a, v, where) for a, v in zip(args, value, strict=True))
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

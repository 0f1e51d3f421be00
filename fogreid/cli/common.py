"""Small argument helpers shared by several verbs."""

from __future__ import annotations

from pathlib import Path

from fogreid.errors import FogreidError


def size(values: list[int]) -> tuple[int, int]:
    """`--imgsz H [W]` as (height, width)."""
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])


def names(value: str | None) -> list[str]:
    """A comma list, or @FILE with one name per line (as `fogreid validate --per-layer` writes)."""
    if not value:
        return []
    if value.startswith("@"):
        path = Path(value[1:])
        if not path.is_file():
            raise FogreidError(f"--keep-fp {value}: file not found")
        return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return [n.strip() for n in value.split(",") if n.strip()]

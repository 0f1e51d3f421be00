"""Lazy package faces (PEP 562, the `lazy_loader` pattern of Scientific Python SPEC 1).

A package's `__init__.py` lists the names it offers and the module each lives in; the
module is imported the first time the name is used. `import fogreid.runtime` therefore
costs nothing, and `fogreid.runtime.load_deployed` imports only the backends module.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable


def attach(package: str, names: dict[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]], list[str]]:
    """`(__getattr__, __dir__, __all__)` for `package`, whose public `names` map to the
    submodule (relative to the package) that defines each."""
    def __getattr__(name: str) -> object:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{names[name]}"), name)
        globals_of_package = importlib.import_module(package).__dict__
        globals_of_package[name] = value  # the next lookup is a plain attribute
        return value

    def __dir__() -> list[str]:
        return sorted(set(names) | {n for n in importlib.import_module(package).__dict__ if not n.startswith("_")})

    return __getattr__, __dir__, sorted(names)

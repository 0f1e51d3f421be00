"""Old names kept for one release: each warns once per call site and does what its new name does."""

from __future__ import annotations

import warnings


def renamed(old: str, new: str, stacklevel: int = 3) -> None:
    """Warn that `old` is now `new` (a DeprecationWarning pointing at the caller's caller)."""
    warnings.warn(f"{old} is deprecated and will be removed in the next release; use {new}",
                  DeprecationWarning, stacklevel=stacklevel)

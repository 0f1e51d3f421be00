from __future__ import annotations

import sys
from pathlib import Path

import pytest

from fogreid.data.synth import SynthConfig, generate

SMALL = SynthConfig(ids=40, cams=4, per_cam=2, size=128, seed=7)


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """A small generated FVRID dataset shared by the data tests (read-only)."""
    root = tmp_path_factory.mktemp("fvrid")
    generate(root, SMALL, progress=False)
    return root


@pytest.fixture
def fogreid_cmd() -> list[str]:
    """The installed console script, so the entry point itself is exercised."""
    script = Path(sys.executable).parent / "fogreid"
    return [str(script)] if script.exists() else [sys.executable, "-m", "fogreid"]

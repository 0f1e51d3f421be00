"""The README's Python API example runs as written, and the package faces are what they say."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
FACES = ["model", "data", "train", "export", "calibration", "validate", "runtime"]


def readme_example() -> str:
    section = README.read_text().split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_runs(tmp_path):
    out = subprocess.run([sys.executable, "-c", readme_example()], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("(4, 64, 64, 3) (4, "), last
    assert "[1. 1. 1. 1.]" in last  # unit-length embeddings
    assert (tmp_path / "runs/api/deploy/model.onnx").is_file()


@pytest.mark.parametrize("face", FACES)
def test_face_lists_and_resolves_its_names(face):
    import importlib

    module = importlib.import_module(f"fogreid.{face}")
    assert module.__doc__ and module.__all__
    assert set(module.__all__) <= set(dir(module))
    for name in module.__all__:
        assert getattr(module, name) is not None
    with pytest.raises(AttributeError):
        _ = module.no_such_name


def test_faces_import_nothing_heavy():
    code = ("import sys; import " + ", ".join(f"fogreid.{f}" for f in FACES) + "; "
            "print([m for m in ('torch', 'cv2', 'onnxruntime', 'onnx', 'polygraphy', 'numpy') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_runtime_face_does_not_import_train():
    code = ("import sys, fogreid.runtime as r; r.load_deployed; r.Gallery; r.run_stream; "
            "print([m for m in sys.modules if m.startswith('fogreid.train')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_no_public_name_is_shadowed_by_a_submodule():
    """`from fogreid.calibration import calibrate` must give the function even after the module
    that defines it was imported: Python sets a package attribute per imported submodule, which
    would win over the face's lazy name if both were called the same."""
    import importlib
    import pkgutil

    for face in ("model", "data", "train", "export", "calibration", "validate", "runtime"):
        package = importlib.import_module(f"fogreid.{face}")
        submodules = {m.name for m in pkgutil.iter_modules(package.__path__)}
        assert not set(package.__all__) & submodules, f"fogreid.{face}"

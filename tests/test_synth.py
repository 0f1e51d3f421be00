import hashlib
import json
import subprocess

import pytest

from fogreid.data.datasets import parse_vehicle_name
from fogreid.data.synth import SynthConfig, generate
from fogreid.errors import FogreidError

TINY = SynthConfig(ids=8, cams=3, per_cam=2, imgsz=64, seed=11)


def tree_digest(root):
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return digest.hexdigest()


def test_same_seed_same_bytes(tmp_path):
    generate(tmp_path / "a", TINY, progress=False)
    generate(tmp_path / "b", TINY, progress=False)
    generate(tmp_path / "c", SynthConfig(**{**TINY.__dict__, "seed": 12}), progress=False)
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")
    assert tree_digest(tmp_path / "a") != tree_digest(tmp_path / "c")


def test_layout_and_splits(synth_root):
    manifest = json.loads((synth_root / "fogreid_synth.json").read_text())
    syn, real = synth_root / "FVRID_syn", synth_root / "FVRID_real"
    for split in ("train", "query", "gallery"):
        clear = sorted(p.name for p in (syn / f"{split}_clear").iterdir())
        foggy = sorted(p.name for p in (syn / f"{split}_foggy").iterdir())
        assert clear == foggy and len(foggy) == manifest["images"][f"syn/{split}"]
        assert len(list((real / f"{split}_foggy").iterdir())) == manifest["images"][f"real/{split}"]
        assert not (real / f"{split}_clear").exists()
        # FVRID_clear: the real-like cameras' vehicles without fog (RVSL stage 2), same names
        clear_real = sorted(p.name for p in (synth_root / "FVRID_clear" / f"{split}_clear").iterdir())
        assert clear_real == sorted(p.name for p in (real / f"{split}_foggy").iterdir())
    for base in (syn, real):
        ids = {s: {parse_vehicle_name(p.name)[0] for p in (base / f"{s}_foggy").iterdir()}
               for s in ("train", "query", "gallery")}
        assert ids["train"].isdisjoint(ids["query"] | ids["gallery"]), "train and test identities overlap"
        assert ids["query"] <= ids["gallery"]
    syn_ids = {parse_vehicle_name(p.name)[0] for p in (syn / "train_foggy").iterdir()}
    real_ids = {parse_vehicle_name(p.name)[0] for p in (real / "train_foggy").iterdir()}
    assert syn_ids.isdisjoint(real_ids)


def test_fog_changes_every_image(synth_root):
    from fogreid.data.image_io import read_image

    for name in sorted((synth_root / "FVRID_syn" / "query_clear").iterdir())[:10]:
        clear = read_image(name).astype(float)
        foggy = read_image(synth_root / "FVRID_syn" / "query_foggy" / name.name).astype(float)
        assert abs(clear - foggy).mean() > 5
        assert foggy.std() < clear.std()


def test_bad_settings():
    with pytest.raises(FogreidError, match="--ids >= 4"):
        generate("/nonexistent", SynthConfig(ids=2), progress=False)


def test_cli(fogreid_cmd, tmp_path):
    out = subprocess.run(fogreid_cmd + ["synth", "--out", str(tmp_path), "--ids", "6", "--cams", "2",
                                        "--imgsz", "64", "--quiet"], capture_output=True, text=True, check=True)
    assert "wrote" in out.stdout
    assert json.loads((tmp_path / "fogreid_synth.json").read_text())["config"]["ids"] == 6


def test_regenerating_replaces_the_old_dataset(tmp_path):
    generate(tmp_path, TINY, progress=False)
    bigger = SynthConfig(**{**TINY.__dict__, "ids": 10, "seed": 3})
    generate(tmp_path, bigger, progress=False)
    fresh = tmp_path.parent / "fresh"
    generate(fresh, bigger, progress=False)
    assert tree_digest(tmp_path) == tree_digest(fresh)  # nothing left of the first dataset
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".synth-")]

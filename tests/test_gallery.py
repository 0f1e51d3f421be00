"""Galleries: faiss indexes (flat / IVF / HNSW) against exact search, persistence, and the
model identity that keeps a gallery from being matched against another model."""

import json
import subprocess

import numpy as np
import pytest

from fogreid.errors import FogreidError
from fogreid.fileio import sha256_file
from fogreid.runtime.gallery import Gallery, IndexSpec, exact_search, model_identity

faiss = pytest.importorskip("faiss", reason="faiss-cpu is in the dev extra")


def clustered(n, d=64, ids=None, seed=0, noise=0.35):
    """Unit vectors around `ids` identity centres: the structure of a real gallery (each
    vehicle seen several times), where uniform random vectors would have no neighbours."""
    rng = np.random.default_rng(seed)
    ids = ids or max(1, n // 8)
    centres = rng.standard_normal((ids, d)).astype(np.float32)
    x = centres[rng.integers(0, ids, n)] + noise * rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), centres


def gallery_of(x, spec, model=None):
    return Gallery(x, [str(i) for i in range(len(x))], [""] * len(x), model or {}, spec)


def test_flat_equals_exact_and_auto_switches_to_ivf():
    x, _ = clustered(4000)
    q, _ = clustered(50, seed=1)
    want_i, want_s = exact_search(x, q, 5)
    flat = gallery_of(x, IndexSpec())
    assert flat.index_kind == "flat" and isinstance(flat.index(), faiss.IndexFlatIP)
    got_i, got_s = flat.match(q, 5)
    assert np.array_equal(got_i, want_i) and np.allclose(got_s, want_s, atol=1e-5)
    auto = gallery_of(x, IndexSpec(flat_max=1000))
    assert auto.index_kind == "ivf" and isinstance(auto.index(), faiss.IndexIVFFlat)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_indexes_recall(kind):
    x, centres = clustered(6000, d=128, seed=2)
    rng = np.random.default_rng(3)
    q = x[rng.choice(len(x), 200, replace=False)] + 0.05 * rng.standard_normal((200, 128)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    want, _ = exact_search(x, q, 1)
    got, scores = gallery_of(x, IndexSpec(kind=kind)).match(q, 1)
    recall = (got[:, 0] == want[:, 0]).mean()
    assert recall >= 0.95, recall
    assert np.allclose(scores[:, 0], (q * x[got[:, 0]]).sum(1), atol=1e-4)  # scores are cosines


def test_saved_index_is_reused_and_overridable(tmp_path):
    x, _ = clustered(3000, d=32, seed=4)
    q, _ = clustered(40, d=32, seed=5)
    g = gallery_of(x, IndexSpec(kind="ivf", nlist=16, nprobe=4), {"checkpoint_sha256": "a" * 64})
    before = g.match(q, 3)
    g.save(tmp_path / "g.npz")
    with np.load(tmp_path / "g.npz", allow_pickle=False) as data:
        assert data["faiss_index"].dtype == np.uint8
    loaded = Gallery.load(tmp_path / "g.npz")
    assert loaded._index is not None and loaded.index_spec.nprobe == 4   # deserialised, not retrained
    after = loaded.match(q, 3)
    assert np.array_equal(before[0], after[0]) and np.allclose(before[1], after[1])
    exact = Gallery.load(tmp_path / "g.npz", index=IndexSpec(kind="flat"))
    assert exact.index_kind == "flat" and isinstance(exact.index(), faiss.IndexFlatIP)
    assert np.array_equal(exact.match(q, 1)[0], exact_search(x, q, 1)[0])
    assert loaded.model["checkpoint_sha256"] == "a" * 64


def test_add_grows_the_index_in_place():
    x, _ = clustered(500, d=16, seed=6)
    g = gallery_of(x[:400], IndexSpec())
    index = g.index()
    g.add(x[400:], [str(i) for i in range(400, 500)])
    assert g.index() is index and index.ntotal == 500
    assert np.array_equal(g.match(x[450:460], 1)[0][:, 0], np.arange(450, 460))


def test_bad_index_choice_and_bad_files(tmp_path):
    with pytest.raises(FogreidError, match="--index"):
        IndexSpec(kind="lsh")
    (tmp_path / "half.npz").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(FogreidError, match="half.npz: cannot be read: the file is cut short"):
        Gallery.load(tmp_path / "half.npz")


def test_model_identity_of_each_artifact(exported, tmp_path):
    ckpt, result = exported
    want = sha256_file(ckpt)
    assert model_identity(ckpt) == want
    assert model_identity(result.files["onnx"]) == want
    assert model_identity(result.files["onnx-int8"]) == want   # same model, another precision
    engine = result.files["onnx"].parent / "model_fp16.engine"
    if not engine.exists():  # no TensorRT here: an engine's sidecar names the ONNX it was built from
        engine = tmp_path / "model_fp16.engine"
        engine.write_bytes(b"")
        (tmp_path / "model.onnx").write_bytes(result.files["onnx"].read_bytes())
        (tmp_path / "model_fp16.json").write_text(json.dumps({"onnx": "model.onnx"}))
    assert model_identity(engine) == want


def test_run_refuses_a_gallery_of_another_model(exported, fogreid_cmd, tmp_path):
    _, result = exported
    model = result.files["onnx"]
    size = [int(v) for v in json.loads(result.manifest.read_text())["input_size"]]
    other = gallery_of(np.eye(2, 512, dtype=np.float32), IndexSpec(),
                       {"name": "other", "input_size": size, "embedding_dim": 512, "checkpoint_sha256": "b" * 64})
    other.save(tmp_path / "other.npz")
    run = subprocess.run(fogreid_cmd + ["run", "--model", str(model), "--source", str(tmp_path / "none.mp4"),
                                        "--gallery", str(tmp_path / "other.npz")], capture_output=True, text=True)
    assert run.returncode == 2, run.stderr
    assert "built by another model" in run.stderr and "Traceback" not in run.stderr

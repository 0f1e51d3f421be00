"""`fogreid demo`: the main job on the generated default data.

Today: generate the default foggy dataset (reused when its settings match), run the fused
deploy model on the synthetic and real-like test sets, and write what it produced:
embeddings, side-by-side foggy/defogged pictures and retrieval figures. Training, export,
validation and the stream pipeline join this command as they land.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from fogreid.data.synth import SynthConfig


def demo_data_config(quick: bool, seed: int) -> SynthConfig:
    return SynthConfig(ids=40, cams=4, seed=seed) if quick else SynthConfig(seed=seed)


def ensure_dataset(root: Path, cfg: SynthConfig) -> None:
    """Generate the dataset unless `root` already holds one made with the same settings."""
    from fogreid.data.synth import generate

    manifest = root / "fogreid_synth.json"
    if manifest.is_file() and json.loads(manifest.read_text()).get("config") == asdict(cfg):
        print(f"[data] reusing {root} (same settings)")
        return
    print(f"[data] generating the default foggy dataset in {root}")
    generate(root, cfg)


def run_demo(out: str | Path, quick: bool = False, checkpoint: str | None = None, seed: int = 0) -> dict:
    import torch

    from fogreid.data.datasets import load_fvrid
    from fogreid.metrics import cosine_distance, evaluate_rank
    from fogreid.model.fused import FusedDefogReID
    from fogreid.model.predict import predict
    from fogreid.model.sjdl import build_sjdl, preset

    out = Path(out)
    data_cfg = demo_data_config(quick, seed)
    ensure_dataset(out / "data", data_cfg)

    if checkpoint:
        model = FusedDefogReID.from_checkpoint(checkpoint)
        origin = f"checkpoint {checkpoint}"
    else:
        torch.manual_seed(seed)
        model = FusedDefogReID(build_sjdl(preset("edge", input_size=(data_cfg.size, data_cfg.size))))
        origin = "a freshly initialised edge model (not trained yet)"
    print(f"[model] {origin}: embedding {model.embedding_dim}-d, input {model.input_size}")

    results: dict = {"model": origin, "data": asdict(data_cfg), "retrieval": {}}
    for split in ("syn", "real"):
        data = load_fvrid(out / "data", split)
        records = data.query + data.gallery
        emb, defogged = predict(model, [r.path for r in records], keep_defogged=True, desc=f"[{split}] infer")
        nq = len(data.query)
        scores = evaluate_rank(cosine_distance(emb[:nq], emb[nq:]),
                               np.array([r.pid for r in data.query]), np.array([r.pid for r in data.gallery]),
                               np.array([r.camid for r in data.query]), np.array([r.camid for r in data.gallery]))
        results["retrieval"][split] = scores.as_dict()
        np.savez_compressed(out / f"embeddings_{split}.npz", embeddings=emb,
                            pids=[r.pid for r in records], camids=[r.camid for r in records],
                            is_query=np.arange(len(records)) < nq)
        _write_samples(out / f"samples_{split}.jpg", records[:8], defogged[:8], model.input_size)
        print(f"[{split}] mAP {scores.mAP:.3f}  Rank-1 {scores.rank(1):.3f}  ({scores.num_queries} queries)")
    (out / "summary.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"[done] wrote {out}/summary.json, embeddings_*.npz and samples_*.jpg "
          f"(rows: foggy input | defogged output)")
    return results


def _write_samples(path: Path, records, defogged: np.ndarray, size: tuple[int, int]) -> None:
    from fogreid.data.image_io import load_for_model, write_image

    rows = [np.hstack([load_for_model(r.path, size), image]) for r, image in zip(records, defogged)]
    write_image(path, np.vstack(rows), jpeg_quality=90)

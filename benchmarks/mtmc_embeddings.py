"""Why does (or doesn't) the joint model track better across cameras? The embedding alone,
without the tracker or the online association: for the cities of benchmarks/mtmc.py, each
ground-truth track (a vehicle in one camera) is embedded from its crops at the truth's boxes
(the quality-weighted mean `fogreid run` keeps per track), then every track is a query against
the tracks of the other cameras:

  track mAP / R1   cross-camera retrieval of whole tracks (what the association decides on)
  defogged mAP     the same with each crop embedded from the model's own defogged crop
                   (`fogreid run --embed-defogged`; a ReID-only model's is its input)
  crop mAP         the same with single crops (what the retrieval test measures)
  gap              mean cosine of same-vehicle track pairs minus mean cosine of different ones
  best-thr F1      the F1 of "same vehicle" at the best single cosine threshold over pairs,
                   and that threshold (what one fixed `--assoc-threshold` would have to be)

    python benchmarks/mtmc_embeddings.py [--out runs/mtmc] [--real-like] [--vehicles 40 --seconds 60]

It reads the exported models and cities benchmarks/mtmc.py made (run that first).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from mtmc import ROWS, city_folder


def track_crops(city: Path) -> dict[tuple[str, int], list]:
    """(camera, vehicle id) -> [(crop, quality)] from the video at the ground truth's boxes."""
    import cv2

    from fogreid.mtmc import read_city, read_mot

    info = read_city(city)
    tracks: dict[tuple[str, int], list] = {}
    for camera in info["cameras"]:
        truth = read_mot(city / camera / "gt" / "gt.txt")
        capture = cv2.VideoCapture(str(city / camera / "video.mp4"))
        index = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            index += 1
            h, w = frame.shape[:2]
            for vid, (x, y, bw, bh) in truth.get(index, []):
                x1, y1, x2, y2 = int(max(x, 0)), int(max(y, 0)), int(min(x + bw, w)), int(min(y + bh, h))
                if min(x2 - x1, y2 - y1) < 8:
                    continue
                cut = x1 <= 1 or x2 >= w - 1
                tracks.setdefault((camera, vid), []).append((frame[y1:y2, x1:x2], 0.5 if cut else 1.0))
        capture.release()
    return tracks


def retrieval(embeddings, ids, cams) -> tuple[float, float]:
    """mAP and Rank-1 (%) of each row as a query against the rows of the other cameras: the
    retrieval test's own scoring (fogreid.metrics.evaluate_rank), with the query's camera ranked
    after every other (past all true matches, so it changes neither AP nor CMC)."""
    import numpy as np

    from fogreid.metrics import cosine_distance, evaluate_rank

    distances = cosine_distance(embeddings, embeddings)
    distances[cams[:, None] == cams[None, :]] = np.inf
    result = evaluate_rank(distances, ids, ids, cams, cams)
    return 100 * result.mAP, 100 * result.rank(1)


def analyse(model_path: Path, tracks: dict) -> dict:
    import numpy as np

    from fogreid.data.image_io import resize_for_model
    from fogreid.runtime.backends import load_deployed

    with load_deployed(model_path, backend="onnxruntime") as model:
        keys = sorted(tracks)
        means, defogged_means, crop_emb, crop_ids, crop_cams = [], [], [], [], []
        for camera, vid in keys:
            crops = np.stack([resize_for_model(c, model.imgsz) for c, _ in tracks[camera, vid]])
            outputs = [model(crops[i:i + 64]) for i in range(0, len(crops), 64)]
            emb = np.concatenate([e for _, e in outputs])
            # `fogreid run --embed-defogged`: the model again, on its own defogged crops
            emb_defogged = np.concatenate([model(np.ascontiguousarray(d))[1] for d, _ in outputs])
            weights = np.array([q for _, q in tracks[camera, vid]])[:, None]
            for rows, out in ((emb, means), (emb_defogged, defogged_means)):
                mean = (rows * weights).sum(0)
                out.append(mean / np.linalg.norm(mean))
            picks = np.linspace(0, len(emb) - 1, min(len(emb), 5)).astype(int)   # a few crops per track
            crop_emb.append(emb[picks])
            crop_ids += [vid] * len(picks)
            crop_cams += [camera] * len(picks)
    means = np.stack(means)
    ids, cams = np.array([v for _, v in keys]), np.array([c for c, _ in keys])
    track_map, track_r1 = retrieval(means, ids, cams)
    defogged_map, _ = retrieval(np.stack(defogged_means), ids, cams)
    crops = np.concatenate(crop_emb)
    crop_map, _ = retrieval(crops, np.array(crop_ids), np.array(crop_cams))
    sims = means @ means.T
    pairs = [(sims[i, j], ids[i] == ids[j]) for i in range(len(keys)) for j in range(i + 1, len(keys))
             if cams[i] != cams[j]]
    same = [s for s, m in pairs if m]
    other = [s for s, m in pairs if not m]
    best_f1, best_thr = 0.0, 0.0
    for thr in np.linspace(0.0, 1.0, 101):
        tp = sum(s >= thr for s in same)
        fp = sum(s >= thr for s in other)
        f1 = 2 * tp / max(2 * tp + fp + (len(same) - tp), 1)
        if f1 > best_f1:
            best_f1, best_thr = f1, float(thr)
    return {"track_map": track_map, "track_r1": track_r1, "defogged_map": defogged_map, "crop_map": crop_map,
            "gap": float(np.mean(same) - np.mean(other)) if same and other else 0.0,
            "same": float(np.mean(same)) if same else 0.0, "other": float(np.mean(other)) if other else 0.0,
            "f1": 100 * best_f1, "thr": best_thr}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/mtmc", help="benchmarks/mtmc.py's output folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--fog", type=float, nargs="+", default=[0.0, 1.0, 3.5])
    parser.add_argument("--cities", type=int, default=2)
    parser.add_argument("--vehicles", type=int, default=40, help="as benchmarks/mtmc.py's")
    parser.add_argument("--seconds", type=float, default=60.0, help="as benchmarks/mtmc.py's")
    parser.add_argument("--real-like", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    table = {}
    for beta in args.fog:
        cities = [city_folder(out, beta, k, args.vehicles, args.seconds, args.real_like) for k in range(args.cities)]
        crops = [track_crops(c) for c in cities]
        for row in ROWS:
            cells = []
            for seed in args.seeds:
                model = out / "models" / f"seed{seed}" / row / "model.onnx"
                results = [analyse(model, t) for t in crops]
                cells.append({k: statistics.fmean(r[k] for r in results) for k in results[0]})
            table[beta, row] = cells
    kind = "real-like" if args.real_like else "synthetic"
    print(f"\nEmbeddings on ground-truth tracks, {kind} cities of {out}, mean over {args.cities} cities per fog "
          f"level; mean ± half-range over training seeds {' '.join(map(str, args.seeds))}")
    columns = ("track_map", "track_r1", "defogged_map", "crop_map", "same", "other", "gap", "f1", "thr")
    print(f"{'beta':>5}  {'model':<25}" + "".join(f"{c:>14}" for c in columns))
    for beta in args.fog:
        for row, label in ROWS.items():
            cells = table[beta, row]
            text = ""
            for c in columns:
                values = [cell[c] for cell in cells]
                digits = 1 if c in ("track_map", "track_r1", "defogged_map", "crop_map", "f1") else 3
                text += f"{statistics.fmean(values):>8.{digits}f} ±{(max(values) - min(values)) / 2:>4.{digits}f}"
            print(f"{beta:>5g}  {label:<25}{text}")
    (out / f"embeddings{'_real' if args.real_like else ''}.json").write_text(
        json.dumps({f"{b:g}/{r}": v for (b, r), v in table.items()}, indent=1))


if __name__ == "__main__":
    main()

"""What defogging buys in multi-camera tracking: generated cities scored with motmetrics, tracks
identified by the joint defog + ReID model (SJDL) and by a ReID-only model trained on the same
foggy images, at several fog densities including none.

    python benchmarks/accuracy_table.py --defaults --epochs 30 --rows ce     # the models, 2 seeds
    python benchmarks/mtmc.py [--models runs/accuracy/100ids-64px-30ep-defaults] [--out runs/mtmc]

The models are the accuracy table's rows (c) ReID trained on fog and (e) SJDL, trained with
`fogreid train`'s defaults for each training seed (their best.pt, exported to ONNX here), so
this table and the accuracy table describe the same networks. Each city: 3 cameras along a road,
40 vehicles never seen in training, 60 s at 10 fps, the same fog (scattering beta; 0 is clear)
on every camera, MOTChallenge public detections (the truth with misses and jitter), so the scores
measure tracking and identity, not detection. Per-camera IDF1 / MOTA come from ByteTrack and
barely depend on the embedding; cross-camera IDF1 is where the embedding decides (one global id
per vehicle across cameras), with `fogreid run`'s association (`--assoc-threshold`, default
auto: per camera pair; a number compares one fixed cosine) and embeddings (`--embed-defogged`,
auto: the defogged crop's on foggy frames, `fogreid run`'s default without a gallery). Every model runs on every city
(`--cities` per fog level); a cell is the mean over cities, then mean +- half-range over the
training seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROWS = {"e": "SJDL (defog + ReID)", "c": "ReID only (fog-trained)"}


def fogreid(*args: str) -> str:
    run = subprocess.run([sys.executable, "-m", "fogreid", *args], capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"fogreid {' '.join(args)} failed:\n{run.stderr[-3000:]}")
    return run.stdout


def exported(models: Path, out: Path, seed: int, row: str) -> Path:
    """The row's best.pt of one training seed as ONNX (exported once, under `out`)."""
    checkpoint = models / f"seed{seed}" / row / "best.pt"
    if not checkpoint.is_file():
        raise SystemExit(f"{checkpoint} is missing: train the models first with\n  python benchmarks/accuracy_table.py "
                         f"--out {models.parent} --defaults --epochs 30 --rows ce --seeds 0 1")
    target = out / "models" / f"seed{seed}" / row
    if not (target / "model.onnx").is_file():
        fogreid("export", "--checkpoint", str(checkpoint), "--format", "onnx", "--out", str(target))
    return target / "model.onnx"


def city_folder(out: Path, beta: float, index: int, vehicles: int, seconds: float, real_like: bool) -> Path:
    return out / f"city_{'real_' if real_like else ''}beta{beta:g}_{vehicles}v{seconds:g}s_{index}"


def city(out: Path, beta: float, index: int, vehicles: int, seconds: float, real_like: bool) -> Path:
    folder = city_folder(out, beta, index, vehicles, seconds, real_like)
    if not (folder / "city.json").is_file():
        fogreid("synth-video", "--out", str(folder), "--cameras", "3", "--vehicles", str(vehicles),
                "--seconds", str(seconds), "--fog", str(beta), "--seed", str(100 + index),
                *(["--real-like"] if real_like else []))
    return folder


def score(folder: Path, model: Path, name: str, threshold: str, embed: str) -> dict:
    """Cross-camera and per-camera scores of one model on one city (cached beside the city)."""
    name = f"{name}_assoc{threshold}" + ("" if embed == "never" else f"_embed{embed}")
    cached = folder / f"scores_{name}.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    info = json.loads((folder / "city.json").read_text())
    videos = [str(folder / c / "video.mp4") for c in info["cameras"]]
    dets = [str(folder / c / "det" / "det.txt") for c in info["cameras"]]
    events = folder / f"events_{name}.jsonl"
    # onnxruntime, not auto: the engine does not change the events, and auto's timing would add noise
    fogreid("run", "--model", str(model), "--backend", "onnxruntime", "--source", *videos, "--detections", *dets,
            "--events", str(events), "--overwrite", "--fps", str(info["fps"]), "--assoc-threshold", threshold,
            "--embed-defogged", embed)
    scores = json.loads(fogreid("eval-mtmc", "--city", str(folder), "--events", str(events), "--json"))
    cached.write_text(json.dumps(scores))
    return scores


def mean_spread(values: list[float]) -> str:
    return f"{statistics.fmean(values):5.1f} ± {(max(values) - min(values)) / 2:4.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="runs/accuracy/100ids-64px-30ep-defaults",
                        help="an accuracy_table.py budget folder holding seed<S>/{c,e}/best.pt")
    parser.add_argument("--out", default="runs/mtmc")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds")
    parser.add_argument("--fog", type=float, nargs="+", default=[0.0, 1.0, 3.5], help="scattering beta of a city")
    parser.add_argument("--cities", type=int, default=2, help="cities per fog level (city seeds 100, 101, ...)")
    parser.add_argument("--vehicles", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--assoc-threshold", default="auto", help="fogreid run's --assoc-threshold (default auto)")
    parser.add_argument("--embed-defogged", default="auto", choices=["auto", "always", "never"],
                        help="fogreid run's --embed-defogged (default auto, as fogreid run's without a gallery)")
    parser.add_argument("--real-like", action="store_true",
                        help="vehicles and cameras of the real-like domain (the accuracy table's `real` split)")
    args = parser.parse_args()
    models, out = Path(args.models), Path(args.out)
    onnx = {(seed, row): exported(models, out, seed, row) for seed in args.seeds for row in ROWS}

    table = {}   # (beta, row) -> {"cross": [per seed], "idf1": [...], "mota": [...]}
    for beta in args.fog:
        cities = [city(out, beta, k, args.vehicles, args.seconds, args.real_like) for k in range(args.cities)]
        for row in ROWS:
            cell = table[beta, row] = {"cross": [], "idf1": [], "mota": []}
            for seed in args.seeds:
                runs = [score(c, onnx[seed, row], f"seed{seed}_{row}", args.assoc_threshold, args.embed_defogged)
                        for c in cities]
                cams = [[v for k, v in s.items() if k.startswith("cam")] for s in runs]
                cell["cross"].append(statistics.fmean(s["cross-camera"]["idf1"] for s in runs))
                cell["idf1"].append(statistics.fmean(c["idf1"] for cs in cams for c in cs))
                cell["mota"].append(statistics.fmean(c["mota"] for cs in cams for c in cs))

    kind = "real-like " if args.real_like else ""
    print(f"\n{args.cities} {kind}cities per fog level (3 cameras, {args.vehicles} unseen vehicles, "
          f"{args.seconds:g} s at "
          f"10 fps, public detections, --assoc-threshold {args.assoc_threshold}, "
          f"--embed-defogged {args.embed_defogged});\n"
          f"models: {models} (seeds {' '.join(map(str, args.seeds))}), best.pt as ONNX; "
          f"mean ± half-range over training seeds")
    print(f"{'beta':>5}  {'model':<25}{'IDF1/cam':>14}{'MOTA/cam':>14}{'cross-camera IDF1':>20}")
    for beta in args.fog:
        for row, label in ROWS.items():
            cell = table[beta, row]
            print(f"{beta:>5g}  {label:<25}{mean_spread(cell['idf1']):>14}{mean_spread(cell['mota']):>14}"
                  f"{mean_spread(cell['cross']):>20}")
        gain = [e - c for e, c in zip(table[beta, "e"]["cross"], table[beta, "c"]["cross"], strict=True)]
        print(f"{'':>5}  {'SJDL - ReID only':<25}{'':>28}{mean_spread(gain):>20}")
    cells = {f"{beta:g}/{row}": cell for (beta, row), cell in table.items()}
    name = (f"table{'_real' if args.real_like else ''}_{args.vehicles}v_assoc{args.assoc_threshold}"
            f"_embed{args.embed_defogged}.json")
    (out / name).write_text(json.dumps(cells, indent=1))


if __name__ == "__main__":
    main()

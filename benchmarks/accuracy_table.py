"""The paper's comparison, reproduced on the generated default dataset.

Trains five rows with one fixed budget each and prints mAP / Rank-1 on the synthetic and
the real-like foggy test sets:
  (a) ReID trained on clear images only, tested on fog
  (b) dehaze first (dark channel prior) on the test images, then (a)
  (c) ReID trained on fog
  (d) JDL: joint defog + ReID on synthetic pairs
  (e) SJDL: JDL + the semi-supervised real-fog branch
  (f) RVSL: cycle-consistent domain transformation, three stages (a third of the epochs each)
The published shape (FVRID): SJDL >= JDL > fog-trained > dehaze-first > clear-only, and RVSL
above SJDL.

    python benchmarks/accuracy_table.py [--out runs/accuracy] [--epochs 60] [--imgsz 64]   (~25 min on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

ROWS = [
    ("a", "ReID, clear-trained", ["mode=reid", "data.reid_input=clear"]),
    ("c", "ReID, fog-trained", ["mode=reid"]),
    ("d", "JDL", ["mode=jdl"]),
    ("e", "SJDL", ["mode=sjdl"]),
    ("f", "RVSL (3 stages)", ["mode=rvsl"]),
]


def dehazed_copy(root: Path, target: Path) -> Path:
    """The test sets of `root` passed through the dark-channel dehazer, in FVRID layout."""
    from tqdm import tqdm

    from fogreid.data.dehaze import dehaze_dcp
    from fogreid.data.image_io import read_image, write_image

    if (target / "done").exists():
        return target
    folders = [("FVRID_syn", f"{s}_{k}") for s in ("train", "query", "gallery") for k in ("clear", "foggy")]
    folders += [("FVRID_real", f"{s}_foggy") for s in ("train", "query", "gallery")]
    for part, folder in folders:
        source, dest = root / part / folder, target / part / folder
        if folder.startswith("train") or folder.endswith("clear"):
            shutil.copytree(source, dest, dirs_exist_ok=True)  # layout only; not dehazed
            continue
        for path in tqdm(sorted(source.iterdir()), desc=f"dehaze {part}/{folder}", leave=False):
            write_image(dest / path.name, dehaze_dcp(read_image(path)), jpeg_quality=95)
    (target / "done").write_text("")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/accuracy")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--imgsz", type=int, default=64)
    parser.add_argument("--ids", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from fogreid.data.datasets import load_fvrid
    from fogreid.data.synth import SynthConfig
    from fogreid.demo import ensure_dataset
    from fogreid.model.fused import FusedDefogReID
    from fogreid.train.config import build_config
    from fogreid.train.evaluate import evaluate
    from fogreid.train.loop import train
    from fogreid.train.rvsl import train_rvsl

    out = Path(args.out)
    data = out / "data"
    ensure_dataset(data, SynthConfig(ids=args.ids, seed=args.seed))
    budget = [f"optim.epochs={args.epochs}", "optim.lr=3.5e-4", f"optim.warmup_epochs={max(args.epochs // 10, 1)}",
              f"optim.milestones=[{args.epochs // 2}, {args.epochs * 5 // 6}]", "optim.gamma=0.1",
              f"model.input_size=[{args.imgsz}, {args.imgsz}]", "data.ids_per_batch=6", "data.instances_per_id=6",
              f"seed={args.seed}", "data.root=" + str(data)]
    results: dict[str, dict] = {}
    for key, name, sets in ROWS:
        run = out / key
        tic = time.perf_counter()
        if not (run / "metrics.json").is_file():
            if "mode=rvsl" in sets:  # the same total budget, split over the three stages
                stage_budget = [s for s in budget if not s.startswith(("optim.epochs", "optim.milestones"))]
                train_rvsl(build_config(None, stage_budget + sets + [f"optim.epochs={max(args.epochs // 3, 1)}",
                                                                     f"optim.milestones=[{args.epochs // 4}]"]),
                           run, progress=False)
            else:
                train(build_config(None, budget + sets), run, progress=False)
        metrics = json.loads((run / "metrics.json").read_text())
        results[key] = {"name": name, "syn": metrics["test"]["syn"], "real": metrics["test"]["real"],
                        "minutes": round((time.perf_counter() - tic) / 60, 1)}
        print(f"({key}) {name}: syn mAP {results[key]['syn']['mAP']:.3f}, real mAP {results[key]['real']['mAP']:.3f}")

    # (b): the clear-trained model on dark-channel-dehazed test images.
    dehazed = dehazed_copy(data, out / "data_dehazed")
    model = FusedDefogReID.from_checkpoint(out / "a" / "best.pt")
    results["b"] = {"name": "ReID, clear-trained, dehaze first (DCP)",
                    "syn": evaluate(model, load_fvrid(dehazed, "syn"), progress=False),
                    "real": evaluate(model, load_fvrid(dehazed, "real"), progress=False), "minutes": 0}

    lines = [f"accuracy on the generated default ({args.ids} syn ids, {args.imgsz} px, {args.epochs} epochs each)",
             f"{'':4}{'method':<42}{'syn mAP':>9}{'syn R1':>8}{'real mAP':>10}{'real R1':>9}{'train min':>11}"]
    for key in "abcdef":
        r = results[key]
        lines.append(f"({key}) {r['name']:<42}{r['syn']['mAP'] * 100:>9.1f}{r['syn']['rank1'] * 100:>8.1f}"
                     f"{r['real']['mAP'] * 100:>10.1f}{r['real']['rank1'] * 100:>9.1f}{r['minutes']:>11}")
    table = "\n".join(lines)
    print(table)
    (out / "table.txt").write_text(table + "\n")
    (out / "table.json").write_text(json.dumps(results, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()

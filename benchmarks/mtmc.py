"""What defogging buys in multi-camera tracking: the generated foggy city scored with
motmetrics, tracks identified by the joint defog + ReID model (SJDL) and by a ReID-only
model (`--mode reid`), trained the same way on the same generated data, at two fog levels.

    python benchmarks/mtmc.py [--epochs 20] [--imgsz 64] [--out runs/mtmc]

Each city: 3 cameras along a road, 10 vehicles never seen in training, 20 s at 10 fps, the same
fog density (scattering beta) on every camera; MOTChallenge public detections (the truth with
misses and jitter), so the scores measure tracking and identity, not detection. Per-camera
IDF1 / MOTA come from ByteTrack and are nearly the same for both models; cross-camera IDF1 is
where the embedding decides (one global id per vehicle across cameras).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

FOG = {"light": 1.0, "dense": 3.5}


def fogreid(*args: str) -> str:
    run = subprocess.run([sys.executable, "-m", "fogreid", *args], capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"fogreid {' '.join(args)} failed:\n{run.stderr[-3000:]}")
    return run.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/mtmc")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--imgsz", type=int, default=64)
    parser.add_argument("--vehicles", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    out = Path(args.out)
    data = out / "data"
    if not (data / "fogreid_synth.json").exists():
        fogreid("synth", "--out", str(data), "--ids", "60", "--cams", "4", "--size", str(args.imgsz), "--quiet")
    models = {}
    for label, mode in (("SJDL (defog + ReID)", "sjdl"), ("ReID only", "reid")):
        run = out / mode
        if not (run / "last.pt").exists():
            fogreid("train", "--data", str(data), "--out", str(run), "--mode", mode, "--imgsz", str(args.imgsz),
                    "--epochs", str(args.epochs), "--set", "data.num_workers=0", "--set", "optim.lr=1e-3",
                    "--set", "optim.warmup_epochs=1", "--set", f"optim.milestones=[{int(args.epochs * 0.8)}]")
        if not (run / "export" / "model.onnx").exists():
            fogreid("export", "--checkpoint", str(run / "last.pt"), "--format", "onnx", "--out", str(run / "export"))
        models[label] = run / "export" / "model.onnx"
    rows = []
    for fog, beta in FOG.items():
        city = out / f"city_{fog}"
        if not (city / "city.json").exists():
            fogreid("synth-video", "--out", str(city), "--cameras", "3", "--vehicles", str(args.vehicles),
                    "--seconds", str(args.seconds), "--fog", str(beta), "--seed", "1")
        info = json.loads((city / "city.json").read_text())
        videos = [str(city / c / "video.mp4") for c in info["cameras"]]
        dets = [str(city / c / "det" / "det.txt") for c in info["cameras"]]
        for label, model in models.items():
            events = city / f"events_{model.parent.parent.name}.jsonl"
            events.unlink(missing_ok=True)
            fogreid("run", "--model", str(model), "--source", *videos, "--detections", *dets, "--events", str(events),
                    "--fps", str(info["fps"]))
            scores = json.loads(fogreid("eval-mtmc", "--city", str(city), "--events", str(events), "--json"))
            rows.append((fog, beta, label, scores))
    print(f"\ngenerated city: 3 cameras, {args.vehicles} unseen vehicles, {args.seconds:g} s at 10 fps, public "
          f"detections; models: edge preset at {args.imgsz} px, {args.epochs} epochs on the generated default")
    print(f"{'fog':<7}{'beta':>5}  {'model':<22}{'IDF1/cam':>9}{'MOTA/cam':>9}{'IDsw/cam':>9}{'cross IDF1':>11}")
    for fog, beta, label, s in rows:
        cams = [v for k, v in s.items() if k.startswith("cam")]
        idf1, mota = (sum(c[key] for c in cams) / len(cams) for key in ("idf1", "mota"))
        print(f"{fog:<7}{beta:>5g}  {label:<22}{idf1:>9.1f}{mota:>9.1f}"
              f"{sum(c['id_switches'] for c in cams):>9}{s['cross-camera']['idf1']:>11.1f}")


if __name__ == "__main__":
    main()

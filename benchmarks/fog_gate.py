"""The fog gate of `fogreid run --defog auto`: what fog density it measures at each fog level,
and what it saves on a clear camera.

    python benchmarks/fog_gate.py [--model runs/demo/export/model.onnx] [--out runs/fog_gate]

1. Density: generated cities (3 cameras, 416x240, the same scattering beta on every camera; 0 is
   clear) at several betas; fog_density of every frame, min / median / max, and the share of
   frames `--defog auto` would defog at the default threshold (one decision per frame, before the
   per-source smoothing, which only removes flicker).
2. Speed: `fogreid run --defog-view frame` on the clear city and on the beta 3.5 city with
   `--defog auto` and `--defog always`, the four runs interleaved for `--rounds` rounds; frames
   per second of the whole run, and whether the events are the same (they must be: the gate
   only chooses the view). Needs model_defog_frame.onnx beside --model (`fogreid export` writes it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def densities(video: Path) -> list[float]:
    import cv2

    from fogreid.runtime.fog_gate import fog_density

    capture, out = cv2.VideoCapture(str(video)), []
    while True:
        ok, frame = capture.read()
        if not ok:
            return out
        out.append(fog_density(frame))


def run(model: str, city: dict, folder: Path, mode: str) -> tuple[float, float, list[tuple]]:
    """(frames per second, cross-camera IDF1, the detections without their id labels) of one run.
    Track and global id numbers depend on which frames of the cameras were batched together (the
    tracker numbers tracks across sources), so the runs are compared by what was found and by the
    scores, not by the labels."""
    folder.mkdir(parents=True, exist_ok=True)
    events = folder / "events.jsonl"
    cmd = [sys.executable, "-m", "fogreid", "run", "--model", model, "--backend", "onnxruntime",
           "--source", *map(str, city["videos"]), "--detections", *map(str, city["det"]),
           "--fps", "10", "--events", str(events), "--overwrite",
           "--save-video", str(folder / "view.mp4"), "--defog-view", "frame", "--defog", mode]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    fps = json.loads(done.stdout.strip().splitlines()[-1])["fps"]
    scores = subprocess.run([sys.executable, "-m", "fogreid", "eval-mtmc", "--city", str(city["root"]), "--events",
                             str(events), "--json"], capture_output=True, text=True, check=True)
    found = sorted((e["source"], e["frame"], tuple(e["box"])) for e in map(json.loads, events.open())
                   if e["event"] == "detection")
    return fps, json.loads(scores.stdout)["cross-camera"]["idf1"], found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/demo/export/model.onnx")
    parser.add_argument("--out", default="runs/fog_gate")
    parser.add_argument("--fog", type=float, nargs="+", default=[0.0, 0.5, 1.0, 2.0, 3.5])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    from fogreid.data.synth_video import CityConfig, make_city
    from fogreid.runtime.fog_gate import DEFAULT_THRESHOLD

    out = Path(args.out)
    cities = {}
    print(f"{'beta':>5}  {'density min':>11} {'median':>7} {'max':>6}  defogged at {DEFAULT_THRESHOLD:g}")
    for beta in args.fog:
        cfg = CityConfig(cameras=3, vehicles=6, seconds=8.0, fog=(beta,), seed=1)
        cities[beta] = make_city(out / f"city_beta{beta:g}", cfg)
        d = np.array([x for video in cities[beta]["videos"] for x in densities(video)])
        print(f"{beta:>5g}  {d.min():>11.3f} {np.median(d):>7.3f} {d.max():>6.3f}  "
              f"{(d >= DEFAULT_THRESHOLD).mean():>6.0%} of {len(d)} frames")

    cases = [(beta, mode) for beta in (min(args.fog), max(args.fog)) for mode in ("auto", "always")]
    fps, idf1, found = {case: [] for case in cases}, {case: [] for case in cases}, {}
    for _ in range(args.rounds):   # interleaved: each round runs every case once
        for beta, mode in cases:
            rate, score, found[beta, mode] = run(args.model, cities[beta], out / f"run_beta{beta:g}_{mode}", mode)
            fps[beta, mode].append(rate)
            idf1[beta, mode].append(score)
    print(f"\nfogreid run --defog-view frame, {args.model}, 3 cameras 416x240, {args.rounds} interleaved rounds "
          f"({time.strftime('%Y-%m-%d %H:%M')})")
    print(f"{'beta':>5}  {'--defog':<8}{'fps (runs)':>24}  {'cross-camera IDF1 (runs)':>26}  detections as always")
    for beta, mode in cases:
        runs = " ".join(f"{r:.1f}" for r in fps[beta, mode])
        scores = " ".join(f"{r:.1f}" for r in idf1[beta, mode])
        same = found[beta, mode] == found[beta, "always"]
        print(f"{beta:>5g}  {mode:<8}{statistics.fmean(fps[beta, mode]):>10.1f} ({runs:>11})  {scores:>26}  {same}")
    for beta in (min(args.fog), max(args.fog)):
        ratio = statistics.fmean(fps[beta, "auto"]) / statistics.fmean(fps[beta, "always"])
        print(f"beta {beta:g}: auto / always = {ratio:.2f}x")


if __name__ == "__main__":
    main()

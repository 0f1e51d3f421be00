"""The demo's stream step: a generated multi-camera city through `fogreid run`'s own path.

Public detections -> ByteTrack per camera -> track-level ReID -> one global id across cameras,
with the whole-frame defog view where the model has a defog head: the `fogreid run` command a
user would type, in its own process. The joint model runs, and beside it a ReID-only model
trained the same way, on the same frames; `fogreid eval-mtmc` (motmetrics) scores both against
the city's ground truth. The cameras range from clear to dense fog, so the fog gate
(`--defog auto`) leaves the clear camera's view as it is and defogs the others.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from fogreid.data.synth_video import CityConfig


def city_config(quick: bool, seed: int = 0) -> CityConfig:
    """Three 640x480 cameras at 10 fps: clear, light and dense fog."""
    return CityConfig(cameras=3, vehicles=6 if quick else 8, seconds=8.0 if quick else 14.0, fps=10.0,
                      height=480, width=640, fog=(0.0, 1.5, 3.5), seed=seed)


def run_city(folder: Path, config: CityConfig, models: dict[str, Path]) -> dict:
    """Generates the city under `folder` and runs each model (name -> exported ONNX) through it.
    Returns the city's settings and, per model, the run's figures, its scores and its videos."""
    from fogreid.data.synth_video import make_city
    from fogreid.errors import FogreidError
    from fogreid.mtmc import evaluate_city
    from fogreid.runtime.frame_defog import FRAME_GRAPH
    from fogreid.runtime.pipeline import saved_video_paths

    city = make_city(folder / "city", config)
    videos, dets = [str(v) for v in city["videos"]], [str(d) for d in city["det"]]
    results = {}
    for name, model in models.items():
        out = folder / name
        out.mkdir(parents=True, exist_ok=True)
        view = ["--defog-view", "frame"] if (model.parent / FRAME_GRAPH).is_file() else []
        argv = ["run", "--model", str(model), "--source", *videos, "--detections", *dets, "--fps", f"{config.fps:g}",
                "--events", str(out / "events.jsonl"), "--save-video", str(out / "view.mp4"), "--overwrite",
                "--embed-defogged", "auto", *view]
        # The command a user would type, in its own process: its progress goes to this stderr.
        done = subprocess.run([sys.executable, "-m", "fogreid", *argv], stdout=subprocess.PIPE, text=True)
        if done.returncode != 0:
            raise FogreidError(f"the demo's `fogreid {' '.join(argv)}` failed (exit {done.returncode}); "
                               f"its message is above")
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        scores = evaluate_city(city["root"], out / "events.jsonl")
        cams = [v for k, v in scores.items() if k.startswith("cam")]
        print(f"[stream] {name}: {figures['frames']} frames at {figures['fps']:.1f} fps; cross-camera IDF1 "
              f"{scores['cross-camera']['idf1']:.1f}, per camera IDF1 "
              f"{sum(c['idf1'] for c in cams) / len(cams):.1f}")
        results[name] = {"model": str(model), "figures": figures, "scores": scores, "defog_view": bool(view),
                         "videos": [str(p) for p in saved_video_paths(out / "view.mp4", videos)],
                         "events": str(out / "events.jsonl")}
    return {"city": str(city["root"]), "cameras": [f"cam{c}" for c in range(config.cameras)],
            "fog": [config.fog[c % len(config.fog)] for c in range(config.cameras)], "vehicles": config.vehicles,
            "frames": int(round(config.seconds * config.fps)), "models": results}

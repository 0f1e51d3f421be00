"""Whole-frame defog speed: frames/s of defog-frame graphs (model_defog_frame.onnx from
`fogreid export --format onnx`) on this machine's CPU, one frame per call, at camera sizes,
through the engines `fogreid run --defog-view frame` opens (`--engines`: ONNX Runtime, and
OpenVINO compiled for each frame size). Several graphs (e.g. exported with different
`--frame-downscale`), engines and sizes are measured in turn, `--rounds` times, so that load
from other processes spreads over all of them.

    python benchmarks/defog_frame_speed.py --model EXPORT/model_defog_frame.onnx [MORE.onnx ...]
        [--engines onnxruntime openvino]
"""

from __future__ import annotations

import argparse
import os

SIZES = ((480, 640), (720, 1280))  # (H, W)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, nargs="+", help="defog-frame ONNX graphs")
    parser.add_argument("--seconds", type=float, default=5.0, help="per graph, size and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--engines", nargs="+", default=["onnxruntime"], choices=["onnxruntime", "openvino"])
    args = parser.parse_args()

    import numpy as np

    from fogreid.runtime.bench import measure
    from fogreid.runtime.frame_defog import FrameDefogger

    graphs = {(path, engine): FrameDefogger(path, "cpu", engine) for path in args.model for engine in args.engines}
    rng = np.random.default_rng(0)
    frames = {s: rng.integers(0, 256, (*s, 3), dtype=np.uint8) for s in SIZES}
    results: dict = {(g, s): [] for g in graphs for s in SIZES}
    for _ in range(args.rounds):
        for graph, defog in graphs.items():
            for size in SIZES:
                results[graph, size].append(measure(lambda f, d=defog: d(f[0]), frames[size][None], args.seconds))
    load = os.getloadavg()[0]
    print(f"\nWhole-frame defog, CPU ({os.cpu_count()} cores, load average {load:.1f} at the end), "
          f"batch 1, {args.rounds} interleaved rounds\n")
    print("| graph | engine | network at | frame | frames/s (per round) | median ms | p95 ms |")
    print("|---|---|---|---|---|---|---|")
    for ((path, engine), (h, w)), timings in results.items():
        fps = " / ".join(f"{t.images_per_s:.1f}" for t in timings)
        print(f"| {path} | {engine} | 1/{graphs[path, engine].downscale} | {w}x{h} | {fps} | "
              f"{np.median([t.p50_ms for t in timings]):.1f} | {max(t.p95_ms for t in timings):.1f} |")


if __name__ == "__main__":
    main()

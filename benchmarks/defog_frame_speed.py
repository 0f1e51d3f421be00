"""Whole-frame defog speed: frames/s of defog-frame graphs (model_defog_frame.onnx from
`fogreid export --format onnx`) in ONNX Runtime on this machine's CPU, one frame per call,
at camera sizes, through the session `fogreid run --defog-view frame` opens. Several graphs
(e.g. exported with different `--frame-downscale`) and the sizes are measured in turn,
`--rounds` times, so that load from other processes spreads over all of them.

    python benchmarks/defog_frame_speed.py --model EXPORT/model_defog_frame.onnx [MORE.onnx ...]
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
    args = parser.parse_args()

    import numpy as np

    from fogreid.runtime.bench import measure
    from fogreid.runtime.frame_defog import FrameDefogger

    graphs = {path: FrameDefogger(path, "cpu") for path in args.model}
    rng = np.random.default_rng(0)
    frames = {s: rng.integers(0, 256, (*s, 3), dtype=np.uint8) for s in SIZES}
    results: dict = {(g, s): [] for g in graphs for s in SIZES}
    for _ in range(args.rounds):
        for path, defog in graphs.items():
            for size in SIZES:
                results[path, size].append(measure(lambda f, d=defog: d(f[0]), frames[size][None], args.seconds))
    load = os.getloadavg()[0]
    print(f"\nWhole-frame defog, ONNX Runtime CPU ({os.cpu_count()} cores, load average {load:.1f} at the end), "
          f"batch 1, {args.rounds} interleaved rounds\n")
    print("| graph | network at | frame | frames/s (per round) | median ms | p95 ms |")
    print("|---|---|---|---|---|---|")
    for (path, (h, w)), timings in results.items():
        fps = " / ".join(f"{t.images_per_s:.1f}" for t in timings)
        print(f"| {path} | 1/{graphs[path].downscale} | {w}x{h} | {fps} | {np.median([t.p50_ms for t in timings]):.1f} "
              f"| {max(t.p95_ms for t in timings):.1f} |")


if __name__ == "__main__":
    main()

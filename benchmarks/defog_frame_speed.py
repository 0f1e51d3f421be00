"""Whole-frame defog speed: frames/s of the defog-frame graph (model_defog_frame.onnx from
`fogreid export --format onnx`) in ONNX Runtime on this machine's CPU, one frame per call,
at camera sizes. The sizes are interleaved (each measured in turn, `--rounds` times) so that
load from other processes spreads over all of them.

    python benchmarks/defog_frame_speed.py --model EXPORT/model_defog_frame.onnx [--threads 2]
"""

from __future__ import annotations

import argparse

SIZES = ((480, 640), (720, 1280))  # (H, W)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a defog-frame ONNX graph")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads (default 2)")
    parser.add_argument("--seconds", type=float, default=5.0, help="per size and round")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    import numpy as np
    import onnxruntime as ort

    from fogreid.runtime.bench import measure

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    frames = {s: rng.integers(0, 256, (1, *s, 3), dtype=np.uint8) for s in SIZES}
    results: dict = {s: [] for s in SIZES}
    for _ in range(args.rounds):
        for size in SIZES:
            results[size].append(measure(lambda f: session.run(None, {"frames": f}), frames[size], args.seconds))
    print(f"\nWhole-frame defog, ONNX Runtime CPU, {args.threads} threads, batch 1 "
          f"({args.rounds} interleaved rounds)\n")
    print("| frame     | frames/s (per round)  | median ms | p95 ms |")
    print("|-----------|-----------------------|-----------|--------|")
    for (h, w), timings in results.items():
        fps = " / ".join(f"{t.images_per_s:.1f}" for t in timings)
        name = f"{w}x{h}"
        print(f"| {name:<9} | {fps:<21} | {np.median([t.p50_ms for t in timings]):>9.1f} "
              f"| {max(t.p95_ms for t in timings):>6.1f} |")


if __name__ == "__main__":
    main()

"""Several ONNX files of one model on one CPU engine, rounds interleaved: an export before and after
a change, FP32 against INT8.

    python benchmarks/onnx_files.py --engine onnxruntime [--batch 8] [--rounds 6] [--seconds 3]
                                    [--embedding-only] LABEL=FILE [LABEL=FILE ...]

Every file is loaded as fogreid runs it (`load_deployed(FILE, ENGINE, "cpu", batch=B)`; with
`--embedding-only` cut down to its embedding, as `fogreid run` loads its ReID model when it shows no
defogged crops), all in this one process, so run one engine per call: two engines' thread pools in
one process slow each other. Each round times every file for --seconds in turn, starting one file
later than the round before, so a busy spell of a shared machine hits every file alike. Printed:
img/s (the median over rounds of each round's median call) and each file's ratio to the first one
(paired by round: the median over rounds of the first file's time over this file's).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", metavar="LABEL=FILE")
    parser.add_argument("--engine", required=True, choices=("onnxruntime", "openvino"))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--embedding-only", action="store_true")
    args = parser.parse_args()
    pairs = [item.partition("=")[::2] for item in args.files]
    for label, path in pairs:
        if not label or not Path(path).is_file():
            print(f"onnx_files.py: {label}={path}: give LABEL=FILE with an existing ONNX file", file=sys.stderr)
            sys.exit(2)

    from fogreid.runtime.backends import load_deployed
    from fogreid.runtime.bench import measure

    models = [load_deployed(path, args.engine, "cpu", batch=args.batch, embedding_only=args.embedding_only)
              for _, path in pairs]
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (args.batch, *m.imgsz, 3), dtype=np.uint8) for m in models]
    for model, batch in zip(models, frames, strict=True):
        measure(model, batch, 0.0, warmup=2, min_calls=1)
    ms = np.zeros((args.rounds, len(models)))
    for r in range(args.rounds):
        for k in range(len(models)):
            i = (r + k) % len(models)
            ms[r, i] = measure(models[i], frames[i], args.seconds, warmup=1).p50_ms
    print(f"{args.engine}, batch {args.batch}{', embedding only' if args.embedding_only else ''}, "
          f"{args.rounds} interleaved rounds of {args.seconds:g} s per file")
    print(f"| file | img/s | vs {pairs[0][0]} |\n|---|---|---|")
    for i, (label, _) in enumerate(pairs):
        print(f"| {label} | {args.batch * 1000 / np.median(ms[:, i]):.1f} | {np.median(ms[:, 0] / ms[:, i]):.2f}x |")
    for model in models:
        model.close()


if __name__ == "__main__":
    main()

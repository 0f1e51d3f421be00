"""`fogreid bench`: throughput and latency of a model at several batch sizes."""

from __future__ import annotations

import argparse


def add_parser(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("bench", help="throughput and latency of a model at several batch sizes")
    p.add_argument("--model", required=True)
    p.add_argument("--batch", default="1,8,32", help="comma list of batch sizes")
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "onnxruntime", "tensorrt"])
    p.add_argument("--device", default="auto")
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--warmup", type=int, default=3)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from fogreid.runtime.backends import load_model
    from fogreid.runtime.bench import measure

    batches = [int(b) for b in args.batch.split(",")]
    with load_model(args.model, args.backend, args.device) as model:
        h, w = model.input_size
        print(f"{model.name}, input {h}x{w}")
        print(f"{'batch':>6}{'img/s':>10}{'ms/batch p50':>14}{'p95':>8}")
        rng = np.random.default_rng(0)
        for batch in batches:
            timing = measure(model, rng.integers(0, 256, (batch, h, w, 3), dtype=np.uint8), args.seconds, args.warmup)
            print(f"{batch:>6}{timing.images_per_s:>10.1f}{timing.p50_ms:>14.2f}{timing.p95_ms:>8.2f}")
    return 0

"""`fogreid bench`: throughput and latency of a model at several batch sizes."""

from __future__ import annotations

import argparse

from fogreid.cli.common import add_backend_options, float_in, input_file, int_in, int_list


def add_parser(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("bench", help="throughput and latency of a model at several batch sizes")
    p.add_argument("--model", required=True, help="a checkpoint (.pt), ONNX file or TensorRT engine")
    p.add_argument("--batch", default="1,8,32", type=int_list, help="comma list of batch sizes")
    add_backend_options(p)
    p.add_argument("--seconds", type=float_in(0, 3600, low_open=True), default=3.0, help="timed seconds per batch size")
    p.add_argument("--warmup", type=int_in(0, 100_000), default=3, help="untimed runs before timing")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    input_file(args.model, "--model", "model", "model")

    import numpy as np

    from fogreid.runtime.backends import load_deployed
    from fogreid.runtime.bench import measure

    batches = args.batch if isinstance(args.batch, list) else int_list(args.batch)
    # One load per batch size for an .onnx on `--backend auto`, which measures which CPU engine is
    # faster at the batch it is told (fogreid.runtime.auto_engine), each batch on its own choice,
    # and on `--backend openvino`, which compiles the file for that batch (OpenVinoRunner).
    per_batch = args.backend in ("auto", "openvino") and str(args.model).lower().endswith(".onnx")
    rng = np.random.default_rng(0)
    for i, group in enumerate([[b] for b in batches] if per_batch else [batches]):
        with load_deployed(args.model, args.backend, args.device, batch=group[0]) as model:
            h, w = model.imgsz
            if i == 0:
                print(f"{model.name}, input {h}x{w}")
                print(f"{'batch':>6}{'img/s':>10}{'ms/batch p50':>14}{'p95':>8}  engine")
            for batch in group:
                frames = rng.integers(0, 256, (batch, h, w, 3), dtype=np.uint8)
                timing = measure(model, frames, args.seconds, args.warmup)
                print(f"{batch:>6}{timing.images_per_s:>10.1f}{timing.p50_ms:>14.2f}{timing.p95_ms:>8.2f}  "
                      f"{model.name.split(':')[0]}", flush=True)
    return 0

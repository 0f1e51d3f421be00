"""Throughput of the exported graph on this CPU, in one run on the same inputs:
PyTorch eager, ONNX Runtime FP32 and ONNX Runtime INT8 (Q/DQ), at batch 1 and 8.

    python benchmarks/export_speed.py [--preset edge] [--imgsz 128] [--seconds 5] [--checkpoint CKPT]

Targets: ORT FP32 >= 1.5x PyTorch eager; ORT INT8 >= 1.3x ORT FP32 at batch 8.
The backends take turns (--rounds short slices each), so all of them see the same machine
noise. Without --checkpoint it uses a fresh model whose BatchNorm statistics come from foggy
images and generated calibration images; a trained checkpoint may keep layers in float
under the default INT8 budget, which changes the INT8 speed (--int8-budget 0: all INT8).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np

from fogreid.calibration.defaults import DEFAULT_BUDGET


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="edge", choices=["edge", "paper"])
    parser.add_argument("--imgsz", type=int, default=128)
    parser.add_argument("--checkpoint")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--rounds", type=int, default=5, help="interleaved slices per backend and batch")
    parser.add_argument("--int8-budget", type=float, default=DEFAULT_BUDGET,
                        help="as fogreid export's (0: every layer INT8)")
    args = parser.parse_args()

    import onnxruntime as ort
    import torch

    from fogreid.calibration.images import build_calibration_set
    from fogreid.data.synth import SynthConfig, generate
    from fogreid.export.exporter import ExportOptions, export
    from fogreid.export.formats import parse_formats
    from fogreid.model.build import build_model
    from fogreid.model.checkpoint import save_checkpoint
    from fogreid.model.config import preset
    from fogreid.model.fused import FusedDefogReID
    from fogreid.pixels import frames_to_images
    from fogreid.runtime.bench import measure

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="fogreid-bench-"))
    size = (args.imgsz, args.imgsz)
    generate(work / "data", SynthConfig(ids=24, cams=3, imgsz=args.imgsz), progress=False)
    calib_dirs = [str(work / "data" / "FVRID_syn" / "train_foggy"), str(work / "data" / "FVRID_real" / "train_foggy")]
    frames = build_calibration_set(calib_dirs, size, num=8, progress=False).images
    checkpoint = args.checkpoint
    if checkpoint is None:
        net = build_model(preset(args.preset, imgsz=size)).train()
        with torch.no_grad():
            net(frames_to_images(torch.from_numpy(build_calibration_set(calib_dirs, size, 64, progress=False).images)))
        checkpoint = work / "model.pt"
        save_checkpoint(checkpoint, net.eval())
    result = export(checkpoint, parse_formats("onnx,onnx-int8"), work / "export",
                    ExportOptions(imgsz=size, calib_images=calib_dirs, calib_num=128,
                                  int8_budget=args.int8_budget or None, progress=False))
    model = FusedDefogReID.from_checkpoint(checkpoint, imgsz=size)

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    sessions = {name: ort.InferenceSession(str(result.files[name]), options, providers=["CPUExecutionProvider"])
                for name in ("onnx", "onnx-int8")}

    def torch_run(batch):
        with torch.inference_mode():
            model(torch.from_numpy(batch))

    runners = {"PyTorch eager FP32": torch_run,
               "ONNX Runtime FP32": lambda b: sessions["onnx"].run(None, {"frames": b}),
               "ONNX Runtime INT8 (Q/DQ)": lambda b: sessions["onnx-int8"].run(None, {"frames": b})}
    # Interleaved: round r runs every backend once per batch size, so slow spells of a shared
    # machine hit all of them alike; the per-call times of all rounds are pooled.
    times: dict[str, dict[int, list[float]]] = {name: {1: [], 8: []} for name in runners}
    for run in runners.values():
        for b in (1, 8):
            measure(run, np.ascontiguousarray(frames[:b]), 0.0, warmup=2, min_calls=1)
    for _ in range(args.rounds):
        for name, run in runners.items():
            for b in (1, 8):
                timing = measure(run, np.ascontiguousarray(frames[:b]), args.seconds / args.rounds, warmup=0)
                times[name][b].append(timing.p50_ms)
    rows = {name: {b: (b * 1000 / float(np.median(t)), float(np.median(t))) for b, t in per.items()}
            for name, per in times.items()}
    print(f"\n{args.preset} preset at {size[0]}x{size[1]}, {args.threads} threads "
          f"({os.uname().machine}), defogged image + embedding per call")
    print(f"{'backend':<28}{'img/s b=1':>11}{'ms b=1':>9}{'img/s b=8':>11}{'ms b=8':>9}{'vs eager b=8':>14}")
    eager = rows["PyTorch eager FP32"][8][0]
    for name, r in rows.items():
        print(f"{name:<28}{r[1][0]:>11.1f}{r[1][1]:>9.2f}{r[8][0]:>11.1f}{r[8][1]:>9.2f}{r[8][0] / eager:>13.2f}x")
    fp32, int8 = rows["ONNX Runtime FP32"], rows["ONNX Runtime INT8 (Q/DQ)"]
    for b in (1, 8):
        print(f"batch {b}: ORT FP32 / eager = {fp32[b][0] / rows['PyTorch eager FP32'][b][0]:.2f}x (target 1.5x), "
              f"ORT INT8 / ORT FP32 = {int8[b][0] / fp32[b][0]:.2f}x" + (" (target 1.3x)" if b == 8 else ""))


if __name__ == "__main__":
    main()

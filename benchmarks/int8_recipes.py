"""INT8 recipes side by side, each file read by every engine that runs here:

  fogreid      `fogreid export`'s Q/DQ model: FP32 outside the quantised layers, the INT8
               budget's float layers, nothing quantised after a ReduceMax
  modelopt     NVIDIA Model Optimizer's ONNX PTQ (`python -m modelopt.onnx.quantization`,
               int8, max calibration on the same frames) on the FP16 graph, the way NVIDIA
               places Q/DQ for TensorRT (high_precision_dtype fp16)
  modelopt32   the same placement on the FP32 graph (high_precision_dtype fp32)
  modelopt-fp  ModelOpt on the FP16 graph, told to leave in float what fogreid's recipe does
               (the INT8 budget's layers, the first conv, the layers after a ReduceMax)

    python benchmarks/int8_recipes.py --checkpoint runs/demo/train/best.pt --data runs/demo/data \\
        [--modelopt-python .venv-modelopt/bin/python]

ModelOpt's `[onnx]` extra pins onnx 1.21 and onnxruntime-gpu 1.24 (REFERENCE.md §11): it
lives in its own environment (`python3 -m venv .venv-modelopt && .venv-modelopt/bin/pip
install 'nvidia-modelopt[onnx]'`) and runs here as a subprocess; without
--modelopt-python only the fogreid row is measured. Prints one row per (recipe, engine):
embedding cosine against PyTorch (min, 1st percentile), nearest-neighbour agreement, mAP
drop on the synthetic test split, Q/DQ pairs, body layers left in float, and what
`fogreid check` says for TensorRT 10 / 11 and ONNX Runtime.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

import numpy as np


def modelopt_quantize(python: str, fp32: Path, frames: np.ndarray, out: Path, high_precision: str,
                      exclude: list[str] = ()) -> Path:
    import re

    calib = out.parent / "calib_frames.npy"
    np.save(calib, frames)
    command = [python, "-m", "modelopt.onnx.quantization", "--onnx_path", str(fp32), "--quantize_mode", "int8",
               "--calibration_data", str(calib), "--calibration_method", "max", "--calibration_eps", "cpu",
               "--high_precision_dtype", high_precision, "--output_path", str(out)]
    if exclude:   # ModelOpt reads the names as regular expressions
        command += ["--nodes_to_exclude", *(f"^{re.escape(name)}$" for name in exclude)]
    subprocess.run(command, check=True, capture_output=True, text=True)
    return out


def structure(path: Path) -> tuple[int, int]:
    """(activation Q/DQ pairs, quantisable body layers that read no DequantizeLinear)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    producer = {o: n.op_type for n in graph.node for o in n.output}
    inits = {i.name for i in graph.initializer}
    pairs = sum(1 for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits
                and producer.get(n.input[0]) != "Constant")
    body = [n for n in graph.node if n.name.startswith("net.") and n.op_type in ("Conv", "ConvTranspose", "Gemm")]
    floating = sum(1 for n in body if producer.get(n.input[0]) != "DequantizeLinear")
    return pairs, floating


def preflight(path: Path) -> str:
    from fogreid.export.preflight import check_artifact

    report = check_artifact(path, ["trt10", "trt11", "ort-cpu"])
    return "ok" if report.ok else f"{report.to_dict()['errors']} errors"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", required=True, help="the dataset root (its train_foggy folders calibrate)")
    parser.add_argument("--modelopt-python", help="python of an environment with nvidia-modelopt[onnx]")
    parser.add_argument("--calib-num", type=int, default=256)
    args = parser.parse_args()

    from fogreid.calibration.images import build_calibration_set
    from fogreid.export.exporter import ExportOptions, export
    from fogreid.export.formats import parse_formats
    from fogreid.validate.compare import validate_many

    work = Path(tempfile.mkdtemp(prefix="fogreid-int8-recipes-"))
    data = Path(args.data)
    calib_dirs = [str(data / "FVRID_syn" / "train_foggy"), str(data / "FVRID_real" / "train_foggy")]
    exported = export(args.checkpoint, parse_formats("onnx,onnx-int8"), work / "fogreid",
                      ExportOptions(calib_images=calib_dirs, calib_num=args.calib_num, data_root=str(data)))
    recipes = {"fogreid": exported.files["onnx-int8"]}
    if args.modelopt_python:
        import onnx

        size = tuple(d.dim_value for d in onnx.load(str(exported.files["onnx"]), load_external_data=False)
                     .graph.input[0].type.tensor_type.shape.dim[1:3])
        frames = build_calibration_set(calib_dirs, size, num=args.calib_num, progress=False).images
        import json

        from fogreid.calibration.qdq import reads_reduce_max

        proto = onnx.load(str(exported.files["onnx"]), load_external_data=False)
        first_conv = next(n.name for n in proto.graph.node if n.name.startswith("net.") and n.op_type == "Conv")
        kept = json.loads(exported.manifest.read_text())["calibration"]["keep_fp"]
        fogreid_float = [*kept, first_conv, *sorted(reads_reduce_max(proto))]
        for name, precision, exclude in (("modelopt", "fp16", []), ("modelopt32", "fp32", []),
                                         ("modelopt-fp", "fp16", fogreid_float)):
            (work / name).mkdir()
            recipes[name] = modelopt_quantize(args.modelopt_python, exported.files["onnx"], frames,
                                              work / name / "model_int8.onnx", precision, exclude)
    header = f"{'recipe':<11} {'engine':<12} {'cos min':>8} {'cos p1':>8} {'NN agree':>9} {'mAP drop':>9} " \
             f"{'Q/DQ':>5} {'float convs':>12}  pre-flight (trt10, trt11, ort-cpu)"
    print(header)
    print("-" * len(header))
    for name, path in recipes.items():
        pairs, floating = structure(path)
        check = preflight(path)
        results = validate_many(args.checkpoint, [(path, "onnxruntime"), (path, "openvino")], data_root=str(data),
                                precision="int8")
        for result in results:
            f = result.figures
            print(f"{name:<11} {result.backend:<12} {f['cosine_min']:>8.4f} {f['cosine_p1']:>8.4f} "
                  f"{f['nn_agreement']:>9.3f} {f['map_drop']:>+9.2f} {pairs:>5} {floating:>12}  {check}")


if __name__ == "__main__":
    main()

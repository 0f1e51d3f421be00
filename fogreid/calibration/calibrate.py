"""`fogreid calibrate`: from an FP32 fused ONNX and folders of foggy images to
  MODEL_int8.onnx     Q/DQ INT8 (explicit quantisation: TensorRT >= 10, ONNX Runtime)
  calibration.cache   TensorRT's own cache format (implicit INT8: TensorRT 10.x, DLA, trtexec --calib)
  calibration.json    what was calibrated on, with which method, and the fog-density spread
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fogreid.calibration.images import build_calibration_set
from fogreid.calibration.qdq import quantize_qdq
from fogreid.calibration.ranges import compute_ranges
from fogreid.calibration.trt_cache import DEFAULT_TRT_VERSION, scales_from_ranges, write_cache
from fogreid import onnx_graph
from fogreid.errors import FogreidError
from fogreid.fileio import atomic_write, sha256_file


@dataclass
class CalibrationResult:
    qdq_onnx: Path
    cache: Path
    report: dict


def calibrate(onnx_path: str | Path, image_folders: list[str | Path], out: str | Path, method: str = "minmax",
              num: int = 512, data_root: str | Path | None = None, keep_fp: list[str] = (),
              trt_version: tuple[int, int, int] = DEFAULT_TRT_VERSION, num_bins: int = 2048, seed: int = 0,
              progress: bool = True) -> CalibrationResult:
    onnx_path, out = Path(onnx_path), Path(out)
    proto = onnx_graph.load(onnx_path)
    size = onnx_graph.input_size(proto, onnx_path)
    precision = {p.key: p.value for p in proto.metadata_props}.get("precision", "fp32")
    if precision != "fp32" or any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in proto.graph.node):
        raise FogreidError(f"--onnx {onnx_path}: this model is already {precision.upper()}; calibrate the FP32 "
                           f"model.onnx that `fogreid export` wrote beside it")
    calib = build_calibration_set(image_folders, size, num=num, data_root=data_root, seed=seed, progress=progress)
    if progress:
        print(f"calibrating on {len(calib.images)} images ({method}); fog density "
              f"{calib.densities.min():.2f}-{calib.densities.max():.2f}")
    ranges = compute_ranges(onnx_path, calib, method, num_bins=num_bins)

    metadata = {p.key: p.value for p in proto.metadata_props}
    metadata.update(precision="int8", calibration_method=method, calibration_images=str(len(calib.images)))
    qdq_path = quantize_qdq(onnx_path, out / f"{onnx_path.stem}_int8.onnx", ranges, method, keep_fp, metadata)
    cache = write_cache(out / "calibration.cache", scales_from_ranges(ranges, onnx_graph.float_tensor_names(proto)),
                        trt_version)
    counts, edges = np.histogram(calib.densities, bins=4)
    report = {"onnx": onnx_path.name, "onnx_sha256": sha256_file(onnx_path), "method": method,
              "images": len(calib.images), "folders": [str(f) for f in image_folders],
              "fog_density_histogram": {"edges": [round(float(e), 3) for e in edges], "counts": counts.tolist()},
              "keep_fp": list(keep_fp), "tensorrt_cache_version": ".".join(map(str, trt_version)),
              "outputs": {"qdq_onnx": qdq_path.name, "tensorrt_cache": cache.name}}
    with atomic_write(out / "calibration.json", "w") as handle:
        json.dump(report, handle, indent=2)
    return CalibrationResult(qdq_path, cache, report)

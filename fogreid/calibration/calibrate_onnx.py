"""`fogreid calibrate`: from an FP32 fused ONNX and folders of foggy images to
  MODEL_int8.onnx     Q/DQ INT8 (explicit quantisation: TensorRT >= 10, ONNX Runtime)
  calibration.cache   TensorRT's own cache format (implicit INT8: TensorRT 10.x, DLA, trtexec --calib)
  calibration.json    what was calibrated on, with which method, and the fog-density spread

With an INT8 budget (the default, cosine 0.995), layers are kept in float, most sensitive
first, until the embedding of the Q/DQ model holds that cosine (1st percentile) against the
FP32 graph on held-out calibration frames: `fogreid.calibration.per_layer.choose_float_layers`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fogreid import onnx_graph
from fogreid.calibration.defaults import DEFAULT_BUDGET, DEFAULT_IMAGES, DEFAULT_METHOD  # noqa: F401
from fogreid.calibration.images import build_calibration_set
from fogreid.calibration.qdq import quantize_qdq
from fogreid.calibration.ranges import compute_ranges
from fogreid.calibration.trt_cache import scales_from_qdq, write_cache
from fogreid.errors import FogreidError
from fogreid.fileio import atomic_write, sha256_file
from fogreid.tensorrt_version import DEFAULT_TRT_VERSION

# The defaults live in fogreid/calibration/defaults.py. Why minmax (DEFAULT_METHOD): entropy
# (KL) and percentile clip the rare large activations, and on a trained
# ReID model those carry identity: on the demo's checkpoint entropy collapses the embedding
# and percentile 99.99 drops its cosine p1 from 0.91 to 0.79 (README, INT8 section).
METHOD_WHY = {"minmax": "keeps every activation's full range: clipping (entropy, percentile) costs ReID "
                        "embeddings most",
              "entropy": "TensorRT's EntropyCalibration2 criterion (KL); clips outliers, which a ReID embedding "
                         "may need",
              "percentile": "clips the top 0.01% of each tensor's values"}
# Calibration images: on the demo-trained checkpoint with the budget's float layers, MinMax
# ranges from 64, 128, 256 and 512 images gave test cosine p1 0.986, 0.986, 0.984, 0.983
# (min 0.982-0.972): flat, since MinMax ranges only widen with more images. 256 keeps four
# times the smallest count that already holds, 64 per fog-density bin, at half 512's cost:
# DEFAULT_IMAGES. DEFAULT_BUDGET: the embedding cosine p1 vs FP32 the INT8 model holds.
HOLDOUT = 64                 # calibration frames kept out of the ranges, to measure the budget on


@dataclass
class CalibrationResult:
    qdq_onnx: Path
    cache: Path
    report: dict


def calibrate(onnx_path: str | Path, image_folders: list[str | Path], out: str | Path, method: str = DEFAULT_METHOD,
              num: int = DEFAULT_IMAGES, data_root: str | Path | None = None, keep_fp: list[str] = (),
              trt_version: tuple[int, int, int] = DEFAULT_TRT_VERSION, num_bins: int = 2048, seed: int = 0,
              progress: bool = True, budget: float | None = DEFAULT_BUDGET) -> CalibrationResult:
    onnx_path, out = Path(onnx_path), Path(out)
    proto = onnx_graph.load(onnx_path)
    onnx_graph.check_reid_io(proto, onnx_path)   # frames uint8 in, defogged and embedding out
    size = onnx_graph.imgsz(proto, onnx_path)
    precision = {p.key: p.value for p in proto.metadata_props}.get("precision", "fp32")
    if precision != "fp32" or any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in proto.graph.node):
        raise FogreidError(f"--onnx {onnx_path}: this model is already {precision.upper()}; calibrate the FP32 "
                           f"model.onnx that `fogreid export` wrote beside it")
    holdout = HOLDOUT if budget else 0
    calib = build_calibration_set(image_folders, size, num=num + holdout, data_root=data_root, seed=seed,
                                  progress=progress)
    # The budget is measured on frames the ranges never saw (the set is shuffled).
    held_out = calib.images[len(calib.images) - holdout:] if holdout and len(calib.images) > 2 * holdout else None
    if held_out is not None:
        calib.images, calib.densities = calib.images[:-holdout], calib.densities[:-holdout]
        calib.sources = calib.sources[:-holdout]
    if progress:
        print(f"calibrating on {len(calib.images)} images: {method} ({METHOD_WHY.get(method, '')}); fog density "
              f"{calib.densities.min():.2f}-{calib.densities.max():.2f}")
    ranges = compute_ranges(onnx_path, calib, method, num_bins=num_bins)

    chosen = None
    if budget:
        from fogreid.calibration.per_layer import choose_float_layers

        frames = held_out if held_out is not None else calib.images
        chosen = choose_float_layers(onnx_path, ranges, method, frames, budget, list(keep_fp), progress)
        keep_fp = chosen.keep_fp
        if progress:
            print(f"INT8 budget: embedding cosine p1 {chosen.all_int8_cosine_p1:.4f} with every layer INT8, "
                  f"{chosen.cosine_p1:.4f} with {len(keep_fp)} of {chosen.body_layers} layers in float "
                  f"(budget {budget:g}, {chosen.frames} held-out calibration frames)"
                  + ("" if chosen.met else ": NOT met even with every layer in float"))

    metadata = {p.key: p.value for p in proto.metadata_props}
    metadata.update(precision="int8", calibration_method=method, calibration_images=str(len(calib.images)))
    if chosen:
        metadata.update(chosen.metadata())
    qdq_path = quantize_qdq(onnx_path, out / f"{onnx_path.stem}_int8.onnx", ranges, method, keep_fp, metadata)
    # The cache mirrors the written Q/DQ model (its quantised tensors, its scales): trt_cache.scales_from_qdq.
    cache = write_cache(out / "calibration.cache", scales_from_qdq(onnx_graph.load(qdq_path)), trt_version)
    counts, edges = np.histogram(calib.densities, bins=4)
    report = {"onnx": onnx_path.name, "onnx_sha256": sha256_file(onnx_path), "method": method,
              "images": len(calib.images), "folders": [str(f) for f in image_folders],
              "fog_density_histogram": {"edges": [round(float(e), 3) for e in edges], "counts": counts.tolist()},
              "keep_fp": list(keep_fp), "method_why": METHOD_WHY.get(method, ""),
              "int8_budget": None if chosen is None else {
                  "cosine_p1": budget, "reached": round(chosen.cosine_p1, 5),
                  "all_int8_cosine_p1": round(chosen.all_int8_cosine_p1, 5), "held_out_frames": chosen.frames,
                  "float_layers": len(chosen.keep_fp), "body_layers": chosen.body_layers, "steps": chosen.steps},
              "tensorrt_cache_version": ".".join(map(str, trt_version)),
              "outputs": {"qdq_onnx": qdq_path.name, "tensorrt_cache": cache.name}}
    with atomic_write(out / "calibration.json", "w") as handle:
        json.dump(report, handle, indent=2)
    return CalibrationResult(qdq_path, cache, report)

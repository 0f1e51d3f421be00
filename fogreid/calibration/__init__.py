"""INT8 calibration from foggy images: a Q/DQ ONNX model and a TensorRT calibration cache.

    from fogreid.calibration import calibrate

    result = calibrate("deploy/model.onnx", ["foggy/"], "deploy/", method="minmax", num=512)
    result.qdq_onnx, result.cache

Names are imported on first use.
"""

from fogreid._lazy import attach

_NAMES = {
    "calibrate": "calibrate_onnx",
    "CalibrationResult": "calibrate_onnx",
    "build_calibration_set": "images",
    "CalibrationSet": "images",
    "compute_ranges": "ranges",
    "quantize_qdq": "qdq",
    "write_cache": "trt_cache",
    "read_cache": "trt_cache",
    "CalibrationBatches": "trt_calibrator",
    "choose_float_layers": "per_layer",
    "rank_layers": "per_layer",
}

__getattr__, __dir__, __all__ = attach(__name__, _NAMES)

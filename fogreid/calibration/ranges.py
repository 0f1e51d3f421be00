"""Activation ranges of an ONNX graph on the calibration set, with ONNX Runtime's
calibrators. The same ranges feed the Q/DQ model and the TensorRT calibration cache.

Entropy and percentile need a fine histogram: with ONNX Runtime's default of 128 bins
(no more than the 128 levels of an int8 half-range) the entropy search has nothing to
choose from and returns the MinMax range. `num_bins=2048` fixes that.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from fogreid.calibration.images import CalibrationSet
from fogreid.errors import FogreidError

METHODS = ("entropy", "percentile", "minmax")


class FramesReader:
    """onnxruntime.quantization.CalibrationDataReader over uint8 frame batches."""

    def __init__(self, calib: CalibrationSet, batch_size: int = 16) -> None:
        self.calib, self.batch_size = calib, batch_size
        self.rewind()

    def get_next(self):
        batch = next(self._batches, None)
        return None if batch is None else {"frames": batch}

    def rewind(self) -> None:
        self._batches = self.calib.batches(self.batch_size)


def calibration_method(name: str):
    from onnxruntime.quantization import CalibrationMethod

    methods = {"entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile,
               "minmax": CalibrationMethod.MinMax}
    if name not in methods:
        raise FogreidError(f"unknown calibration method {name!r}; choose one of {', '.join(METHODS)}")
    return methods[name]


def compute_ranges(onnx_path: str | Path, calib: CalibrationSet, method: str = "entropy",
                   percentile: float = 99.99, batch_size: int = 16, num_bins: int = 2048):
    """TensorsData: tensor name -> (lowest, highest), symmetric, for every float activation."""
    from onnxruntime.quantization.calibrate import create_calibrator

    extra = {"symmetric": True}
    if method in ("entropy", "percentile"):
        extra.update(num_bins=num_bins, num_quantized_bins=128)
    if method == "percentile":
        extra["percentile"] = percentile
    with tempfile.TemporaryDirectory(prefix="fogreid-calib-") as tmp:
        calibrator = create_calibrator(Path(onnx_path), augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                       calibrate_method=calibration_method(method), extra_options=extra,
                                       providers=["CPUExecutionProvider"])
        calibrator.collect_data(FramesReader(calib, batch_size))
        ranges = calibrator.compute_data()
        del calibrator
    return ranges

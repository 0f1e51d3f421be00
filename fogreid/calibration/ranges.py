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


def absolute_histogram_from_zero(method: str, symmetric: bool, num_bins: int, num_quantized_bins: int,
                                 percentile: float, scenario: str):
    """ONNX Runtime's percentile collector with its first histogram of |x| taken over [0, max |x|].
    Its own takes it over [min |x|, max |x|] (onnxruntime/quantization/calibrate.py,
    HistogramCollector.collect_absolute_value), which numpy refuses to cut into bins when a tensor
    is (nearly) constant, as the detail head's gain is before training: "Too many bins for data
    range". For every tensor that holds a zero, as ReLU outputs do, the two are the same."""
    import numpy as np
    from onnxruntime.quantization.calibrate import HistogramCollector

    class FromZero(HistogramCollector):
        def collect_absolute_value(self, name_to_arr):
            later = {}
            for tensor, arrays in name_to_arr.items():
                if tensor in self.histogram_dict:
                    later[tensor] = arrays
                    continue
                values = np.concatenate([np.ravel(a) for a in (arrays if isinstance(arrays, list) else [arrays])])
                low, high = (np.nanmin(values), np.nanmax(values)) if values.size else (values.dtype.type(0),) * 2
                magnitude = np.absolute(values)
                top = max(float(np.nanmax(magnitude)) if values.size else 0.0, float(np.finfo(np.float32).tiny))
                hist, edges = np.histogram(magnitude, bins=self.num_bins, range=(0.0, top))
                self.histogram_dict[tensor] = (hist, edges.astype(values.dtype), low, high)
            if later:
                super().collect_absolute_value(later)

    return FromZero(method, symmetric, num_bins, num_quantized_bins, percentile, scenario)


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
        if method == "percentile":
            calibrator.collector = absolute_histogram_from_zero("percentile", True, num_bins, 128, percentile,
                                                                calibrator.scenario)
        calibrator.collect_data(FramesReader(calib, batch_size))
        ranges = calibrator.compute_data()
        del calibrator
    return ranges

"""Calibration defaults, stated once: the calibration code, `ExportOptions` and the `export` and
`calibrate` options all read them here. A light module (no ONNX import), so the command line
can show them in `--help`. Why each value: fogreid/calibration/calibrate_onnx.py."""

METHODS = ("minmax", "entropy", "percentile")
DEFAULT_METHOD = "minmax"
DEFAULT_IMAGES = 256
DEFAULT_BUDGET = 0.99        # embedding cosine p1 vs FP32; validation asks 0.98 on the test split

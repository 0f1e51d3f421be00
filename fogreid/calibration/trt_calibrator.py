"""The data loader behind TensorRT's implicit INT8 calibrator (IInt8EntropyCalibrator2).

What TensorRT and Polygraphy expect, from their sources:
- TensorRT calibrates at one shape: the OPT shape of the calibration profile. Polygraphy
  (backend/trt/config.py, `CreateConfig`) sets the *last* profile as calibration profile and
  `util.get_input_metadata_from_network(..., force_opt_shapes=True)` gives the calibrator
  exactly that shape.
- Non-index calibration inputs are float32: Polygraphy >= 0.49.10 overrides a uint8 input's
  dtype to FLOAT32 in the calibrator's metadata (backend/trt/calibrator.py,
  `set_input_metadata`: "TensorRT requires non-index calibration inputs to be provided in
  float32"), and TensorRT casts them to the network input's type. Our input `frames` is
  uint8 pixels, so the batches are the same 0..255 values as float32.
- `get_batch` swallows a shape/dtype mismatch (PolygraphyException) and returns None: the
  calibration then silently ends with zero batches. So every batch here has exactly the OPT
  shape and float32 dtype, and `served` counts what was handed out, for a loud check after
  the build.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from fogreid.errors import FogreidError


class CalibrationBatches:
    """Rewindable iterable of {"frames": float32 (opt_batch, H, W, 3)} from uint8 images.
    The last partial batch is dropped (TensorRT takes only the OPT shape)."""

    def __init__(self, images: np.ndarray, opt_batch: int) -> None:
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise FogreidError(f"calibration images must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
        if opt_batch < 1:
            raise FogreidError(f"calibration batch size must be >= 1, got {opt_batch}")
        if len(images) < opt_batch:
            raise FogreidError(f"implicit INT8 calibrates at the profile's OPT batch ({opt_batch}) and got only "
                               f"{len(images)} calibration images: give more (--calib-num, --calib-images) or a "
                               f"smaller OPT batch (--batch MIN:OPT:MAX)")
        self.images, self.opt_batch = images, opt_batch
        self.input_metadata = None       # Polygraphy sets this (TensorMetadata) before calibrating
        self.served = 0

    def __len__(self) -> int:
        return len(self.images) // self.opt_batch

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for i in range(len(self)):
            batch = self.images[i * self.opt_batch:(i + 1) * self.opt_batch]
            self.served += 1
            yield {"frames": np.ascontiguousarray(batch, dtype=np.float32)}

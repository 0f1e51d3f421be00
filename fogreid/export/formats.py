"""The export formats, as data: what each produces and what it needs."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from fogreid.errors import FogreidError


@dataclass(frozen=True)
class Format:
    name: str
    file: str            # file name in the output folder
    precision: str
    needs_calibration: bool
    needs_tensorrt: bool
    description: str


FORMATS = {f.name: f for f in [
    Format("onnx", "model.onnx", "fp32", False, False, "FP32 fused graph: ONNX Runtime, OpenCV DNN, TensorRT"),
    Format("onnx-fp16", "model_fp16.onnx", "fp16", False, False,
           "FP16 weights and compute, uint8/float32 I/O: ONNX Runtime CUDA, TensorRT 11 strongly typed"),
    Format("onnx-int8", "model_int8.onnx", "int8", True, False, "Q/DQ INT8 calibrated on foggy images"),
    Format("engine-fp16", "model_fp16.engine", "fp16", False, True, "TensorRT engine, FP16"),
    Format("engine-int8", "model_int8.engine", "int8", True, True, "TensorRT engine, INT8 (explicit or implicit)"),
    Format("triton", "triton", "fp32", False, False,
           "Triton model repository: ONNX Runtime backend (+ TensorRT accelerator), a tensorrt_plan per engine"),
    Format("deepstream", "deepstream", "fp32", False, False,
           "embedding-only ONNX (float NCHW) + the ReID section of DeepStream's tracker config"),
]}


def parse_formats(text: str) -> list[Format]:
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    if not names:
        raise FogreidError(f"--format: give one or more of {', '.join(FORMATS)}")
    formats = []
    for name in names:
        if name not in FORMATS:
            close = difflib.get_close_matches(name, FORMATS, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise FogreidError(f"--format: unknown format {name!r}{hint} Formats: {', '.join(FORMATS)}")
        if FORMATS[name] not in formats:
            formats.append(FORMATS[name])
    return formats


DEFAULT_BATCH = "1:8:32"


def parse_batch(text: str | None, dla: bool = False) -> tuple[int, int, int]:
    """'1:8:32' -> (1, 8, 32); '8' -> (1, 8, 8), or (8, 8, 8) for DLA, which has no dynamic
    shapes. No --batch: 1:8:32, and for DLA an error asking for one batch size."""
    if text is None:
        if dla:
            raise FogreidError("--dla-core needs one batch size (DLA has no dynamic shapes): add --batch B, "
                               "e.g. --batch 8 (with --dla-core it means 8:8:8)")
        text = DEFAULT_BATCH
    try:
        parts = [int(p) for p in text.split(":")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = [parts[0]] * 3 if dla else [1, parts[0], parts[0]]
    if len(parts) != 3 or not 1 <= parts[0] <= parts[1] <= parts[2] <= 65536:
        raise FogreidError(f"--batch {text!r}: expected MIN:OPT:MAX with 1 <= MIN <= OPT <= MAX <= 65536, e.g. "
                           f"1:8:32")
    return parts[0], parts[1], parts[2]

"""TensorRT's own calibration cache format, for the implicit INT8 path (IInt8EntropyCalibrator2,
`trtexec --calib=`), which ONNX Runtime's `calibration.cache` is not:

    TRT-100300-EntropyCalibration2
    tensor_name: 3c010a14           <- the scale (amax / 127) as a big-endian float32, in hex

(trtexec reads it back the same way: samples/common/sampleEngines.cpp, release/10.3,
`readScalesFromCalibrationCache` parses 8 hex digits after "name: " as a float32 scale and
`setTensorScalesFromCalibration` sets the dynamic range to +-127 * scale.) TensorRT names
network tensors after the ONNX tensors, so the names are the graph's. The scales are the Q/DQ
model's own (`scales_from_qdq`), for exactly the tensors it quantises.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from fogreid.errors import FogreidError
from fogreid.fileio import atomic_write
from fogreid.tensorrt_version import DEFAULT_TRT_VERSION, version_tag

SCALE_RTOL = 4e-7                  # a few float32 ulps: the cache stores each scale as float32


def write_cache(path: str | Path, scales: dict[str, float], version: tuple[int, int, int] = DEFAULT_TRT_VERSION,
                algorithm: str = "EntropyCalibration2") -> Path:
    lines = [f"TRT-{version_tag(version)}-{algorithm}"]
    for name, scale in scales.items():
        if not scale > 0:
            continue  # a tensor that never left 0 has no usable range; TensorRT keeps it in float
        lines.append(f"{name}: {struct.pack('>f', scale).hex()}")
    with atomic_write(path, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    return Path(path)


def read_cache(path: str | Path) -> tuple[str, dict[str, float]]:
    """(header, {tensor: scale}); an error naming the line if it is not TensorRT's format."""
    path = Path(path)
    lines = path.read_text().splitlines()
    if not lines or not lines[0].startswith("TRT-") or lines[0].count("-") < 2:
        raise FogreidError(f"{path}: not a TensorRT calibration cache (first line should be "
                           f"TRT-<version>-<algorithm>)")
    scales = {}
    for number, line in enumerate(lines[1:], start=2):
        name, sep, value = line.rpartition(": ")
        try:
            scales[name] = struct.unpack(">f", bytes.fromhex(value))[0]
        except (ValueError, struct.error):
            raise FogreidError(f"{path}:{number}: expected 'tensor: <8 hex digits>', got {line!r}") from None
        if not sep:
            raise FogreidError(f"{path}:{number}: expected 'tensor: <8 hex digits>', got {line!r}")
    return lines[0], scales


def cache_version(header: str) -> tuple[int, int, int] | None:
    """The TensorRT version a cache header was written for: 'TRT-100300-...' -> (10, 3, 0)."""
    try:
        number = int(header.split("-")[1])
    except (IndexError, ValueError):
        return None
    if number >= 100000:                      # 10.0 and later: major*10000 + minor*100 + patch
        return number // 10000, number // 100 % 100, number % 100
    return number // 1000, number // 100 % 10, number % 100


def check_cache_for(path: str | Path, version: tuple[int, int, int]) -> None:
    """TensorRT skips a calibration cache whose header names another version and recalibrates
    (with nothing to calibrate on, the INT8 scales are empty). Refuse such a cache up front."""
    header, scales = read_cache(path)
    written_for = cache_version(header)
    if written_for != tuple(version):
        found = ".".join(map(str, written_for)) if written_for else header
        raise FogreidError(f"{path}: calibration cache written for TensorRT {found}, but the build uses TensorRT "
                           f"{'.'.join(map(str, version))}, which would ignore it: re-export with "
                           f"--trt-version {'.'.join(map(str, version))}")
    if not scales:
        raise FogreidError(f"{path}: the calibration cache holds no scales; recalibrate with --calib-images")


def scales_from_qdq(qdq: onnx.ModelProto) -> dict[str, float]:
    """{tensor: scale} of every activation the Q/DQ model quantises: the input of each
    QuantizeLinear that is not a constant (weights are quantised offline). Taken from the written
    Q/DQ graph itself, so the cache and the Q/DQ file cannot disagree: in implicit INT8 TensorRT may
    run any layer whose tensors have scales in INT8, so the layers the INT8 budget keeps in float,
    the network input and the embedding tail must have none."""
    constants = {t.name: t for t in qdq.graph.initializer}
    constants.update({n.output[0]: a.t for n in qdq.graph.node if n.op_type == "Constant"
                      for a in n.attribute if a.name == "value"})
    scales: dict[str, float] = {}
    for node in qdq.graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] in constants:
            continue
        name = node.input[0]
        if node.input[1] not in constants:
            raise FogreidError(f"{node.name}: the scale of QuantizeLinear({name}) is not a constant; a TensorRT "
                               f"calibration cache needs one fixed scale per tensor")
        value = numpy_helper.to_array(constants[node.input[1]]).astype(np.float32)
        if value.size != 1:
            raise FogreidError(f"{node.name}: per-channel scale on activation {name}; a TensorRT calibration cache "
                               f"holds one scale per tensor")
        scale = float(value.reshape(()))
        if name in scales and not np.isclose(scales[name], scale, rtol=SCALE_RTOL, atol=0):
            raise FogreidError(f"{name}: quantised with two scales ({scales[name]:g}, {scale:g}); a TensorRT "
                               f"calibration cache holds one scale per tensor")
        scales[name] = scale
    return scales


def cache_mismatches(qdq: onnx.ModelProto, cache_scales: dict[str, float]) -> list[str]:
    """What differs between a cache and the Q/DQ model it should mirror (empty: consistent):
    the same tensors, each with the same scale up to float32 rounding."""
    want = {name: s for name, s in scales_from_qdq(qdq).items() if s > 0}   # write_cache drops 0 scales
    problems = [f"{name}: in the cache, but the Q/DQ model does not quantise it"
                for name in sorted(set(cache_scales) - set(want))]
    problems += [f"{name}: quantised in the Q/DQ model, but not in the cache"
                 for name in sorted(set(want) - set(cache_scales))]
    problems += [f"{name}: scale {cache_scales[name]:.9g} in the cache, {want[name]:.9g} in the Q/DQ model"
                 for name in sorted(set(want) & set(cache_scales))
                 if not np.isclose(cache_scales[name], want[name], rtol=SCALE_RTOL, atol=0)]
    return problems

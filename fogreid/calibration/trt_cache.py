"""TensorRT's own calibration cache format, for the implicit INT8 path (IInt8EntropyCalibrator2,
`trtexec --calib=`), which ONNX Runtime's `calibration.cache` is not:

    TRT-100300-EntropyCalibration2
    tensor_name: 3c010a14           <- the scale (amax / 127) as a big-endian float32, in hex

TensorRT names network tensors after the ONNX tensors, so the names are the graph's.
"""

from __future__ import annotations

import struct

import numpy as np
from pathlib import Path

from fogreid.errors import FogreidError
from fogreid.fileio import atomic_write

DEFAULT_TRT_VERSION = (10, 3, 0)   # JetPack 6.x ships TensorRT 10.3


def version_tag(version: tuple[int, int, int]) -> str:
    major, minor, patch = version
    # NV_TENSORRT_VERSION: major*1000+minor*100+patch up to 9.x, major*10000+minor*100+patch since 10.0
    return str(major * (10000 if major >= 10 else 1000) + minor * 100 + patch)


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


def scales_from_ranges(ranges, float_tensors: set[str]) -> dict[str, float]:
    """amax / 127 for every calibrated float tensor."""
    scales = {}
    for name in sorted(ranges.keys() if hasattr(ranges, "keys") else ranges.data):
        if name not in float_tensors:
            continue
        low, high = ranges[name].range_value
        scales[name] = float(np.max(np.abs(np.concatenate([np.ravel(low), np.ravel(high)])))) / 127.0
    return scales

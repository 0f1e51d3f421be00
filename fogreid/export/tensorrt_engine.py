"""TensorRT engines from the exported ONNX, on Polygraphy's loaders.

TensorRT cannot be installed everywhere fogreid runs (CI, laptops), so this module imports
it only inside `build_engine`, and everything a user needs to build on the target itself
(the `trtexec` command line, the calibration cache) is produced without it.

Precision paths:
  fp16, TensorRT 10:   the FP32 ONNX with the FP16 builder flag
  fp16, TensorRT 11:   the FP16 ONNX, strongly typed (the builder flags are gone)
  int8 explicit:       the Q/DQ ONNX (TensorRT >= 10; the only INT8 path on 11)
  int8 implicit:       the FP32 ONNX + an IInt8EntropyCalibrator2 and its cache
                       (TensorRT 10.x only; the only INT8 path for DLA on JetPack 6)
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from fogreid.errors import FogreidError
from fogreid.fileio import atomic_write, sha256_file

INSTALL_HINT = ("TensorRT's Python bindings are not installed: `pip install 'fogreid[trt]'` on an x86 "
                "GPU machine, or `sudo apt install python3-libnvinfer` on a Jetson (JetPack 6). Without "
                "them, build on the target with the trtexec command written beside the ONNX files.")


@dataclass(frozen=True)
class EngineSpec:
    precision: str                       # fp16 | int8
    batch: tuple[int, int, int]          # min, opt, max of the optimisation profile
    input_size: tuple[int, int]
    workspace_gib: float = 4.0
    dla_core: int | None = None
    calibration: str = "explicit"        # int8: explicit (Q/DQ ONNX) | implicit (calibrator + cache)


def tensorrt_version() -> tuple[int, int] | None:
    try:
        import tensorrt as trt
    except ImportError:
        return None
    major, minor = (int(x) for x in trt.__version__.split(".")[:2])
    return major, minor


def _shape(batch: int, size: tuple[int, int]) -> tuple[int, int, int, int]:
    return (batch, size[0], size[1], 3)


def trtexec_command(onnx_path: Path, engine_path: Path, spec: EngineSpec, strongly_typed: bool,
                    calibration_cache: Path | None = None, timing_cache: Path | None = None) -> str:
    """The trtexec line that builds the same engine on a board without the Python bindings."""
    def dims(b):
        return "x".join(str(d) for d in _shape(b, spec.input_size))

    parts = ["trtexec", f"--onnx={onnx_path}", f"--saveEngine={engine_path}",
             f"--minShapes=frames:{dims(spec.batch[0])}", f"--optShapes=frames:{dims(spec.batch[1])}",
             f"--maxShapes=frames:{dims(spec.batch[2])}", f"--memPoolSize=workspace:{int(spec.workspace_gib * 1024)}M"]
    if strongly_typed:
        parts.append("--stronglyTyped")
    else:
        parts.append("--fp16")
        if spec.precision == "int8":
            parts.append("--int8")
        if calibration_cache is not None:
            parts.append(f"--calib={calibration_cache}")
    if spec.dla_core is not None:
        parts += [f"--useDLACore={spec.dla_core}", "--allowGPUFallback"]
    if timing_cache is not None:
        parts.append(f"--timingCacheFile={timing_cache}")
    return " ".join(parts)


def build_engine(onnx_path: Path, engine_path: Path, spec: EngineSpec, strongly_typed: bool,
                 calibration_batches: Iterable[dict] | None = None, calibration_cache: Path | None = None,
                 timing_cache: Path | None = None) -> dict:
    """Build and atomically write the engine; returns the sidecar record (also written as
    ENGINE.json). Raises FogreidError when TensorRT is missing or the build fails."""
    try:
        import tensorrt as trt
        from polygraphy.backend.trt import (Calibrator, CreateConfig, EngineBytesFromNetwork,
                                            NetworkFromOnnxPath, PostprocessConfig, Profile)
    except ImportError:
        raise FogreidError(INSTALL_HINT) from None

    profile = Profile().add("frames", min=_shape(spec.batch[0], spec.input_size),
                            opt=_shape(spec.batch[1], spec.input_size), max=_shape(spec.batch[2], spec.input_size))
    calibrator = None
    if spec.precision == "int8" and spec.calibration == "implicit":
        if calibration_batches is None and not (calibration_cache and calibration_cache.is_file()):
            raise FogreidError("implicit INT8 needs calibration images (--calib-images) or a calibration cache")
        calibrator = Calibrator(calibration_batches or [], cache=str(calibration_cache) if calibration_cache else None,
                                BaseClass=trt.IInt8EntropyCalibrator2)
    flags = {} if strongly_typed else {"fp16": True, "int8": spec.precision == "int8"}
    config = CreateConfig(**flags, calibrator=calibrator, profiles=[profile],
                          load_timing_cache=str(timing_cache) if timing_cache and timing_cache.is_file() else None,
                          memory_pool_limits={trt.MemoryPoolType.WORKSPACE: int(spec.workspace_gib * (1 << 30))},
                          use_dla=spec.dla_core is not None, allow_gpu_fallback=spec.dla_core is not None)
    if spec.dla_core is not None:
        def set_dla_core(builder, network, cfg):  # Polygraphy always picks core 0
            cfg.DLA_core = spec.dla_core
        config = PostprocessConfig(config, set_dla_core)
    network = NetworkFromOnnxPath(str(onnx_path), strongly_typed=strongly_typed or None)
    try:
        engine_bytes = EngineBytesFromNetwork(network, config=config,
                                              save_timing_cache=str(timing_cache) if timing_cache else None)()
    except Exception as exc:  # Polygraphy reports parser/builder failures as exceptions
        raise FogreidError(f"TensorRT could not build {engine_path.name} from {onnx_path}: {exc}") from None
    with atomic_write(engine_path) as handle:
        handle.write(bytes(engine_bytes))
    record = engine_record(onnx_path, engine_path, spec, strongly_typed, f"{trt.__version__}")
    with atomic_write(engine_path.with_suffix(".json"), "w") as handle:
        json.dump(record, handle, indent=2)
    return record


def engine_record(onnx_path: Path, engine_path: Path, spec: EngineSpec, strongly_typed: bool,
                  trt_version: str) -> dict:
    """The sidecar JSON: an engine only runs with the TensorRT version and GPU that built it."""
    gpu, capability = "unknown", "unknown"
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
            capability = ".".join(str(x) for x in torch.cuda.get_device_capability(0))
    except ImportError:
        pass
    return {"engine": engine_path.name, "tensorrt_version": trt_version, "gpu": gpu,
            "compute_capability": capability, "onnx": onnx_path.name, "onnx_sha256": sha256_file(onnx_path),
            "strongly_typed": strongly_typed, **asdict(spec)}

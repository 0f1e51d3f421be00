"""TensorRT engines from the exported ONNX: one recipe per (precision, TensorRT major, DLA),
used both by the Python build (Polygraphy's loaders) and by the trtexec scripts.

TensorRT cannot be installed everywhere fogreid runs (CI, laptops), so this module imports it
only inside `build_engine`, and everything a user needs to build on the target itself (one
trtexec script per TensorRT major version, the calibration cache) is produced without it.

The recipes (rules from TensorRT's own sources, cited where they apply):
  GPU fp16            model_fp16.onnx, strongly typed: the engine computes in the types the
                      validated FP16 ONNX has (InstanceNorm / L2 norm kept FP32 there).
  GPU int8 explicit   model_int8.onnx (Q/DQ), strongly typed: Q/DQ set the INT8 layers, the
                      rest stays as in the ONNX. The only INT8 path on TensorRT 11.
  GPU int8 implicit   TensorRT 10 only: model.onnx + --fp16 --int8 + calibrator / cache
                      (IInt8EntropyCalibrator2; removed in TensorRT 11).
  DLA (TensorRT 10)   model.onnx weakly typed with --fp16 (and --int8 + the cache for INT8):
                      with --useDLACore trtexec sets kFP16 itself (samples/common/sampleEngines.cpp,
                      release/10.3 and 10.16: `if (!build.int8) config.setFlag(BuilderFlag::kFP16)`,
                      no strongly-typed guard), which a strongly typed network refuses (the same
                      `!config.getFlag(BuilderFlag::kFP16)` check as NVIDIA/TensorRT#4228). DLA
                      has no dynamic shapes: the profile is static (min = opt = max).
  DLA (TensorRT 11)   from 11.4.1 only ("DLA was unavailable in TensorRT 11.0 through 11.3",
                      11.4.1 release notes): the FP16 / Q/DQ ONNX, strongly typed by TensorRT 11
                      itself. TensorRT 11's trtexec has no precision options (migration guide
                      "tensorrt-10x-to-11x-trtexec": "removes all precision flags (--fp16, --int8,
                      --bf16, --fp8, --int4, --best)"; --calib too) and exits on an unknown option
                      (samples/trtexec/trtexec.cpp: "Unknown option"); --stronglyTyped is a
                      deprecated no-op there, so its script leaves it out.
  TensorRT 10 strongly typed builds take no precision flag: sampleOptions.cpp disables
  --fp16/--int8 with "not allowed if graph is strongly typed", and NVIDIA's explicit
  quantization guide: "Use explicit quantization with Strong Typing. Precision-control build
  flags are not required and should not be specified."
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from fogreid.calibration.trt_cache import DEFAULT_TRT_VERSION  # noqa: F401 (re-exported)
from fogreid.errors import FogreidError
from fogreid.fileio import atomic_write, sha256_file

INSTALL_HINT = ("TensorRT's Python bindings are not installed: `pip install 'fogreid[trt]'` on an x86 "
                "GPU machine, or `sudo apt install python3-libnvinfer` on a Jetson (JetPack 6). Without "
                "them, build on the target with trtexec_trt10.sh / trtexec_trt11.sh written beside the ONNX files.")

DLA_IN_TRT11 = (11, 4, 1)                # TensorRT 11 has no DLA before 11.4.1
LAST_TRT10_WITH_DLA = (10, 7)            # "TensorRT 10.7 was the last 10.x release that supported DLA"


def parse_trt_version(text: str) -> tuple[int, int, int]:
    """'10.3' or '10.3.0' (or an installed '10.3.0.30') -> (10, 3, 0)."""
    try:
        parts = [int(p) for p in str(text).split(".")[:3]]
    except ValueError:
        parts = []
    if len(parts) < 2 or parts[0] < 8:
        raise FogreidError(f"--trt-version {text!r}: expected MAJOR.MINOR[.PATCH] of TensorRT, e.g. 10.3.0 "
                           f"(JetPack 6) or 11.1")
    return (parts[0], parts[1], parts[2] if len(parts) > 2 else 0)


def installed_tensorrt() -> tuple[int, int, int] | None:
    try:
        import tensorrt as trt
    except ImportError:
        return None
    return parse_trt_version(trt.__version__)


def check_dla_available(version: tuple[int, int, int]) -> None:
    """DLA by release (TensorRT docs, "Working with DLA", 11.4.1): 10.x up to 10.7; none in
    11.0-11.3 (11.4.0: Windows on ARM only); back in 11.4.1 (AGX Orin, JetPack 7.2.2)."""
    text = ".".join(map(str, version))
    if version[0] == 11 and version < DLA_IN_TRT11:
        raise FogreidError(f"--dla-core: TensorRT {text} has no DLA (TensorRT 11 brings it back in 11.4.1; "
                           f"JetPack 6 ships 10.3): build for DLA with TensorRT 10.3-10.7 or >= 11.4.1")
    if version[0] == 10 and version[:2] > LAST_TRT10_WITH_DLA:
        raise FogreidError(f"--dla-core: TensorRT {text} has no DLA (10.7 was the last 10.x release with DLA; "
                           f"JetPack 6 ships 10.3): pass --trt-version 10.3 and build on the Jetson")


@dataclass(frozen=True)
class EngineSpec:
    precision: str                       # fp16 | int8
    batch: tuple[int, int, int]          # min, opt, max of the optimisation profile
    input_size: tuple[int, int]
    workspace_gib: float = 4.0
    dla_core: int | None = None
    calibration: str = "explicit"        # int8: explicit (Q/DQ ONNX) | implicit (calibrator + cache)


@dataclass(frozen=True)
class Recipe:
    """How one engine is built on one TensorRT major version."""

    onnx: str                            # format whose ONNX is parsed: onnx | onnx-fp16 | onnx-int8
    strongly_typed: bool                 # build a strongly typed network
    strongly_typed_flag: bool            # trtexec needs --stronglyTyped (TensorRT 10; 11 is always strongly typed)
    fp16: bool = False                   # weakly typed precision flags (TensorRT 10 only)
    int8: bool = False
    calibration_cache: bool = False      # implicit INT8: --calib / the calibrator


def recipe(spec: EngineSpec, trt_major: int) -> Recipe:
    """The single place that decides how an engine is built (Python and trtexec alike)."""
    implicit = spec.precision == "int8" and spec.calibration == "implicit"
    if trt_major >= 11:
        if implicit:
            raise FogreidError("implicit INT8 (calibrator + cache) was removed in TensorRT 11: "
                               "use --int8-mode explicit (the Q/DQ ONNX)")
        return Recipe("onnx-fp16" if spec.precision == "fp16" else "onnx-int8", True, False)
    if spec.dla_core is not None or implicit:
        # Weakly typed: DLA needs kFP16 (trtexec sets it for DLA, and it conflicts with
        # --stronglyTyped: NVIDIA/TensorRT#4228); the calibrator path needs the INT8 flag.
        return Recipe("onnx", False, False, fp16=True, int8=spec.precision == "int8", calibration_cache=implicit)
    return Recipe("onnx-fp16" if spec.precision == "fp16" else "onnx-int8", True, True)


def _shape(batch: int, size: tuple[int, int]) -> tuple[int, int, int, int]:
    return (batch, size[0], size[1], 3)


def trtexec_command(onnx_file: str, engine_file: str, spec: EngineSpec, how: Recipe,
                    calibration_cache: str | None = None, timing_cache: str | None = None) -> str:
    """The trtexec line that builds the engine on a board without the Python bindings.
    Options as trtexec parses them (samples/common/sampleOptions.cpp): shapes as
    name:DxDxD, --memPoolSize=workspace:<MiB>M, --useDLACore=N, --allowGPUFallback."""
    def dims(b):
        return "x".join(str(d) for d in _shape(b, spec.input_size))

    parts = ["trtexec", f"--onnx={onnx_file}", f"--saveEngine={engine_file}",
             f"--minShapes=frames:{dims(spec.batch[0])}", f"--optShapes=frames:{dims(spec.batch[1])}",
             f"--maxShapes=frames:{dims(spec.batch[2])}", f"--memPoolSize=workspace:{int(spec.workspace_gib * 1024)}M"]
    if how.strongly_typed_flag:
        parts.append("--stronglyTyped")
    if how.fp16:
        parts.append("--fp16")
    if how.int8:
        parts.append("--int8")
    if how.calibration_cache:
        if calibration_cache is None:
            raise FogreidError("implicit INT8 needs the calibration cache (--calib-images)")
        parts.append(f"--calib={calibration_cache}")
    if spec.dla_core is not None:
        parts += [f"--useDLACore={spec.dla_core}", "--allowGPUFallback"]
    if timing_cache is not None:
        parts.append(f"--timingCacheFile={timing_cache}")
    return " ".join(shlex.quote(p) for p in parts)


def trtexec_script(trt_major: int, lines: list[tuple[str, str]]) -> str:
    """One script per TensorRT major version: `set -e`, a check of trtexec's version first,
    then one command per engine (each engine file written once)."""
    other = 11 if trt_major == 10 else 10
    head = [
        "#!/usr/bin/env bash",
        f"# Build the fogreid engines with trtexec from TensorRT {trt_major}.x (run it in this folder, on the target).",
        f"# For TensorRT {other}.x use trtexec_trt{other}.sh: the options differ between the two "
        "(TensorRT 11's trtexec has no --fp16, --int8 or --calib and stops on them).",
        "# Engines are tied to the GPU (or DLA) and TensorRT version that build them.",
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
        "TRTEXEC=${TRTEXEC:-trtexec}",
        # trtexec prints '&&&& RUNNING TensorRT.trtexec [TensorRT v100300]' on every run.
        'version=$("$TRTEXEC" --help 2>&1 | grep -o "TensorRT v[0-9]*" | head -n1 | grep -o "[0-9]*$" || true)',
        f'if [ -n "$version" ] && [ $((version / 10000)) -ne {trt_major} ]; then',
        f'    echo "this script is for TensorRT {trt_major}.x, but $TRTEXEC is TensorRT v$version: '
        f'use trtexec_trt{other}.sh" >&2',
        "    exit 2",
        "fi",
    ]
    body = []
    for comment, command in lines:
        body += [f"# {comment}", command.replace("trtexec ", '"$TRTEXEC" ', 1)]
    return "\n".join(head + body) + "\n"


def build_engine(onnx_path: Path, engine_path: Path, spec: EngineSpec, how: Recipe,
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
    if how.calibration_cache:
        # Polygraphy's Calibrator (polygraphy/backend/trt/calibrator.py) hands TensorRT one
        # batch per item of the loader, checked against the OPT shape of the (last) profile
        # in float32; a batch that fails the check is dropped silently, so the loader is
        # fogreid's CalibrationBatches, which yields exactly that and counts what it served.
        calibrator = Calibrator(calibration_batches if calibration_batches is not None else [],
                                cache=str(calibration_cache) if calibration_cache else None,
                                BaseClass=trt.IInt8EntropyCalibrator2)
    config = CreateConfig(fp16=how.fp16 or None, int8=how.int8 or None, calibrator=calibrator, profiles=[profile],
                          load_timing_cache=str(timing_cache) if timing_cache and timing_cache.is_file() else None,
                          memory_pool_limits={trt.MemoryPoolType.WORKSPACE: int(spec.workspace_gib * (1 << 30))},
                          use_dla=spec.dla_core is not None, allow_gpu_fallback=spec.dla_core is not None)
    if spec.dla_core is not None:
        def set_dla_core(builder, network, cfg):  # Polygraphy's CreateConfig always picks core 0
            cfg.DLA_core = spec.dla_core
        config = PostprocessConfig(config, set_dla_core)
    network = NetworkFromOnnxPath(str(onnx_path), strongly_typed=how.strongly_typed or None)
    try:
        engine_bytes = EngineBytesFromNetwork(network, config=config,
                                              save_timing_cache=str(timing_cache) if timing_cache else None)()
    except Exception as exc:  # Polygraphy reports parser/builder failures as exceptions
        raise FogreidError(f"TensorRT could not build {engine_path.name} from {onnx_path}: {exc}") from None
    served = getattr(calibration_batches, "served", None)
    if how.calibration_cache and served == 0 and not _cache_was_used(calibration_cache):
        raise FogreidError(f"{engine_path.name}: TensorRT took no calibration batch and no usable cache; the INT8 "
                           f"scales would be empty. Check --calib-images and the cache {calibration_cache}")
    with atomic_write(engine_path) as handle:
        handle.write(bytes(engine_bytes))
    record = engine_record(onnx_path, engine_path, spec, how, f"{trt.__version__}")
    with atomic_write(engine_path.with_suffix(".json"), "w") as handle:
        json.dump(record, handle, indent=2)
    return record


def _cache_was_used(cache: Path | None) -> bool:
    if cache is None or not cache.is_file():
        return False
    from fogreid.calibration.trt_cache import read_cache

    header, scales = read_cache(cache)
    return bool(scales)


def engine_record(onnx_path: Path, engine_path: Path, spec: EngineSpec, how: Recipe, trt_version: str) -> dict:
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
            "recipe": asdict(how), **asdict(spec)}

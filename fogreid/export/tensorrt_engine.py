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
  DLA (TensorRT 10)   model.onnx weakly typed with --fp16 (and --int8 + the cache for INT8,
                      whatever --int8-mode says): with --useDLACore trtexec sets kFP16 itself
                      (samples/common/sampleEngines.cpp, release/10.3 and 10.16: `if (!build.int8)
                      config.setFlag(BuilderFlag::kFP16)`, no strongly-typed guard), which a strongly
                      typed network refuses (the same `!config.getFlag(BuilderFlag::kFP16)` check as
                      NVIDIA/TensorRT#4228). DLA has no dynamic shapes: the profile is static.
  Every weakly typed TensorRT 10 build pins the embedding tail (BNNeck + L2 norm) to FP32, as
  model_fp16.onnx does for the strongly typed builds (`Recipe.fp32_tail`): the Python build
  reads the tail from the ONNX, a trtexec line takes it as `fp32_layers` (`tail_layers`).
  No recipe sets the INT8 flag without a calibration cache: with --int8 and neither Q/DQ nor
  --calib, trtexec invents ranges (sampleEngines.cpp, release/10.3: `setTensorDynamicRange(network)`,
  2.0 for inputs, 4.0 for outputs) and the engine builds and computes garbage.
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
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from fogreid.errors import FogreidError
from fogreid.fileio import atomic_write, sha256_file
from fogreid.tensorrt_version import INSTALL_HINT


@dataclass(frozen=True)
class EngineSpec:
    precision: str                       # fp16 | int8
    batch: tuple[int, int, int]          # min, opt, max of the optimisation profile
    imgsz: tuple[int, int]
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
    fp32_tail: bool = False              # pin the embedding tail to FP32 (weakly typed builds)

    def __post_init__(self) -> None:
        # The INT8 flag without Q/DQ and without a cache is the placeholder-range engine above.
        if self.int8 and not self.calibration_cache:
            raise FogreidError("internal: an INT8 build needs the Q/DQ model or the calibration cache")
        if self.fp16 and not self.fp32_tail:
            raise FogreidError("internal: a weakly typed FP16 build must pin the embedding tail to FP32")


def recipe(spec: EngineSpec, trt_major: int) -> Recipe:
    """The single place that decides how an engine is built (Python and trtexec alike)."""
    implicit = spec.precision == "int8" and spec.calibration == "implicit"
    if trt_major >= 11:
        if implicit:
            raise FogreidError("--int8-mode implicit: implicit INT8 (calibrator + cache) was removed in TensorRT 11; "
                               "use --int8-mode explicit (the Q/DQ ONNX)")
        return Recipe("onnx-fp16" if spec.precision == "fp16" else "onnx-int8", True, False)
    if spec.dla_core is not None or implicit:
        # Weakly typed: DLA needs kFP16 (trtexec sets it for DLA, and it conflicts with
        # --stronglyTyped: NVIDIA/TensorRT#4228); the calibrator path needs the INT8 flag.
        # DLA INT8 on TensorRT 10 always takes the calibration cache, also for --int8-mode
        # explicit: the cache holds the Q/DQ model's own scales for its own tensors
        # (calibration/trt_cache.scales_from_qdq), so the engine quantises what the Q/DQ file does.
        int8 = spec.precision == "int8"
        return Recipe("onnx", False, False, fp16=True, int8=int8, calibration_cache=int8, fp32_tail=True)
    return Recipe("onnx-fp16" if spec.precision == "fp16" else "onnx-int8", True, True)


def tail_layers(onnx_path: str | Path) -> list[str]:
    """The TensorRT layer names of the embedding tail (BNNeck + L2 norm) of an FP32 ONNX. The
    ONNX parser names the layer it makes for a node after the node (onnx-tensorrt
    ImporterContext::registerLayer(layer, node) -> getNodeName(node), importerUtils.cpp; helper
    layers get ONNXTRT_* names), and fogreid names every node (onnx_graph.name_nodes_by_module)."""
    from fogreid import onnx_graph

    names = onnx_graph.embedding_tail(onnx_graph.load(onnx_path))
    if not names:
        raise FogreidError(f"{onnx_path}: no embedding tail found (no 'embedding' output?); re-export the ONNX "
                           f"with `fogreid export`")
    return names


def _shape(batch: int, size: tuple[int, int]) -> tuple[int, int, int, int]:
    return (batch, size[0], size[1], 3)


def trtexec_command(onnx_file: str, engine_file: str, spec: EngineSpec, how: Recipe,
                    calibration_cache: str | None = None, timing_cache: str | None = None,
                    fp32_layers: Sequence[str] = ()) -> str:
    """The trtexec line that builds the engine on a board without the Python bindings.
    Options as trtexec parses them (samples/common/sampleOptions.cpp): shapes as
    name:DxDxD, --memPoolSize=workspace:<MiB>M, --useDLACore=N, --allowGPUFallback.
    `fp32_layers` (`tail_layers(model.onnx)`) are pinned to FP32 on a weakly typed line."""
    def dims(b):
        return "x".join(str(d) for d in _shape(b, spec.imgsz))

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
            raise FogreidError("INT8 without Q/DQ needs the calibration cache: --calib-images DIR")
        parts.append(f"--calib={calibration_cache}")
    if how.fp32_tail:
        if not fp32_layers:   # a weakly typed FP16 line without them would build the L2 tail in FP16
            raise FogreidError("a weakly typed FP16 trtexec line needs the embedding tail's layers: "
                               "fp32_layers=tail_layers(model.onnx)")
        parts += _pin_fp32_options(fp32_layers)
    if spec.dla_core is not None:
        parts += [f"--useDLACore={spec.dla_core}", "--allowGPUFallback"]
    if timing_cache is not None:
        parts.append(f"--timingCacheFile={timing_cache}")
    return " ".join(shlex.quote(p) for p in parts)


def _pin_fp32_options(layers: Sequence[str]) -> list[str]:
    """--layerPrecisions / --layerOutputTypes as sampleOptions.cpp (release/10.3) reads them:
    comma-separated `layerName:precision` split on the LAST ':' (splitNameAndValue), "'" taken as
    quoting and '*' as a wildcard, precision "fp32"; both act only with --precisionConstraints=obey
    ("obey = meet precision constraints ... or fail"). The output type is pinned too: setPrecision
    sets the compute precision, not the type the layer writes (NvInfer.h ILayer::setOutputType), and
    the L2 norm's squared sum overflows FP16 when stored in it."""
    bad = [name for name in layers if any(c in name for c in ",'*")]
    if bad:
        raise FogreidError(f"layer names {bad} contain ',', \"'\" or '*', which trtexec's --layerPrecisions "
                           f"cannot take; re-export the ONNX with `fogreid export`")
    spec = ",".join(f"{name}:fp32" for name in layers)
    return [f"--layerPrecisions={spec}", f"--layerOutputTypes={spec}", "--precisionConstraints=obey"]


def trtexec_script(trt_major: int, lines: list[tuple[str, str]]) -> str:
    """One script per TensorRT major version: `set -e`, a check of trtexec's version first (and,
    before any --calib line, of the calibration cache's header against the FULL version), then one
    command per engine (each engine file written once)."""
    other = 11 if trt_major == 10 else 10
    caches = sorted({arg.split("=", 1)[1] for _, command in lines for arg in shlex.split(command)
                     if arg.startswith("--calib=")})
    head = [
        "#!/usr/bin/env bash",
        f"# Build the fogreid engines with trtexec from TensorRT {trt_major}.x (run it in this folder, on the target).",
        f"# For TensorRT {other}.x use trtexec_trt{other}.sh: the options differ between the two "
        "(TensorRT 11's trtexec has no --fp16, --int8 or --calib and stops on them).",
        "# Engines are tied to the GPU (or DLA) and TensorRT version that build them.",
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
        "TRTEXEC=${TRTEXEC:-trtexec}",
        # Every trtexec run starts with '&&&& RUNNING TensorRT.trtexec [TensorRT v100300]', --help
        # too (samples/common/logging.h defineTest + reportTestStart, called first in trtexec.cpp's
        # main); the number is NV_TENSORRT_VERSION: major*10000 + minor*100 + patch since 10.0
        # (include/NvInferRuntimeBase.h), major*1000 + minor*100 + patch before. The calibration
        # cache header 'TRT-<number>-...' carries the same number.
        "# TensorRT version as NV_TENSORRT_VERSION (major*10000 + minor*100 + patch; *1000 before 10.0) -> X.Y.Z",
        'version_text() { if [ "$1" -ge 100000 ]; then echo "$(($1 / 10000)).$(($1 / 100 % 100)).$(($1 % 100))"; '
        'else echo "$(($1 / 1000)).$(($1 / 100 % 10)).$(($1 % 100))"; fi; }',
        'number=$("$TRTEXEC" --help 2>&1 | grep -o "TensorRT v[0-9]*" | head -n1 | grep -o "[0-9]*$" || true)',
        'if [ -z "$number" ]; then',
        '    echo "could not read the TensorRT version from \"$TRTEXEC --help\" (no \"TensorRT v<number>\" line): '
        'set TRTEXEC to TensorRT\'s trtexec" >&2',
        "    exit 2",
        "fi",
        'version=$(version_text "$number")',
        'major=${version%%.*}',
        f'if [ "$major" -ne {trt_major} ]; then',
        f'    if [ "$major" -eq {other} ]; then hint="use trtexec_trt{other}.sh"; '
        'else hint="fogreid builds engines with TensorRT 10 (JetPack 6) and 11 only"; fi',
        f'    echo "this script is for TensorRT {trt_major}.x, but $TRTEXEC is TensorRT $version: $hint" >&2',
        "    exit 2",
        "fi",
    ]
    for cache in caches:
        # TensorRT takes a cache only for the version in its header; if it rejects it, trtexec's
        # calibrator has skipped allocating its buffers (it returns early when the cache file
        # exists: RndInt8Calibrator, sampleEngines.cpp) and the build fails on a nullptr binding.
        quoted = shlex.quote(cache)
        head += [
            f"# {cache} must be written for exactly this TensorRT (major.minor.patch).",
            f"header=$(head -n1 {quoted})",
            'tag=${header#TRT-}; tag=${tag%%-*}',
            'case "$tag" in ""|*[!0-9]*) written="an unknown TensorRT ($header)";; '
            '*) written="TensorRT $(version_text "$tag")";; esac',
            'if [ "$tag" != "$number" ]; then',
            f'    echo "{cache} was written for $written, but $TRTEXEC is TensorRT $version, '
            'which may reject it and fail the build. '
            'Write the cache for this TensorRT: fogreid export --trt-version $version ... (the same options as before; '
            'export.json here names the checkpoint and batch profile)" >&2',
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
        from polygraphy.backend.trt import (
            Calibrator,
            CreateConfig,
            EngineBytesFromNetwork,
            NetworkFromOnnxPath,
            PostprocessConfig,
            PostprocessNetwork,
            Profile,
        )
    except ImportError:
        raise FogreidError(INSTALL_HINT) from None
    if (how.calibration_cache and calibration_batches is None
            and not (calibration_cache and calibration_cache.is_file())):
        raise FogreidError(f"{engine_path.name}: INT8 without Q/DQ needs calibration images (--calib-images) or the "
                           f"calibration cache; with neither, TensorRT would have no INT8 scales")

    profile = Profile().add("frames", min=_shape(spec.batch[0], spec.imgsz),
                            opt=_shape(spec.batch[1], spec.imgsz), max=_shape(spec.batch[2], spec.imgsz))
    calibrator = None
    if how.calibration_cache:
        # Polygraphy's Calibrator (polygraphy/backend/trt/calibrator.py) hands TensorRT one
        # batch per item of the loader, checked against the OPT shape of the (last) profile
        # in float32; a batch that fails the check is dropped silently, so the loader is
        # fogreid's CalibrationBatches, which yields exactly that and counts what it served.
        calibrator = Calibrator(calibration_batches if calibration_batches is not None else [],
                                cache=str(calibration_cache) if calibration_cache else None,
                                BaseClass=trt.IInt8EntropyCalibrator2)
    # precision_constraints="obey" sets OBEY_PRECISION_CONSTRAINTS (polygraphy/backend/trt/config.py).
    config = CreateConfig(fp16=how.fp16 or None, int8=how.int8 or None, calibrator=calibrator, profiles=[profile],
                          precision_constraints="obey" if how.fp32_tail else None,
                          load_timing_cache=str(timing_cache) if timing_cache and timing_cache.is_file() else None,
                          memory_pool_limits={trt.MemoryPoolType.WORKSPACE: int(spec.workspace_gib * (1 << 30))},
                          use_dla=spec.dla_core is not None, allow_gpu_fallback=spec.dla_core is not None)
    if spec.dla_core is not None:
        def set_dla_core(builder, network, cfg):  # Polygraphy's CreateConfig always picks core 0
            cfg.DLA_core = spec.dla_core
        config = PostprocessConfig(config, set_dla_core)
    network = NetworkFromOnnxPath(str(onnx_path), strongly_typed=how.strongly_typed or None)
    if how.fp32_tail:
        names = tail_layers(onnx_path)
        network = PostprocessNetwork(network, lambda network: pin_layers(network, names, trt.float32), "pin FP32 tail")
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


def pin_layers(network, names: Sequence[str], dtype) -> None:
    """Pin the named layers' compute precision and output types (TensorRT's Python ILayer:
    `precision`, `set_output_type(index, dtype)`, `num_outputs`: python/src/infer/pyGraph.cpp,
    release/10.3); with OBEY_PRECISION_CONSTRAINTS the build meets them or fails. A name missing
    from the network is an error, not a silently unprotected tail."""
    layers = {network[i].name: network[i] for i in range(len(network))}
    missing = [name for name in names if name not in layers]
    if missing:
        raise FogreidError(f"layers {missing} of the embedding tail are not in the TensorRT network; re-export the "
                           f"ONNX with `fogreid export`")
    for name in names:
        layer = layers[name]
        layer.precision = dtype
        for index in range(layer.num_outputs):
            layer.set_output_type(index, dtype)


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

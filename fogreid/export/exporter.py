"""`fogreid export`: a checkpoint to the formats asked for, in one folder.

The FP32 ONNX is always made first (every other format derives from it), checked against
the target's documented rules (`fogreid check`), and every artifact carries its metadata.
Engines need TensorRT; without it the ONNX files, the calibration cache and one trtexec
script per TensorRT major version are still written, and the run says what to install.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from fogreid import onnx_graph
from fogreid.calibration.defaults import DEFAULT_BUDGET, DEFAULT_IMAGES, DEFAULT_METHOD
from fogreid.errors import FogreidError
from fogreid.export.formats import Format
from fogreid.export.preflight import check_artifact
from fogreid.export.tensorrt_engine import (
    EngineSpec,
    build_engine,
    recipe,
    tail_layers,
    trtexec_command,
    trtexec_script,
)
from fogreid.fileio import atomic_write, sha256_file
from fogreid.tensorrt_version import DEFAULT_TRT_VERSION, INSTALL_HINT, check_dla_available, installed_tensorrt


@dataclass
class ExportOptions:
    imgsz: tuple[int, int] | None = None
    batch: tuple[int, int, int] = (1, 8, 32)
    calib_images: list[str] = field(default_factory=list)
    calib_method: str = DEFAULT_METHOD
    calib_num: int = DEFAULT_IMAGES    # enough: why in fogreid/calibration/calibrate_onnx.py
    data_root: str | None = None
    int8_mode: str = "auto"            # auto | explicit | implicit (auto: implicit for DLA, else explicit)
    dla_core: int | None = None
    workspace_gib: float = 4.0
    keep_fp: list[str] = field(default_factory=list)
    trt_version: tuple[int, int, int] | None = None   # of the calibration cache; None: installed, else 10.3.0
    int8_budget: float | None = DEFAULT_BUDGET   # embedding cosine p1 the INT8 model must hold (None: every layer INT8)
    frame_downscale: int | None = None  # of the whole-frame defog graph (None: from the input size)
    progress: bool = True


@dataclass
class ExportResult:
    files: dict[str, Path]
    not_built: dict[str, str]          # format -> reason
    manifest: Path
    checks: dict[str, dict] = field(default_factory=dict)   # artifact -> `fogreid check` result

    @property
    def check_failed(self) -> bool:
        return any(not c["ok"] for c in self.checks.values())


def resolve_trt_version(requested: tuple[int, int, int] | None) -> tuple[int, int, int]:
    """The TensorRT version the calibration cache and the DLA rules are for: the installed one
    when TensorRT is importable (a cache for another version is skipped by it), else
    --trt-version (default 10.3.0, JetPack 6)."""
    installed = installed_tensorrt()
    if installed is not None:
        if requested is not None and requested[:2] != installed[:2]:
            raise FogreidError(f"--trt-version {'.'.join(map(str, requested))}: TensorRT "
                               f"{'.'.join(map(str, installed))} is installed here and builds the engines; "
                               f"export on the target's TensorRT, or drop --trt-version")
        return installed
    return requested or DEFAULT_TRT_VERSION


def check_options(formats: list[Format], opts: ExportOptions) -> tuple[int, int, int]:
    """Everything that can be refused before any work is done (and before anything is written)."""
    if any(f.needs_calibration for f in formats) and not opts.calib_images:
        raise FogreidError("INT8 formats need foggy calibration images: --calib-images DIR "
                           "(e.g. FVRID_real/train_foggy; never the test query/gallery)")
    if opts.int8_mode not in ("auto", "explicit", "implicit"):
        raise FogreidError("--int8-mode must be auto, explicit or implicit")
    version = resolve_trt_version(opts.trt_version)
    if opts.dla_core is not None:
        if opts.dla_core < 0:
            raise FogreidError(f"--dla-core {opts.dla_core}: a DLA core index is 0 or 1")
        low, opt, high = opts.batch
        if not low == opt == high:
            # DLA runs static shapes only: with a dynamic profile and GPU fallback, every layer
            # would silently run on the GPU.
            raise FogreidError(f"--dla-core needs one batch size (DLA has no dynamic shapes): pass --batch B, "
                               f"e.g. --batch {opt} (with --dla-core it means {opt}:{opt}:{opt}), not "
                               f"{low}:{opt}:{high}")
        check_dla_available(version)
    return version


def export(checkpoint: str | Path, formats: list[Format], out: str | Path, opts: ExportOptions) -> ExportResult:
    """The orchestrator: each step below does one job and hands its files on."""
    from fogreid.model.fused import FusedDefogReID

    trt_version = check_options(formats, opts)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = {f.name for f in formats}
    engines = [f for f in formats if f.needs_tensorrt]
    log = print if opts.progress else (lambda msg: None)

    model = FusedDefogReID.from_checkpoint(checkpoint, imgsz=opts.imgsz)
    ckpt_hash = sha256_file(checkpoint)
    fp16 = bool({"onnx-fp16", "engine-fp16"} & names or engines)   # the strongly typed FP16 builds parse it
    files = write_onnx(model, ckpt_hash, out, opts, fp16, log)
    calibration = None
    if {"onnx-int8", "engine-int8"} & names:
        calibration = write_int8(files, out, opts, trt_version, log)
    checks = preflight(files, opts, trt_version, log)
    not_built, records = ({}, {}) if not engines else write_engines(engines, model.imgsz, files, calibration,
                                                                     checks, out, opts, log)
    if "triton" in names:
        from fogreid.export.triton import write_repository

        built = {name: (files[name], records[name]) for name in records}
        write_repository(out / "triton", files["onnx"], model.imgsz, model.embedding_dim, opts.batch,
                         {"checkpoint_sha256": ckpt_hash, "input_size": list(model.imgsz),
                          "embedding_dim": model.embedding_dim},
                         calibration.cache if calibration else None, built, opts.workspace_gib,
                         trt_version=trt_version)
        files["triton"] = out / "triton"
        log(f"[triton] model repository {files['triton']} ({', '.join(['onnx'] + list(built))})")
    if "deepstream" in names:
        from fogreid.export.deepstream import write_deepstream

        files.update(write_deepstream(model, out / "deepstream",
                                      onnx_graph.deploy_metadata(model.net, ckpt_hash, "fp32"), opts.batch[2]))
        log(f"[deepstream] {files['deepstream-onnx']} + {files['deepstream-config']}")

    manifest = out / "export.json"
    with atomic_write(manifest, "w") as handle:
        installed = installed_tensorrt()
        json.dump({"checkpoint": str(checkpoint), "checkpoint_sha256": ckpt_hash, "input_size": list(model.imgsz),
                   "embedding_dim": model.embedding_dim, "batch_profile": list(opts.batch),
                   "tensorrt_version": ".".join(map(str, trt_version)),
                   "tensorrt_installed": ".".join(map(str, installed)) if installed else None,
                   "files": {k: v.name for k, v in files.items()}, "not_built": not_built,
                   "engines": records, "check": checks,
                   "calibration": calibration.report if calibration else None}, handle, indent=2)
    return ExportResult(files, not_built, manifest, checks)


def write_onnx(model, ckpt_hash: str, out: Path, opts: ExportOptions, fp16: bool, log) -> dict[str, Path]:
    """The FP32 fused graph (always first: every other format derives from it), the whole-frame
    defog graph where the head supports it, and the FP16 graph the strongly typed builds parse."""
    from fogreid.export import frame_graph

    size = model.imgsz
    fp32 = out / "model.onnx"
    log(f"[onnx] exporting {size[0]}x{size[1]} fused graph -> {fp32}")
    metadata = onnx_graph.deploy_metadata(model.net, ckpt_hash, "fp32")
    onnx_graph.export_onnx(model, fp32, {**metadata, "graph": "fused-crop"}, max_batch=max(opts.batch[2], 64))
    files = {"onnx": fp32}
    if frame_graph.supports_frames(model.net):  # the defog head on whole frames, for --defog-view frame
        downscale = opts.frame_downscale or frame_graph.default_downscale(model.net.config.imgsz)
        files["onnx-defog-frame"] = frame_graph.export_frame_graph(model.net, out / frame_graph.FILE, metadata,
                                                                   downscale)
        log(f"[onnx] whole-frame defog graph (any H, W; the network at 1/{downscale} size) -> "
            f"{files['onnx-defog-frame']}")
    if fp16:
        half = onnx_graph.to_fp16(onnx_graph.load(fp32))
        onnx_graph.set_metadata(half, {"precision": "fp16"})
        onnx_graph.save(half, out / "model_fp16.onnx")
        files["onnx-fp16"] = out / "model_fp16.onnx"
        log(f"[onnx-fp16] {files['onnx-fp16']}")
    return files


def write_int8(files: dict[str, Path], out: Path, opts: ExportOptions, trt_version: tuple[int, int, int], log):
    """The Q/DQ model and the TensorRT cache, calibrated on the foggy images (fogreid calibrate)."""
    from fogreid.calibration.calibrate_onnx import calibrate

    calibration = calibrate(files["onnx"], opts.calib_images, out, opts.calib_method, opts.calib_num, opts.data_root,
                            opts.keep_fp, trt_version=trt_version, progress=opts.progress, budget=opts.int8_budget)
    files["onnx-int8"] = calibration.qdq_onnx
    files["calibration-cache"] = calibration.cache
    log(f"[onnx-int8] {calibration.qdq_onnx} (Q/DQ, {opts.calib_method}); TensorRT "
        f"{'.'.join(map(str, trt_version))} cache {calibration.cache}")
    return calibration


def preflight(files: dict[str, Path], opts: ExportOptions, trt_version: tuple[int, int, int], log) -> dict[str, dict]:
    """`fogreid check` of each ONNX file against the targets it is for."""
    checks = {}
    targets = ["trt10", "trt11", "ort-cpu"] + (["dla"] if opts.dla_core is not None else [])
    for key in ("onnx", "onnx-fp16", "onnx-int8"):
        if key in files:
            report = check_artifact(files[key], targets, trt_version)
            checks[files[key].name] = report.to_dict()
            for line in report.lines():
                log(f"[check] {files[key].name}: {line}")
    return checks


def write_engines(engines: list[Format], size: tuple[int, int], files: dict[str, Path], calibration,
                  checks: dict[str, dict], out: Path, opts: ExportOptions,
                  log) -> tuple[dict[str, str], dict[str, dict]]:
    """One trtexec script per TensorRT major version, always; the engines themselves where
    TensorRT is installed. Returns (format -> why not built, format -> engine record)."""
    not_built: dict[str, str] = {}
    scripts: dict[int, list[tuple[str, str]]] = {10: [], 11: []}
    records = {}
    installed = installed_tensorrt()
    timing_cache = out / "timing.cache"
    for fmt in engines:
        engine_path = out / fmt.file
        for major in (10, 11):
            spec = engine_spec(fmt, size, opts, major)
            if major == 11 and spec.calibration == "implicit":
                continue  # no calibrator in TensorRT 11: the explicit Q/DQ engine is its INT8 path
            how = recipe(spec, major)
            where = f"DLA core {opts.dla_core}" if opts.dla_core is not None else "GPU"
            comment = f"{fmt.name} on the {where}" + (" (TensorRT >= 11.4.1 for DLA)"
                                                      if major == 11 and opts.dla_core is not None else "")
            scripts[major].append((comment, trtexec_command(
                files[how.onnx].name, engine_path.name, spec, how,
                calibration.cache.name if how.calibration_cache and calibration else None, timing_cache.name,
                fp32_layers=tail_layers(files[how.onnx]) if how.fp32_tail else ())))
        if installed is None:
            not_built[fmt.name] = "TensorRT is not installed"
            continue
        spec = engine_spec(fmt, size, opts, installed[0])
        how = recipe(spec, installed[0])
        source = files[how.onnx]
        if not checks.get(source.name, {"ok": True})["ok"]:
            not_built[fmt.name] = f"{source.name} fails the pre-flight check (see export.json)"
            continue
        batches = None
        if how.calibration_cache:
            from fogreid.calibration.images import build_calibration_set
            from fogreid.calibration.trt_cache import check_cache_for
            from fogreid.calibration.trt_calibrator import CalibrationBatches

            check_cache_for(calibration.cache, installed)
            calib = build_calibration_set(opts.calib_images, spec.imgsz, opts.calib_num, opts.data_root,
                                          progress=False)
            batches = CalibrationBatches(calib.images, opts.batch[1])
        log(f"[{fmt.name}] building with TensorRT {'.'.join(map(str, installed))} from {source.name}")
        records[fmt.name] = build_engine(source, engine_path, spec, how, batches,
                                         calibration.cache if how.calibration_cache and calibration else None,
                                         timing_cache)
        files[fmt.name] = engine_path

    for major, lines in scripts.items():
        if not lines:
            continue
        script = out / f"trtexec_trt{major}.sh"
        with atomic_write(script, "w") as handle:
            handle.write(trtexec_script(major, lines))
        script.chmod(0o755)
        files[f"trtexec-trt{major}"] = script
    for name, reason in not_built.items():
        log(f"[{name}] not built: {reason}" + (f"\n  {INSTALL_HINT}" if reason == "TensorRT is not installed" else ""))
    return not_built, records


def engine_spec(fmt: Format, size: tuple[int, int], opts: ExportOptions, trt_major: int) -> EngineSpec:
    """`--int8-mode auto` is implicit (the calibration cache) for DLA on TensorRT 10, where DLA's
    INT8 comes from a cache, and explicit (the Q/DQ model) everywhere else: TensorRT 11 has no
    implicit INT8, its DLA (>= 11.4.1) builds from the Q/DQ model."""
    implicit = fmt.precision == "int8" and (opts.int8_mode == "implicit" or (
        opts.int8_mode == "auto" and opts.dla_core is not None and trt_major == 10))
    return EngineSpec(fmt.precision, opts.batch, size, opts.workspace_gib, opts.dla_core,
                      "implicit" if implicit else "explicit")

"""`fogreid export`: a checkpoint to the formats asked for, in one folder.

The FP32 ONNX is always made first (every other format derives from it), checked against
TensorRT's parser tables, and every artifact carries its metadata. Engines need TensorRT;
without it the ONNX files, the calibration cache and `trtexec.sh` are still written, and
the run says what to install.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from fogreid.errors import FogreidError
from fogreid import onnx_graph
from fogreid.export.formats import Format
from fogreid.export.tensorrt_engine import EngineSpec, build_engine, tensorrt_version, trtexec_command
from fogreid.export.trt_support import check_ops
from fogreid.fileio import atomic_write, sha256_file


@dataclass
class ExportOptions:
    imgsz: tuple[int, int] | None = None
    batch: tuple[int, int, int] = (1, 8, 32)
    calib_images: list[str] = field(default_factory=list)
    calib_method: str = "minmax"
    calib_num: int = 512
    data_root: str | None = None
    int8_mode: str = "auto"            # auto | explicit | implicit (auto: implicit for DLA, else explicit)
    dla_core: int | None = None
    workspace_gib: float = 4.0
    keep_fp: list[str] = field(default_factory=list)
    progress: bool = True


@dataclass
class ExportResult:
    files: dict[str, Path]
    not_built: dict[str, str]          # format -> reason
    manifest: Path


def export(checkpoint: str | Path, formats: list[Format], out: str | Path, opts: ExportOptions) -> ExportResult:
    from fogreid.model.fused import FusedDefogReID

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = {f.name for f in formats}
    if any(f.needs_calibration for f in formats) and not opts.calib_images:
        raise FogreidError("INT8 formats need foggy calibration images: --calib-images DIR "
                           "(e.g. FVRID_real/train_foggy; never the test query/gallery)")
    if opts.int8_mode not in ("auto", "explicit", "implicit"):
        raise FogreidError("--int8-mode must be auto, explicit or implicit")

    model = FusedDefogReID.from_checkpoint(checkpoint, input_size=opts.imgsz)
    size = model.input_size
    ckpt_hash = sha256_file(checkpoint)
    files: dict[str, Path] = {}
    log = (lambda msg: print(msg)) if opts.progress else (lambda msg: None)

    fp32 = out / "model.onnx"
    log(f"[onnx] exporting {size[0]}x{size[1]} fused graph -> {fp32}")
    onnx_graph.export_onnx(model, fp32, onnx_graph.deploy_metadata(model.net, ckpt_hash, "fp32"),
                           max_batch=max(opts.batch[2], 64))
    files["onnx"] = fp32
    proto = onnx_graph.load(fp32)
    ops = check_ops(proto, dla=opts.dla_core is not None)
    for line in ops.lines():
        log(f"[check] {line}")

    if {"onnx-fp16", "engine-fp16"} & names:
        half = onnx_graph.to_fp16(proto)
        onnx_graph.set_metadata(half, {"precision": "fp16"})
        onnx_graph.save(half, out / "model_fp16.onnx")
        files["onnx-fp16"] = out / "model_fp16.onnx"
        log(f"[onnx-fp16] {files['onnx-fp16']}")

    calibration = None
    if {"onnx-int8", "engine-int8"} & names:
        from fogreid.calibration.calibrate import calibrate

        calibration = calibrate(fp32, opts.calib_images, out, opts.calib_method, opts.calib_num, opts.data_root,
                                opts.keep_fp, progress=opts.progress)
        files["onnx-int8"] = calibration.qdq_onnx
        files["calibration-cache"] = calibration.cache
        log(f"[onnx-int8] {calibration.qdq_onnx} (Q/DQ, {opts.calib_method}); TensorRT cache {calibration.cache}")

    # ------------------------------------------------------------------ TensorRT
    engines = [f for f in formats if f.needs_tensorrt]
    not_built: dict[str, str] = {}
    commands, records = [], {}
    version = tensorrt_version()
    timing_cache = out / "timing.cache"
    for fmt in engines:
        implicit = fmt.precision == "int8" and (opts.int8_mode == "implicit" or
                                                (opts.int8_mode == "auto" and opts.dla_core is not None))
        spec = EngineSpec(fmt.precision, opts.batch, size, opts.workspace_gib, opts.dla_core,
                          "implicit" if implicit else "explicit")
        engine_path = out / fmt.file
        # TensorRT 11 has no precision flags: FP16 comes from the FP16 ONNX, INT8 from Q/DQ.
        variants = {"TensorRT 10": (False, fp32 if fmt.precision == "fp16" or implicit else files["onnx-int8"])}
        if not implicit:
            variants["TensorRT 11"] = (True, files["onnx-fp16"] if fmt.precision == "fp16" else files["onnx-int8"])
        for label, (strong, source) in variants.items():
            commands.append(f"# {fmt.name}, {label}\n" + trtexec_command(
                source.name, engine_path.name, spec, strong,
                calibration.cache.name if implicit and calibration else None, timing_cache.name))
        if not ops.ok:
            not_built[fmt.name] = "; ".join(p.describe() for p in ops.unsupported)
            continue
        if version is None:
            not_built[fmt.name] = "TensorRT is not installed"
            continue
        strong = version[0] >= 11
        if implicit and strong:
            raise FogreidError("implicit INT8 calibration was removed in TensorRT 11; use --int8-mode explicit")
        source = variants["TensorRT 11" if strong else "TensorRT 10"][1]
        batches = None
        if implicit:
            from fogreid.calibration.images import build_calibration_set

            calib = build_calibration_set(opts.calib_images, size, opts.calib_num, opts.data_root, progress=False)
            batches = [{"frames": b} for b in calib.batches(max(opts.batch[1], 8))]
        log(f"[{fmt.name}] building with TensorRT {'.'.join(map(str, version))} from {source.name}")
        records[fmt.name] = build_engine(source, engine_path, spec, strong, batches,
                                         calibration.cache if implicit and calibration else None, timing_cache)
        files[fmt.name] = engine_path

    if engines:
        script = out / "trtexec.sh"
        with atomic_write(script, "w") as handle:
            handle.write("#!/usr/bin/env bash\n# Build the engines on the target (a Jetson, say) with trtexec.\n"
                         "# Run in this folder. Engines are tied to the GPU and TensorRT version that build them.\n"
                         "set -e\n" + "\n".join(commands) + "\n")
        script.chmod(0o755)
        files["trtexec.sh"] = script
    for name, reason in not_built.items():
        from fogreid.export.tensorrt_engine import INSTALL_HINT

        log(f"[{name}] not built: {reason}" + (f"\n  {INSTALL_HINT}" if reason == "TensorRT is not installed" else ""))

    if "triton" in names:
        from fogreid.export.triton import write_repository

        built = {name: (files[name], records[name]) for name in records}
        write_repository(out / "triton", fp32, size, model.embedding_dim, opts.batch,
                         {"checkpoint_sha256": ckpt_hash, "input_size": list(size),
                          "embedding_dim": model.embedding_dim},
                         calibration.cache if calibration else None, built, opts.workspace_gib)
        files["triton"] = out / "triton"
        log(f"[triton] model repository {files['triton']} ({', '.join(['onnx'] + list(built))})")
    if "deepstream" in names:
        from fogreid.export.deepstream import write_deepstream

        files.update(write_deepstream(model, out / "deepstream",
                                      onnx_graph.deploy_metadata(model.net, ckpt_hash, "fp32"), opts.batch[2]))
        log(f"[deepstream] {files['deepstream-onnx']} + {files['deepstream-config']}")

    manifest = out / "export.json"
    with atomic_write(manifest, "w") as handle:
        json.dump({"checkpoint": str(checkpoint), "checkpoint_sha256": ckpt_hash, "input_size": list(size),
                   "embedding_dim": model.embedding_dim, "batch_profile": list(opts.batch),
                   "files": {k: v.name for k, v in files.items()}, "not_built": not_built,
                   "engines": records, "op_check": ops.lines(),
                   "calibration": calibration.report if calibration else None}, handle, indent=2)
    return ExportResult(files, not_built, manifest)

"""`fogreid export`: export a checkpoint to ONNX (FP32/FP16/INT8) and TensorRT engines."""

from __future__ import annotations

import argparse
import sys

from fogreid.calibration.defaults import DEFAULT_IMAGES, DEFAULT_METHOD, METHODS
from fogreid.cli.common import (
    add_int8_budget,
    float_in,
    imgsz_px,
    input_file,
    input_folders,
    int_in,
    names,
    output_folder,
    parse_imgsz,
)


def add_parser(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("export", help="export a checkpoint to ONNX (FP32/FP16/INT8) and TensorRT engines")
    p.add_argument("--checkpoint", required=True, help="a fogreid checkpoint (.pt), e.g. RUN/best.pt")
    p.add_argument("--format", default="onnx",
                   help="comma list of onnx, onnx-fp16, onnx-int8, engine-fp16, engine-int8, triton, deepstream "
                        "(default onnx)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--imgsz", type=imgsz_px, nargs="+", metavar="PX",
                   help="image size H [W] (default: the checkpoint's)")
    p.add_argument("--batch", help="TensorRT profile MIN:OPT:MAX (default 1:8:32); with --dla-core one size B, "
                   "meaning B:B:B (DLA has no dynamic shapes)")
    p.add_argument("--calib-images", nargs="+", metavar="DIR", help="folders of foggy images for INT8")
    p.add_argument("--calib-method", default=DEFAULT_METHOD, choices=METHODS,
                   help=f"activation ranges (default {DEFAULT_METHOD}: entropy's clipping costs ReID embeddings most)")
    p.add_argument("--calib-num", type=int_in(1, 1_000_000), default=DEFAULT_IMAGES,
                   help=f"calibration images (default {DEFAULT_IMAGES}; 64 more are held out to check --int8-budget)")
    p.add_argument("--data", help="dataset root: refuse calibration images of its test identities")
    p.add_argument("--int8-mode", default="auto", choices=["auto", "explicit", "implicit"],
                   help="TensorRT INT8: Q/DQ ONNX (explicit) or calibrator + cache (implicit; DLA, JetPack 6)")
    p.add_argument("--keep-fp", help="nodes to keep in floating point: a comma list or @FILE")
    p.add_argument("--dla-core", type=int_in(0, 15),
                   help="build for this DLA core (GPU fallback allowed; static batch)")
    p.add_argument("--trt-version", metavar="X.Y[.Z]",
                   help="TensorRT version that will read the calibration cache and build the engines (default: "
                        "the installed TensorRT, else 10.3.0 = JetPack 6)")
    p.add_argument("--workspace", type=float_in(0, 1024, low_open=True), default=4.0,
                   help="TensorRT workspace limit in GiB (default 4)")
    p.add_argument("--frame-downscale", type=int_in(1, 16), metavar="K",
                   help="the whole-frame defog graph runs the network at 1/K of the frame's size and upsamples "
                        "with a guided filter (default: the integer nearest 240 / the input height, e.g. 4 at 64 px)")
    add_int8_budget(p)
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from fogreid.export.exporter import ExportOptions, export
    from fogreid.export.formats import parse_batch, parse_formats
    from fogreid.fileio import refuse_outputs_over_inputs
    from fogreid.tensorrt_version import parse_trt_version

    formats = parse_formats(args.format)
    batch = parse_batch(args.batch, dla=args.dla_core is not None)
    # Everything the export will need, checked before the FP32 export starts (it takes a while).
    input_file(args.checkpoint, "--checkpoint", "checkpoint", "checkpoint",
               {"onnx": "it is exported already; give the checkpoint (.pt) it came from"})
    keep_fp_file = args.keep_fp[1:] if args.keep_fp and args.keep_fp.startswith("@") else None
    refuse_outputs_over_inputs({"--out": args.out}, {"--checkpoint": args.checkpoint, "--data": args.data,
                                                     "--calib-images": args.calib_images, "--keep-fp": keep_fp_file})
    output_folder(args.out)
    input_folders(args.calib_images, "--calib-images")
    if any(f.needs_calibration for f in formats):
        from fogreid.data.image_io import list_images

        for folder in args.calib_images or []:
            list_images(folder)
    opts = ExportOptions(imgsz=parse_imgsz(args.imgsz) if args.imgsz else None, batch=batch,
                         trt_version=parse_trt_version(args.trt_version) if args.trt_version else None,
                         calib_images=args.calib_images or [], calib_method=args.calib_method,
                         calib_num=args.calib_num, data_root=args.data, int8_mode=args.int8_mode,
                         dla_core=args.dla_core, workspace_gib=args.workspace, keep_fp=names(args.keep_fp),
                         int8_budget=args.int8_budget or None, frame_downscale=args.frame_downscale,
                         progress=not args.quiet)
    result = export(args.checkpoint, formats, args.out, opts)
    print(f"wrote {', '.join(str(p) for p in result.files.values())}")
    print(f"manifest: {result.manifest}")
    if result.check_failed:
        for name, check in result.checks.items():
            for problem in check["problems"]:
                if problem["severity"] == "error":
                    print(f"fogreid export: {name} fails the pre-flight check: [{problem['target']}] "
                          f"{problem['node']}: {problem['message']}", file=sys.stderr)
        return 1
    if result.not_built:
        scripts = " or ".join(str(p) for k, p in result.files.items() if k.startswith("trtexec-")) or "trtexec"
        print(f"not built: {', '.join(result.not_built)} (see above); build them on the target with {scripts} "
              f"(the one for its TensorRT major version)", file=sys.stderr)
        return 1
    return 0

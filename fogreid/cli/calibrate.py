"""`fogreid calibrate`: INT8 calibration of an ONNX model on foggy images."""

from __future__ import annotations

import argparse

from fogreid.calibration.defaults import DEFAULT_IMAGES, DEFAULT_METHOD, METHODS
from fogreid.cli.common import add_int8_budget, input_file, input_folders, int_in, names, output_folder
from fogreid.fileio import refuse_outputs_over_inputs


def add_parser(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("calibrate", help="INT8 calibration of an ONNX model on foggy images")
    p.add_argument("--onnx", required=True, help="an FP32 model exported by fogreid")
    p.add_argument("--images", required=True, nargs="+", metavar="DIR", help="folders of foggy images")
    p.add_argument("--data", help="dataset root: refuse images of its test query/gallery identities")
    p.add_argument("--out", required=True, help="output folder: model_int8.onnx, calibration.cache, calibration.json")
    p.add_argument("--method", default=DEFAULT_METHOD, choices=METHODS,
                   help=f"activation ranges (default {DEFAULT_METHOD}: entropy's clipping costs ReID embeddings most)")
    p.add_argument("--num", type=int_in(1, 1_000_000), default=DEFAULT_IMAGES,
                   help=f"calibration images (default {DEFAULT_IMAGES}; 64 more are held out to check --int8-budget)")
    p.add_argument("--keep-fp", help="nodes to keep in floating point: a comma list or @FILE")
    p.add_argument("--trt-version", metavar="X.Y[.Z]",
                   help="TensorRT version that will read calibration.cache (default: the installed TensorRT, "
                        "else 10.3.0 = JetPack 6); TensorRT ignores a cache written for another version")
    add_int8_budget(p)
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    input_file(args.onnx, "--onnx", "ONNX model", "onnx",
               {"checkpoint": "export it first: `fogreid export --checkpoint ... --format onnx`"})
    input_folders(args.images, "--images")
    keep_fp_file = args.keep_fp[1:] if args.keep_fp and args.keep_fp.startswith("@") else None
    refuse_outputs_over_inputs({"--out": args.out}, {"--onnx": args.onnx, "--images": args.images, "--data": args.data,
                                                     "--keep-fp": keep_fp_file})
    output_folder(args.out)
    from fogreid.calibration.calibrate_onnx import calibrate
    from fogreid.export.exporter import resolve_trt_version
    from fogreid.tensorrt_version import parse_trt_version

    trt_version = resolve_trt_version(parse_trt_version(args.trt_version) if args.trt_version else None)
    result = calibrate(args.onnx, args.images, args.out, args.method, args.num, args.data,
                       names(args.keep_fp), trt_version=trt_version, progress=not args.quiet,
                       budget=args.int8_budget or None)
    print(f"wrote {result.qdq_onnx} (Q/DQ INT8), {result.cache} (TensorRT calibration cache) and "
          f"{result.cache.with_name('calibration.json')}")
    return 0

"""`fogreid export`: export a checkpoint to ONNX (FP32/FP16/INT8) and TensorRT engines."""

from __future__ import annotations

import argparse
import sys

from fogreid.cli.common import names, size


def add_parser(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("export", help="export a checkpoint to ONNX (FP32/FP16/INT8) and TensorRT engines")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--format", default="onnx",
                   help="comma list of onnx, onnx-fp16, onnx-int8, engine-fp16, engine-int8, triton, deepstream (default onnx)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--imgsz", type=int, nargs="+", metavar="PX", help="input size H [W] (default: the checkpoint's)")
    p.add_argument("--batch", default="1:8:32", help="TensorRT profile MIN:OPT:MAX (default 1:8:32)")
    p.add_argument("--calib-images", nargs="+", metavar="DIR", help="folders of foggy images for INT8")
    p.add_argument("--calib-method", default="minmax", choices=["minmax", "entropy", "percentile"],
                   help="activation ranges (default minmax: entropy's clipping costs ReID embeddings most)")
    p.add_argument("--calib-num", type=int, default=512, help="calibration images (default 512)")
    p.add_argument("--data", help="dataset root: refuse calibration images of its test identities")
    p.add_argument("--int8-mode", default="auto", choices=["auto", "explicit", "implicit"],
                   help="TensorRT INT8: Q/DQ ONNX (explicit) or calibrator + cache (implicit; DLA, JetPack 6)")
    p.add_argument("--keep-fp", help="nodes to keep in floating point: a comma list or @FILE")
    p.add_argument("--dla-core", type=int, help="build for this DLA core (GPU fallback allowed)")
    p.add_argument("--workspace", type=float, default=4.0, help="TensorRT workspace limit in GiB (default 4)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from fogreid.export.exporter import ExportOptions, export
    from fogreid.export.formats import parse_batch, parse_formats

    formats = parse_formats(args.format)
    opts = ExportOptions(imgsz=size(args.imgsz) if args.imgsz else None, batch=parse_batch(args.batch),
                         calib_images=args.calib_images or [], calib_method=args.calib_method,
                         calib_num=args.calib_num, data_root=args.data, int8_mode=args.int8_mode,
                         dla_core=args.dla_core, workspace_gib=args.workspace, keep_fp=names(args.keep_fp),
                         progress=not args.quiet)
    result = export(args.checkpoint, formats, args.out, opts)
    print(f"wrote {', '.join(str(p) for p in result.files.values())}")
    print(f"manifest: {result.manifest}")
    if result.not_built:
        print(f"not built: {', '.join(result.not_built)} (see above); build them on the target with "
              f"{result.files.get('trtexec.sh', 'trtexec')}", file=sys.stderr)
        return 1
    return 0

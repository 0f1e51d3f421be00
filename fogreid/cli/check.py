"""`fogreid check`: a pre-flight check of ONNX artifacts against a target's documented rules."""

from __future__ import annotations

import argparse
import sys

TARGETS = ["trt10", "trt11", "dla", "ort-cpu", "ort-cuda", "openvino"]


def add_parser(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("check", help="pre-flight check of ONNX artifacts for TensorRT 10/11, DLA, ONNX Runtime, "
                                       "OpenVINO",
                         description="Check each ONNX artifact against the documented rules of its targets "
                                     "(ops and their minimum TensorRT version, Q/DQ types, uint8 only at the "
                                     "network's I/O, DLA's static shapes and layers, opsets, external data), "
                                     "and a Q/DQ model against its TensorRT calibration cache. "
                                     "One line per problem; exit 1 on any error.")
    p.add_argument("artifacts", nargs="+", metavar="ARTIFACT", help="ONNX files (FP32, FP16 or Q/DQ INT8)")
    p.add_argument("--target", action="append", choices=TARGETS,
                   help="check for this target (repeatable; default: trt10, trt11 and ort-cpu)")
    p.add_argument("--trt-version", metavar="X.Y[.Z]",
                   help="the TensorRT release of the trt10/trt11/dla targets (default: 10.3.0 and 11.0.0)")
    p.add_argument("--cache", metavar="CACHE",
                   help="TensorRT calibration cache that must match the Q/DQ artifacts: the same tensors with the "
                        "same scales (default: calibration.cache beside each Q/DQ model, if there is one)")
    p.add_argument("--json", action="store_true", help="print the reports as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from fogreid.cli.common import input_file
    from fogreid.errors import FogreidError
    from fogreid.export.preflight import DEFAULT_TARGETS, check_artifact
    from fogreid.tensorrt_version import parse_trt_version

    for path in args.artifacts:
        input_file(path, "", "ONNX model", "onnx",
                   {"checkpoint": "export it first (`fogreid export --checkpoint ...`), then check the .onnx"})
    version = parse_trt_version(args.trt_version) if args.trt_version else None
    targets = args.target or list(DEFAULT_TARGETS)
    if args.cache and not Path(args.cache).is_file():
        raise FogreidError(f"--cache {args.cache}: file not found; "
                           "give the calibration.cache written by fogreid export")
    reports = [check_artifact(path, targets, version, args.cache) for path in args.artifacts]
    if args.json:
        print(json.dumps([r.to_dict() for r in reports], indent=2))
    else:
        for report in reports:
            summary = report.to_dict()
            verdict = "ok" if report.ok else "FAIL"
            print(f"{report.artifact}: {verdict} for {', '.join(targets)} "
                  f"({summary['errors']} errors, {summary['warnings']} warnings)")
            for line in report.lines():
                print(f"  {line}", file=sys.stdout if line.startswith("warning") else sys.stderr)
    return 0 if all(r.ok for r in reports) else 1

"""`fogreid validate`: is an exported artifact as accurate as the PyTorch model?."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fogreid.cli.common import input_file, input_folders, int_in, output_file
from fogreid.fileio import refuse_outputs_over_inputs


def add_parser(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("validate", help="is an exported artifact as accurate as the PyTorch model, on every engine?")
    p.add_argument("--checkpoint", required=True, help="the PyTorch checkpoint the artifacts were exported from")
    p.add_argument("--model", required=True, nargs="+", metavar="ARTIFACT",
                   help="one or more artifacts: .onnx (any precision) or TensorRT engines")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--images", nargs="+", metavar="DIR", help="folders of foggy images")
    source.add_argument("--data", help="dataset root: its query/gallery, for mAP / Rank-1 of both models")
    p.add_argument("--backend", default=["auto"], nargs="+", choices=["auto", "torch", "onnxruntime", "openvino",
                                                                        "tensorrt"],
                   help="engines to run each artifact on (auto: every installed engine that reads it: ONNX Runtime "
                        "and OpenVINO for .onnx, TensorRT for an engine)")
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"], help="default: from the artifact's metadata")
    p.add_argument("--threshold", action="append", metavar="NAME=VALUE", type=threshold,
                   help="override a threshold, e.g. cosine_min=0.97 (see fogreid/validate/compare.py): cosine_min "
                        "and cosine_p1 in [-1, 1], nn_agreement in [0, 1], psnr_db 0 to 200 dB, map_drop and "
                        "rank1_drop 0 to 100 points")
    p.add_argument("--limit", type=int_in(1, 10_000_000), default=256, help="images used from --images (default 256)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--report", metavar="OUT.json", help="write the figures and verdict as JSON")
    p.add_argument("--html", metavar="OUT.html", help="write an HTML report with histograms and CMC curves")
    p.add_argument("--per-layer", metavar="OUT.txt", help="INT8: rank the layers that lose most; write the ones "
                   "to keep in float to OUT.txt (then: fogreid export --keep-fp @OUT.txt)")
    p.add_argument("--per-layer-images", nargs="+", metavar="DIR",
                   help="calibration images for --per-layer (default: --images)")
    p.add_argument("--top", type=int_in(1, 10_000), default=5,
                   help="layers to keep in float with --per-layer (default 5)")
    p.set_defaults(run=run)


def threshold(text: str) -> str:
    """`--threshold NAME=VALUE`, checked while the command line is read (NaN and out-of-range
    values included); kept as text for validate_many."""
    from fogreid.errors import FogreidError
    from fogreid.validate.compare import parse_threshold

    try:
        parse_threshold(text)
    except FogreidError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--threshold ")) from None
    return text


def run(args: argparse.Namespace) -> int:
    # Every file the verb reads or writes is checked before the comparison runs.
    input_file(args.checkpoint, "--checkpoint", "checkpoint", "checkpoint", {"onnx": "--model"})
    for model in args.model:
        input_file(model, "--model", "model", "model")
    input_folders(args.images, "--images")
    input_folders(args.per_layer_images, "--per-layer-images")
    refuse_outputs_over_inputs({"--report": args.report, "--html": args.html, "--per-layer": args.per_layer},
                               {"--checkpoint": args.checkpoint, "--model": args.model, "--images": args.images,
                                "--data": args.data, "--per-layer-images": args.per_layer_images})
    output_file(args.report, "--report", (".json",))
    output_file(args.html, "--html", (".html", ".htm"))
    output_file(args.per_layer, "--per-layer")
    if args.per_layer and len(args.model) > 1:
        from fogreid.errors import FogreidError

        raise FogreidError("--per-layer ranks the layers of one INT8 model: give a single --model")
    if args.per_layer and not (args.per_layer_images or args.images):
        from fogreid.errors import FogreidError

        raise FogreidError("--per-layer needs calibration images: add --per-layer-images DIR (or --images DIR)")
    from polygraphy.logger import G_LOGGER

    # Polygraphy's Comparator logs every batch's inputs and outputs at INFO, and asks for the
    # 'colored' package unless colours are off: keep its warnings and errors, drop the rest.
    G_LOGGER.colors = False
    G_LOGGER.module_severity = G_LOGGER.WARNING
    from fogreid.validate.compare import artifact_precision, candidates, validate_many
    from fogreid.validate.frame import is_frame_graph, validate_frame_graph

    if any(is_frame_graph(Path(m)) for m in args.model):  # the whole-frame defog graph: no embeddings
        if len(args.model) > 1:
            from fogreid.errors import FogreidError

            raise FogreidError("--model: a whole-frame defog graph (defog_frame*.onnx) is validated on its own")
        results = [validate_frame_graph(args.checkpoint, args.model[0], args.images, args.data,
                                        args.precision or artifact_precision(Path(args.model[0])))]
    else:
        results = validate_many(args.checkpoint, candidates(args.model, args.backend), args.images, args.data,
                                args.precision, args.threshold or [], limit=args.limit, device=args.device)
    for result in results:
        print(f"{result.artifact} ({result.backend}, {result.precision}) vs {result.checkpoint} on {result.images} "
              f"images")
        for key, value in result.figures.items():
            print(f"  {key:<24} {value:.4f}" if isinstance(value, float) else f"  {key:<24} {value}")
    if len(results) > 1:
        from fogreid.validate.report import cross_engine_table

        print(cross_engine_table(results))
    if args.report:
        from fogreid.validate.report import write_json

        write_json(results, args.report)
        print(f"report: {args.report}")
    if args.html:
        from fogreid.validate.report import write_html

        write_html(results, args.html)
        print(f"html report: {args.html}")
    if args.per_layer:
        from fogreid.calibration.per_layer import rank_layers

        rank_layers(args.checkpoint, args.model[0], args.per_layer_images or args.images or [], args.per_layer,
                    top=args.top)
    if all(r.passed for r in results):
        print("PASS")
        return 0
    for result in results:
        for check in result.checks:
            if not check.passed:
                print(f"FAIL: {Path(result.artifact).name} on {result.backend}: {check.describe()}", file=sys.stderr)
    return 1

"""`fogreid info`: parameters and GFLOPs of each branch of a model."""

from __future__ import annotations

import argparse

from fogreid.cli.common import imgsz_px, input_file, parse_imgsz


def add_parser(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("info", help="parameters and GFLOPs of each branch of a model")
    group = p.add_mutually_exclusive_group()
    from fogreid.model.config import PRESETS

    group.add_argument("--preset", default="edge", choices=list(PRESETS), help="a named model preset")
    group.add_argument("--checkpoint", help="a fogreid checkpoint")
    p.add_argument("--imgsz", type=imgsz_px, nargs="+", metavar="PX", help="image size: H [W] (default: the model's)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from fogreid.model.summary import format_summary, summarize

    input_file(args.checkpoint, "--checkpoint", "checkpoint", "checkpoint",
               {"onnx": "`fogreid check` reads an ONNX model"})
    if args.checkpoint:
        from fogreid.model.checkpoint import load_network

        net, title = load_network(args.checkpoint), f"checkpoint {args.checkpoint}"
    else:
        from fogreid.model.build import build_model
        from fogreid.model.config import preset

        net, title = build_model(preset(args.preset)), f"preset {args.preset}"
    imgsz = parse_imgsz(args.imgsz) if args.imgsz else net.config.imgsz
    cfg = net.config
    print(f"{title}: {cfg.backbone}{'-IBN-a' if cfg.ibn else ''}, deformable branch "
          f"{'on' if cfg.deform_branch else 'off'}, defog {'on' if cfg.defog else 'off'}, "
          f"embedding {net.embedding_dim}-d, input {imgsz[0]}x{imgsz[1]}")
    print(format_summary(summarize(net, imgsz), f"cost per image at {imgsz[0]}x{imgsz[1]}:"))
    return 0

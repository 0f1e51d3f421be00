"""`fogreid info`: parameters and GFLOPs of each branch of a model."""

from __future__ import annotations

import argparse

from fogreid.cli.common import image_size, input_file, size


def add_parser(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("info", help="parameters and GFLOPs of each branch of a model")
    group = p.add_mutually_exclusive_group()
    from fogreid.model.config import PRESETS

    group.add_argument("--preset", default="edge", choices=list(PRESETS), help="a named model preset")
    group.add_argument("--checkpoint", help="a fogreid checkpoint")
    p.add_argument("--imgsz", type=image_size, nargs="+", metavar="PX", help="input size: H [W] (default: the model's)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from fogreid.model.summary import format_summary, summarize

    input_file(args.checkpoint, "--checkpoint", "checkpoint")
    if args.checkpoint:
        from fogreid.model.checkpoint import load_model

        net, title = load_model(args.checkpoint), f"checkpoint {args.checkpoint}"
    else:
        from fogreid.model.build import build_model
        from fogreid.model.config import preset

        net, title = build_model(preset(args.preset)), f"preset {args.preset}"
    input_size = size(args.imgsz) if args.imgsz else net.config.input_size
    cfg = net.config
    print(f"{title}: {cfg.backbone}{'-IBN-a' if cfg.ibn else ''}, deformable branch "
          f"{'on' if cfg.deform_branch else 'off'}, defog {'on' if cfg.defog else 'off'}, "
          f"embedding {net.embedding_dim}-d, input {input_size[0]}x{input_size[1]}")
    print(format_summary(summarize(net, input_size), f"cost per image at {input_size[0]}x{input_size[1]}:"))
    return 0

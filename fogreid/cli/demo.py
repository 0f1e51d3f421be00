"""`fogreid demo`: the main job on generated data (start here)."""

from __future__ import annotations

import argparse


def add_parser(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("demo", help="the main job on generated data (start here)")
    p.add_argument("--out", default="runs/demo", help="output folder")
    p.add_argument("--quick", action="store_true", help="a smaller dataset for a fast check")
    p.add_argument("--checkpoint", help="use this checkpoint instead of a fresh edge model")
    from fogreid.cli.common import seed

    p.add_argument("--seed", type=seed, default=0, help="seed of the data, the training and the video")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from fogreid.cli.common import input_file, output_folder
    from fogreid.fileio import refuse_outputs_over_inputs

    refuse_outputs_over_inputs({"--out": args.out}, {"--checkpoint": args.checkpoint})
    output_folder(args.out)
    input_file(args.checkpoint, "--checkpoint", "checkpoint", "checkpoint")
    if args.checkpoint:  # build it now (config, weights), not after generating the dataset
        from fogreid.model.checkpoint import load_network

        load_network(args.checkpoint)
    from fogreid.demo import run_demo

    run_demo(args.out, quick=args.quick, checkpoint=args.checkpoint, seed=args.seed)
    return 0

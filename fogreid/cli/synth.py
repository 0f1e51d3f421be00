"""`fogreid synth`: generate a foggy vehicle dataset in FVRID's layout."""

from __future__ import annotations

import argparse

from fogreid.cli.common import DeprecatedAlias, imgsz_px, int_in, seed


def add_parser(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("synth", help="generate a foggy vehicle dataset in FVRID's layout")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--ids", type=int_in(4, 100_000), default=100, help="synthetic identities (real-like: half as many)")
    p.add_argument("--cams", type=int_in(2, 1000), default=5, help="cameras per domain")
    p.add_argument("--per-cam", type=int_in(1, 1000), default=2, help="frames per identity and camera")
    p.add_argument("--queries-per-id", type=int_in(1, 1000), default=2, help="query images per test identity")
    p.add_argument("--imgsz", type=imgsz_px, default=128, metavar="PX", help="image size in pixels (square)")
    p.add_argument("--size", type=imgsz_px, dest="imgsz", action=DeprecatedAlias, new="--imgsz")
    p.add_argument("--seed", type=seed, default=0, help="random seed: the same seed gives the same dataset")
    p.add_argument("--overwrite", action="store_true",
                   help="replace FVRID_syn/, FVRID_real/, FVRID_clear/ in a folder fogreid synth did not write")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from fogreid.cli.common import output_folder
    from fogreid.data.synth import SynthConfig, check_target, generate

    output_folder(args.out)
    check_target(args.out, args.overwrite)

    cfg = SynthConfig(ids=args.ids, cams=args.cams, per_cam=args.per_cam, queries_per_id=args.queries_per_id,
                      imgsz=args.imgsz, seed=args.seed)
    manifest = generate(args.out, cfg, progress=not args.quiet, overwrite=args.overwrite)
    total = sum(manifest["images"].values())
    print(f"wrote {total} images ({', '.join(f'{k}: {v}' for k, v in sorted(manifest['images'].items()))}) "
          f"to {args.out}")
    return 0

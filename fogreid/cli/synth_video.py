"""`fogreid synth-video`: a generated foggy city, for multi-camera tracking."""

from __future__ import annotations

import argparse

from fogreid.cli.common import DeprecatedAlias, float_in, fps, imgsz_px, int_in, seconds, seed


def add_parser(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("synth-video", help="generate a foggy multi-camera city with MOTChallenge ground truth")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--cameras", type=int_in(1, 100), default=3, help="cameras along the street")
    p.add_argument("--vehicles", type=int_in(1, 10_000), default=8, help="vehicles driving through")
    p.add_argument("--seconds", type=seconds, default=16.0, help="length of each video, seconds")
    p.add_argument("--fps", type=fps, default=10.0, help="frame rate")
    p.add_argument("--imgsz", type=imgsz_px, nargs=2, default=[240, 416], metavar=("H", "W"),
                   help="frame size in pixels")
    p.add_argument("--size", type=imgsz_px, nargs=2, dest="imgsz", action=DeprecatedAlias, new="--imgsz")
    p.add_argument("--fog", type=float_in(0, 20), nargs="+", default=[1.0, 2.5, 4.0],
                   help="scattering beta per camera, cycled (0: clear; FVRID_syn draws 1 to 5)")
    p.add_argument("--real-like", action="store_true",
                   help="vehicles, cameras and fog of the real-like domain (patchy, tinted, blurred, noisy)")
    p.add_argument("--seed", type=seed, default=0, help="random seed: the same seed gives the same city")
    p.add_argument("--pairs-every", type=int_in(0, 1_000_000), default=0, metavar="K",
                   help="also write every K-th frame's clear render and foggy frame as lossless PNGs "
                        "(cam<k>/pairs/), to judge whole-frame defog; 0: none")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from fogreid.cli.common import output_folder

    output_folder(args.out)
    from fogreid.data.synth_video import CityConfig, make_city
    from fogreid.errors import FogreidError

    if int(round(args.seconds * args.fps)) < 1:
        raise FogreidError(f"--seconds {args.seconds:g} at --fps {args.fps:g} is less than one frame; give a longer "
                           f"video or a higher frame rate")
    cfg = CityConfig(cameras=args.cameras, vehicles=args.vehicles, seconds=args.seconds, fps=args.fps,
                     height=args.imgsz[0], width=args.imgsz[1], fog=tuple(args.fog), seed=args.seed,
                     domain=1 if args.real_like else 0, pairs_every=args.pairs_every)
    out = make_city(args.out, cfg)
    print(f"wrote {cfg.cameras} cameras x {int(round(cfg.seconds * cfg.fps))} frames to {args.out}")
    print(f"next: fogreid run --model MODEL --source {' '.join(str(v) for v in out['videos'])} \\\n"
          f"        --detections {' '.join(str(d) for d in out['det'])} --events events.jsonl\n"
          f"      fogreid eval-mtmc --city {args.out} --events events.jsonl")
    return 0

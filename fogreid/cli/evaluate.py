"""`fogreid eval`: mAP / CMC and defog PSNR / SSIM of a checkpoint."""

from __future__ import annotations

import argparse


def add_parser(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("eval", help="mAP / CMC and defog PSNR / SSIM of a checkpoint")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True, help="dataset root")
    p.add_argument("--dataset", default="fvrid", choices=["fvrid", "veri776", "veriwild"])
    p.add_argument("--split", default="syn", choices=["syn", "real"], help="FVRID part (default syn)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import json

    import torch

    from fogreid.data.datasets import load_dataset
    from fogreid.model.fused import FusedDefogReID
    from fogreid.train.evaluate import evaluate
    from fogreid.devices import pick_device

    device = pick_device(args.device)
    model = FusedDefogReID.from_checkpoint(args.checkpoint, map_location=device)
    split = load_dataset(args.dataset if args.dataset != "fvrid" else f"fvrid-{args.split}", args.data)
    with torch.inference_mode():
        metrics = evaluate(model, split, batch_size=args.batch, progress=not args.json)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        print(f"{split.name}: {metrics['num_queries']} queries, {len(split.gallery)} gallery images")
        print(f"mAP {metrics['mAP']:.4f}  Rank-1 {metrics['rank1']:.4f}  Rank-5 {metrics['rank5']:.4f}  "
              f"Rank-10 {metrics['rank10']:.4f}")
        if "psnr" in metrics:
            print(f"defogged vs clear: PSNR {metrics['psnr']:.2f} dB  SSIM {metrics['ssim']:.4f}  "
                  f"(foggy input: PSNR {metrics['psnr_foggy']:.2f} dB  SSIM {metrics['ssim_foggy']:.4f})")
    return 0

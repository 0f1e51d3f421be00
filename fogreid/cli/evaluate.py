"""`fogreid eval`: mAP / CMC and defog PSNR / SSIM of a checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from fogreid.cli.common import batch_size, input_file
from fogreid.errors import FogreidError


def add_parser(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("eval", help="mAP / CMC and defog PSNR / SSIM of a checkpoint")
    p.add_argument("--checkpoint", required=True, help="a fogreid checkpoint (.pt)")
    p.add_argument("--data", required=True, help="dataset root")
    p.add_argument("--dataset", default="fvrid", choices=["fvrid", "veri776", "veriwild"],
                   help="dataset layout under --data")
    p.add_argument("--split", default="syn", choices=["syn", "real", "clear"],
                   help="FVRID part: syn (synthetic fog), real (real-like fog), "
                   "clear (the syn test vehicles without fog)")
    p.add_argument("--batch", type=batch_size, default=64, help="images per inference batch")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON (mAP and ranks as fractions 0-1)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    input_file(args.checkpoint, "--checkpoint", "checkpoint", "checkpoint",
               {"onnx": "evaluate its checkpoint (.pt); an exported model is compared with `fogreid validate`"})
    if not Path(args.data).is_dir():
        raise FogreidError(f"--data {args.data}: folder not found; give the dataset root (e.g. from `fogreid synth`)")
    import json

    import torch

    from fogreid.data.datasets import load_dataset
    from fogreid.devices import pick_device
    from fogreid.model.fused import FusedDefogReID
    from fogreid.train.evaluation import evaluate

    device = pick_device(args.device)
    model = FusedDefogReID.from_checkpoint(args.checkpoint, map_location=device)
    split = load_dataset(args.dataset if args.dataset != "fvrid" else f"fvrid-{args.split}", args.data)
    with torch.inference_mode():
        metrics = evaluate(model, split, batch_size=args.batch, progress=not args.json)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        print(f"{split.name}: {metrics['num_queries']} queries, {len(split.gallery)} gallery images")
        # Percentages, as the demo, `validate` and the README print them (--json keeps fractions).
        print(f"mAP {100 * metrics['mAP']:.1f}%  Rank-1 {100 * metrics['rank1']:.1f}%  "
              f"Rank-5 {100 * metrics['rank5']:.1f}%  Rank-10 {100 * metrics['rank10']:.1f}%")
        if "psnr" in metrics:
            print(f"defogged vs clear: PSNR {metrics['psnr']:.2f} dB  SSIM {metrics['ssim']:.4f}  "
                  f"(foggy input: PSNR {metrics['psnr_foggy']:.2f} dB  SSIM {metrics['ssim_foggy']:.4f})")
    return 0

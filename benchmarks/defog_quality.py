"""How defogged is the defog output? PSNR / SSIM against the clear images, on the generated
default dataset's test images (query + gallery), synthetic and real-like fog:

  foggy input        the frame itself
  DCP                the dark channel prior (fogreid/data/dehaze.py) on the same frame
  SJDL head          the defog head of a model trained jointly (ReID + restoration + priors)
  defog only         the same network trained on the restoration loss alone (no ReID terms)

The last two rows share every setting but the loss, so the table shows what joint training
costs or buys the image. The real-like rows use the eval-only clear renders
(FVRID_real/*_clear_eval, written by `fogreid synth`); no model trains on them.

    python benchmarks/defog_quality.py [--out runs/defog_quality] [--imgsz 128] [--epochs 40]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def train_settings(data: Path, imgsz: int, epochs: int, seed: int) -> list[str]:
    """The demo's schedule (fogreid/demo.py) at another size."""
    return [f"data.root={data}", f"model.imgsz=[{imgsz}, {imgsz}]", f"optim.epochs={epochs}", "optim.lr=1e-3",
            f"optim.warmup_epochs={max(epochs // 10, 1)}", f"optim.milestones=[{epochs * 2 // 3}]", "optim.gamma=0.1",
            f"seed={seed}"]


ROWS = {
    "SJDL head": ["mode=sjdl"],
    # No ReID terms and nothing to select on: the last epoch is the model.
    "defog only": ["mode=jdl", "loss.id_weight=0", "loss.triplet_weight=0", "data.val_fraction=0"],
}


def scores(restore, split, size: tuple[int, int]) -> dict:
    """Mean PSNR / SSIM of restore(uint8 frames) -> uint8 frames against the clear images."""
    import numpy as np
    import torch

    from fogreid.data.image_io import image_batches
    from fogreid.metrics import psnr, ssim
    from fogreid.pixels import frames_to_images

    records = split.query + split.gallery
    values = {"psnr": [], "ssim": []}
    clear_batches = image_batches([r.clear_path for r in records], size, 64)
    for frames in image_batches([r.path for r in records], size, 64):
        out = frames_to_images(torch.from_numpy(np.ascontiguousarray(restore(frames))))
        clear = frames_to_images(torch.from_numpy(next(clear_batches)))
        values["psnr"].append(psnr(out, clear))
        values["ssim"].append(ssim(out, clear))
    return {k: float(torch.cat(v).mean()) for k, v in values.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/defog_quality")
    parser.add_argument("--data", help="dataset root (default: generate the default dataset under --out)")
    parser.add_argument("--imgsz", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import numpy as np
    import torch

    from fogreid.data.datasets import load_fvrid
    from fogreid.data.dehaze import dehaze_dcp
    from fogreid.data.synth import SynthConfig
    from fogreid.demo import ensure_dataset
    from fogreid.model.fused import FusedDefogReID
    from fogreid.train.config import build_config
    from fogreid.train.loop import train

    out = Path(args.out)
    data = Path(args.data) if args.data else out / "data"
    if not args.data:
        ensure_dataset(data, SynthConfig(seed=args.seed))
    splits = {"syn": load_fvrid(data, "syn"), "real": load_fvrid(data, "real")}
    if not splits["real"].paired:
        raise SystemExit(f"{data}/FVRID_real has no *_clear_eval folders: regenerate it with `fogreid synth`")
    size = (args.imgsz, args.imgsz)
    table = {"foggy input": {s: scores(lambda f: f, split, size) for s, split in splits.items()},
             "DCP": {s: scores(lambda f: np.stack([dehaze_dcp(x) for x in f]), split, size)
                     for s, split in splits.items()}}
    mAP = {}
    for name, extra in ROWS.items():
        run = out / name.replace(" ", "_")
        if not (run / "metrics.json").is_file():
            train(build_config(None, train_settings(data, args.imgsz, args.epochs, args.seed) + extra), run,
                  progress=False)
        model = FusedDefogReID.from_checkpoint(run / "best.pt")

        def restore(frames, model=model):
            with torch.inference_mode():
                return model(torch.from_numpy(frames))[0].numpy()
        table[name] = {s: scores(restore, split, size) for s, split in splits.items()}
        mAP[name] = {s: m["mAP"] for s, m in json.loads((run / "metrics.json").read_text())["test"].items()}

    print(f"\nDefog quality at {args.imgsz} px, {args.epochs} epochs, seed {args.seed} "
          f"(test query + gallery; PSNR dB / SSIM against the clear images)\n")
    print(f"| {'':<12} | {'syn PSNR':>8} | {'syn SSIM':>8} | {'real PSNR':>9} | {'real SSIM':>9} "
          f"| {'mAP syn / real':>14} |")
    print(f"|{'-' * 14}|{'-' * 10}|{'-' * 10}|{'-' * 11}|{'-' * 11}|{'-' * 16}|")
    for name, row in table.items():
        m = f"{mAP[name]['syn']:.3f} / {mAP[name]['real']:.3f}" if name in mAP else ""
        print(f"| {name:<12} | {row['syn']['psnr']:>8.2f} | {row['syn']['ssim']:>8.3f} | {row['real']['psnr']:>9.2f} "
              f"| {row['real']['ssim']:>9.3f} | {m:>14} |")
    (out / "defog_quality.json").write_text(json.dumps({"imgsz": args.imgsz, "epochs": args.epochs, "seed": args.seed,
                                                        "table": table, "mAP": mAP}, indent=2) + "\n")


if __name__ == "__main__":
    main()

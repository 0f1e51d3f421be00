"""`fogreid train`: train the joint defog + ReID network."""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from fogreid.cli.common import imgsz_px, input_file, output_folder, parse_imgsz, setting
from fogreid.errors import FogreidError
from fogreid.fileio import refuse_outputs_over_inputs

# What `fogreid train` writes into --out (rvsl adds its stage folders): a previous run's traces.
RUN_FILES = ("last.pt", "best.pt", "history.jsonl", "metrics.csv", "metrics.json", "tensorboard", "stage1", "stage2",
             "stage3")


def add_parser(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("train", help="train the joint defog + ReID network")
    p.add_argument("--data", help="dataset root with FVRID_syn/ (and FVRID_real/ for --mode sjdl)")
    p.add_argument("--out", required=True, help="run folder: last.pt, best.pt, metrics")
    p.add_argument("--config", help="YAML file of settings (see fogreid/train/config.py)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting, e.g. loss.tv_weight=0.02")
    p.add_argument("--mode", choices=["sjdl", "jdl", "reid", "rvsl", "frames"],
                   help="sjdl: joint defog + ReID with real foggy images; jdl: without them; reid: ReID only; "
                        "rvsl: RVSL's three stages; frames: train a defog head for whole camera frames from a trained "
                        "model (--init), its crop graph and embedding unchanged (default sjdl)")
    p.add_argument("--stage", choices=["1", "2", "3", "all"], help="rvsl: which stage (default all, in order)")
    p.add_argument("--init", help="rvsl: start the (first) stage from this checkpoint: an RVSL stage's (e.g. "
                   "RUN/stage1/best.pt) or a trained SJDL network's of the same backbone; frames: the trained "
                   "model to give a whole-frame head")
    from fogreid.model.config import PRESETS

    p.add_argument("--preset", choices=list(PRESETS), help="model preset (default edge)")
    p.add_argument("--backbone", choices=["resnet18", "resnet34", "resnet50"], help="encoder (default: the preset's)")
    p.add_argument("--imgsz", type=imgsz_px, nargs="+", metavar="PX", help="image size H [W] (default: the preset's)")
    from fogreid.train.config import DataConfig, OptimConfig, TrainConfig

    p.add_argument("--epochs", type=setting(OptimConfig, "epochs"),
                   help="training epochs (default 120, see fogreid/train/config.py)")
    p.add_argument("--ids-per-batch", type=setting(DataConfig, "ids_per_batch"), help="P identities per batch "
                   "(default 6)")
    p.add_argument("--instances-per-id", type=setting(DataConfig, "instances_per_id"),
                   help="K images per identity (default 6)")
    p.add_argument("--pretrained", help="'imagenet' or an ImageNet weights file for the encoder")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N (default auto)")
    p.add_argument("--seed", type=setting(TrainConfig, "seed"), help="random seed (default 0)")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", nargs="?", const="auto", help="continue from a last.pt (default: OUT/last.pt)")
    again.add_argument("--overwrite", action="store_true",
                       help="start afresh in an --out that holds a previous run, replacing its checkpoints and "
                            "metrics (without it, or --resume, such an --out is refused)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from fogreid.fileio import folder_lock
    from fogreid.train.config import build_config

    input_file(args.config, "--config", "YAML", "text")
    explicit_resume = args.resume if args.resume not in (None, "auto") else None
    if explicit_resume:
        input_file(args.resume, "--resume", "checkpoint", "checkpoint")
    pretrained_file = None if args.pretrained == "imagenet" else args.pretrained
    refuse_outputs_over_inputs({"--out": args.out}, {"--config": args.config, "--resume": explicit_resume,
                                                     "--init": args.init, "--data": args.data,
                                                     "--pretrained": pretrained_file})
    output_folder(args.out)

    flags = {"mode": args.mode, "model.backbone": args.backbone, "preset": args.preset,
             "model.imgsz": list(parse_imgsz(args.imgsz)) if args.imgsz else None,
             "optim.epochs": args.epochs, "data.ids_per_batch": args.ids_per_batch,
             "data.instances_per_id": args.instances_per_id, "device": args.device, "seed": args.seed,
             "data.root": args.data, "pretrained": args.pretrained, "stage": args.stage}
    cfg = build_config(args.config, args.set or [], flags)
    # The dataset is checked before --out is created: a mistyped --data leaves no empty run folder.
    if not cfg.data.root:
        raise FogreidError("no dataset: pass --data ROOT (a folder with FVRID_syn/, e.g. from `fogreid synth`)")
    if not (Path(cfg.data.root) / "FVRID_syn").is_dir():
        raise FogreidError(f"--data {cfg.data.root}: no FVRID_syn/ folder there; give the dataset root "
                           f"(e.g. from `fogreid synth --out ROOT`)")
    if args.init:
        input_file(args.init, "--init", "checkpoint", "checkpoint")
    if cfg.mode == "frames" and not args.init:   # before --out is made; train_frames says the same
        from fogreid.train.frames import NO_INIT

        raise FogreidError(NO_INIT)
    if args.init and cfg.mode not in ("rvsl", "frames"):
        raise FogreidError(f"--init is for --mode rvsl and --mode frames, not {cfg.mode}")
    if cfg.mode == "rvsl" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # RVSL has no DDP: every process would train it whole into the same --out.
        raise FogreidError("--mode rvsl runs in one process: start it without torchrun (docs/training.md)")
    resume = args.resume
    if resume == "auto":
        resume = str(Path(args.out) / "last.pt")
        if not Path(resume).is_file():
            raise FogreidError(f"--resume: {resume} does not exist yet; start without --resume")
    # One lock per run, held by rank 0: under torchrun every rank writes to the same --out (rank 0 saves).
    import contextlib

    rank0 = os.environ.get("RANK", "0") == "0"
    with folder_lock(args.out, "fogreid train") if rank0 else contextlib.nullcontext():
        if rank0:  # under the lock: never judge (or remove) a run that is still being written
            previous_run(Path(args.out), resume is not None, args.overwrite)
        if cfg.mode == "frames":
            from fogreid.train.frames import train_frames

            train_frames(cfg, args.out, args.init, resume=resume, progress=not args.quiet)
            return 0
        if cfg.mode == "rvsl":
            from fogreid.train.rvsl import train_rvsl

            # with --resume, the stages that finished (stageK/stage.json) are kept, not trained again
            train_rvsl(cfg, args.out, init=args.init, progress=not args.quiet, resume=resume is not None)
            return 0
        from fogreid.train.loop import train

        train(cfg, args.out, resume=resume, progress=not args.quiet)
    return 0


def previous_run(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse an --out holding a previous run unless told what to do with it: training into it
    would overwrite its checkpoints and add a second "epoch 1" to its history. With --overwrite,
    remove that run's files first, so the new run's history starts at epoch 1 and no old best.pt
    outlives the new run's first validation."""
    found = [name for name in RUN_FILES if (out / name).exists()]
    if not found or resume:
        return
    if not overwrite:
        raise FogreidError(f"--out {out}: holds a previous run ({', '.join(found)}); continue it with --resume, "
                           f"replace it with --overwrite, or choose another --out")
    for name in found:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()

"""`fogreid train`: one training loop, `fit()`, that every mode runs through, top to bottom.

A mode is a step (fogreid/train/step.py): `SJDLStep` for `sjdl` (paired synthetic batches,
and every k-th step a real foggy batch with its own classifier and the unsupervised priors,
summed into the same step), `jdl` (synthetic only) and `reid` (no defog head: the baseline;
optionally on clear images); `RVSLStep` for each RVSL stage (fogreid/train/rvsl.py);
`FramesStep` for `frames` (fogreid/train/frames.py, which sets it up). The
loop owns the rest: epochs, batches and flips, the learning rate, AMP, the optimiser step,
precise BN, validation, checkpoints, history.jsonl / metrics.csv / TensorBoard, progress
bars and torchrun. `train()` below sets up sjdl / jdl / reid and tests the result.

Resuming is exact: batches depend only on (seed, epoch, step), and `last.pt` holds the
model, optimiser, AMP scaler, epoch, step within the epoch and RNG states. Under torchrun
each process takes every world_size-th batch; only rank 0 logs, validates and saves.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fogreid.devices import pick_device
from fogreid.errors import FogreidError
from fogreid.model.build import build_model
from fogreid.model.checkpoint import (
    DEPLOY_EXTRAS,
    checkpoint_config,
    describe_mismatch,
    load_weights,
    read_checkpoint,
    save_checkpoint,
)
from fogreid.model.fused import FusedDefogReID, Preprocess
from fogreid.model.sjdl import SJDLNet
from fogreid.train.config import TrainConfig, config_dict
from fogreid.train.data import TrainData, training_data
from fogreid.train.evaluation import evaluate, test_checkpoint
from fogreid.train.precise import bn_buffers, reestimate
from fogreid.train.schedule import ResolvedSchedule, resolve_schedule
from fogreid.train.sjdl_step import SJDLStep, TrainingForward
from fogreid.train.step import Step, paired_batch

# What a resumable run's checkpoints keep beside the weights, model config and metadata:
# last.pt what resuming needs, best.pt what deployment needs.
RESUMABLE = {"last.pt": ("train_config", "optimizer", "scaler", "epoch", "step_in_epoch", "global_step", "best", "rng"),
             "best.pt": DEPLOY_EXTRAS}


@dataclass(frozen=True)
class Processes:
    """This run's processes under torchrun (its environment variables); one by default."""

    world: int = 1
    rank: int = 0
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Processes:
        return cls(int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0")),
                   int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def master(self) -> bool:
        return self.rank == 0


@dataclass
class Start:
    """Where the loop starts: the beginning, or where a last.pt left off."""

    epoch: int = 0
    batch: int = 0
    global_step: int = 0
    best: dict = field(default_factory=lambda: {"epoch": -1, "mAP": -1.0})


@dataclass
class Job:
    """What `fit` trains, as a mode's entry sets it up (`train` below, `rvsl.train_stage`)."""

    net: SJDLNet
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler             # enabled: mixed precision (autocast) too
    schedule: ResolvedSchedule
    data: TrainData
    device: torch.device
    meta: dict                               # the checkpoints' metadata
    checkpoints: dict[str, tuple[str, ...]]  # what last.pt and best.pt keep (RESUMABLE, ...)
    procs: Processes = Processes()
    start: Start = field(default_factory=Start)
    full_log: bool = True                    # metrics.csv and TensorBoard beside history.jsonl


def fit(cfg: TrainConfig, job: Job, step: Step, out: Path, progress: bool = True) -> tuple[dict, list[dict]]:
    """The training loop of every mode: returns (best, history)."""
    from tqdm import tqdm

    net, optimizer, scaler, schedule = job.net, job.optimizer, job.scaler, job.schedule
    data, procs = job.data, job.procs
    autocast = ((lambda: torch.autocast(job.device.type, dtype=torch.float16)) if scaler.is_enabled()
                else contextlib.nullcontext)
    preprocess, epochs, prefix = Preprocess(), cfg.optim.epochs, f"{step.name} " if step.name else ""
    global_step, best, history = job.start.global_step, job.start.best, []
    log = EpochLog(out, job.full_log) if procs.master else None

    def save(name: str, epoch: int, step_in_epoch: int, bn_ema: dict | None = None) -> None:
        state = {"train_config": config_dict(cfg), "optimizer": optimizer.state_dict(),
                 "scaler": scaler.state_dict(), "epoch": epoch, "step_in_epoch": step_in_epoch,
                 "global_step": global_step, "best": best, "rng": rng_state(), "bn_ema": bn_ema or {}, **step.state()}
        save_checkpoint(out / name, net, meta=job.meta, **{k: state[k] for k in job.checkpoints[name]})

    for epoch in range(job.start.epoch, epochs):
        # ---------------------------------------------------------------- the epoch's steps
        first = job.start.batch if epoch == job.start.epoch else 0   # resuming mid-epoch
        data.sampler.set_epoch(epoch, first)
        steps_per_epoch = max(len(data.sampler.batches()) // procs.world, 1)
        lr = schedule.lr_at(epoch + first / steps_per_epoch)
        row = {**step.start_epoch(epoch), "epoch": epoch + 1, "lr_start": lr}
        step.train_mode(net)
        meter, skipped = Meter(), 0
        bar = tqdm(data.loader, desc=f"{prefix}epoch {epoch + 1}/{epochs}", unit="batch",
                   disable=not (progress and procs.master), initial=first, total=first + len(data.loader))
        for step_in_epoch, items in enumerate(bar, start=first):
            lr = schedule.lr_at(epoch + step_in_epoch / steps_per_epoch)   # warmup per step
            for group in optimizer.param_groups:
                group["lr"] = lr
            # Flips drawn from the step's key (seed, epoch, step, ...): the same on resume, whatever the workers.
            flips = torch.Generator().manual_seed(hash(step.flip_key(epoch, step_in_epoch)) & 0x7FFFFFFF)
            batch = paired_batch(items, flips, cfg.data.hflip, preprocess, job.device, cfg.data.noise_sigma)
            with autocast():
                terms = step.losses(batch, global_step)
                loss = sum(terms.values())
            if not torch.isfinite(loss):
                raise FogreidError(f"{step.name + ': ' if step.name else ''}the loss became {loss.item()} at epoch "
                                   f"{epoch + 1}, step {step_in_epoch}: lower optim.lr (now {lr:g}) or check the data")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scale = scaler.get_scale() if scaler.is_enabled() else 1.0
            scaler.step(optimizer)
            scaler.update()
            if scaler.is_enabled() and scaler.get_scale() < scale:   # inf / NaN gradients: the step was skipped
                skipped += 1
                check_amp_scale(scaler.get_scale(), epoch, step_in_epoch)
            global_step += 1
            meter.add({**terms, "loss": loss, **step.after_step(batch)}, len(batch.target) * procs.world)
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}", lr=f"{lr:.2e}", img_s=f"{meter.images_per_s():.1f}")
            if procs.master and cfg.save_every_steps and global_step % cfg.save_every_steps == 0:
                save("last.pt", epoch, step_in_epoch + 1)
        bar.close()
        row.update(lr=lr, **meter.summary())
        if scaler.is_enabled():
            row["amp_skipped_steps"] = skipped

        # ---------------------------------------------------------------- end of epoch (rank 0)
        last_epoch = epoch + 1 == epochs
        validate = procs.master and bool(data.val.query) and ((epoch + 1) % cfg.eval_every == 0 or last_epoch)
        bn_ema: dict = {}   # the BN running statistics before precise BN, saved beside best.pt's
        if procs.master and (validate or last_epoch) and cfg.optim.precise_bn_batches:
            # After training and before each validation: statistics of the final weights.
            bn_ema = precise_bn(net, step.bn_batches(), cfg.optim.precise_bn_batches, preprocess, job.device, row)
        if validate:
            val = evaluate(FusedDefogReID(net), data.val, progress=progress, desc="validate")
            row.update({f"val/{k}": v for k, v in val.items() if k != "cmc"})
            if val["mAP"] > best["mAP"]:
                best = {"epoch": epoch + 1, "mAP": val["mAP"]}
                save("best.pt", epoch + 1, 0, bn_ema)
            print(f"{prefix}epoch {epoch + 1}: loss {row.get('train/loss', math.nan):.3f}, val mAP {val['mAP']:.3f} "
                  f"R1 {val['rank1']:.3f}" + (f" PSNR {val['psnr']:.2f}" if "psnr" in val else "")
                  + f" (best {best['mAP']:.3f} at epoch {best['epoch']})")
        if procs.master:
            save("last.pt", epoch + 1, 0, bn_ema)
            if not data.val.query:  # nothing to select on: the latest is the best
                save("best.pt", epoch + 1, 0, bn_ema)
            history.append(row)
            log.write(row)
        if procs.world > 1:
            torch.distributed.barrier()
    if log is not None:
        log.close()
    return best, history


def train(cfg: TrainConfig, out: str | Path, resume: str | Path | None = None, progress: bool = True) -> dict:
    """Train `cfg.mode` sjdl / jdl / reid into `out`, then test best.pt (metrics.json)."""
    procs = Processes.from_env()
    device = pick_device(cfg.device, procs.local_rank)
    if procs.world > 1:
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    seed_everything(cfg.seed, device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    data, model_cfg = training_data(cfg, device, procs.rank, procs.world)
    net = build_model(model_cfg, cfg.pretrained or None).to(device)
    schedule = resolve_schedule(cfg.optim, pretrained=bool(cfg.pretrained))
    optimizer = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=schedule.lr,
                                 weight_decay=cfg.optim.weight_decay)
    amp = cfg.amp == "fp16" or (cfg.amp == "auto" and device.type == "cuda")
    job = Job(net, optimizer, torch.amp.GradScaler(device.type, enabled=amp), schedule,
              data, device, meta={"trained_on": str(cfg.data.root), "mode": cfg.mode, "schedule": schedule.describe()},
              checkpoints=RESUMABLE,
              procs=procs)
    if resume:
        job.start = resume_from(resume, job)
    # The real classifier and priors join only every k-th step: unused parameters are expected.
    step = SJDLStep(cfg, distribute(TrainingForward(net), procs, device, find_unused=cfg.mode == "sjdl"), data,
                    procs.rank)
    if procs.master:
        describe(cfg, job)
    best, history = fit(cfg, job, step, out, progress)

    summary: dict = {"config": config_dict(cfg), "schedule": dataclasses.asdict(job.schedule), "best": best,
                     "history": history}
    if procs.master:
        summary.update(test_checkpoint(out / "best.pt", cfg.data.root, device, progress))
        (out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
        for split, m in summary["test"].items():
            print(f"test {split}: mAP {m['mAP']:.3f} R1 {m['rank1']:.3f} R5 {m['rank5']:.3f}"
                  + (f" PSNR {m['psnr']:.2f} SSIM {m['ssim']:.3f}" if "psnr" in m else ""))
    if procs.world > 1:
        torch.distributed.destroy_process_group()
    return summary


def describe(cfg: TrainConfig, job: Job) -> None:
    data, size, world = job.data, job.net.config.imgsz, job.procs.world
    print(f"training {cfg.mode} ({job.net.config.backbone}, {size[0]}x{size[1]}) on {len(data.records)} images of "
          f"{len(data.ids)} ids on {job.device}" + (f" x{world} processes" if world > 1 else ""))
    print(f"validation: {len(data.val.query)} queries ({len(data.val.gallery)} gallery) of "
          f"{len({r.pid for r in data.val.query})} held-out ids; schedule: {job.schedule.describe()}")
    for note in job.schedule.notes:
        print(f"note: {note}")


# -------------------------------------------------------------------- the loop's helpers

def check_amp_scale(scale: float, epoch: int, step_in_epoch: int) -> None:
    """Mixed precision never trains in silence: the GradScaler skips a step whose gradients
    overflow FP16 and halves its scale, which is how it finds a scale that fits; below 1 the
    gradients are inf or NaN even unscaled, and every later step would be skipped too."""
    if scale < 1.0:
        raise FogreidError(f"epoch {epoch + 1}, step {step_in_epoch}: the gradients are inf or NaN in FP16 even "
                           f"unscaled (the GradScaler's scale fell to {scale:g}; no step since has been applied): "
                           f"train with --set amp=off")


def seed_everything(seed: int, device: torch.device) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)


def distribute(module: nn.Module, procs: Processes, device: torch.device, find_unused: bool) -> nn.Module:
    """The module wrapped for DistributedDataParallel under torchrun; as it is otherwise."""
    if procs.world == 1:
        return module
    return nn.parallel.DistributedDataParallel(module, device_ids=[procs.local_rank] if device.type == "cuda" else None,
                                               find_unused_parameters=find_unused)


def resume_from(path: str | Path, job: Job) -> Start:
    """Load a last.pt's weights, optimiser, scaler and RNG states into `job`; where to start."""
    state = read_checkpoint(path, map_location=job.device)
    stored = checkpoint_config(state, path)
    if stored != job.net.config:
        raise FogreidError(f"--resume {path}: the checkpoint is for another model/data setup: "
                           f"{describe_mismatch(job.net.config, stored)}")
    if "optimizer" not in state:
        raise FogreidError(f"--resume {path}: holds no training state (an exported or best-only "
                           f"checkpoint); resume from RUN/last.pt")
    load_weights(job.net, state["model"], path)
    job.optimizer.load_state_dict(state["optimizer"])
    if state["scaler"]:   # empty: saved without mixed precision (amp off, or on the CPU); the scale starts afresh
        job.scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"]["torch"].cpu())
    if "cuda" in state["rng"] and job.device.type == "cuda":
        torch.cuda.set_rng_state_all([t.cpu() for t in state["rng"]["cuda"]])
    if job.procs.master:
        print(f"resuming from {path}: epoch {state['epoch'] + 1}, step {state['step_in_epoch']}")
    return Start(state["epoch"], state["step_in_epoch"], state["global_step"], state["best"])


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def precise_bn(net: nn.Module, batches, num_batches: int, preprocess, device, row: dict) -> dict:
    """Re-estimate the BN statistics (fogreid/train/precise.py); returns the running (EMA)
    statistics they replace, and adds the count and its cost to the epoch's row."""
    ema, tic, cpu = bn_buffers(net), time.perf_counter(), time.process_time()
    row["precise_bn_batches"] = reestimate(net, batches, num_batches, preprocess, device)
    row["precise_bn_seconds"] = round(time.perf_counter() - tic, 2)
    row["precise_bn_cpu_seconds"] = round(time.process_time() - cpu, 2)
    return ema


class Meter:
    """An epoch's sums of the logged terms, its images, and its wall and CPU seconds."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.steps = self.images = 0
        self.tic = time.perf_counter()
        self.cpu = time.process_time()   # CPU seconds: what the epoch costs on an idle machine, roughly

    def add(self, terms: dict[str, torch.Tensor], images: int) -> None:
        for name, value in terms.items():
            self.sums[name] = self.sums.get(name, 0.0) + float(value.detach())
        self.steps, self.images = self.steps + 1, self.images + images

    def images_per_s(self) -> float:
        return self.images / max(time.perf_counter() - self.tic, 1e-9)

    def summary(self) -> dict:
        """The history row's timings and mean terms (`train/NAME`)."""
        return {"seconds": round(time.perf_counter() - self.tic, 2),
                "cpu_seconds": round(time.process_time() - self.cpu, 2),
                "images_per_s": round(self.images_per_s(), 2),
                **{f"train/{k}": v / max(self.steps, 1) for k, v in sorted(self.sums.items())}}


class EpochLog:
    """history.jsonl, a JSON row per epoch; with `full`, metrics.csv (every row so far) and
    TensorBoard scalars too."""

    def __init__(self, out: Path, full: bool = True) -> None:
        self.out, self.full = out, full
        self.writer = tensorboard(out) if full else None

    def write(self, row: dict) -> None:
        with open(self.out / "history.jsonl", "a") as handle:
            handle.write(json.dumps(row) + "\n")
        if not self.full:
            return
        rows = [json.loads(line) for line in (self.out / "history.jsonl").read_text().splitlines()]
        fields = sorted({k for r in rows for k in r}, key=lambda k: (k != "epoch", k))
        with open(self.out / "metrics.csv", "w", newline="") as handle:
            csv_writer = csv.DictWriter(handle, fieldnames=fields)
            csv_writer.writeheader()
            csv_writer.writerows(rows)
        if self.writer is not None:
            for key, value in row.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, row["epoch"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        print("tensorboard is not installed: metrics go to metrics.csv / history.jsonl only")
        return None
    return SummaryWriter(str(out / "tensorboard"))

"""`fogreid train`: the whole training loop in `train()`, top to bottom.

Modes: `sjdl` (paired synthetic batches, and every k-th step a real foggy batch with its
own classifier and the unsupervised priors, summed into the same step), `jdl` (synthetic
only) and `reid` (no defog head: the baseline; optionally on clear images).

Resuming is exact: batches depend only on (seed, epoch, step), and `last.pt` holds the
model, optimiser, AMP scaler, epoch, step within the epoch and RNG states. Under torchrun
each process takes every world_size-th batch; only rank 0 logs, validates and saves.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fogreid.data.datasets import ReIDImages, carve_validation, load_fvrid
from fogreid.data.sampler import IdentitySampler
from fogreid.devices import pick_device
from fogreid.errors import FogreidError
from fogreid.model.checkpoint import checkpoint_config, describe_mismatch, load_weights, read_checkpoint, \
    save_checkpoint
from fogreid.model.fused import FusedDefogReID, Preprocess
from fogreid.model.build import build_sjdl
from fogreid.model.sjdl import SJDLNet
from fogreid.train import losses as L
from fogreid.train.config import TrainConfig, config_dict
from fogreid.train.evaluation import evaluate, leave_one_out, test_checkpoint
from fogreid.train.precise import bn_buffers, domain_batches, reestimate
from fogreid.train.schedule import resolve_schedule


class TrainingForward(nn.Module):
    """One forward per step over the synthetic batch and, when given, the real batch
    (concatenated), with each domain's classifier. DDP needs all of it inside one forward."""

    def __init__(self, net: SJDLNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor, real: torch.Tensor | None = None) -> dict:
        n = images.shape[0]
        out = self.net(images if real is None else torch.cat([images, real]))
        parts = {name: value for name, value in out._asdict().items()}
        result = {name: (None if v is None else v[:n]) for name, v in parts.items()}
        result["logits"] = self.net.classifier(result["bn_feat"])
        if real is not None:
            result["real"] = {name: (None if v is None else v[n:]) for name, v in parts.items()}
            result["real"]["logits"] = self.net.classifier_real(result["real"]["bn_feat"])
        return result


class ShardedBatches:
    """The identity sampler's batches, every world_size-th one for this rank."""

    def __init__(self, sampler: IdentitySampler, rank: int, world: int) -> None:
        self.sampler, self.rank, self.world = sampler, rank, world

    def __iter__(self):
        batches = list(self.sampler)
        usable = len(batches) - len(batches) % self.world  # every rank takes the same number of steps
        return iter(batches[self.rank:usable:self.world])

    def __len__(self) -> int:
        return len(self.sampler) // self.world


class RealBatches:
    """The j-th real foggy batch of the run: a pure function of j, so resuming needs no state."""

    def __init__(self, sampler: IdentitySampler) -> None:
        self.sampler = sampler
        sampler.set_epoch(0)
        self.per_epoch = len(sampler.batches())
        self.epoch, self.batches = 0, sampler.batches()

    def __getitem__(self, j: int) -> list[int]:
        epoch = j // self.per_epoch
        if epoch != self.epoch:
            self.sampler.set_epoch(epoch)
            self.epoch, self.batches = epoch, self.sampler.batches()
        # An epoch may hold a batch or two fewer than epoch 0: wrap rather than run past its end.
        return self.batches[(j % self.per_epoch) % len(self.batches)]


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def train(cfg: TrainConfig, out: str | Path, resume: str | Path | None = None, progress: bool = True) -> dict:
    from tqdm import tqdm

    # ---------------------------------------------------------------- processes and device
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(cfg.device, local_rank)
    if world > 1:
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    master = rank == 0
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    # ---------------------------------------------------------------- data
    if not cfg.data.root:
        raise FogreidError("no dataset: pass --data ROOT (a folder with FVRID_syn/, e.g. from `fogreid synth`)")
    syn = load_fvrid(cfg.data.root, "syn")
    train_records, val_split = carve_validation(syn, cfg.data.val_fraction, cfg.seed)
    val_split = leave_one_out(val_split)
    train_ids = sorted({r.pid for r in train_records})
    labels = [train_ids.index(r.pid) for r in train_records]
    real = load_fvrid(cfg.data.root, "real") if cfg.mode == "sjdl" else None
    model_cfg = cfg.model_config(len(train_ids), real.num_train_ids if real else 0)
    size = model_cfg.input_size
    dataset = ReIDImages(train_records, size, labels)
    sampler = IdentitySampler(labels, cfg.data.ids_per_batch, cfg.data.instances_per_id, cfg.seed)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=ShardedBatches(sampler, rank, world),
                                         num_workers=cfg.data.num_workers,
                                         persistent_workers=False, pin_memory=device.type == "cuda")
    if real is not None:
        real_dataset = ReIDImages(real.train, size, real.train_labels())
        real_batches = RealBatches(IdentitySampler(real.train_labels(), cfg.data.ids_per_batch,
                                                   cfg.data.instances_per_id, cfg.seed + 1))
    schedule = resolve_schedule(cfg.optim)

    def bn_batches():
        """Precise BN's batches: the deployed domain (foggy, or clear for the clear-only
        baseline), as at evaluation; SJDL's real foggy batches join as often as in training."""
        key = "clear" if cfg.data.reid_input == "clear" else "image"
        sources = [(dataset, IdentitySampler(labels, cfg.data.ids_per_batch, cfg.data.instances_per_id,
                                             cfg.seed + 2), key)]
        if real is not None:
            sources.append((real_dataset, IdentitySampler(real.train_labels(), cfg.data.ids_per_batch,
                                                          cfg.data.instances_per_id, cfg.seed + 3), "image"))
        return domain_batches(sources, cfg.data.real_every)

    # ---------------------------------------------------------------- model and optimiser
    net = build_sjdl(model_cfg, cfg.pretrained or None).to(device)
    optimizer = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=cfg.optim.lr,
                                 weight_decay=cfg.optim.weight_decay)
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.float16)) if use_amp else contextlib.nullcontext
    start_epoch, start_batch, global_step, best = 0, 0, 0, {"epoch": -1, "mAP": -1.0}
    ema_stats: dict = {}   # the BN running statistics before precise BN, saved beside best.pt's
    if resume:
        state = read_checkpoint(resume, map_location=device)
        stored = checkpoint_config(state, resume)
        if stored != model_cfg:
            raise FogreidError(f"--resume {resume}: the checkpoint is for another model/data setup: "
                               f"{describe_mismatch(model_cfg, stored)}")
        if "optimizer" not in state:
            raise FogreidError(f"--resume {resume}: holds no training state (an exported or best-only "
                               f"checkpoint); resume from RUN/last.pt")
        load_weights(net, state["model"], resume)
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        start_epoch, start_batch = state["epoch"], state["step_in_epoch"]
        global_step, best = state["global_step"], state["best"]
        torch.set_rng_state(state["rng"]["torch"].cpu())
        if "cuda" in state["rng"] and device.type == "cuda":
            torch.cuda.set_rng_state_all([t.cpu() for t in state["rng"]["cuda"]])
        if master:
            print(f"resuming from {resume}: epoch {start_epoch + 1}, step {start_batch}")
    forward: nn.Module = TrainingForward(net)
    if world > 1:
        # The real classifier and priors join only every k-th step: unused parameters are expected.
        forward = nn.parallel.DistributedDataParallel(
            forward, device_ids=[local_rank] if device.type == "cuda" else None,
            find_unused_parameters=cfg.mode == "sjdl")
    preprocess = Preprocess()

    def save(path: Path, epoch: int, step_in_epoch: int, **extra) -> None:
        # best.pt is for deployment (weights, config, metadata); last.pt also carries what resuming needs.
        save_checkpoint(path, net, meta={"trained_on": str(cfg.data.root), "mode": cfg.mode},
                        deploy=path.name == "best.pt",
                        train_config=config_dict(cfg), optimizer=optimizer.state_dict(),
                        scaler=scaler.state_dict(), epoch=epoch, step_in_epoch=step_in_epoch,
                        global_step=global_step, best=best, rng=_rng_state(), **extra)

    writer = _tensorboard(out) if master else None
    history: list[dict] = []
    if master:
        print(f"training {cfg.mode} ({model_cfg.backbone}, {size[0]}x{size[1]}) on {len(train_records)} images of "
              f"{len(train_ids)} ids on {device}"
              + (f" x{world} processes" if world > 1 else ""))
        print(f"validation: {len(val_split.query)} queries ({len(val_split.gallery)} gallery) of "
              f"{len({r.pid for r in val_split.query})} held-out ids; schedule: {schedule.describe()}")
        for note in schedule.notes:
            print(f"note: {note}")

    # ---------------------------------------------------------------- the loop
    for epoch in range(start_epoch, cfg.optim.epochs):
        first = start_batch if epoch == start_epoch else 0
        sampler.set_epoch(epoch, first)
        steps_per_epoch = max(len(sampler.batches()) // world, 1)
        lr = schedule.lr_at(epoch + first / steps_per_epoch)
        net.train()
        sums: dict[str, float] = {}
        seen, tic = 0, time.perf_counter()
        cpu = time.process_time()   # CPU seconds: what the epoch costs on an idle machine, roughly
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.optim.epochs}", unit="batch",
                   disable=not (progress and master), initial=first, total=first + len(loader))
        for step_in_epoch, batch in enumerate(bar, start=first):
            lr = schedule.lr_at(epoch + step_in_epoch / steps_per_epoch)   # warmup per step
            for group in optimizer.param_groups:
                group["lr"] = lr
            # Flips drawn from (seed, epoch, step): the same on resume, whatever the workers.
            flip_rng = torch.Generator().manual_seed(hash((cfg.seed, epoch, step_in_epoch, rank)) & 0x7FFFFFFF)
            flip = torch.rand(len(batch["label"]), generator=flip_rng) < cfg.data.hflip
            foggy = flip_images(preprocess(batch["image"]), flip).to(device, non_blocking=True)
            clear = flip_images(preprocess(batch["clear"]), flip).to(device, non_blocking=True)
            target = batch["label"].to(device)
            real_images = real_target = None
            take_real = real is not None and global_step % cfg.data.real_every == 0
            if take_real:
                items = [real_dataset[i] for i in real_batches[global_step // cfg.data.real_every]]
                real_images = preprocess(torch.stack([item["image"] for item in items])).to(device)
                real_target = torch.tensor([item["label"] for item in items], device=device)

            with autocast():
                out_ = forward(clear if cfg.data.reid_input == "clear" else foggy, real_images)
                terms = {"id": cfg.loss.id_weight * L.cross_entropy(out_["logits"].float(), target,
                                                                     cfg.loss.label_smoothing),
                         "triplet": cfg.loss.triplet_weight * L.batch_hard_triplet(
                             out_["global_feat"].float(), target, cfg.loss.triplet_margin)}
                if out_["defogged"] is not None:
                    restored = [out_["coarse"].float(), out_["defogged"].float()]
                    terms["restore"] = cfg.loss.restoration_weight * sum(
                        L.restoration(r, clear, cfg.loss.restoration) for r in restored)
                    if cfg.loss.ssim_weight:
                        terms["ssim"] = cfg.loss.ssim_weight * sum(L.ssim_loss(r, clear) for r in restored)
                if take_real:
                    r = out_["real"]
                    terms["real_id"] = cfg.loss.real_weight * (
                        L.cross_entropy(r["logits"].float(), real_target, cfg.loss.label_smoothing)
                        + L.batch_hard_triplet(r["global_feat"].float(), real_target, cfg.loss.triplet_margin))
                    real_restored = [r["coarse"].float(), r["defogged"].float()]
                    terms["dark_channel"] = cfg.loss.dark_channel_weight * sum(
                        L.dark_channel_loss(x, cfg.loss.dark_channel_patch) for x in real_restored)
                    terms["tv"] = cfg.loss.tv_weight * L.total_variation(r["defogged"].float())
                loss = sum(terms.values())
            if not torch.isfinite(loss):
                raise FogreidError(f"the loss became {loss.item()} at epoch {epoch + 1}, step {step_in_epoch}: "
                                   f"lower optim.lr (now {lr:g}) or check the data")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            global_step += 1

            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach())
            sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
            seen += len(target) * world
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}", lr=f"{lr:.2e}",
                            img_s=f"{seen / (time.perf_counter() - tic):.1f}")
            if master and cfg.save_every_steps and global_step % cfg.save_every_steps == 0:
                save(out / "last.pt", epoch, step_in_epoch + 1)
        bar.close()

        # ------------------------------------------------------------ end of epoch
        steps = max(len(loader), 1)
        row = {"epoch": epoch + 1, "lr_start": schedule.lr_at(epoch + first / steps_per_epoch), "lr": lr,
               "seconds": round(time.perf_counter() - tic, 2),
               "cpu_seconds": round(time.process_time() - cpu, 2),
               "images_per_s": round(seen / max(time.perf_counter() - tic, 1e-9), 2),
               **{f"train/{k}": v / steps for k, v in sorted(sums.items())}}
        last_epoch = epoch + 1 == cfg.optim.epochs
        validate = master and val_split.query and ((epoch + 1) % cfg.eval_every == 0 or last_epoch)
        if master and (validate or last_epoch) and cfg.optim.precise_bn_batches:
            # After training and before each validation: statistics of the final weights.
            ema_stats, tic, cpu = bn_buffers(net), time.perf_counter(), time.process_time()
            row["precise_bn_batches"] = reestimate(net, bn_batches(), cfg.optim.precise_bn_batches,
                                                   preprocess, device)
            row["precise_bn_seconds"] = round(time.perf_counter() - tic, 2)
            row["precise_bn_cpu_seconds"] = round(time.process_time() - cpu, 2)
        if validate:
            val = evaluate(FusedDefogReID(net), val_split, progress=progress, desc="validate")
            row.update({f"val/{k}": v for k, v in val.items() if k != "cmc"})
            if val["mAP"] > best["mAP"]:
                best = {"epoch": epoch + 1, "mAP": val["mAP"]}
                save(out / "best.pt", epoch + 1, 0, bn_ema=ema_stats)
            print(f"epoch {epoch + 1}: loss {row.get('train/loss', math.nan):.3f}, val mAP {val['mAP']:.3f} "
                  f"R1 {val['rank1']:.3f}" + (f" PSNR {val['psnr']:.2f}" if "psnr" in val else "")
                  + f" (best {best['mAP']:.3f} at epoch {best['epoch']})")
        if master:
            save(out / "last.pt", epoch + 1, 0)
            if not val_split.query:  # nothing to select on: the latest is the best
                save(out / "best.pt", epoch + 1, 0, bn_ema=ema_stats)
            history.append(row)
            _log_epoch(out, row, writer)
        if world > 1:
            torch.distributed.barrier()

    # ---------------------------------------------------------------- test the best checkpoint
    summary: dict = {"config": config_dict(cfg), "best": best, "history": history}
    if master:
        summary.update(test_checkpoint(out / "best.pt", cfg.data.root, device, progress))
        (out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
        for split, m in summary["test"].items():
            print(f"test {split}: mAP {m['mAP']:.3f} R1 {m['rank1']:.3f} R5 {m['rank5']:.3f}"
                  + (f" PSNR {m['psnr']:.2f} SSIM {m['ssim']:.3f}" if "psnr" in m else ""))
        if writer is not None:
            writer.close()
    if world > 1:
        torch.distributed.destroy_process_group()
    return summary


def flip_images(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Horizontal flip of the (B, 3, H, W) images where `mask` is set."""
    return torch.where(mask.view(-1, 1, 1, 1), images.flip(-1), images)


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        print("tensorboard is not installed: metrics go to metrics.csv / history.jsonl only")
        return None
    return SummaryWriter(str(out / "tensorboard"))


def _log_epoch(out: Path, row: dict, writer) -> None:
    with open(out / "history.jsonl", "a") as handle:
        handle.write(json.dumps(row) + "\n")
    csv_path = out / "metrics.csv"
    rows = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    fields = sorted({k for r in rows for k in r}, key=lambda k: (k != "epoch", k))
    with open(csv_path, "w", newline="") as handle:
        csv_writer = csv.DictWriter(handle, fieldnames=fields)
        csv_writer.writeheader()
        csv_writer.writerows(rows)
    if writer is not None:
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)):
                writer.add_scalar(key, value, row["epoch"])

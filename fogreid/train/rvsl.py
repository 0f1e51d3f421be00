"""`fogreid train --mode rvsl`: the three RVSL stages, each visible in `train_stage`.

  stage 1  synthetic pairs with labels: ReID on both domains, SmoothL1 translation both ways,
           clear/hazy embedding consistency, adversarial (least squares, replay buffer)
  stage 2  the synthetic terms + real clear images without labels (FVRID_clear): cycle
           clear->hazy->clear, embedding consistency of the real image and its hazy
           translation, priors (dark-channel monotonicity, haze-line colinearity),
           adversarial on the translation
  stage 3  the synthetic terms + real foggy images without labels (FVRID_real): cycle
           hazy->clear->hazy, real-fog embedding consistency Dreid(Ec(Gc(foggy))) vs
           Dreid(Ef(foggy)), which is how the trunk sees real fog, priors (dark channel,
           lowering the defogged image's dark channel, total variation, colinearity),
           adversarial on the translation

Each stage has its own loss weights (the official ones by default: `loss.rvsl_stage1..3`),
a fresh optimiser and fresh discriminators (as upstream), its own learning-rate schedule
with a warmup (`optim.schedule` scaled to `optim.epochs`, the epochs of ONE stage), flip
augmentation, and precise BatchNorm on the deployed path (hazy encoder -> trunk, foggy
images) before each validation. `--stage all` runs the stages in order into RUN/stage1..3,
each from the previous stage's best; RUN/best.pt is the best of all stages on validation.
Every term is averaged over every image of the batch.
"""

from __future__ import annotations

import itertools
import json
import shutil
import time
from pathlib import Path

import torch

from fogreid.data.datasets import ImageRecord, ReIDImages, carve_validation, load_fvrid
from fogreid.data.image_io import list_images
from fogreid.data.sampler import IdentitySampler
from fogreid.devices import pick_device
from fogreid.errors import FogreidError
from fogreid.model.build import build_sjdl
from fogreid.model.checkpoint import load_weights, read_checkpoint, save_checkpoint
from fogreid.model.fused import FusedDefogReID, Preprocess
from fogreid.model.rvsl import PatchDiscriminator
from fogreid.train import losses as L
from fogreid.train.config import TrainConfig, config_dict
from fogreid.train.evaluation import evaluate, leave_one_out, test_checkpoint
from fogreid.train.loop import flip_images
from fogreid.train.precise import ShuffledBatches, bn_buffers, domain_batches, reestimate
from fogreid.train.schedule import resolve_schedule

DISCRIMINATOR_LR = 2e-4   # upstream: Adam(2e-4, betas 0.5/0.999), linear decay over the second half


def unlabelled_images(folder: Path, size: tuple[int, int]) -> ReIDImages:
    records = [ImageRecord(p, 0, 0) for p in list_images(folder)]
    return ReIDImages(records, size)


def unlabelled_batches(dataset: ReIDImages, batch: int, seed: int):
    """Endless shuffled batches of uint8 frames from a folder of images (no labels needed)."""
    if len(dataset) < batch:
        raise FogreidError(f"{dataset.records[0].path.parent}: {len(dataset)} images, fewer than one batch of {batch}")
    sampler = ShuffledBatches(len(dataset), batch, seed)
    for epoch in itertools.count():
        sampler.set_epoch(epoch)
        for indices in sampler.batches():
            yield torch.stack([dataset[i]["image"] for i in indices])


def train_stage(stage: int, cfg: TrainConfig, out: Path, init: Path | None, progress: bool = True) -> dict:
    from tqdm import tqdm

    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed + stage)
    out.mkdir(parents=True, exist_ok=True)
    root = Path(cfg.data.root)
    syn = load_fvrid(root, "syn")
    train_records, val_split = carve_validation(syn, cfg.data.val_fraction, cfg.seed)
    val_split = leave_one_out(val_split)
    ids = sorted({r.pid for r in train_records})
    labels = [ids.index(r.pid) for r in train_records]
    model_cfg = cfg.model_config(len(ids), 0)
    size = model_cfg.input_size
    dataset = ReIDImages(train_records, size, labels)
    sampler = IdentitySampler(labels, cfg.data.ids_per_batch, cfg.data.instances_per_id, cfg.seed)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.data.num_workers)
    batch = cfg.data.ids_per_batch * cfg.data.instances_per_id
    extra = real_foggy = None
    if stage == 2:
        folder = root / "FVRID_clear" / "train_clear"
        if not folder.is_dir():
            raise FogreidError(f"RVSL stage 2 needs real clear images in {folder} (`fogreid synth` writes them)")
        extra = unlabelled_batches(unlabelled_images(folder, size), batch, cfg.seed)
    elif stage == 3:
        real_foggy = unlabelled_images(root / "FVRID_real" / "train_foggy", size)
        extra = unlabelled_batches(real_foggy, batch, cfg.seed)
    w = getattr(cfg.loss, f"rvsl_stage{stage}")
    schedule = resolve_schedule(cfg.optim)

    def bn_batches():
        """The deployed domain: synthetic foggy images, and in stage 3 the real foggy ones it
        trains on (one real batch per synthetic batch, as in its steps)."""
        sources = [(dataset, IdentitySampler(labels, cfg.data.ids_per_batch, cfg.data.instances_per_id,
                                             cfg.seed + 2), "image")]
        if real_foggy is not None:
            sources.append((real_foggy, ShuffledBatches(len(real_foggy), batch, cfg.seed + 3), "image"))
        return domain_batches(sources, 1 if real_foggy is not None else 0)

    pretrained = (cfg.pretrained or None) if stage == 1 and init is None else None  # later stages start from init
    net = build_sjdl(model_cfg, pretrained).to(device)
    if init is not None:
        load_weights(net, read_checkpoint(init, device)["model"], init)
    # Fresh optimiser and discriminators at each stage (as upstream); the warmup of this
    # stage's schedule is what keeps the handover from starting at full lr.
    d_clear, d_hazy = PatchDiscriminator().to(device), PatchDiscriminator().to(device)
    g_opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=schedule.lr_at(0),
                             weight_decay=cfg.optim.weight_decay)
    d_opt = torch.optim.Adam([*d_clear.parameters(), *d_hazy.parameters()], lr=DISCRIMINATOR_LR, betas=(0.5, 0.999))
    pool_clear, pool_hazy = L.ReplayBuffer(seed=cfg.seed), L.ReplayBuffer(seed=cfg.seed + 1)
    preprocess, ls = Preprocess(), cfg.loss
    best, history = {"epoch": -1, "mAP": -1.0}, []
    epochs = cfg.optim.epochs
    print(f"rvsl stage {stage}: {schedule.describe()}; weights {w}")
    for note in schedule.notes:
        print(f"note: {note}")

    def reid(logits_input, feat, target):
        return (L.cross_entropy(net.classifier(logits_input), target, ls.label_smoothing),
                L.batch_hard_triplet(feat, target, ls.triplet_margin))

    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        steps = max(len(sampler.batches()), 1)
        d_lr = DISCRIMINATOR_LR * min(1.0, 2 * (1 - epoch / epochs)) if epochs > 1 else DISCRIMINATOR_LR
        for group in d_opt.param_groups:
            group["lr"] = d_lr
        net.train()
        sums: dict[str, float] = {}
        tic = time.perf_counter()
        lr = schedule.lr_at(epoch)
        cpu = time.process_time()   # CPU seconds: what the epoch costs on an idle machine, roughly
        for step, data in enumerate(tqdm(loader, desc=f"rvsl stage {stage} epoch {epoch + 1}/{epochs}",
                                         unit="batch", disable=not progress)):
            lr = schedule.lr_at(epoch + step / steps)
            for group in g_opt.param_groups:
                group["lr"] = lr
            # Flips drawn from (seed, stage, epoch, step); one per pair, so the clear image and
            # its foggy version stay aligned.
            flips = torch.Generator().manual_seed(hash((cfg.seed, stage, epoch, step)) & 0x7FFFFFFF)
            mask = torch.rand(len(data["label"]), generator=flips) < cfg.data.hflip
            foggy = flip_images(preprocess(data["image"]), mask).to(device)
            clear = flip_images(preprocess(data["clear"]), mask).to(device)
            target = data["label"].to(device)

            # ---- synthetic pairs: ReID on both domains, translations, embedding consistency
            feat_h = net.encode(foggy, "hazy")
            feat_c = net.encode(clear, "clear")
            (g_h, b_h), (g_c, b_c) = net.trunk(feat_h[1]), net.trunk(feat_c[1])
            fake_clear = net.translate(foggy, "hazy", feat_h)
            fake_hazy = net.translate(clear, "clear", feat_c)
            (id_h, tri_h), (id_c, tri_c) = reid(b_h, g_h, target), reid(b_c, g_c, target)
            terms = {
                "id": w.reid * ls.id_weight * (id_h + id_c),
                "triplet": w.reid * ls.triplet_weight * (tri_h + tri_c),
                "translation": w.translation * (L.translation(fake_clear, clear) + L.translation(fake_hazy, foggy)),
                "embedding": w.embedding * L.embedding_consistency(g_h, g_c),
            }
            fakes_clear, fakes_hazy = [fake_clear.detach()], [fake_hazy.detach()]
            if stage == 1:
                terms["adversarial"] = w.adversarial * (L.lsgan_generator(d_clear(fake_clear))
                                                        + L.lsgan_generator(d_hazy(fake_hazy)))
            elif stage == 2:  # real clear images, no labels
                real_clear = flip_images(preprocess(next(extra)), torch.rand(batch, generator=flips) < cfg.data.hflip
                                         ).to(device)
                to_hazy = net.translate(real_clear, "clear")
                back = net.translate(to_hazy, "hazy")
                terms["cycle"] = w.cycle * L.translation(back, real_clear)
                terms["real_embedding"] = w.real_embedding * L.embedding_consistency(
                    net.trunk(net.encode(real_clear, "clear")[1])[0], net.trunk(net.encode(to_hazy, "hazy")[1])[0])
                terms["dc_monotonic"] = w.priors * L.dark_channel_monotonicity(real_clear, to_hazy)
                terms["colinearity"] = w.priors * L.haze_line_colinearity(to_hazy, real_clear)
                terms["adversarial"] = w.adversarial * L.lsgan_generator(d_hazy(to_hazy))
                fakes_hazy.append(to_hazy.detach())
            else:  # stage 3: real foggy images, no labels, no clear ground truth
                real_fog = flip_images(preprocess(next(extra)), torch.rand(batch, generator=flips) < cfg.data.hflip
                                       ).to(device)
                fog_feats = net.encode(real_fog, "hazy")
                to_clear = net.translate(real_fog, "hazy", fog_feats)
                back = net.translate(to_clear, "clear")
                terms["cycle"] = w.cycle * L.translation(back, real_fog)
                # The trunk sees real fog: the foggy image's embedding must match the one of
                # its defogged translation seen through the clear encoder.
                terms["real_embedding"] = w.real_embedding * L.embedding_consistency(
                    net.trunk(net.encode(to_clear, "clear")[1])[0], net.trunk(fog_feats[1])[0])
                # Upstream's inner weights: 0.5 dark channel, 2 TV, 0.05 colinearity.
                terms["dark_channel"] = w.priors * 0.5 * L.dark_channel_loss(to_clear, ls.dark_channel_patch)
                terms["tv"] = w.priors * 2.0 * L.total_variation(to_clear)
                terms["colinearity"] = w.priors * 0.05 * L.haze_line_colinearity(real_fog, to_clear)
                terms["adversarial"] = w.adversarial * L.lsgan_generator(d_clear(to_clear))
                fakes_clear.append(to_clear.detach())
            loss = sum(terms.values())
            if not torch.isfinite(loss):
                raise FogreidError(f"RVSL stage {stage}: the loss became {loss.item()} at epoch {epoch + 1}; "
                                   f"lower optim.lr (now {lr:g})")
            g_opt.zero_grad(set_to_none=True)
            loss.backward()
            g_opt.step()

            # ---- discriminator side: real images against replayed fakes
            fakes_clear, fakes_hazy = torch.cat(fakes_clear), torch.cat(fakes_hazy)
            d_loss = (L.lsgan_discriminator(d_clear(clear), d_clear(pool_clear.query(fakes_clear).to(device)))
                      + L.lsgan_discriminator(d_hazy(foggy), d_hazy(pool_hazy.query(fakes_hazy).to(device))))
            d_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            d_opt.step()
            for name, value in {**terms, "loss": loss, "discriminator": d_loss}.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach())

        row = {"stage": stage, "epoch": epoch + 1, "lr_start": schedule.lr_at(epoch), "lr": lr, "d_lr": d_lr,
               "seconds": round(time.perf_counter() - tic, 2),
               "cpu_seconds": round(time.process_time() - cpu, 2),
               **{f"train/{k}": v / max(step + 1, 1) for k, v in sums.items()}}
        ema_stats = {}
        if cfg.optim.precise_bn_batches:
            ema_stats, tic, cpu = bn_buffers(net), time.perf_counter(), time.process_time()
            row["precise_bn_batches"] = reestimate(net, bn_batches(), cfg.optim.precise_bn_batches, preprocess, device)
            row["precise_bn_seconds"] = round(time.perf_counter() - tic, 2)
            row["precise_bn_cpu_seconds"] = round(time.process_time() - cpu, 2)
        meta = {"trained_on": str(root), "mode": "rvsl", "stage": stage}
        if val_split.query:
            val = evaluate(FusedDefogReID(net), val_split, progress=False)
            row.update({f"val/{k}": v for k, v in val.items() if k != "cmc"})
            if val["mAP"] > best["mAP"]:
                best = {"epoch": epoch + 1, "mAP": val["mAP"]}
                save_checkpoint(out / "best.pt", net, meta=meta, bn_ema=ema_stats)
            print(f"rvsl stage {stage} epoch {epoch + 1}: loss {row['train/loss']:.3f}, lr {lr:.2e}, "
                  f"val mAP {val['mAP']:.3f} (best {best['mAP']:.3f} at epoch {best['epoch']})")
        save_checkpoint(out / "last.pt", net, meta=meta, train_config=config_dict(cfg), optimizer=g_opt.state_dict(),
                        discriminators={"clear": d_clear.state_dict(), "hazy": d_hazy.state_dict()},
                        epoch=epoch + 1, best=best, bn_ema=ema_stats)
        if not val_split.query:
            save_checkpoint(out / "best.pt", net, meta=meta, bn_ema=ema_stats)
            best = {"epoch": epoch + 1, "mAP": -1.0}
        history.append(row)
        with open(out / "history.jsonl", "a") as handle:
            handle.write(json.dumps(row) + "\n")
    summary = {"best": best, "history": history}
    (out / "stage.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")  # marks the stage done
    return summary


def train_rvsl(cfg: TrainConfig, out: str | Path, init: str | Path | None = None, progress: bool = True,
               resume: bool = False) -> dict:
    """The stages of `cfg.stage` in order. With `resume`, a stage whose RUN/stageK/stage.json
    exists (it finished) is not trained again."""
    out = Path(out)
    stages = [1, 2, 3] if cfg.stage == "all" else [int(cfg.stage)]
    previous = Path(init) if init else None
    summary: dict = {"config": config_dict(cfg), "stages": {}}
    for stage in stages:
        folder = out / f"stage{stage}"
        if resume and (folder / "stage.json").is_file():
            summary["stages"][stage] = json.loads((folder / "stage.json").read_text())
            print(f"rvsl stage {stage}: finished earlier, reusing {folder}")
        else:
            if folder.exists():
                (folder / "history.jsonl").unlink(missing_ok=True)   # a restarted stage logs afresh
            summary["stages"][stage] = train_stage(stage, cfg, folder, previous, progress)
        previous = folder / "best.pt"
    # The final model: the best stage on validation (later stages may trade synthetic
    # accuracy for the real domain; validation decides, never the test set).
    chosen = max(stages, key=lambda s: summary["stages"][s]["best"]["mAP"])
    summary["chosen_stage"] = chosen
    shutil.copyfile(out / f"stage{chosen}" / "best.pt", out / "best.pt")
    shutil.copyfile(out / f"stage{stages[-1]}" / "last.pt", out / "last.pt")
    print(f"rvsl: best.pt is stage {chosen}'s best (val mAP {summary['stages'][chosen]['best']['mAP']:.3f})")
    summary.update(test_checkpoint(out / "best.pt", cfg.data.root, pick_device(cfg.device)))
    (out / "metrics.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    for split, m in summary["test"].items():
        print(f"test {split}: mAP {m['mAP']:.3f} R1 {m['rank1']:.3f}")
    return summary

"""`fogreid train --mode rvsl`: the three RVSL stages, each visible in `train_stage`.

  stage 1  synthetic pairs with labels: ReID on both domains, SmoothL1 translation both ways,
           clear/hazy embedding consistency, adversarial (least squares, replay buffer)
  stage 2  + real clear images without labels (FVRID_clear): cycle clear->hazy->clear,
           feature consistency, dark-channel monotonicity, haze-line colinearity
  stage 3  + real foggy images without labels (FVRID_real): cycle hazy->clear->hazy, dark
           channel prior (lowering the defogged image's dark channel), total variation,
           colinearity

`--stage all` runs them in order into RUN/stage1..3, each initialised from the previous;
`--stage K --init CKPT` runs one. Every prior is averaged over every image of the batch.
"""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import torch

from fogreid.data.datasets import ImageRecord, ReIDImages, carve_validation, load_fvrid
from fogreid.data.image_io import list_images
from fogreid.data.sampler import IdentitySampler
from fogreid.devices import pick_device
from fogreid.errors import FogreidError
from fogreid.model.checkpoint import load_weights, read_checkpoint, save_checkpoint
from fogreid.model.fused import FusedDefogReID, Preprocess
from fogreid.model.rvsl import PatchDiscriminator
from fogreid.model.build import build_sjdl
from fogreid.train import losses as L
from fogreid.train.config import TrainConfig, config_dict
from fogreid.train.evaluate import evaluate


def unlabelled_batches(folder: Path, size: tuple[int, int], batch: int, seed: int):
    """Endless shuffled batches of uint8 frames from a folder of images (no labels needed)."""
    records = [ImageRecord(p, 0, 0) for p in list_images(folder)]
    if len(records) < batch:
        raise FogreidError(f"{folder}: {len(records)} images, fewer than one batch of {batch}")
    dataset = ReIDImages(records, size)
    generator = torch.Generator().manual_seed(seed)
    for _ in itertools.count():
        order = torch.randperm(len(records), generator=generator).tolist()
        for start in range(0, len(order) - batch + 1, batch):
            yield torch.stack([dataset[i]["image"] for i in order[start:start + batch]])


def train_stage(stage: int, cfg: TrainConfig, out: Path, init: Path | None, progress: bool = True) -> dict:
    from tqdm import tqdm

    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed + stage)
    out.mkdir(parents=True, exist_ok=True)
    root = Path(cfg.data.root)
    syn = load_fvrid(root, "syn")
    train_records, val_split = carve_validation(syn, cfg.data.val_fraction, cfg.seed)
    ids = sorted({r.pid for r in train_records})
    labels = [ids.index(r.pid) for r in train_records]
    model_cfg = cfg.model_config(len(ids), 0)
    size = model_cfg.input_size
    sampler = IdentitySampler(labels, cfg.data.ids_per_batch, cfg.data.instances_per_id, cfg.seed)
    loader = torch.utils.data.DataLoader(ReIDImages(train_records, size, labels), batch_sampler=sampler,
                                         num_workers=cfg.data.num_workers)
    batch = cfg.data.ids_per_batch * cfg.data.instances_per_id
    if stage == 2:
        folder = root / "FVRID_clear" / "train_clear"
        if not folder.is_dir():
            raise FogreidError(f"RVSL stage 2 needs real clear images in {folder} (`fogreid synth` writes them)")
        extra = unlabelled_batches(folder, size, batch, cfg.seed)
    elif stage == 3:
        extra = unlabelled_batches(root / "FVRID_real" / "train_foggy", size, batch, cfg.seed)

    pretrained = (cfg.pretrained or None) if stage == 1 and init is None else None  # later stages start from init
    net = build_sjdl(model_cfg, pretrained).to(device)
    if init is not None:
        load_weights(net, read_checkpoint(init, device)["model"], init)
    d_clear, d_hazy = PatchDiscriminator().to(device), PatchDiscriminator().to(device)
    g_opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=cfg.optim.lr,
                             weight_decay=cfg.optim.weight_decay)
    d_opt = torch.optim.Adam([*d_clear.parameters(), *d_hazy.parameters()], lr=cfg.optim.lr, betas=(0.5, 0.999))
    pool_clear, pool_hazy = L.ReplayBuffer(seed=cfg.seed), L.ReplayBuffer(seed=cfg.seed + 1)
    preprocess, w = Preprocess(), cfg.loss
    best, history = {"epoch": -1, "mAP": -1.0}, []

    for epoch in range(cfg.optim.epochs):
        sampler.set_epoch(epoch)
        net.train()
        sums: dict[str, float] = {}
        for step, data in enumerate(tqdm(loader, desc=f"rvsl stage {stage} epoch {epoch + 1}/{cfg.optim.epochs}",
                                         unit="batch", disable=not progress)):
            foggy, clear = preprocess(data["image"]).to(device), preprocess(data["clear"]).to(device)
            target = data["label"].to(device)

            # ---- generator side: ReID on both domains, translations, consistency, adversarial
            feat_h = net.encode(foggy, "hazy")
            feat_c = net.encode(clear, "clear")
            (g_h, b_h), (g_c, b_c) = net.trunk(feat_h[1]), net.trunk(feat_c[1])
            fake_clear = net.translate(foggy, "hazy", feat_h)
            fake_hazy = net.translate(clear, "clear", feat_c)
            terms = {
                "id": w.id_weight * (L.cross_entropy(net.classifier(b_h), target, w.label_smoothing)
                                     + L.cross_entropy(net.classifier(b_c), target, w.label_smoothing)),
                "triplet": w.triplet_weight * (L.batch_hard_triplet(g_h, target, w.triplet_margin)
                                               + L.batch_hard_triplet(g_c, target, w.triplet_margin)),
                "translation": w.translation_weight * (L.translation(fake_clear, clear) + L.translation(fake_hazy, foggy)),
                "embedding": w.embedding_consistency_weight * L.embedding_consistency(g_h, g_c),
                "adversarial": w.adversarial_weight * (L.lsgan_generator(d_clear(fake_clear))
                                                       + L.lsgan_generator(d_hazy(fake_hazy))),
            }
            extra_fakes = {}
            if stage == 2:  # real clear images, no labels
                real_clear = preprocess(next(extra)).to(device)
                to_hazy = net.translate(real_clear, "clear")
                back = net.translate(to_hazy, "hazy")
                terms["cycle"] = w.cycle_weight * (back - real_clear).abs().mean()
                terms["feature"] = w.feature_consistency_weight * L.embedding_consistency(
                    net.trunk(net.encode(real_clear, "clear")[1])[0], net.trunk(net.encode(to_hazy, "hazy")[1])[0])
                terms["dc_monotonic"] = w.dark_channel_monotonicity_weight * L.dark_channel_monotonicity(real_clear, to_hazy)
                terms["colinearity"] = w.colinearity_weight * L.haze_line_colinearity(to_hazy, real_clear)
                terms["adversarial"] = terms["adversarial"] + w.adversarial_weight * L.lsgan_generator(d_hazy(to_hazy))
                extra_fakes["hazy"] = to_hazy
            elif stage == 3:  # real foggy images, no labels, no clear ground truth
                real_foggy = preprocess(next(extra)).to(device)
                to_clear = net.translate(real_foggy, "hazy")
                back = net.translate(to_clear, "clear")
                terms["cycle"] = w.cycle_weight * (back - real_foggy).abs().mean()
                terms["dark_channel"] = w.dark_channel_weight * L.dark_channel_loss(to_clear, w.dark_channel_patch)
                terms["tv"] = w.tv_weight * L.total_variation(to_clear)
                terms["colinearity"] = w.colinearity_weight * L.haze_line_colinearity(real_foggy, to_clear)
                terms["adversarial"] = terms["adversarial"] + w.adversarial_weight * L.lsgan_generator(d_clear(to_clear))
                extra_fakes["clear"] = to_clear
            loss = sum(terms.values())
            if not torch.isfinite(loss):
                raise FogreidError(f"RVSL stage {stage}: the loss became {loss.item()} at epoch {epoch + 1}; lower optim.lr")
            g_opt.zero_grad(set_to_none=True)
            loss.backward()
            g_opt.step()

            # ---- discriminator side: real images against replayed fakes
            fakes_clear, fakes_hazy = [fake_clear.detach()], [fake_hazy.detach()]
            if "clear" in extra_fakes:
                fakes_clear.append(extra_fakes["clear"].detach())
            if "hazy" in extra_fakes:
                fakes_hazy.append(extra_fakes["hazy"].detach())
            fakes_clear, fakes_hazy = torch.cat(fakes_clear), torch.cat(fakes_hazy)
            d_loss = (L.lsgan_discriminator(d_clear(clear), d_clear(pool_clear.query(fakes_clear).to(device)))
                      + L.lsgan_discriminator(d_hazy(foggy), d_hazy(pool_hazy.query(fakes_hazy).to(device))))
            d_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            d_opt.step()
            for name, value in {**terms, "loss": loss, "discriminator": d_loss}.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach())

        row = {"stage": stage, "epoch": epoch + 1, **{f"train/{k}": v / max(step + 1, 1) for k, v in sums.items()}}
        if val_split.query:
            val = evaluate(FusedDefogReID(net), val_split, progress=False)
            row.update({f"val/{k}": v for k, v in val.items() if k != "cmc"})
            if val["mAP"] > best["mAP"]:
                best = {"epoch": epoch + 1, "mAP": val["mAP"]}
                save_checkpoint(out / "best.pt", net, meta={"trained_on": str(root), "mode": "rvsl", "stage": stage})
            print(f"rvsl stage {stage} epoch {epoch + 1}: loss {row['train/loss']:.3f}, val mAP {val['mAP']:.3f}")
        save_checkpoint(out / "last.pt", net, meta={"trained_on": str(root), "mode": "rvsl", "stage": stage},
                        train_config=config_dict(cfg), optimizer=g_opt.state_dict(),
                        discriminators={"clear": d_clear.state_dict(), "hazy": d_hazy.state_dict()},
                        epoch=epoch + 1, best=best)
        if not val_split.query:
            save_checkpoint(out / "best.pt", net, meta={"trained_on": str(root), "mode": "rvsl", "stage": stage})
        history.append(row)
        with open(out / "history.jsonl", "a") as handle:
            handle.write(json.dumps(row) + "\n")
    return {"best": best, "history": history}


def train_rvsl(cfg: TrainConfig, out: str | Path, init: str | Path | None = None, progress: bool = True) -> dict:
    out = Path(out)
    stages = [1, 2, 3] if cfg.stage == "all" else [int(cfg.stage)]
    previous = Path(init) if init else None
    summary: dict = {"config": config_dict(cfg), "stages": {}}
    for stage in stages:
        summary["stages"][stage] = train_stage(stage, cfg, out / f"stage{stage}", previous, progress)
        previous = out / f"stage{stage}" / "best.pt"
    for name in ("best.pt", "last.pt"):
        shutil.copyfile(out / f"stage{stages[-1]}" / name, out / name)
    model = FusedDefogReID.from_checkpoint(out / "best.pt")
    summary["test"] = {"syn": evaluate(model, load_fvrid(cfg.data.root, "syn"), progress=False),
                       "real": evaluate(model, load_fvrid(cfg.data.root, "real"), progress=False)}
    (out / "metrics.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    for split, m in summary["test"].items():
        print(f"test {split}: mAP {m['mAP']:.3f} R1 {m['rank1']:.3f}")
    return summary

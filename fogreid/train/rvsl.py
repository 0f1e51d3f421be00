"""`fogreid train --mode rvsl`: the three RVSL stages, each an `RVSLStep` that the one
training loop (fogreid/train/loop.py:fit) runs, set up by `train_stage`.

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
from pathlib import Path

import torch

from fogreid.data.datasets import ImageRecord, ReIDImages
from fogreid.data.image_io import list_images
from fogreid.devices import pick_device
from fogreid.errors import FogreidError
from fogreid.model.build import build_model
from fogreid.model.checkpoint import load_weights, read_checkpoint
from fogreid.model.fused import Preprocess
from fogreid.model.rvsl import PatchDiscriminator
from fogreid.model.sjdl import SJDLNet
from fogreid.train import losses as L
from fogreid.train.config import TrainConfig, config_dict
from fogreid.train.data import TrainData, training_data
from fogreid.train.evaluation import test_checkpoint
from fogreid.train.loop import Job, fit, seed_everything
from fogreid.train.precise import ShuffledBatches, domain_batches
from fogreid.train.schedule import resolve_schedule
from fogreid.train.step import Batch, Step, flip_images

DISCRIMINATOR_LR = 2e-4   # upstream: Adam(2e-4, betas 0.5/0.999), linear decay over the second half
# What a stage's checkpoints keep beside the weights, model config and metadata.
STAGE_CHECKPOINTS = {"last.pt": ("train_config", "optimizer", "discriminators", "epoch", "best", "bn_ema"),
                     "best.pt": ("bn_ema",)}


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


def real_images(stage: int, root: Path, size: tuple[int, int]) -> ReIDImages | None:
    """The unlabelled real domain of a stage: clear images (2), foggy images (3), none (1)."""
    if stage == 2:
        folder = root / "FVRID_clear" / "train_clear"
        if not folder.is_dir():
            raise FogreidError(f"RVSL stage 2 needs real clear images in {folder} (`fogreid synth` writes them)")
        return unlabelled_images(folder, size)
    return unlabelled_images(root / "FVRID_real" / "train_foggy", size) if stage == 3 else None


class RVSLStep(Step):
    """One RVSL stage's batch: the synthetic terms and the stage's own, then (`after_step`)
    the discriminators' update on real images against replayed fakes."""

    def __init__(self, stage: int, cfg: TrainConfig, net: SJDLNet, data: TrainData, real: ReIDImages | None,
                 device: torch.device) -> None:
        self.stage, self.cfg, self.net, self.data, self.real = stage, cfg, net, data, real
        self.name, self.preprocess = f"rvsl stage {stage}", Preprocess()
        self.w, self.ls = getattr(cfg.loss, f"rvsl_stage{stage}"), cfg.loss
        self.batch_size = cfg.data.ids_per_batch * cfg.data.instances_per_id
        self.real_batches = unlabelled_batches(real, self.batch_size, cfg.seed) if real is not None else None
        # Fresh discriminators at each stage (as upstream).
        self.d_clear, self.d_hazy = PatchDiscriminator().to(device), PatchDiscriminator().to(device)
        self.d_opt = torch.optim.Adam([*self.d_clear.parameters(), *self.d_hazy.parameters()], lr=DISCRIMINATOR_LR,
                                      betas=(0.5, 0.999))
        self.pool_clear, self.pool_hazy = L.ReplayBuffer(seed=cfg.seed), L.ReplayBuffer(seed=cfg.seed + 1)

    def flip_key(self, epoch: int, step: int) -> tuple:
        return self.cfg.seed, self.stage, epoch, step

    def start_epoch(self, epoch: int) -> dict:
        epochs = self.cfg.optim.epochs
        d_lr = DISCRIMINATOR_LR * min(1.0, 2 * (1 - epoch / epochs)) if epochs > 1 else DISCRIMINATOR_LR
        for group in self.d_opt.param_groups:
            group["lr"] = d_lr
        return {"stage": self.stage, "d_lr": d_lr}

    def losses(self, batch: Batch, global_step: int) -> dict[str, torch.Tensor]:
        terms, fake_clear, fake_hazy = self.synthetic(batch)
        self.fakes_clear, self.fakes_hazy = [fake_clear.detach()], [fake_hazy.detach()]
        if self.stage == 1:
            terms["adversarial"] = self.w.adversarial * (L.lsgan_generator(self.d_clear(fake_clear))
                                                         + L.lsgan_generator(self.d_hazy(fake_hazy)))
        elif self.stage == 2:
            terms.update(self.real_clear(self.next_real(batch)))
        else:
            terms.update(self.real_foggy(self.next_real(batch)))
        return terms

    def synthetic(self, batch: Batch) -> tuple[dict, torch.Tensor, torch.Tensor]:
        """Synthetic pairs: ReID on both domains, translations both ways, embedding consistency."""
        net, w, ls = self.net, self.w, self.ls
        feat_h = net.encode(batch.foggy, "hazy")
        feat_c = net.encode(batch.clear, "clear")
        (g_h, b_h), (g_c, b_c) = net.trunk(feat_h[1]), net.trunk(feat_c[1])
        fake_clear = net.translate(batch.foggy, "hazy", feat_h)
        fake_hazy = net.translate(batch.clear, "clear", feat_c)
        (id_h, tri_h), (id_c, tri_c) = self.reid(b_h, g_h, batch.target), self.reid(b_c, g_c, batch.target)
        return {
            "id": w.reid * ls.id_weight * (id_h + id_c),
            "triplet": w.reid * ls.triplet_weight * (tri_h + tri_c),
            "translation": w.translation * (L.translation(fake_clear, batch.clear)
                                            + L.translation(fake_hazy, batch.foggy)),
            "embedding": w.embedding * L.embedding_consistency(g_h, g_c),
        }, fake_clear, fake_hazy

    def reid(self, logits_input: torch.Tensor, feat: torch.Tensor, target: torch.Tensor):
        return (L.cross_entropy(self.net.classifier(logits_input), target, self.ls.label_smoothing),
                L.batch_hard_triplet(feat, target, self.ls.triplet_margin))

    def next_real(self, batch: Batch) -> torch.Tensor:
        """The next unlabelled real batch, flipped with the step's generator."""
        flip = torch.rand(self.batch_size, generator=batch.flips) < self.cfg.data.hflip
        return flip_images(self.preprocess(next(self.real_batches)), flip).to(batch.foggy.device)

    def real_clear(self, real_clear: torch.Tensor) -> dict[str, torch.Tensor]:
        """Stage 2: real clear images, no labels: the cycle clear->hazy->clear, embedding
        consistency with the hazy translation, the priors, adversarial on the translation."""
        net, w = self.net, self.w
        to_hazy = net.translate(real_clear, "clear")
        back = net.translate(to_hazy, "hazy")
        terms = {"cycle": w.cycle * L.translation(back, real_clear),
                 "real_embedding": w.real_embedding * L.embedding_consistency(
                     net.trunk(net.encode(real_clear, "clear")[1])[0], net.trunk(net.encode(to_hazy, "hazy")[1])[0]),
                 "dc_monotonic": w.priors * L.dark_channel_monotonicity(real_clear, to_hazy),
                 "colinearity": w.priors * L.haze_line_colinearity(to_hazy, real_clear),
                 "adversarial": w.adversarial * L.lsgan_generator(self.d_hazy(to_hazy))}
        self.fakes_hazy.append(to_hazy.detach())
        return terms

    def real_foggy(self, real_fog: torch.Tensor) -> dict[str, torch.Tensor]:
        """Stage 3: real foggy images, no labels, no clear ground truth: the cycle
        hazy->clear->hazy, real-fog embedding consistency, the priors, adversarial."""
        net, w = self.net, self.w
        fog_feats = net.encode(real_fog, "hazy")
        to_clear = net.translate(real_fog, "hazy", fog_feats)
        back = net.translate(to_clear, "clear")
        terms = {"cycle": w.cycle * L.translation(back, real_fog),
                 # The trunk sees real fog: the foggy image's embedding must match the one of
                 # its defogged translation seen through the clear encoder.
                 "real_embedding": w.real_embedding * L.embedding_consistency(
                     net.trunk(net.encode(to_clear, "clear")[1])[0], net.trunk(fog_feats[1])[0]),
                 # Upstream's inner weights: 0.5 dark channel, 2 TV, 0.05 colinearity.
                 "dark_channel": w.priors * 0.5 * L.dark_channel_loss(to_clear, self.ls.dark_channel_patch),
                 "tv": w.priors * 2.0 * L.total_variation(to_clear),
                 "colinearity": w.priors * 0.05 * L.haze_line_colinearity(real_fog, to_clear),
                 "adversarial": w.adversarial * L.lsgan_generator(self.d_clear(to_clear))}
        self.fakes_clear.append(to_clear.detach())
        return terms

    def after_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The discriminators' update: real images against replayed fakes."""
        device = batch.foggy.device
        fakes_clear, fakes_hazy = torch.cat(self.fakes_clear), torch.cat(self.fakes_hazy)
        d_loss = (L.lsgan_discriminator(self.d_clear(batch.clear),
                                        self.d_clear(self.pool_clear.query(fakes_clear).to(device)))
                  + L.lsgan_discriminator(self.d_hazy(batch.foggy),
                                          self.d_hazy(self.pool_hazy.query(fakes_hazy).to(device))))
        self.d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        self.d_opt.step()
        return {"discriminator": d_loss}

    def bn_batches(self):
        """The deployed domain: synthetic foggy images, and in stage 3 the real foggy ones it
        trains on (one real batch per synthetic batch, as in its steps)."""
        sources = [(self.data.dataset, self.data.pk_sampler(self.cfg.seed + 2), "image")]
        if self.stage == 3:
            sources.append((self.real, ShuffledBatches(len(self.real), self.batch_size, self.cfg.seed + 3), "image"))
        return domain_batches(sources, 1 if self.stage == 3 else 0)

    def state(self) -> dict:
        return {"discriminators": {"clear": self.d_clear.state_dict(), "hazy": self.d_hazy.state_dict()}}


def train_stage(stage: int, cfg: TrainConfig, out: Path, init: Path | None, progress: bool = True) -> dict:
    """One RVSL stage into `out` (best.pt, last.pt, history.jsonl, stage.json), from `init`."""
    device = pick_device(cfg.device)
    seed_everything(cfg.seed + stage, device)
    out.mkdir(parents=True, exist_ok=True)
    data, model_cfg = training_data(cfg, device)
    real = real_images(stage, Path(cfg.data.root), model_cfg.imgsz)
    schedule = resolve_schedule(cfg.optim, pretrained=bool(cfg.pretrained))  # every stage: the same peak lr
    pretrained = (cfg.pretrained or None) if stage == 1 and init is None else None  # later stages start from init
    net = build_model(model_cfg, pretrained).to(device)
    if init is not None:
        start_from(net, read_checkpoint(init, device), init)
    step = RVSLStep(stage, cfg, net, data, real, device)
    # A fresh optimiser at each stage (as upstream): this stage's warmup keeps the handover from starting at full lr.
    optimizer = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=schedule.lr_at(0),
                                 weight_decay=cfg.optim.weight_decay)
    job = Job(net, optimizer, torch.amp.GradScaler("cuda", enabled=False), schedule, data, device,
              meta={"trained_on": str(Path(cfg.data.root)), "mode": "rvsl", "stage": stage},
              checkpoints=STAGE_CHECKPOINTS, full_log=False)
    print(f"rvsl stage {stage}: {schedule.describe()}; weights {step.w}")
    for note in schedule.notes:
        print(f"note: {note}")
    best, history = fit(cfg, job, step, out, progress)
    summary = {"best": best, "history": history}
    (out / "stage.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")  # marks the stage done
    return summary


def start_from(net, checkpoint: dict, path: Path) -> None:
    """An RVSL stage starts from an RVSL stage's checkpoint, or from a trained SJDL
    network (its encoder, BNNeck and classifier; RVSLNet.init_from_sjdl)."""
    if checkpoint["model_config"].get("arch", "sjdl") != "sjdl":
        load_weights(net, checkpoint["model"], path)
        return
    try:
        net.init_from_sjdl(checkpoint["model"])
    except RuntimeError as exc:   # load_state_dict: another backbone or width
        first = str(exc).strip().splitlines()[1:2] or [str(exc)]
        raise FogreidError(f"{path}: an SJDL checkpoint whose encoder does not fit this RVSL network "
                           f"(train with its preset and backbone): {first[0].strip()}") from None


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

"""SJDL's step: the loss of one batch for `--mode sjdl`, `jdl` and `reid`.

  sjdl  the paired synthetic batch (ReID, restoration of both defog outputs against the clear
        image), and every k-th step a real foggy batch with its own classifier and the
        unsupervised priors (dark channel, total variation), summed into the same step
  jdl   the synthetic terms only
  reid  no defog head: the ReID terms only (on the foggy images, or the clear ones: the baseline)
"""

from __future__ import annotations

import torch
from torch import nn

from fogreid.data.datasets import ReIDImages
from fogreid.data.sampler import IdentitySampler
from fogreid.model.fused import Preprocess
from fogreid.model.sjdl import SJDLNet
from fogreid.train import losses as L
from fogreid.train.config import TrainConfig
from fogreid.train.data import TrainData
from fogreid.train.precise import domain_batches
from fogreid.train.step import Batch, Step


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


class SJDLStep(Step):
    """`forward` is the network's TrainingForward (DDP-wrapped under torchrun), `rank` this
    process's. The real foggy batches are those of `data.real` (sjdl only)."""

    def __init__(self, cfg: TrainConfig, forward: nn.Module, data: TrainData, rank: int = 0) -> None:
        self.cfg, self.forward, self.data, self.rank = cfg, forward, data, rank
        self.preprocess = Preprocess()
        self.real = None
        if data.real is not None:
            self.real = ReIDImages(data.real.train, data.dataset.size, data.real.train_labels())
            self.real_batches = RealBatches(self.real_sampler(cfg.seed + 1))

    def real_sampler(self, seed: int) -> IdentitySampler:
        return IdentitySampler(self.real.labels, self.cfg.data.ids_per_batch, self.cfg.data.instances_per_id, seed)

    def flip_key(self, epoch: int, step: int) -> tuple:
        return self.cfg.seed, epoch, step, self.rank

    def losses(self, batch: Batch, global_step: int) -> dict[str, torch.Tensor]:
        ls, every = self.cfg.loss, self.cfg.data.real_every
        real_images = real_target = None
        if self.real is not None and global_step % every == 0:
            items = [self.real[i] for i in self.real_batches[global_step // every]]
            real_images = self.preprocess(torch.stack([item["image"] for item in items])).to(batch.foggy.device)
            real_target = torch.tensor([item["label"] for item in items], device=batch.foggy.device)

        out = self.forward(batch.clear if self.cfg.data.reid_input == "clear" else batch.foggy, real_images)
        terms = {"id": ls.id_weight * L.cross_entropy(out["logits"].float(), batch.target, ls.label_smoothing),
                 "triplet": ls.triplet_weight * L.batch_hard_triplet(out["global_feat"].float(), batch.target,
                                                                     ls.triplet_margin)}
        if out["defogged"] is not None:
            terms.update(L.restoration_terms([out["coarse"].float(), out["defogged"].float()], batch.clear, ls))
        if real_images is not None:
            r = out["real"]
            terms["real_id"] = ls.real_weight * (
                L.cross_entropy(r["logits"].float(), real_target, ls.label_smoothing)
                + L.batch_hard_triplet(r["global_feat"].float(), real_target, ls.triplet_margin))
            real_restored = [r["coarse"].float(), r["defogged"].float()]
            terms["dark_channel"] = ls.dark_channel_weight * sum(
                L.dark_channel_loss(x, ls.dark_channel_patch) for x in real_restored)
            terms["tv"] = ls.tv_weight * L.total_variation(r["defogged"].float())
        return terms

    def bn_batches(self):
        """The deployed domain (foggy, or clear for the clear-only baseline), as at evaluation;
        the real foggy batches join as often as in training."""
        key = "clear" if self.cfg.data.reid_input == "clear" else "image"
        sources = [(self.data.dataset, self.data.pk_sampler(self.cfg.seed + 2), key)]
        if self.real is not None:
            sources.append((self.real, self.real_sampler(self.cfg.seed + 3), "image"))
        return domain_batches(sources, self.cfg.data.real_every)

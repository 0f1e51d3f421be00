"""Precise BatchNorm inside training: which batches re-estimate the statistics, and a copy
of the running (EMA) statistics so the effect can be measured.

The deployed network sees one domain: foggy frames (or clear ones for the clear-only
baseline), through the deployed path (for RVSL: hazy encoder -> trunk). Its BatchNorm
statistics are therefore re-estimated on the training images of that domain only, loaded
as at evaluation (no flip), in P x K batches as in training, in a fixed order that depends
on nothing but the seed (so a resumed run gets the same statistics).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from fogreid.data.datasets import ReIDImages
from fogreid.data.sampler import IdentitySampler
from fogreid.model.precise_bn import batchnorm_layers, update_bn_stats


def domain_batches(sources: list[tuple[ReIDImages, IdentitySampler, str]], every: int = 0) -> Iterator[torch.Tensor]:
    """uint8 image batches: from the first source, and one from the second after every
    `every` of the first (the mixture the model trained on, e.g. SJDL's real foggy batch
    every 5th step). Each source is (dataset, sampler, item key: "image" or "clear")."""
    iterators = []
    for dataset, sampler, key in sources:
        sampler.set_epoch(0)
        iterators.append(((dataset, key), iter(sampler.batches())))
    count = 0
    while True:
        use = 1 if len(iterators) > 1 and every and count % (every + 1) == every else 0
        (dataset, key), batches = iterators[use]
        batch = next(batches, None)
        if batch is None:
            return
        count += 1
        yield torch.stack([dataset[i][key] for i in batch])


def bn_buffers(net: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every BatchNorm's running statistics, by state-dict key."""
    names = {id(m) for m in batchnorm_layers(net)}
    out = {}
    for prefix, module in net.named_modules():
        if id(module) in names:
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                out[f"{prefix}.{name}"] = getattr(module, name).detach().cpu().clone()
    return out


def reestimate(net: nn.Module, batches: Iterator[torch.Tensor], num_batches: int, preprocess, device) -> int:
    """Precise BN over `num_batches` of `batches` through the deployed forward."""
    return update_bn_stats(net, batches, num_batches, forward=lambda m, b: m(preprocess(b).to(device)))


class ShuffledBatches:
    """Batches of unlabelled images in a seeded random order (the sampler interface that
    `domain_batches` reads), for domains whose labels training never uses."""

    def __init__(self, count: int, batch: int, seed: int) -> None:
        self.count, self.batch, self.seed, self.epoch = count, batch, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        order = torch.randperm(self.count, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        return [order[i:i + self.batch] for i in range(0, self.count - self.batch + 1, self.batch)]

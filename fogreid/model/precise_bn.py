"""Precise BatchNorm: re-estimate every BatchNorm's running statistics with the final weights.

During training the running mean/var are an exponential average over batches seen with
*earlier* weights (and, for SJDL, mixed domains); at the end they lag behind the network
they describe. Re-estimating them over enough batches with the weights frozen gives the
statistics the deployed network really sees (fast-reid's PreciseBN,
fastreid/utils/precision_bn.py; Wu & Johnson, "Rethinking Batch in BatchNorm", 2021).
Only the BatchNorm buffers change, never a weight.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def update_bn_stats(model: nn.Module, batches: Iterable[torch.Tensor], num_batches: int,
                    forward: Callable[[nn.Module, torch.Tensor], object] | None = None) -> int:
    """Run `num_batches` of `batches` through `model` in train mode and set each BatchNorm's
    running mean/var to their exact average over those batches (momentum None = cumulative
    average). `forward(model, batch)` runs one batch (default `model(batch)`), so a caller
    can route a domain through the right branch. Returns the number of batches used.
    The model's train/eval mode and every BatchNorm's momentum are restored afterwards."""
    layers = batchnorm_layers(model)
    if not layers or num_batches <= 0:
        return 0
    was_training = model.training
    momenta = [bn.momentum for bn in layers]
    for bn in layers:
        bn.reset_running_stats()
        bn.momentum = None          # cumulative moving average: the exact mean over the batches
    model.train()
    used = 0
    try:
        for batch in batches:
            if used >= num_batches:
                break
            (forward or (lambda m, b: m(b)))(model, batch)
            used += 1
    finally:
        for bn, momentum in zip(layers, momenta, strict=True):
            bn.momentum = momentum
        model.train(was_training)
    if used == 0:
        raise ValueError("update_bn_stats: no batches (an empty loader, or an iterator already used)")
    return used

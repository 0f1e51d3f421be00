"""The training losses of SJDL, each a plain function of tensors.

Supervised: cross-entropy with label smoothing, batch-hard triplet, restoration against
the clear image. Unsupervised priors for real fog, where no clear image exists: the dark
channel prior (haze-free images have a dark channel near zero, so the loss *lowers* the
dark channel of the defogged output) and total variation. Every loss averages over every
image of the batch (the upstream code supervised only the first image of each batch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)


def batch_hard_triplet(features: torch.Tensor, labels: torch.Tensor, margin: float = 0.3) -> torch.Tensor:
    """Hermans et al. 2017: for each anchor, its farthest positive and nearest negative."""
    dist = torch.cdist(features, features).clamp_min(1e-12)
    same = labels.view(-1, 1) == labels.view(1, -1)
    hardest_pos = (dist * same).max(dim=1).values
    hardest_neg = dist.masked_fill(same, float("inf")).min(dim=1).values
    valid = torch.isfinite(hardest_neg)  # anchors with at least one negative in the batch
    if not valid.any():
        return features.sum() * 0.0
    return F.relu(hardest_pos - hardest_neg + margin)[valid].mean()


def restoration(output: torch.Tensor, clear: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    if kind == "l1":
        return F.l1_loss(output, clear)
    if kind == "mse":
        return F.mse_loss(output, clear)
    raise ValueError(f"unknown restoration loss {kind!r}; choose l1 or mse")


def ssim_loss(output: torch.Tensor, clear: torch.Tensor) -> torch.Tensor:
    from fogreid.metrics import ssim

    return 1.0 - ssim(output, clear).mean()


def dark_channel(images: torch.Tensor, patch: int = 35) -> torch.Tensor:
    """min over colour channels, then a min filter of `patch` x `patch` (He et al. 2009)."""
    patch = min(patch, images.shape[-1], images.shape[-2]) | 1  # odd, and no larger than the image
    per_pixel = images.min(dim=1, keepdim=True).values
    return -F.max_pool2d(-per_pixel, patch, stride=1, padding=patch // 2)


def dark_channel_loss(images: torch.Tensor, patch: int = 35) -> torch.Tensor:
    """Mean dark channel of the (defogged) images: minimising it removes haze."""
    return dark_channel(images, patch).mean()


def total_variation(images: torch.Tensor) -> torch.Tensor:
    dx = (images[..., :, 1:] - images[..., :, :-1]).abs().mean()
    dy = (images[..., 1:, :] - images[..., :-1, :]).abs().mean()
    return dx + dy

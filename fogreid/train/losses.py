"""The training losses of SJDL, each a plain function of tensors.

Supervised: cross-entropy with label smoothing, batch-hard triplet, restoration against
the clear image. Unsupervised priors for real fog, where no clear image exists: the dark
channel prior (haze-free images have a dark channel near zero, so the loss *lowers* the
dark channel of the defogged output) and total variation. Every loss averages over every
image of the batch (the upstream code supervised only the first image of each batch).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F


def in_fp32(loss):
    """Evaluate `loss` in FP32 whatever autocast the training step runs under; the network
    itself still runs in FP16. Under FP16 autocast SSIM's variances (E[x^2] - E[x]^2 over a
    Gaussian window) cancel to zero or below and 1 / (var_a + var_b + c2) overflows backwards:
    on the CPU under FP16 autocast every step's gradients were inf or NaN at every scale the
    GradScaler tried, so it skipped them all; the first CUDA runs (H200, 2026-12-04) gave models
    that scored the same 6.1 dB / 0.54 SSIM whatever their settings."""

    @functools.wraps(loss)
    def fp32_loss(*args, **kwargs):
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        device_type = tensors[0].device.type if tensors else "cpu"
        args = [a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args]
        with torch.autocast(device_type, enabled=False):
            return loss(*args, **kwargs)
    return fp32_loss



@in_fp32
def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)


@in_fp32
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


@in_fp32
def restoration(output: torch.Tensor, clear: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    if kind == "l1":
        return F.l1_loss(output, clear)
    if kind == "mse":
        return F.mse_loss(output, clear)
    raise ValueError(f"unknown restoration loss {kind!r}; choose l1 or mse")


@in_fp32
def ssim_loss(output: torch.Tensor, clear: torch.Tensor) -> torch.Tensor:
    from fogreid.metrics import ssim

    return 1.0 - ssim(output, clear).mean()


def restoration_terms(outputs: list[torch.Tensor], clear: torch.Tensor, loss_cfg) -> dict[str, torch.Tensor]:
    """The weighted restoration terms of defog `outputs` against `clear` (`loss_cfg` a LossConfig):
    "restore" (L1 or MSE) and, with a weight, "ssim" (1 - SSIM), each summed over the outputs."""
    terms = {"restore": loss_cfg.restoration_weight * sum(restoration(r, clear, loss_cfg.restoration)
                                                          for r in outputs)}
    if loss_cfg.ssim_weight:
        terms["ssim"] = loss_cfg.ssim_weight * sum(ssim_loss(r, clear) for r in outputs)
    return terms


def dark_channel(images: torch.Tensor, patch: int = 35) -> torch.Tensor:
    """min over colour channels, then a min filter of `patch` x `patch` (He et al. 2009)."""
    patch = min(patch, images.shape[-1], images.shape[-2]) | 1  # odd, and no larger than the image
    per_pixel = images.min(dim=1, keepdim=True).values
    return -F.max_pool2d(-per_pixel, patch, stride=1, padding=patch // 2)


@in_fp32
def dark_channel_loss(images: torch.Tensor, patch: int = 35) -> torch.Tensor:
    """Mean dark channel of the (defogged) images: minimising it removes haze."""
    return dark_channel(images, patch).mean()


@in_fp32
def total_variation(images: torch.Tensor) -> torch.Tensor:
    dx = (images[..., :, 1:] - images[..., :, :-1]).abs().mean()
    dy = (images[..., 1:, :] - images[..., :-1, :]).abs().mean()
    return dx + dy


# --------------------------------------------------------------------------- RVSL

@in_fp32
def lsgan_discriminator(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """Least-squares GAN: real patches towards 1, fakes towards 0."""
    return 0.5 * (((real_scores - 1) ** 2).mean() + (fake_scores ** 2).mean())


@in_fp32
def lsgan_generator(fake_scores: torch.Tensor) -> torch.Tensor:
    return ((fake_scores - 1) ** 2).mean()


@in_fp32
def translation(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SmoothL1 (PyTorch's default beta 1) on pixels mapped to [-1, 1], as upstream computes
    it: small errors cost half their square, hence upstream's large weights (x100 in stages 2-3)."""
    return F.smooth_l1_loss(output * 2 - 1, target * 2 - 1)


@in_fp32
def embedding_consistency(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """L1 between the embeddings of two views of the same vehicles (e.g. clear and hazy)."""
    return (a - b).abs().mean()


@in_fp32
def dark_channel_monotonicity(clear: torch.Tensor, hazy: torch.Tensor, patch: int = 15) -> torch.Tensor:
    """Adding haze raises the dark channel: penalise a translated hazy image whose dark
    channel is below its clear source's, pixel by pixel."""
    return F.relu(dark_channel(clear, patch) - dark_channel(hazy, patch)).mean()


def estimate_airlight(hazy: torch.Tensor, patch: int = 15, fraction: float = 0.001) -> torch.Tensor:
    """(B, 3): the mean colour of the haziest pixels (highest dark channel), without gradient."""
    with torch.no_grad():
        dark = dark_channel(hazy, patch).flatten(1)
        k = max(int(dark.shape[1] * fraction), 1)
        index = dark.topk(k, dim=1).indices
        pixels = hazy.flatten(2).gather(2, index.unsqueeze(1).expand(-1, 3, -1))
        return pixels.mean(dim=2)


@in_fp32
def haze_line_colinearity(hazy: torch.Tensor, clear: torch.Tensor,
                          airlight: torch.Tensor | None = None) -> torch.Tensor:
    """Haze lines (Berman et al. 2016): a hazy pixel lies on the line from its clear colour
    to the airlight, I - A = t (J - A). Penalise 1 - cos(I - A, J - A) per pixel."""
    airlight = estimate_airlight(hazy) if airlight is None else airlight
    a = airlight.view(-1, 3, 1, 1)
    return (1 - F.cosine_similarity(hazy - a, clear - a, dim=1, eps=1e-6)).mean()


class ReplayBuffer:
    """Shrivastava et al. / CycleGAN: the discriminator sees a mix of the newest fakes and
    older ones, which keeps the generator from chasing a moving target."""

    def __init__(self, size: int = 50, seed: int = 0) -> None:
        self.size, self.images = size, []
        self.generator = torch.Generator().manual_seed(seed)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        out = []
        for image in images.detach():
            if len(self.images) < self.size:
                self.images.append(image)
                out.append(image)
            elif torch.rand(1, generator=self.generator).item() < 0.5:
                slot = int(torch.randint(self.size, (1,), generator=self.generator))
                out.append(self.images[slot])
                self.images[slot] = image
            else:
                out.append(image)
        return torch.stack(out)

"""The contract between the training loop (`fogreid/train/loop.py:fit`) and a training mode.

The loop owns epochs, batches, the learning rate, AMP, the optimiser step, precise BN,
validation, checkpoints, logs and processes. A mode is a `Step`: the loss terms of one
batch, and the few things it adds around them (another update after the optimiser step,
its own entries in the history row and the checkpoint). `SJDLStep` (fogreid/train/sjdl_step.py)
covers sjdl / jdl / reid, `RVSLStep` (fogreid/train/rvsl.py) each RVSL stage, `FramesStep`
(fogreid/train/frames.py) the defog head's whole-frame training.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch


@dataclass
class Batch:
    """One step's synthetic pairs, flipped alike, as float images on the device."""

    foggy: torch.Tensor
    clear: torch.Tensor
    target: torch.Tensor
    flips: torch.Generator   # seeded per step: a step that loads more images flips them with it


class Step:
    """One training mode. `losses` is the mode; every other method has a default."""

    name = ""   # e.g. "rvsl stage 2": leads the progress bar and the messages

    def flip_key(self, epoch: int, step: int) -> tuple:
        """What the step's flips are drawn from: the same on resume, whatever the workers."""
        raise NotImplementedError

    def start_epoch(self, epoch: int) -> dict:
        """Called before the epoch's first batch; returns this mode's fields of the history row."""
        return {}

    def train_mode(self, net: torch.nn.Module) -> None:
        """At the start of each epoch: the network in training mode (a mode that freezes part of
        it keeps that part in eval mode, its BatchNorm statistics included)."""
        net.train()

    def losses(self, batch: Batch, global_step: int) -> dict[str, torch.Tensor]:
        """The weighted loss terms of one batch (their sum is what the optimiser minimises)."""
        raise NotImplementedError

    def after_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """After the optimiser step (e.g. a discriminator's own update); returns terms to log."""
        return {}

    def bn_batches(self) -> Iterator[torch.Tensor]:
        """uint8 batches of the deployed domain, for precise BatchNorm."""
        raise NotImplementedError

    def state(self) -> dict:
        """This mode's own training state for last.pt (e.g. the discriminators)."""
        return {}


def paired_batch(items: dict, flips: torch.Generator, hflip: float, preprocess, device: torch.device,
                 noise_sigma: float = 0.0) -> Batch:
    """The loader's uint8 pairs -> a Batch; one flip per pair, so the clear image stays aligned.
    `noise_sigma` > 0: sensor noise on the foggy image only (`add_sensor_noise`)."""
    flip = torch.rand(len(items["label"]), generator=flips) < hflip
    foggy = flip_images(preprocess(items["image"]), flip)
    if noise_sigma > 0:
        foggy = add_sensor_noise(foggy, noise_sigma, flips)
    return Batch(foggy.to(device, non_blocking=True),
                 flip_images(preprocess(items["clear"]), flip).to(device, non_blocking=True),
                 items["label"].to(device), flips)


def add_sensor_noise(images: torch.Tensor, max_sigma: float, generator: torch.Generator) -> torch.Tensor:
    """Signal-dependent (shot + read) noise, sigma * sqrt(x) per pixel with sigma drawn per image
    from [0, max_sigma], then rounded to uint8 levels as a camera's frame is: the model the
    real-like split's cameras use (fogreid/data/fog.py:camera_degradation)."""
    sigma = torch.rand(images.shape[0], 1, 1, 1, generator=generator) * max_sigma
    noise = torch.randn(images.shape, generator=generator)
    noisy = images + sigma * noise * images.clamp_min(0.05).sqrt()
    return (noisy.clamp(0, 1) * 255).round() / 255


def flip_images(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Horizontal flip of the (B, 3, H, W) images where `mask` is set."""
    return torch.where(mask.view(-1, 1, 1, 1), images.flip(-1), images)

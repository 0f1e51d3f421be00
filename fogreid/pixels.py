"""The pixel convention, written once: uint8 (B, H, W, 3) BGR frames, as OpenCV decodes
them, and float (B, 3, H, W) RGB images in [0, 1], as the network and fog models use.

The deploy graph's `Preprocess`/`Postprocess` modules and the data generator both call
these, so the exported graph and the data can never disagree on channel order or rounding.
"""

from __future__ import annotations

import torch


def frames_to_images(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) BGR -> float32 (B, 3, H, W) RGB in [0, 1]."""
    return (frames.to(torch.float32) / 255.0).flip(-1).permute(0, 3, 1, 2)


def images_to_frames(images: torch.Tensor) -> torch.Tensor:
    """float (B, 3, H, W) RGB in [0, 1] -> uint8 (B, H, W, 3) BGR, rounded to nearest."""
    return (images.clamp(0.0, 1.0) * 255.0).round().permute(0, 2, 3, 1).flip(-1).to(torch.uint8)

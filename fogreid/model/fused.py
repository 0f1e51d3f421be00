"""The deploy module: uint8 frames in, defogged frames and a unit embedding out.

All preprocessing lives here, so the ONNX/TensorRT graph, the calibrator, the runtime
and validation all run the same arithmetic: callers only decode and resize images
(`fogreid.data.image_io.load_for_model`). Training feeds its uint8 batches through the
same `Preprocess`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from fogreid.errors import FogreidError
from fogreid.model.sjdl import SJDLNet
from fogreid.pixels import frames_to_images, images_to_frames


class Preprocess(nn.Module):
    """uint8 (B, H, W, 3) BGR -> float32 (B, 3, H, W) RGB in [0, 1]."""

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return frames_to_images(frames)


class Postprocess(nn.Module):
    """float (B, 3, H, W) RGB in [0, 1] -> uint8 (B, H, W, 3) BGR, rounded."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images_to_frames(images)


def l2_normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    # Written out rather than F.normalize: that exports to an Expand node which ONNX
    # Runtime's quantisation pre-processing cannot handle.
    return x / torch.sqrt((x * x).sum(dim=1, keepdim=True)).clamp_min(eps)


class FusedDefogReID(nn.Module):
    """forward(frames uint8 (B, H, W, 3) BGR) -> (defogged uint8 (B, H, W, 3) BGR,
    embedding float32 (B, D), L2-normalised). H, W are the model's input size.

    A model trained without the defog head passes the frames through as `defogged`, so
    every artifact keeps the same two outputs."""

    def __init__(self, net: SJDLNet) -> None:
        super().__init__()
        self.net = net.eval()
        self.preprocess = Preprocess()
        self.postprocess = Postprocess()
        self.input_size = tuple(net.config.input_size)
        self.embedding_dim = net.embedding_dim
        self.eval()  # a deploy module: BN running statistics, never batch statistics

    @classmethod
    def from_checkpoint(cls, path: str | Path, map_location: str | torch.device = "cpu",
                        input_size: tuple[int, int] | None = None) -> "FusedDefogReID":
        from fogreid.model.checkpoint import load_model

        return cls(load_model(path, map_location=map_location, input_size=input_size))

    def check_input(self, frames: torch.Tensor) -> None:
        h, w = self.input_size
        if frames.dtype != torch.uint8 or frames.dim() != 4 or tuple(frames.shape[1:]) != (h, w, 3):
            raise FogreidError(
                f"FusedDefogReID expects uint8 frames of shape (B, {h}, {w}, 3) in BGR order, got "
                f"{frames.dtype} {tuple(frames.shape)}; resize crops with "
                f"fogreid.data.image_io.resize_for_model first")

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not (torch.jit.is_tracing() or torch.compiler.is_compiling()):
            self.check_input(frames)
        out = self.net(self.preprocess(frames))
        defogged = frames if out.defogged is None else self.postprocess(out.defogged)
        return defogged, l2_normalize(out.bn_feat)

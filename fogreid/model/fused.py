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

from fogreid._deprecated import renamed
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
        self.imgsz = tuple(net.config.imgsz)   # (height, width) of the frames it takes
        self.embedding_dim = net.embedding_dim
        self.eval()  # a deploy module: BN running statistics, never batch statistics

    @property
    def input_size(self) -> tuple[int, int]:
        """Deprecated: `imgsz`."""
        renamed("FusedDefogReID.input_size", "FusedDefogReID.imgsz")
        return self.imgsz

    @classmethod
    def from_checkpoint(cls, path: str | Path, map_location: str | torch.device = "cpu",
                        imgsz: tuple[int, int] | None = None, *,
                        input_size: tuple[int, int] | None = None) -> "FusedDefogReID":
        """The network of checkpoint `path`, wrapped; `imgsz` deploys it at another image size
        (`input_size`: its deprecated name)."""
        from fogreid.model.checkpoint import load_network

        if input_size is not None:
            renamed("FusedDefogReID.from_checkpoint(input_size=...)", "imgsz=...")
            imgsz = input_size if imgsz is None else imgsz
        return cls(load_network(path, map_location=map_location, imgsz=imgsz))

    def check_input(self, frames: torch.Tensor) -> None:
        h, w = self.imgsz
        if frames.dtype != torch.uint8 or frames.dim() != 4 or tuple(frames.shape[1:]) != (h, w, 3):
            raise FogreidError(
                f"FusedDefogReID expects uint8 frames of shape (B, {h}, {w}, 3) in BGR order, got "
                f"{frames.dtype} {tuple(frames.shape)}; resize crops with "
                f"fogreid.data.image_io.resize_for_model first")

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not (torch.jit.is_tracing() or torch.compiler.is_compiling()):
            self.check_input(frames)
        images = self.preprocess(frames)
        out = self.net(images)
        # Without a defog head the frames pass through, as the preprocessed images made uint8
        # again (exact: x / 255 * 255 rounds back to x): an output that were the input itself
        # would export as an Identity on the uint8 input, which TensorRT cannot build.
        defogged = self.postprocess(images if out.defogged is None else out.defogged)
        return defogged, l2_normalize(out.bn_feat)

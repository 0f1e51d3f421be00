"""The model configuration every network and checkpoint shares, and the named presets.

It sits below the network files (sjdl.py, rvsl.py), which both import it; only the builder
(build.py) knows every network.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, NamedTuple

from fogreid.errors import FogreidError

if TYPE_CHECKING:  # annotations only: reading or checking a config never imports torch
    import torch


@dataclass(frozen=True)
class ModelConfig:
    """Everything that decides the network's shape. Stored in every checkpoint."""

    arch: str = "sjdl"                  # sjdl | rvsl (fogreid/model/rvsl.py)
    backbone: str = "resnet50"          # resnet18 | resnet34 | resnet50
    ibn: bool = True                    # IBN-a blocks in layer1-3
    last_stride: int = 1                # 1 keeps layer4 at stride 16 (finer ReID features)
    deform_branch: bool = True          # off for TensorRT/DLA targets without DeformConv
    branch_channels: int = 512
    channel_attention: bool = True
    attention_reduction: int = 16
    defog: bool = True                  # False: the plain ReID baseline, no decoder
    defog_head: str = "scatter"         # scatter (invert the scattering model) | paper (as published)
    decoder_width: int = 64             # channels of the decoder at stride 4
    enhance_width: int = 20             # channels of the pyramid enhancement
    input_size: tuple[int, int] = (384, 384)  # (height, width) of the deployed graph
    pixel_mean: tuple[float, float, float] = (0.0, 0.0, 0.0)  # RGB, on [0, 1] pixels
    pixel_std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    num_ids: int = 0                    # classes of the synthetic (labelled) domain
    num_ids_real: int = 0               # classes of the real foggy domain (SJDL's 2nd classifier)

    def __post_init__(self) -> None:
        if self.arch not in ("sjdl", "rvsl"):
            raise FogreidError(f"model arch {self.arch!r}: choose sjdl or rvsl")
        if self.defog_head not in ("scatter", "paper"):
            raise FogreidError(f"model defog_head {self.defog_head!r}: choose scatter or paper")
        h, w = self.input_size
        if h < 32 or w < 32 or h % 32 or w % 32:
            raise FogreidError(f"input_size {self.input_size}: height and width must be "
                               f"multiples of 32 and at least 32 (the encoder's stride)")


class SJDLOutput(NamedTuple):
    global_feat: torch.Tensor         # (B, D) before the BNNeck: for the triplet loss
    bn_feat: torch.Tensor             # (B, D) after the BNNeck: classifiers and retrieval
    coarse: torch.Tensor | None       # (B, 3, H, W) in [0, 1], the decoder's image
    defogged: torch.Tensor | None     # (B, 3, H, W) in [0, 1], after the pyramid enhancement


# --------------------------------------------------------------------------- presets

PRESETS: dict[str, ModelConfig] = {
    # The published network: ResNet-50-IBN-a, deformable branch (2560-d), 384 px.
    "paper": ModelConfig(defog_head="paper"),
    # For Jetson/CPU: ResNet-18-IBN-a without the deformable branch (every TensorRT and DLA
    # target runs it), a decoder slim enough not to outweigh the encoder at full size, and
    # layer4 at stride 32: at 128 px, stride 16 would cost a third of the encoder for 4x4 more cells.
    "edge": ModelConfig(backbone="resnet18", last_stride=2, deform_branch=False, decoder_width=32,
                        enhance_width=8, input_size=(128, 128)),
}


def preset(name: str, **overrides: object) -> ModelConfig:
    if name not in PRESETS:
        raise FogreidError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)

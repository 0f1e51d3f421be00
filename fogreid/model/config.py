"""The model configuration every network and checkpoint shares, and the named presets.

It sits below the network files (sjdl.py, rvsl.py), which both import it; only the builder
(build.py) knows every network.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, ClassVar, NamedTuple

from fogreid.config import check_ranges, ranged, renamed_keys
from fogreid.errors import FogreidError

# The largest input side a model is built for: 4096 px holds a 4K frame's width; an input of
# 100000 px would ask for terabytes before any check could run.
MAX_IMGSZ = 4096
# Classes of a classifier head: VeRi-Wild, the largest public vehicle ReID set, has about 40k.
MAX_IDS = 200_000

if TYPE_CHECKING:  # annotations only: reading or checking a config never imports torch
    import torch


@dataclass(frozen=True)
class ModelConfig:
    """Everything that decides the network's shape. Stored in every checkpoint."""

    arch: str = "sjdl"                  # sjdl | rvsl (fogreid/model/rvsl.py)
    backbone: str = "resnet50"          # resnet18 | resnet34 | resnet50
    ibn: bool = True                    # IBN-a blocks in layer1-3
    last_stride: int = ranged(1, 1, 2, integer=True)   # 1 keeps layer4 at stride 16 (finer ReID features)
    deform_branch: bool = True          # off for TensorRT/DLA targets without DeformConv
    branch_channels: int = ranged(512, 1, 8192, integer=True)
    channel_attention: bool = True
    attention_reduction: int = ranged(16, 1, 1024, integer=True)
    defog: bool = True                  # False: the plain ReID baseline, no decoder
    # detail (invert the scattering model, with a learned gain on fine detail) | scatter (the plain
    # inversion: checkpoints before 2026-12-04) | paper (as published); fogreid/model/sjdl.py
    defog_head: str = "detail"
    decoder_width: int = ranged(64, 1, 1024, integer=True)   # channels of the decoder at stride 4
    enhance_width: int = ranged(20, 1, 1024, integer=True)   # channels of the pyramid enhancement
    # A second defog head (decoder + enhancement) that only the whole-frame graph runs, trained on
    # whole frames by `fogreid train --mode frames` (fogreid/train/frames.py); crops keep the first.
    frame_head: bool = False
    # The whole-frame head also reads the encoder's layer3 (fogreid/model/sjdl.py, ScatterDecoder):
    # what `--mode frames` makes from 2026-12-05 on; heads made before read layer1 and the stem only.
    frame_context: bool = False
    # the image size, (height, width), of the crops the network takes and the deployed graph's input
    imgsz: tuple[int, int] = ranged((384, 384), 32, MAX_IMGSZ, integer=True)
    pixel_mean: tuple[float, float, float] = ranged((0.0, 0.0, 0.0), -1, 1)  # RGB, on [0, 1] pixels
    pixel_std: tuple[float, float, float] = ranged((1.0, 1.0, 1.0), 0, 10, low_open=True)
    num_ids: int = ranged(0, 0, MAX_IDS, integer=True)        # classes of the synthetic (labelled) domain
    # classes of the real foggy domain (SJDL's 2nd classifier)
    num_ids_real: int = ranged(0, 0, MAX_IDS, integer=True)

    # Old field names still read (with a DeprecationWarning) from YAML, --set, preset() and
    # older checkpoints, for one release: fogreid/config.py, renamed_keys.
    RENAMED_FIELDS: ClassVar[dict[str, str]] = {"input_size": "imgsz"}

    def __post_init__(self) -> None:
        if self.arch not in ("sjdl", "rvsl"):
            raise FogreidError(f"model arch {self.arch!r}: choose sjdl or rvsl")
        if self.defog_head not in ("detail", "scatter", "paper"):
            raise FogreidError(f"model defog_head {self.defog_head!r}: choose detail, scatter or paper")
        if self.frame_head and not (self.defog and self.defog_head in ("detail", "scatter")):
            raise FogreidError("model frame_head: only a model with the detail or scatter defog head has one")
        if self.frame_context and not self.frame_head:
            raise FogreidError("model frame_context: only a model with a frame head (frame_head: true) has one")
        check_ranges(self, "model")
        h, w = self.imgsz
        if h < 32 or w < 32 or h % 32 or w % 32:
            raise FogreidError(f"imgsz {self.imgsz}: height and width must be "
                               f"multiples of 32 and at least 32 (the encoder's stride)")


class SJDLOutput(NamedTuple):
    global_feat: torch.Tensor         # (B, D) before the BNNeck: for the triplet loss
    bn_feat: torch.Tensor             # (B, D) after the BNNeck: classifiers and retrieval
    coarse: torch.Tensor | None       # (B, 3, H, W) in [0, 1], the decoder's image
    defogged: torch.Tensor | None     # (B, 3, H, W) in [0, 1], after the pyramid enhancement


# --------------------------------------------------------------------------- presets

PRESETS: dict[str, ModelConfig] = {
    # The published network: ResNet-50-IBN-a, deformable branch (2560-d), 384 px, the
    # published decoder, layer4 at stride 2 (upstream passes last_stride but ignores it:
    # 12x12 cells at 384 px).
    "paper": ModelConfig(defog_head="paper", last_stride=2),
    # The common ReID variant with layer4 at stride 1 (24x24 at 384 px, ~4x the layer4 +
    # branch cost): not what was published.
    "paper-s1": ModelConfig(defog_head="paper", last_stride=1),
    # For Jetson/CPU: ResNet-18-IBN-a without the deformable branch (every TensorRT and DLA
    # target runs it), a decoder slim enough not to outweigh the encoder at full size, and
    # layer4 at stride 32: at 128 px, stride 16 would cost a third of the encoder for 4x4 more cells.
    "edge": ModelConfig(backbone="resnet18", last_stride=2, deform_branch=False, decoder_width=32,
                        enhance_width=8, imgsz=(128, 128)),
}


def preset(name: str, **overrides: object) -> ModelConfig:
    if name not in PRESETS:
        raise FogreidError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return replace(PRESETS[name], **renamed_keys(ModelConfig, overrides, f"preset({name!r})"))

"""SJDL: joint defogging and vehicle ReID (Chen et al., AAAI 2022).

One encoder (ResNet-IBN) feeds two heads. The ReID head turns layer4 into an embedding:
an optional deformable-conv branch, channel attention, global average pooling, a BNNeck
and bias-free classifiers (one per training domain). The defog head reads the early
features (stem and layer1), which it shares with ReID, decodes a clear image and refines
it with a pyramid enhancement. Training the two together makes the shared early features
fog-aware; at test time the defogged image is a product of its own.

Reading order: heads, the network. Configuration and presets: fogreid/model/config.py;
the builder that knows every network: fogreid/model/build.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fogreid.model.config import ModelConfig, SJDLOutput
from fogreid.model.resnet_ibn import ResNetIBN


# --------------------------------------------------------------------------- ReID head

class ChannelAttention(nn.Module):
    """Squeeze by average and max pooling, a shared bottleneck MLP, sigmoid gate."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(channels // reduction, 8)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1, bias=False), nn.ReLU(inplace=True),
                                 nn.Conv2d(hidden, channels, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.mlp(x.mean(dim=(2, 3), keepdim=True))
        peak = self.mlp(x.amax(dim=(2, 3), keepdim=True))
        return x * torch.sigmoid(avg + peak)


class DeformBranch(nn.Module):
    """3x3 conv then a 3x3 deformable conv whose offsets are predicted from its input."""

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        from torchvision.ops import DeformConv2d

        self.reduce = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
                                    nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
        self.offset = nn.Conv2d(channels, 2 * 3 * 3, 3, padding=1)
        # Zero offsets at the start: the deformable conv begins as a plain 3x3 conv.
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)
        self.deform = DeformConv2d(channels, channels, 3, padding=1, bias=False)
        self.post = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.reduce(x)
        return self.post(self.deform(x, self.offset(x)))


class ReIDHead(nn.Module):
    """layer4 -> (branch, attention) -> GAP -> BNNeck. Returns (global_feat, bn_feat):
    the triplet loss uses the feature before the BNNeck, classifiers and retrieval after."""

    def __init__(self, in_channels: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.branch = DeformBranch(in_channels, cfg.branch_channels) if cfg.deform_branch else None
        self.feat_dim = in_channels + (cfg.branch_channels if cfg.deform_branch else 0)
        self.attention = (ChannelAttention(self.feat_dim, cfg.attention_reduction)
                          if cfg.channel_attention else nn.Identity())
        self.bnneck = nn.BatchNorm1d(self.feat_dim)
        # BNNeck: the bias stays zero so the normalised feature is centred for cosine retrieval.
        self.bnneck.bias.requires_grad_(False)

    def forward(self, l4: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = l4 if self.branch is None else torch.cat([l4, self.branch(l4)], dim=1)
        global_feat = self.attention(x).mean(dim=(2, 3))
        return global_feat, self.bnneck(global_feat)


# --------------------------------------------------------------------------- defog head

class ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1), nn.InstanceNorm2d(channels, affine=True),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1), nn.InstanceNorm2d(channels, affine=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


def _upsample(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(in_channels, out_channels, 3, 2, 1, output_padding=1),
                         nn.InstanceNorm2d(out_channels, affine=True), nn.ReLU(inplace=True))


class DefogDecoder(nn.Module):
    """Stem (64 ch) and layer1 features at stride 4 -> a clear image at full size."""

    def __init__(self, stem_channels: int, layer1_channels: int, width: int) -> None:
        super().__init__()
        self.residual = ResidualBlock(layer1_channels)
        self.reduce = nn.Sequential(nn.Conv2d(layer1_channels, width, 3, padding=1), nn.ReLU(inplace=True))
        self.up1 = _upsample(width + stem_channels, width)
        self.up2 = _upsample(width, max(width // 2, 8))
        self.to_rgb = nn.Conv2d(max(width // 2, 8), 3, 7, padding=3)

    def forward(self, stem: torch.Tensor, l1: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.reduce(self.residual(l1)), stem], dim=1)
        return torch.tanh(self.to_rgb(self.up2(self.up1(x))))


class PyramidEnhancement(nn.Module):
    """Refines the decoded image from (foggy input, decoded) with context pooled at 4 scales."""

    SCALES = (32, 16, 8, 4)

    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(6, width, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True))
        self.pool_convs = nn.ModuleList(nn.Conv2d(width, 1, 1) for _ in self.SCALES)
        self.fuse = nn.Conv2d(width + len(self.SCALES), 3, 3, padding=1)

    def forward(self, image: torch.Tensor, decoded: torch.Tensor) -> torch.Tensor:
        x = self.body(torch.cat([image, decoded], dim=1))
        size = x.shape[-2:]
        pooled = [F.interpolate(conv(F.avg_pool2d(x, s)), size=size, mode="nearest")
                  for s, conv in zip(self.SCALES, self.pool_convs)]
        return torch.tanh(self.fuse(torch.cat([*pooled, x], dim=1)))


# --------------------------------------------------------------------------- the network

class SJDLNet(nn.Module):
    """Input: RGB float images in [0, 1], (B, 3, H, W). Mean/std normalisation for the
    encoder happens here; the defog head works on [0, 1] images."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.backbone = ResNetIBN(cfg.backbone, cfg.ibn, cfg.last_stride)
        self.reid = ReIDHead(self.backbone.out_channels, cfg)
        self.embedding_dim = self.reid.feat_dim
        if cfg.defog:
            self.decoder = DefogDecoder(self.backbone.stem_channels, self.backbone.layer1_channels,
                                        cfg.decoder_width)
            self.enhance = PyramidEnhancement(cfg.enhance_width)
        else:
            self.decoder = self.enhance = None
        self.classifier = nn.Linear(self.embedding_dim, cfg.num_ids, bias=False) if cfg.num_ids else None
        self.classifier_real = (nn.Linear(self.embedding_dim, cfg.num_ids_real, bias=False)
                                if cfg.num_ids_real else None)
        for head in (self.classifier, self.classifier_real):
            if head is not None:
                nn.init.normal_(head.weight, std=0.001)
        self.register_buffer("pixel_mean", torch.tensor(cfg.pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(cfg.pixel_std).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> SJDLOutput:
        stem, l1, l4 = self.backbone((image - self.pixel_mean) / self.pixel_std)
        global_feat, bn_feat = self.reid(l4)
        if self.decoder is None:
            return SJDLOutput(global_feat, bn_feat, None, None)
        coarse = self.decoder(stem, l1)
        refined = self.enhance(image, (coarse + 1) / 2)
        # tanh outputs live in [-1, 1]; images in [0, 1].
        return SJDLOutput(global_feat, bn_feat, (coarse + 1) / 2, (refined + 1) / 2)

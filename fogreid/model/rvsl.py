"""RVSL: ReID through cycle-consistent domain transformation (ECCV 2022).

Two light encoders (ResNet-IBN stem + layer1), one for clear and one for hazy images, feed
one shared ReID trunk (layer2-4, BNNeck). Two U-Net decoders translate between the domains
(hazy -> clear, clear -> hazy), and PatchGAN discriminators (least squares) judge the
translations. Training (fogreid/train/rvsl.py) learns the real foggy domain without its
labels or clear images through the translation cycles and haze priors.

Deployed path, through the same FusedDefogReID contract as SJDL: hazy encoder -> trunk for
the embedding, hazy -> clear decoder for the defogged image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fogreid.model.config import ModelConfig, SJDLOutput
from fogreid.model.resnet_ibn import ResNetIBN


class LightEncoder(nn.Module):
    """stem + layer1 of a ResNet-IBN: (B, 3, H, W) -> stem (64, H/4), layer1 (C1, H/4)."""

    def __init__(self, backbone: ResNetIBN) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu, self.maxpool = backbone.conv1, backbone.bn1, backbone.relu, backbone.maxpool
        self.layer1 = backbone.layer1

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        stem = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return stem, self.layer1(stem)


class Trunk(nn.Module):
    """layer2-4, global average pooling and a BNNeck (bias frozen)."""

    def __init__(self, backbone: ResNetIBN) -> None:
        super().__init__()
        self.layer2, self.layer3, self.layer4 = backbone.layer2, backbone.layer3, backbone.layer4
        self.bnneck = nn.BatchNorm1d(backbone.out_channels)
        self.bnneck.bias.requires_grad_(False)

    def forward(self, l1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = self.layer4(self.layer3(self.layer2(l1))).mean(dim=(2, 3))
        return feat, self.bnneck(feat)


def _block(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.InstanceNorm2d(out_ch, affine=True),
                         nn.ReLU(inplace=True))


class UNetDecoder(nn.Module):
    """A translator image -> image: the encoder's stride-4 features, upsampled with skip
    connections from the stem features and the input image itself."""

    def __init__(self, stem_channels: int, layer1_channels: int, width: int) -> None:
        super().__init__()
        self.bottom = _block(layer1_channels + stem_channels, width * 2)
        self.up1 = _block(width * 2, width)       # stride 4 -> 2
        self.up2 = _block(width + 3, width)       # stride 2 -> 1, with the image
        self.out = nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, image: torch.Tensor, stem: torch.Tensor, l1: torch.Tensor) -> torch.Tensor:
        x = self.bottom(torch.cat([l1, stem], dim=1))
        x = self.up1(F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False))
        x = F.interpolate(x, size=image.shape[-2:], mode="bilinear", align_corners=False)
        x = self.up2(torch.cat([x, image], dim=1))
        return (torch.tanh(self.out(x)) + 1) / 2  # [0, 1]


class PatchDiscriminator(nn.Module):
    """PatchGAN: a grid of real/fake scores over overlapping patches (no sigmoid: LSGAN)."""

    def __init__(self, width: int = 32, layers: int = 3) -> None:
        super().__init__()
        blocks, ch = [nn.Conv2d(3, width, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)], width
        for _ in range(layers - 1):
            blocks += [nn.Conv2d(ch, ch * 2, 4, 2, 1), nn.InstanceNorm2d(ch * 2), nn.LeakyReLU(0.2, inplace=True)]
            ch *= 2
        blocks.append(nn.Conv2d(ch, 1, 3, 1, 1))
        self.net = nn.Sequential(*blocks)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image * 2 - 1)


class RVSLNet(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        hazy = ResNetIBN(cfg.backbone, cfg.ibn, cfg.last_stride)
        clear = ResNetIBN(cfg.backbone, cfg.ibn, cfg.last_stride)
        self.enc_hazy, self.enc_clear = LightEncoder(hazy), LightEncoder(clear)
        self.trunk = Trunk(hazy)  # layer2-4 of the hazy backbone, shared by both domains
        self.embedding_dim = hazy.out_channels
        self.hazy_to_clear = UNetDecoder(hazy.stem_channels, hazy.layer1_channels, cfg.decoder_width)
        self.clear_to_hazy = UNetDecoder(clear.stem_channels, clear.layer1_channels, cfg.decoder_width)
        self.classifier = nn.Linear(self.embedding_dim, cfg.num_ids, bias=False) if cfg.num_ids else None
        if self.classifier is not None:
            nn.init.normal_(self.classifier.weight, std=0.001)
        self.register_buffer("pixel_mean", torch.tensor(cfg.pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(cfg.pixel_std).view(1, 3, 1, 1), persistent=False)
        self.init_clear_like_hazy()

    def init_clear_like_hazy(self) -> None:
        """Both encoders start alike (upstream initialises both from ImageNet IBN-a): the
        clear encoder takes the hazy encoder's weights, here and after ImageNet loading."""
        self.enc_clear.load_state_dict(self.enc_hazy.state_dict())

    def imagenet_view(self) -> ResNetIBN:
        """A ResNetIBN sharing the hazy encoder's and trunk's modules, for ImageNet
        initialisation (then `init_clear_like_hazy`)."""
        view = ResNetIBN(self.config.backbone, self.config.ibn, self.config.last_stride)
        for name in ("conv1", "bn1", "layer1"):
            setattr(view, name, getattr(self.enc_hazy, name))
        for name in ("layer2", "layer3", "layer4"):
            setattr(view, name, getattr(self.trunk, name))
        return view

    def init_from_sjdl(self, weights: dict[str, torch.Tensor]) -> None:
        """Start from a trained SJDL network of the same backbone: its encoder (stem to layer4)
        becomes the hazy encoder and the trunk, the clear encoder a copy, its BNNeck and (with the
        same identities) its classifier this one's. The translators start fresh: SJDL's defog
        head and channel attention have no counterpart here."""
        backbone = {k.removeprefix("backbone."): v for k, v in weights.items() if k.startswith("backbone.")}
        bnneck = {k.removeprefix("reid.bnneck."): v for k, v in weights.items() if k.startswith("reid.bnneck.")}
        self.imagenet_view().load_state_dict(backbone)
        self.trunk.bnneck.load_state_dict(bnneck)
        classifier = weights.get("classifier.weight")
        if self.classifier is not None and classifier is not None and classifier.shape == self.classifier.weight.shape:
            self.classifier.weight.data.copy_(classifier)
        self.init_clear_like_hazy()

    def encode(self, image: torch.Tensor, domain: str):
        """(stem, layer1) of `image` with the encoder of `domain` (hazy | clear)."""
        encoder = self.enc_hazy if domain == "hazy" else self.enc_clear
        return encoder((image - self.pixel_mean) / self.pixel_std)

    def translate(self, image: torch.Tensor, domain: str, features=None) -> torch.Tensor:
        """hazy -> clear (domain="hazy") or clear -> hazy (domain="clear")."""
        stem, l1 = features if features is not None else self.encode(image, domain)
        decoder = self.hazy_to_clear if domain == "hazy" else self.clear_to_hazy
        return decoder(image, stem, l1)

    def forward(self, image: torch.Tensor) -> SJDLOutput:
        """The deployed path: a foggy image in, its embedding and defogged image out."""
        stem, l1 = self.encode(image, "hazy")
        global_feat, bn_feat = self.trunk(l1)
        defogged = self.hazy_to_clear(image, stem, l1)
        return SJDLOutput(global_feat, bn_feat, defogged, defogged)

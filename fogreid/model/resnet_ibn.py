"""ResNet with IBN-a blocks (Pan et al., "Two at Once", ECCV 2018).

IBN-a replaces the first normalisation of every block in layer1-3 with instance norm on
half of the channels and batch norm on the other half: instance norm removes per-image
contrast and colour casts (which is what fog changes), batch norm keeps the content.
Parameter names follow torchvision's ResNet (and IBN-Net's releases: `bn1.IN`, `bn1.BN`),
so ImageNet weights of either load by name; see `load_imagenet_weights`.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fogreid.errors import FogreidError


class IBN(nn.Module):
    """Instance norm on the first `ratio` of the channels, batch norm on the rest."""

    def __init__(self, channels: int, ratio: float = 0.5) -> None:
        super().__init__()
        self.half = int(channels * ratio)
        self.IN = nn.InstanceNorm2d(self.half, affine=True)
        self.BN = nn.BatchNorm2d(channels - self.half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return self._without_concat(x)
        first, rest = torch.split(x, [self.half, x.shape[1] - self.half], dim=1)
        return torch.cat([self.IN(first), self.BN(rest)], dim=1)

    def _without_concat(self, x: torch.Tensor) -> torch.Tensor:
        """The same output without a Concat, so that the conv after it can be quantised (OpenVINO's
        CPU plugin reads a Concat -> Q -> DQ -> Conv differently from the Q/DQ arithmetic on AVX-512
        without AMX: docs/export.md, Which layers are quantised). Over all channels: u is x with batch
        norm's scale on its channels (1 on the others); instance norm of u, its weight 0 on the
        batch-norm channels (which leaves their bias: batch norm's shift), plus u on those channels.
        x has one reader: ONNX Runtime runs the conv before as one int8 kernel only where its output
        has one. Not zeroing the batch-norm channels before the instance norm instead: OpenVINO
        (2026.4.1) moves a per-channel scale after a DequantizeLinear through an instance norm as if
        the norm ignored it, which a scale of 0 does not allow (tests/test_engines.py)."""
        channels, half = x.shape[1], self.half
        on_bn = (torch.arange(channels, device=x.device) >= half).to(x.dtype).view(1, -1, 1, 1)
        bn_scale = self.BN.weight / torch.sqrt(self.BN.running_var + self.BN.eps)
        bn_shift = self.BN.bias - self.BN.running_mean * bn_scale
        u = x * torch.cat([x.new_ones(half), bn_scale]).view(1, -1, 1, 1)
        normalised = F.instance_norm(u, weight=torch.cat([self.IN.weight, x.new_zeros(channels - half)]),
                                     bias=torch.cat([self.IN.bias, bn_shift]), eps=self.IN.eps)
        return normalised + u * on_bn


def _norm(channels: int, ibn: bool) -> nn.Module:
    return IBN(channels) if ibn else nn.BatchNorm2d(channels)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, ibn: bool = False,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = _norm(planes, ibn)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, ibn: bool = False,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = _norm(planes, ibn)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


# name -> (block, blocks per stage)
ARCHS: dict[str, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}


class ResNetIBN(nn.Module):
    """The encoder. `forward` returns the four feature maps SJDL reads: the stem before its
    max-pool (64 ch, stride 2), the stem (stride 4), layer1 (stride 4) and layer4 (stride
    16 or 32). `forward_early` stops after layer1: all the crops' defog head reads."""

    def __init__(self, arch: str = "resnet50", ibn: bool = True, last_stride: int = 1) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise FogreidError(f"unknown backbone {arch!r}; choose one of {', '.join(ARCHS)}")
        block, layers = ARCHS[arch]
        self.arch = arch
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        # IBN-a: instance norm in layer1-3 only; layer4 keeps discriminative batch statistics.
        self.layer1 = self._make_layer(block, 64, layers[0], 1, ibn)
        self.layer2 = self._make_layer(block, 128, layers[1], 2, ibn)
        self.layer3 = self._make_layer(block, 256, layers[2], 2, ibn)
        self.layer4 = self._make_layer(block, 512, layers[3], last_stride, False)
        self.stem_channels = 64
        self.layer1_channels = 64 * block.expansion
        self.layer3_channels = 256 * block.expansion
        self.out_channels = 512 * block.expansion
        self._init_weights()

    def _make_layer(self, block: type[nn.Module], planes: int, blocks: int, stride: int,
                    ibn: bool) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, ibn, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, 1, ibn) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) and m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # Zero the last norm of each residual branch so every block starts as an identity,
        # which makes the randomly initialised network train stably (Goyal et al. 2017).
        for m in self.modules():
            last = getattr(m, "bn3", None) if isinstance(m, Bottleneck) else getattr(m, "bn2", None)
            if isinstance(m, (BasicBlock, Bottleneck)) and last is not None:
                nn.init.zeros_(last.weight)

    def forward_early(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(stem before max-pool at stride 2, stem at stride 4, layer1 at stride 4)."""
        fine = self.relu(self.bn1(self.conv1(x)))
        stem = self.maxpool(fine)
        return fine, stem, self.layer1(stem)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        fine, stem, l1 = self.forward_early(x)
        return fine, stem, l1, self.layer4(self.layer3(self.layer2(l1)))


TORCHVISION_WEIGHTS = {"resnet18": "ResNet18_Weights", "resnet34": "ResNet34_Weights",
                       "resnet50": "ResNet50_Weights"}


def load_imagenet_weights(backbone: ResNetIBN, source: str | Path) -> None:
    """Initialise `backbone` from ImageNet weights.

    `source` is a local state-dict file (torchvision's `resnetXX-*.pth`, or IBN-Net's
    `resnetXX_ibn_a-*.pth`), or "imagenet" to fetch torchvision's weights, which needs the
    network. For plain torchvision weights each IBN layer takes the batch-norm parameters of
    its channels: instance-norm half gets the affine part, batch-norm half the rest.
    Raises FogreidError rather than ever leaving the backbone silently random.
    """
    if str(source) == "imagenet":
        state = _download_torchvision_weights(backbone.arch)
    else:
        path = Path(source)
        if not path.is_file():
            raise FogreidError(
                f"ImageNet weights file not found: {path}. Give the path of torchvision's "
                f"{backbone.arch} weights (e.g. {backbone.arch}-*.pth) or of IBN-Net's "
                f"{backbone.arch}_ibn_a-*.pth, or train from scratch without --pretrained."
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # corrupt, truncated or pickled-code file
            raise FogreidError(f"{path}: not a readable PyTorch state dict ({exc})") from None
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
    own = backbone.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    unused = []
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key in own:
            mapped[key] = value
            continue
        # torchvision "layerX.Y.bn1.weight" -> our "layerX.Y.bn1.IN.weight" / ".BN.weight"
        prefix, _, leaf = key.rpartition(".")
        in_key, bn_key = f"{prefix}.IN.{leaf}", f"{prefix}.BN.{leaf}"
        if bn_key not in own:
            if not key.startswith("fc."):  # the ImageNet classifier is not part of the encoder
                unused.append(key)
            continue
        if leaf in ("weight", "bias"):
            half = value.shape[0] - own[bn_key].shape[0]
            mapped[in_key], mapped[bn_key] = value[:half], value[half:]
        elif leaf == "num_batches_tracked":
            mapped[bn_key] = value
        else:  # running_mean / running_var: instance norm keeps no running statistics
            mapped[bn_key] = value[value.shape[0] - own[bn_key].shape[0]:]
    missing = [k for k in own if k not in mapped]
    wrong = [k for k, v in mapped.items() if v.shape != own[k].shape]
    if missing or wrong or unused:
        raise FogreidError(
            f"ImageNet weights from {source} do not fit backbone {backbone.arch}: "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(wrong)} of another shape "
            f"(e.g. {wrong[:3]}), {len(unused)} unused (e.g. {unused[:3]}). "
            f"Use weights of the same architecture."
        )
    backbone.load_state_dict(mapped)


def _download_torchvision_weights(arch: str) -> dict[str, torch.Tensor]:
    import torchvision.models as tvm

    weights = getattr(tvm, TORCHVISION_WEIGHTS[arch]).IMAGENET1K_V1
    try:
        return weights.get_state_dict(progress=True)
    except Exception as exc:
        raise FogreidError(
            f"could not download torchvision's ImageNet weights for {arch} ({exc}). "
            f"Download {weights.url} on a machine with network access and pass the file "
            f"with --pretrained PATH, or train from scratch without --pretrained."
        ) from None

"""The one place that knows every network: a ModelConfig in, the network out."""

from __future__ import annotations

from torch import nn

from fogreid._deprecated import renamed
from fogreid.model.config import ModelConfig
from fogreid.model.resnet_ibn import load_imagenet_weights
from fogreid.model.rvsl import RVSLNet
from fogreid.model.sjdl import SJDLNet


def build_model(cfg: ModelConfig, pretrained: str | None = None) -> nn.Module:
    """The network for `cfg` (SJDL, or RVSL when cfg.arch == "rvsl"); `pretrained`
    ("imagenet" or a weights file) initialises the encoder from ImageNet, otherwise it starts
    from a (deliberate) random initialisation."""
    if cfg.arch == "rvsl":
        net = RVSLNet(cfg)
        if pretrained:
            load_imagenet_weights(net.imagenet_view(), pretrained)
            net.init_clear_like_hazy()
        return net
    net = SJDLNet(cfg)
    if pretrained:
        load_imagenet_weights(net.backbone, pretrained)
    return net


def build_sjdl(cfg: ModelConfig, pretrained: str | None = None) -> nn.Module:
    """Deprecated (it builds RVSL too): `build_model`."""
    renamed("fogreid.model.build_sjdl", "fogreid.model.build_model")
    return build_model(cfg, pretrained)

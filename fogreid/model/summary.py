"""Parameters and FLOPs of each branch of the network, for `fogreid info`."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fogreid.model.sjdl import SJDLNet

# Branch name -> the top-level submodules it consists of, per architecture.
BRANCHES = {
    "sjdl": {"encoder (ResNet-IBN)": ("backbone",), "ReID head": ("reid",), "defog decoder": ("decoder",),
             "pyramid enhancement": ("enhance",), "classifiers (training only)": ("classifier", "classifier_real")},
    "rvsl": {"hazy encoder (stem+layer1)": ("enc_hazy",), "ReID trunk (layer2-4)": ("trunk",),
             "hazy->clear translator": ("hazy_to_clear",),
             "clear side (training only)": ("enc_clear", "clear_to_hazy", "classifier")},
}


@dataclass
class BranchCost:
    name: str
    params: int
    gflops: float  # per image, counting a multiply-add as 2 FLOPs


def _deform_conv_flops(input_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
    # Same multiply-adds as a dense conv with this weight, plus 4-tap bilinear sampling of
    # every input value read (about 4 multiply-adds each).
    batch, _, out_h, out_w = out_shape
    c_out, c_in_per_group, k_h, k_w = weight_shape
    macs = batch * out_h * out_w * c_out * c_in_per_group * k_h * k_w
    sampling = batch * out_h * out_w * input_shape[1] * k_h * k_w * 4
    return 2 * (macs + sampling)


def summarize(net: SJDLNet, imgsz: tuple[int, int] | None = None) -> list[BranchCost]:
    """Parameters and GFLOPs (of the deployed forward) of each branch."""
    from torch.utils.flop_counter import FlopCounterMode

    h, w = imgsz or net.config.imgsz
    mapping = {}
    if net.config.deform_branch:
        mapping[torch.ops.torchvision.deform_conv2d.default] = _deform_conv_flops
    was_training = net.training
    net.eval()
    with torch.no_grad(), FlopCounterMode(display=False, depth=2, custom_mapping=mapping) as counter:
        net(torch.rand(1, 3, h, w))
    net.train(was_training)
    counts = counter.get_flop_counts()
    rows, prefix = [], type(net).__name__
    for name, parts in BRANCHES[net.config.arch].items():
        modules = [getattr(net, p) for p in parts if getattr(net, p, None) is not None]
        if not modules:
            continue
        params = sum(p.numel() for m in modules for p in m.parameters())
        flops = sum(sum(counts.get(f"{prefix}.{p}", {}).values()) for p in parts)
        rows.append(BranchCost(name, params, flops / 1e9))
    return rows


def format_summary(rows: list[BranchCost], title: str) -> str:
    deploy = [r for r in rows if "training only" not in r.name]
    lines = [title, f"{'branch':<30}{'params (M)':>12}{'GFLOPs/img':>12}"]
    lines += [f"{r.name:<30}{r.params / 1e6:>12.2f}{r.gflops:>12.3f}" for r in rows]
    lines.append(f"{'deployed total':<30}{sum(r.params for r in deploy) / 1e6:>12.2f}"
                 f"{sum(r.gflops for r in deploy):>12.3f}")
    return "\n".join(lines)

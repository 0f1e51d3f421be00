"""The whole-frame defog graph: what an operator looks at on a foggy camera.

The fused graph (fogreid/model/fused.py) takes fixed-size vehicle crops and returns their
defogged crops and embeddings. The defog head is fully convolutional, so the same weights
also defog a whole camera frame of any size: this graph runs only the encoder's stem and
layer1 (and layer2-3 for a whole-frame head that reads layer3) and the defog head
(`SJDLNet.defog_maps`), with the same preprocessing contract:

    frames    uint8 (B, H, W, 3) BGR, H and W dynamic (any size from MIN_SIDE x downscale)
    defogged  uint8 (B, H, W, 3) BGR

It is written beside the fused graph as `model_defog_frame.onnx`; the metadata key
`graph` tells them apart ("fused-crop" vs "defog-frame").

The network runs on the frame shrunk by an integer `downscale` (a box filter, so nothing
aliases) and gives the scattering model's transmission t and airlight A there, and the
enhancement's refinement; they are brought back to the frame's resolution and applied to the
full-resolution frame: J = (I - A) / t + A + refinement. A is smooth and upsampled bilinearly;
t is upsampled by the fast guided filter (He & Sun 2015) with the frame's grey image as the
guide, as the dark channel prior refines its transmission (He et al. 2009): t follows the
frame's own edges instead of the small grid's, so vehicles keep sharp outlines without halos.
It is then held at FRAME_T_MIN = 0.1 or above, He et al.'s lower bound: a frame's sky and far
road reach transmissions a vehicle crop does not; and at FRAME_T_MEDIAN_SHARE of the frame's
median transmission or above, so that a sky in light fog is not inverted as dense fog. The
colour of I - A (less its grey level) is divided by max(t, FRAME_CHROMA_T_MIN) instead of t
(`sjdl.invert`), so an airlight a little off in colour turns whatever is far much less into the
opposite colour.
The network's cost falls by downscale^2. Shrinking also shows the head vehicles near the scale
of the crops it was trained on: its 15-pixel dark-channel patch and its receptive field were
learnt on `imgsz` crops, and on a full 640x480 frame a 64 px model darkens the sky and bands
dense fog (measured in docs/benchmarks.md, "Whole-frame defog"); `fogreid train --mode frames`
(fogreid/train/frames.py) trains a head of its own for this graph on whole frames, through
`defog_frame_images`, this graph's own computation, at the default downscale. The default
`downscale` is the integer nearest 240 / the model's input height (4 for 64 px models, 2 for
128 px, 1 from 256 px); it is recorded in the graph's metadata (`downscale`).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import onnx
import torch
import torch.nn.functional as F
from torch import nn

from fogreid.errors import FogreidError
from fogreid.model.fused import Postprocess, Preprocess
from fogreid.model.sjdl import SCATTER_HEADS, ScatterDecoder, SJDLNet, box_mean

FILE = "model_defog_frame.onnx"
GRAPH_KIND = "defog-frame"
MIN_SIDE = 32
GUIDE_RADIUS = 4      # pixels of the small image: (2r+1)^2 windows for the guided filter's local fit
GUIDE_EPS = 1e-3      # its regulariser, as fogreid/data/dehaze.py: where the guide is flat, t is its local mean
# The transmission's lower bound on whole frames, He et al.'s t0 = 0.1 (2009: "the directly
# recovered scene radiance J is prone to noise when t is close to zero"), above the head's own
# ScatterDecoder.T_MIN = 0.05, which a vehicle crop rarely reaches but a frame's sky and far road
# do. On the generated 640x480 frames (docs/benchmarks.md, Whole-frame defog) it raised the demo
# model's synthetic frames from 15.92 dB / 0.878 to 16.91 / 0.894 and its real-like ones from
# 15.95 / 0.812 to 16.25 / 0.819 (K=4), with less banding in the densest fog; 0.15 scored higher
# still but left the densest camera visibly foggy.
FRAME_T_MIN = 0.1
# The colour of what is inverted is multiplied by at most 1 / FRAME_CHROMA_T_MIN (`sjdl.invert`), its
# grey level by 1 / t as before. The airlight is estimated from the haziest pixels, the sky seen
# through fog, and keeps some of the sky's colour; dividing by a far building's t ~0.1 turns that
# into a cast of the opposite colour (docs/benchmarks.md, Whole-frame defog).
FRAME_CHROMA_T_MIN = 0.35
# No pixel's transmission is held below this share of the frame's median transmission. A flat pale
# sky is what dense fog looks like from its own pixels, so the head gives it a transmission at the
# floor in any fog; in light fog the sky keeps some of its own colour, a little darker than the
# airlight, and 1 / 0.1 turned that into a sky far darker than the clear one. The frame's median
# tells light fog from dense: in light fog most of the scene is clear (docs/benchmarks.md,
# Whole-frame defog, "The frame's median transmission").
FRAME_T_MEDIAN_SHARE = 0.8
MEDIAN_BINS = 64    # the median's resolution, 1/64 of the transmission's range


def frame_graph_rules() -> dict:
    """This graph's constants, which no checkpoint carries: what `fogreid demo` keys the steps that
    train through the graph or export it on, so that a change of them redoes those steps."""
    return {"t_min": FRAME_T_MIN, "chroma_t_min": FRAME_CHROMA_T_MIN, "t_median_share": FRAME_T_MEDIAN_SHARE}


def default_downscale(imgsz: tuple[int, int]) -> int:
    return max(1, round(240 / imgsz[0]))


def grey(image: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB -> (B, 1, H, W) luma (ITU-R BT.601, as OpenCV's grey)."""
    return 0.299 * image[:, 0:1] + 0.587 * image[:, 1:2] + 0.114 * image[:, 2:3]


def guided_upsample(small_guide: torch.Tensor, small_map: torch.Tensor, full_guide: torch.Tensor,
                    radius: int = GUIDE_RADIUS, eps: float = GUIDE_EPS) -> torch.Tensor:
    """The fast guided filter: small_map ~ a * small_guide + b in each window; the window-averaged
    a and b upsampled and applied to full_guide."""
    mean_guide, mean_map = box_mean(small_guide, radius), box_mean(small_map, radius)
    covariance = box_mean(small_guide * small_map, radius) - mean_guide * mean_map
    variance = box_mean(small_guide * small_guide, radius) - mean_guide * mean_guide
    a = covariance / (variance + eps)
    b = mean_map - a * mean_guide
    size = full_guide.shape[-2:]
    a = F.interpolate(box_mean(a, radius), size=size, mode="bilinear", align_corners=False)
    b = F.interpolate(box_mean(b, radius), size=size, mode="bilinear", align_corners=False)
    return a * full_guide + b


def frame_median(t: torch.Tensor, bins: int = MEDIAN_BINS) -> torch.Tensor:
    """(B, 1, H, W) in [0, 1] -> each frame's median (B, 1, 1, 1), to 1 / bins: the share of pixels
    below each of `bins` levels, counted. Comparisons and means only, so the graph needs no TopK
    (which TensorRT limits to k <= 3840) and PyTorch and every engine compute the same number."""
    levels = (torch.arange(bins, dtype=t.dtype, device=t.device) + 0.5) / bins
    below = (t.flatten(1).unsqueeze(1) < levels[None, :, None]).to(t.dtype).mean(dim=2)   # (B, bins)
    return ((below < 0.5).to(t.dtype).sum(dim=1) / bins)[:, None, None, None]


class DefogFrame(nn.Module):
    """forward(frames uint8 (B, H, W, 3) BGR) -> defogged uint8 (B, H, W, 3) BGR, any H, W.
    `downscale`: the network runs at 1/downscale of the frame's size (None: `default_downscale`)."""

    def __init__(self, net: SJDLNet, downscale: int | None = None) -> None:
        super().__init__()
        if getattr(net, "decoder", None) is None:
            raise FogreidError("this model has no defog head (trained with --mode reid): there is no "
                               "whole-frame defog graph to make")
        if net.config.defog_head not in SCATTER_HEADS:
            # The published decoder upsamples with fixed x2 transposed convolutions and
            # instance-normalises over the whole image: its output only matches crops of the
            # training size.
            raise FogreidError(f"defog_head={net.config.defog_head!r}: only the scatter heads run on "
                               f"whole frames of any size; train with --set model.defog_head=detail")
        self.net = net.eval()
        self.downscale = default_downscale(net.config.imgsz) if downscale is None else int(downscale)
        if self.downscale < 1:
            raise FogreidError(f"downscale {downscale}: give a whole number >= 1")
        self.preprocess, self.postprocess = Preprocess(), Postprocess()
        self.eval()

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.postprocess(defog_frame_images(self.net, self.preprocess(frames), self.downscale))


def defog_frame_images(net: SJDLNet, image: torch.Tensor, downscale: int) -> torch.Tensor:
    """Whole frames (B, 3, H, W) RGB in [0, 1] -> defogged, the same shape, not yet clamped to [0, 1]:
    the graph's computation, and what the defog head's whole-frame training (`fogreid train
    --mode frames`, fogreid/train/frames.py) puts its loss on."""
    return defog_frame_images_and_transmission(net, image, downscale)[0]


def defog_frame_images_and_transmission(net: SJDLNet, image: torch.Tensor, downscale: int
                                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """`defog_frame_images`, and the head's transmission (B, 1, H, W) at the frame's size before the
    frame's median holds it up (`FRAME_T_MEDIAN_SHARE`): the head's estimate, which the frames'
    training compares with the fog's own; the hold is the graph's rule for the inversion."""
    # ceil_mode: a side that is not a multiple keeps its last, partial cell (averaged over what it holds).
    small = image if downscale == 1 else F.avg_pool2d(image, downscale, ceil_mode=True)
    t, airlight, gain, refinement = net.defog_maps(small, whole_frame=True)
    median = frame_median(t)
    if downscale != 1:
        size = image.shape[-2:]
        t = guided_upsample(grey(small), t, grey(image))
        airlight = F.interpolate(airlight, size=size, mode="bilinear", align_corners=False)
        if gain is not None:
            # The gain applies to the full frame's own finest detail (its noise is per pixel at any size).
            gain = F.interpolate(gain, size=size, mode="bilinear", align_corners=False)
        refinement = F.interpolate(refinement, size=size, mode="bilinear", align_corners=False)
    t = t.clamp(FRAME_T_MIN, 1.0)
    held = torch.maximum(t, FRAME_T_MEDIAN_SHARE * median)
    # Every eighth pixel of each row and column measures a frame's noise as well as every second
    # (14,400 samples at 640x480, where a 64x64 crop has 3,072 at the default 2), at 1/16 of the cost.
    return ScatterDecoder.compose(image, held, airlight, gain, noise_stride=8, deband=True,
                                  chroma_t_min=FRAME_CHROMA_T_MIN) + refinement, t


def supports_frames(net: nn.Module) -> bool:
    return getattr(net, "decoder", None) is not None and getattr(net.config, "defog_head", "") in SCATTER_HEADS


def export_frame_graph(net: SJDLNet, path: str | Path, metadata: dict[str, str], downscale: int | None = None) -> Path:
    """Export `DefogFrame(net, downscale)` with dynamic batch, height and width; fold and check it."""
    from fogreid import onnx_graph

    model = DefogFrame(net, downscale)
    example = torch.zeros((1, 96, 128, 3), dtype=torch.uint8)
    dynamic = {0: "batch", 1: "height", 2: "width"}
    # The TorchScript exporter, not torch.export: torch.export turned the decoder's
    # "resize to the skip's size" into a formula of the input size that holds only for
    # multiples of 32 (1280x720 failed in ONNX Runtime); traced Shape ops hold for any size.
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation notes on the TorchScript exporter
        torch.onnx.export(model, (example,), buffer, dynamo=False, input_names=[onnx_graph.INPUT],
                          output_names=["defogged"], dynamic_axes={onnx_graph.INPUT: dynamic, "defogged": dynamic},
                          opset_version=onnx_graph.OPSET)
    proto = onnx_graph.fold_and_check(onnx.load_from_string(buffer.getvalue()))
    proto.producer_name = "fogreid"
    metadata = {k: v for k, v in metadata.items() if k != "input_size"}  # the crops it was trained on, not its input
    min_side = MIN_SIDE * model.downscale   # the enhancement's 32-pixel pooling must fit the small image
    onnx_graph.set_metadata(proto, {**metadata, "graph": GRAPH_KIND, "downscale": str(model.downscale),
                                    "min_side": str(min_side),
                                    "input": f"{onnx_graph.INPUT}: uint8 (B,H,W,3) BGR, any H, W >= {min_side}",
                                    "output": "defogged: uint8 (B,H,W,3) BGR"})
    onnx_graph.save(proto, path)
    return Path(path)

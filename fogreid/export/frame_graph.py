"""The whole-frame defog graph: what an operator looks at on a foggy camera.

The fused graph (fogreid/model/fused.py) takes fixed-size vehicle crops and returns their
defogged crops and embeddings. The defog head is fully convolutional, so the same weights
also defog a whole camera frame of any size: this graph runs only the encoder's stem and
layer1 and the defog head (`SJDLNet.defog`), with the same preprocessing contract:

    frames    uint8 (B, H, W, 3) BGR, H and W dynamic (any size from MIN_SIDE)
    defogged  uint8 (B, H, W, 3) BGR

It is written beside the fused graph as `model_defog_frame.onnx`; the metadata key
`graph` tells them apart ("fused-crop" vs "defog-frame").
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from fogreid.errors import FogreidError
from fogreid.model.fused import Postprocess, Preprocess
from fogreid.model.sjdl import SJDLNet

FILE = "model_defog_frame.onnx"
GRAPH_KIND = "defog-frame"
MIN_SIDE = 32


class DefogFrame(nn.Module):
    """forward(frames uint8 (B, H, W, 3) BGR) -> defogged uint8 (B, H, W, 3) BGR, any H, W."""

    def __init__(self, net: SJDLNet) -> None:
        super().__init__()
        if getattr(net, "decoder", None) is None:
            raise FogreidError("this model has no defog head (trained with --mode reid): there is no "
                               "whole-frame defog graph to make")
        if net.config.defog_head != "scatter":
            # The published decoder upsamples with fixed x2 transposed convolutions and
            # instance-normalises over the whole image: its output only matches crops of the
            # training size.
            raise FogreidError(f"defog_head={net.config.defog_head!r}: only the scatter head runs on "
                               f"whole frames of any size; train with --set model.defog_head=scatter")
        self.net = net.eval()
        self.preprocess, self.postprocess = Preprocess(), Postprocess()
        self.eval()

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        _, defogged = self.net.defog(self.preprocess(frames))
        return self.postprocess(defogged)


def supports_frames(net: nn.Module) -> bool:
    return getattr(net, "decoder", None) is not None and getattr(net.config, "defog_head", "") == "scatter"


def export_frame_graph(net: SJDLNet, path: str | Path, metadata: dict[str, str]) -> Path:
    """Export `DefogFrame(net)` with dynamic batch, height and width; fold and check it."""
    from fogreid import onnx_graph

    model = DefogFrame(net)
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
    onnx_graph.set_metadata(proto, {**metadata, "graph": GRAPH_KIND,
                                    "input": f"{onnx_graph.INPUT}: uint8 (B,H,W,3) BGR, any H, W >= {MIN_SIDE}",
                                    "output": "defogged: uint8 (B,H,W,3) BGR"})
    onnx_graph.save(proto, path)
    return Path(path)

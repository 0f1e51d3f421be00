"""`--format deepstream`: the ReID model of DeepStream's NvDCF / NvDeepSORT tracker.

The tracker crops each object, scales it to `inferDims`, converts it to `colorFormat`,
computes `y = netScaleFactor * (x - offsets)` per channel, lays it out as `inputOrder`
and expects ONE output, the embedding (DeepStream docs, Gst-nvtracker "Re-ID";
samples/configs/deepstream-app/config_tracker_NvDCF_accuracy.yml). Our fused graph
(uint8 NHWC BGR in, defogged image + embedding out) does not fit that, so this writes:

    OUT/deepstream/reid_embedding.onnx   float32 (B, 3, H, W) RGB in [0, 1] -> `embedding`
                                         (B, D), the BNNeck feature before the L2 norm; the
                                         same weights, no defog head
    OUT/deepstream/config_tracker_reid.yml   the tracker's `ReID:` section, filled from the model

Our preprocessing is `x / 255` on RGB with no mean/std (fogreid/pixels.py), which is
`offsets: [0, 0, 0]`, `netScaleFactor: 1/255`, `colorFormat: 0` (RGB), `inputOrder: 0`
(NCHW). The runtime stretches crops to the input size (data/image_io.resize_for_model),
so `keepAspc: 0`.

The tracker builds its engine from this ONNX weakly typed at `networkMode` (1 = FP16), with no
per-layer precision, so nothing would keep fogreid's FP32 embedding tail FP32 there: the squared
sum of the L2 norm overflows FP16's 65504 for large features. So the graph ends at the BNNeck
feature and the tracker normalises it itself (`addFeatureNormalization: 1`, "L2-normalises in the
tracker"), as fogreid's runtime does in FP32. The BNNeck (a per-channel scale and shift) stays in
the FP16 graph; tests/test_triton_deepstream.py measures that on a trained checkpoint.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from fogreid.fileio import atomic_write

ONNX_NAME = "reid_embedding.onnx"
CONFIG_NAME = "config_tracker_reid.yml"
INPUT, OUTPUT = "input", "embedding"
NETWORK_MODES = {"fp32": 0, "fp16": 1, "int8": 2}


@dataclass(frozen=True)
class ReIDSection:
    """The tracker config's `ReID:` keys, in DeepStream's names and order."""

    reidType: int                 # 0 dummy, 1 NvDeepSORT, 2 re-association (NvDCF), 3 both
    batchSize: int
    workspaceSize: int            # MB
    reidFeatureSize: int
    reidHistorySize: int
    inferDims: tuple[int, int, int]
    networkMode: int
    inputOrder: int
    colorFormat: int
    offsets: tuple[float, float, float]
    netScaleFactor: float
    keepAspc: int
    addFeatureNormalization: int
    onnxFile: str
    modelEngineFile: str

    def yaml(self) -> str:
        lines = []
        for key, value in self.__dict__.items():
            if isinstance(value, tuple):
                value = "[" + ", ".join(repr(v) for v in value) + "]"
            elif isinstance(value, str):
                value = f'"{value}"'
            else:
                value = repr(value)
            lines.append(f"  {key}: {value}")
        return "ReID:\n" + "\n".join(lines) + "\n"


def reid_section(imgsz: tuple[int, int], embedding_dim: int, max_batch: int, precision: str = "fp16",
                 reid_type: int = 2) -> ReIDSection:
    h, w = imgsz
    engine = f"{ONNX_NAME}_b{max_batch}_gpu0_{precision}.engine"   # DeepStream's own naming
    return ReIDSection(reidType=reid_type, batchSize=max_batch, workspaceSize=1000, reidFeatureSize=embedding_dim,
                       reidHistorySize=100, inferDims=(3, h, w), networkMode=NETWORK_MODES[precision],
                       inputOrder=0, colorFormat=0, offsets=(0.0, 0.0, 0.0), netScaleFactor=1.0 / 255.0,
                       keepAspc=0, addFeatureNormalization=1, onnxFile=ONNX_NAME, modelEngineFile=engine)


def embedding_module(fused):
    """float (B, 3, H, W) RGB in [0, 1] -> BNNeck feature (B, D), not normalised (the tracker
    does that: addFeatureNormalization 1): the fused model less its uint8 pre/post-processing,
    its defog head (which the exporter prunes: no output uses it) and its L2 norm."""
    from torch import nn

    class EmbeddingOnly(nn.Module):
        def __init__(self, net) -> None:
            super().__init__()
            self.net = net.eval()

        def forward(self, images):
            return self.net(images).bn_feat

    return EmbeddingOnly(fused.net).eval()


def export_embedding_onnx(fused, path: str | Path, metadata: dict[str, str], max_batch: int = 256) -> Path:
    import torch

    from fogreid import onnx_graph

    h, w = fused.imgsz
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on its own internals
        program = torch.onnx.export(embedding_module(fused), (torch.rand(2, 3, h, w),), dynamo=True,
                                    input_names=[INPUT], output_names=[OUTPUT],
                                    dynamic_shapes={"images": {0: batch}}, opset_version=onnx_graph.OPSET,
                                    optimize=True, verbose=False)
    proto = program.model_proto
    onnx_graph.name_nodes_by_module(proto)
    proto = onnx_graph.fold_and_check(proto)
    onnx_graph.set_metadata(proto, {**metadata, "deepstream": "BNNeck feature (L2-normalise it: "
                                                              "addFeatureNormalization 1): float NCHW RGB in [0, 1]"})
    onnx_graph.save(proto, path)
    return Path(path)


def write_deepstream(fused, out: str | Path, metadata: dict[str, str], max_batch: int,
                     precision: str = "fp16") -> dict[str, Path]:
    out = Path(out)
    onnx_path = export_embedding_onnx(fused, out / ONNX_NAME, metadata, max_batch=max(max_batch, 64))
    section = reid_section(fused.imgsz, fused.embedding_dim, max_batch, precision)
    config = out / CONFIG_NAME
    with atomic_write(config, "w") as handle:
        handle.write("# The ReID section for DeepStream's NvDCF / NvDeepSORT tracker (ll-config-file), written by\n"
                     "# `fogreid export --format deepstream`. Merge it into the tracker config you use (e.g.\n"
                     "# config_tracker_NvDCF_accuracy.yml; reidType 2 needs TrajectoryManagement.enableReAssoc: 1),\n"
                     "# or use this file as is (the other sections then take the tracker's defaults).\n"
                     "# onnxFile / modelEngineFile are file names beside this file. DeepStream 9 resolves them\n"
                     "# against this file; DeepStream 8 and older resolve them against the working directory of\n"
                     "# deepstream-app: there, write absolute paths to where you copied this folder.\n"
                     "# The tracker builds the engine on first run.\n"
                     "# Preprocessing: y = netScaleFactor * (x - offsets) on RGB = our x / 255; crops stretched\n"
                     "# (keepAspc 0) as fogreid's runtime does. The ONNX ends at the BNNeck feature and the tracker\n"
                     "# L2-normalises it (addFeatureNormalization 1): an L2 norm inside the FP16 engine would\n"
                     "# overflow FP16 (networkMode 1 builds weakly typed, with no per-layer FP32).\n")
        handle.write(section.yaml())
    return {"deepstream-onnx": onnx_path, "deepstream-config": config}

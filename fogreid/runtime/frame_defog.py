"""Whole-frame defog for `fogreid run --defog-view frame`: the defog-frame graph
(model_defog_frame.onnx, written by `fogreid export --format onnx` beside model.onnx) in
ONNX Runtime, one uint8 BGR frame of any size in, its defogged frame out."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fogreid.errors import FogreidError
from fogreid.sessions import onnxruntime_session

FRAME_GRAPH = "model_defog_frame.onnx"  # fogreid.export.frame_graph.FILE (runtime does not import export)


def find_frame_graph(model: str | Path) -> Path:
    """The defog-frame graph given, or the one beside a fused graph / engine."""
    model = Path(model)
    candidate = model if model.name == FRAME_GRAPH else model.with_name(FRAME_GRAPH)
    if not candidate.is_file():
        raise FogreidError(f"--defog-view frame needs the whole-frame defog graph {candidate}: export it with "
                           f"`fogreid export --checkpoint CKPT --format onnx --out {model.parent}` "
                           f"(models with a scatter or detail defog head), or pass it with --defog-model")
    return candidate


class FrameDefogger:
    """Callable: uint8 (H, W, 3) BGR frame -> its defogged uint8 (H, W, 3) BGR frame."""

    def __init__(self, path: str | Path, device: str = "auto") -> None:
        path = Path(path)
        session = onnxruntime_session(path, device)
        meta = session.get_modelmeta().custom_metadata_map
        if meta.get("graph") != "defog-frame":
            raise FogreidError(f"{path}: not a whole-frame defog graph (metadata graph={meta.get('graph')!r}); "
                               f"use the {FRAME_GRAPH} that `fogreid export --format onnx` writes")
        self.session, self.path = session, path
        # Graphs written before these keys ran the network on the whole frame, from 32 px (MIN_SIDE).
        self.downscale = int(meta["downscale"]) if meta.get("downscale", "").isdigit() else 1
        self.min_side = int(meta["min_side"]) if meta.get("min_side", "").isdigit() else 32

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        if min(frame.shape[:2]) < self.min_side:
            raise FogreidError(f"{self.path}: a {frame.shape[1]}x{frame.shape[0]} frame is smaller than this whole-"
                               f"frame defog graph takes ({self.min_side} px a side); export it with a smaller "
                               f"--frame-downscale, or drop --defog-view frame for this source")
        return self.session.run(None, {"frames": np.ascontiguousarray(frame)[None]})[0][0]


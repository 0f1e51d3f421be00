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
                           f"(models with the scatter defog head), or pass it with --defog-model")
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

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"frames": np.ascontiguousarray(frame)[None]})[0][0]


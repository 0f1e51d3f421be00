"""Where the vehicles are in a frame: the whole frame, fixed regions, or a detector.

The detector is any YOLO-style ONNX model (YOLOv5/v8/v11 as exported by Ultralytics):
  input   float32 (1, 3, S, S), RGB in [0, 1], letterboxed (grey padding 114)
  output  (1, 4 + C, N)  [v8/v11: cx, cy, w, h, C class scores]       or
          (1, N, 5 + C)  [v5: cx, cy, w, h, objectness, C class scores]
in input pixels. The layout is told apart by which axis is the longer one (N, in the
thousands for real detectors), or set with `layout`. Boxes of
the vehicle classes (COCO car 2, motorcycle 3, bus 5, truck 7 by default) above the score
threshold are kept, then non-maximum suppression.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fogreid.errors import FogreidError

Box = tuple[int, int, int, int]  # x1, y1, x2, y2 in frame pixels
COCO_VEHICLES = (2, 3, 5, 7)


class FullFrame:
    def __call__(self, image: np.ndarray, source: str) -> list[tuple[Box, float]]:
        h, w = image.shape[:2]
        return [((0, 0, w, h), 1.0)]


class FixedRegions:
    """Regions from a JSON file: {"default": [[x1, y1, x2, y2], ...], "<source>": [...]}."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise FogreidError(f"--rois file not found: {path}") from None
        except json.JSONDecodeError as exc:
            raise FogreidError(f"--rois {path}: not valid JSON ({exc})") from None
        if isinstance(data, list):
            data = {"default": data}
        self.regions: dict[str, list[Box]] = {}
        for source, boxes in data.items():
            try:
                self.regions[source] = [tuple(int(v) for v in box) for box in boxes]
            except (TypeError, ValueError):
                raise FogreidError(f"--rois {path}: {source}: expected lists of [x1, y1, x2, y2]") from None
            if any(len(b) != 4 or b[2] <= b[0] or b[3] <= b[1] for b in self.regions[source]):
                raise FogreidError(f"--rois {path}: {source}: each region is [x1, y1, x2, y2] with x2 > x1, y2 > y1")

    def __call__(self, image: np.ndarray, source: str) -> list[tuple[Box, float]]:
        h, w = image.shape[:2]
        boxes = self.regions.get(source, self.regions.get("default", []))
        for box in boxes:
            if min(w, box[2]) - max(0, box[0]) < 2 or min(h, box[3]) - max(0, box[1]) < 2:
                raise FogreidError(f"--rois: region {list(box)} lies outside the {w}x{h} frame of {source}; "
                                   f"give [x1, y1, x2, y2] within 0..{w}, 0..{h}")
        return [((max(0, x1), max(0, y1), min(w, x2), min(h, y2)), 1.0) for x1, y1, x2, y2 in boxes]


class OnnxDetector:
    def __init__(self, path: str | Path, score: float = 0.35, iou: float = 0.5,
                 classes: tuple[int, ...] = COCO_VEHICLES, min_size: int = 16, device: str = "auto",
                 layout: str = "auto") -> None:
        from fogreid.runtime.backends import onnxruntime_session

        path = Path(path)
        if not path.is_file():
            raise FogreidError(f"--detector file not found: {path}")
        self.session = onnxruntime_session(path, device)
        inp = self.session.get_inputs()[0]
        out = self.session.get_outputs()[0]
        if (len(inp.shape) != 4 or inp.shape[1] != 3 or not isinstance(inp.shape[2], int) or "float" not in inp.type
                or len(out.shape) != 3):
            # e.g. an image classifier, or a fogreid model (uint8 frames in, embeddings out) given by mistake
            raise FogreidError(f"--detector {path}: not a YOLO-style detector: expected a float (1, 3, S, S) input "
                               f"and a (1, 4 + C, N) output, got {inp.type} {inp.shape} -> {out.shape}; export "
                               f"one with Ultralytics (format='onnx'), see fogreid/runtime/regions.py")
        self.input_name, self.size = inp.name, int(inp.shape[2])
        self.score, self.iou, self.classes, self.min_size = score, iou, classes, min_size
        if layout not in ("auto", "v8", "v5"):
            raise FogreidError(f"detector layout {layout!r}: choose auto, v8 or v5")
        self.layout = layout

    def _letterbox(self, image: np.ndarray) -> tuple[np.ndarray, float, tuple[int, int]]:
        import cv2

        h, w = image.shape[:2]
        scale = min(self.size / h, self.size / w)
        nh, nw = int(round(h * scale)), int(round(w * scale))
        canvas = np.full((self.size, self.size, 3), 114, np.uint8)
        top, left = (self.size - nh) // 2, (self.size - nw) // 2
        canvas[top:top + nh, left:left + nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
        blob = canvas[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32) / 255.0
        return np.ascontiguousarray(blob), scale, (left, top)

    def __call__(self, image: np.ndarray, source: str) -> list[tuple[Box, float]]:
        import cv2

        blob, scale, (left, top) = self._letterbox(image)
        raw = np.asarray(self.session.run(None, {self.input_name: blob})[0])[0]
        v8 = raw.shape[0] < raw.shape[1] if self.layout == "auto" else self.layout == "v8"
        if v8:  # (4 + C, N)
            boxes, scores = raw[:4].T, raw[4:].T
        else:                            # (N, 5 + C): v5 layout with objectness
            boxes, scores = raw[:, :4], raw[:, 5:] * raw[:, 4:5]
        wanted = [c for c in self.classes if c < scores.shape[1]] or list(range(scores.shape[1]))
        best = scores[:, wanted].max(axis=1)
        keep = best >= self.score
        boxes, best = boxes[keep], best[keep]
        xywh = np.stack([(boxes[:, 0] - boxes[:, 2] / 2 - left) / scale, (boxes[:, 1] - boxes[:, 3] / 2 - top) / scale,
                         boxes[:, 2] / scale, boxes[:, 3] / scale], axis=1) if len(boxes) else np.zeros((0, 4))
        picked = cv2.dnn.NMSBoxes(xywh.tolist(), best.tolist(), self.score, self.iou) if len(xywh) else []
        h, w = image.shape[:2]
        out = []
        for i in np.asarray(picked).reshape(-1):
            x, y, bw, bh = xywh[i]
            box = (max(0, int(x)), max(0, int(y)), min(w, int(x + bw)), min(h, int(y + bh)))
            if box[2] - box[0] >= self.min_size and box[3] - box[1] >= self.min_size:
                out.append((box, float(best[i])))
        return out

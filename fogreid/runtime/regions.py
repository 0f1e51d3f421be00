"""Where the vehicles are in a frame: the whole frame, fixed regions, or a detector.

Every kind is called on a batch of frames (from one or several sources) and returns one
list of `Region`s per frame.

The detector is any Ultralytics ONNX export (YOLOv5/v8/v11 and the end-to-end heads of
YOLOv10/YOLO26), read the way Ultralytics reads it, so that it finds the boxes Ultralytics
finds on the same frame:

  input   float (B, 3, H, W), RGB in [0, 1], letterboxed with grey 114. H, W: the input's own
          size; for a dynamic input the model's `imgsz` metadata, else `imgsz`. B: fixed
          (frames are run B at a time, a short batch padded) or dynamic.
  output  (B, 4 + C, N)   raw v8/v11 head: cx, cy, w, h, C class scores (extra rows after
                          the C classes, e.g. mask coefficients, are ignored)
          (B, N, 5 + C)   raw YOLOv5 head: cx, cy, w, h, objectness, C class scores
          (B, N, 6)       `nms=True` exports and end-to-end heads: x1, y1, x2, y2, score, class
  in input pixels. Which one is told by the class count from the `names` metadata where it
  exists, else by the shape (`layout` overrides).

Selection, as Ultralytics' `non_max_suppression` (ultralytics/utils/nms.py) and YOLOv5's:
each box takes its top class over *all* classes, boxes scoring <= `conf` are dropped, then
those not of a wanted class; NMS is per class (boxes offset by class x 7680), at most
`max_det` kept. End-to-end outputs: score > `conf`, wanted class, first `max_det`. Boxes are
mapped back to the frame as Ultralytics' `scale_boxes` does and clipped to it. The wanted
classes are chosen by name from the `names` metadata (car, motorcycle, bus, truck, ...).
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fogreid.errors import FogreidError

Box = tuple[int, int, int, int]  # x1, y1, x2, y2 in frame pixels
VEHICLE_NAMES = ("car", "motorcycle", "motorbike", "bus", "truck", "van", "vehicle", "trailer")
COCO_VEHICLES = {2: "car", 3: "motorcycle", 5: "bus", 7: "truck"}  # for COCO models without `names`
MAX_WH = 7680       # Ultralytics' class offset for class-aware NMS
MAX_NMS = 30000     # boxes going into NMS at most, best first (Ultralytics' max_nms)


@dataclass(frozen=True)
class Region:
    """One vehicle (or fixed region) in a frame."""

    xyxy: tuple[float, float, float, float]   # frame pixels, as the detector gives them
    score: float = 1.0
    label: str = "vehicle"

    @property
    def box(self) -> Box:
        """Integer pixel box for cropping: the float box rounded to the nearest pixel."""
        x1, y1, x2, y2 = self.xyxy
        return int(round(x1)), int(round(y1)), int(round(x2)), int(round(y2))


def drop_invalid(found: list[Region]) -> tuple[list[Region], int]:
    """The regions with a finite box of positive width and height and a finite score, and how
    many were dropped (NaN, inf, negative or empty boxes: nothing to crop, and a tracker fed one
    breaks). The pipeline counts them into the run summary's `invalid_boxes`."""
    kept = [r for r in found if all(np.isfinite(v) for v in (*r.xyxy, r.score))
            and r.xyxy[2] > r.xyxy[0] and r.xyxy[3] > r.xyxy[1]]
    return kept, len(found) - len(kept)


def _invalid_rows(xyxy: np.ndarray, scores: np.ndarray, conf: float) -> np.ndarray:
    """Detector rows to drop before selection: any non-finite value, or a box of zero or negative
    width or height that scores above `conf` (below it, the row would be dropped anyway)."""
    finite = np.isfinite(xyxy).all(axis=1) & np.isfinite(scores).all(axis=1)
    empty = (xyxy[:, 2] <= xyxy[:, 0]) | (xyxy[:, 3] <= xyxy[:, 1])
    best = np.where(finite, np.nan_to_num(scores).max(axis=1, initial=-np.inf), np.inf)
    return ~finite | (empty & (best > conf))


class FullFrame:
    def __call__(self, images: list[np.ndarray], sources: list[str], indices=None) -> list[list[Region]]:
        return [[Region((0.0, 0.0, float(im.shape[1]), float(im.shape[0])))] for im in images]


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def _whole(value) -> bool:
    """A finite pixel coordinate (a bool is not one), within what a frame can have."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)
            and abs(value) <= 1_000_000)


class FixedRegions:
    """Regions from a JSON file: {"default": [[x1, y1, x2, y2], ...], "<source>": [...]}."""

    def __init__(self, path: str | Path) -> None:
        from fogreid.file_kinds import expect

        path = Path(path)
        expect(path, "--rois", "json", "JSON ROI file", {"npz": "--gallery", "onnx": "--model or --detector"})
        form = "give [[x1, y1, x2, y2], ...] or {\"default\": [[x1, y1, x2, y2], ...], \"<source>\": [...]}"
        try:
            data = json.loads(path.read_text(encoding="utf-8"), parse_constant=_no_constant)
        except (ValueError, UnicodeDecodeError) as exc:
            raise FogreidError(f"--rois {path}: not valid JSON ({str(exc).splitlines()[0][:100]}); {form}") from None
        if isinstance(data, list):
            data = {"default": data}
        if not isinstance(data, dict):
            raise FogreidError(f"--rois {path}: holds a {type(data).__name__}, not regions; {form}")
        self.regions: dict[str, list[Box]] = {}
        for source, boxes in data.items():
            if not isinstance(boxes, list) or not all(
                    isinstance(b, list) and len(b) == 4 and all(_whole(v) for v in b) for b in boxes):
                raise FogreidError(f"--rois {path}: {source}: expected a list of [x1, y1, x2, y2] pixel numbers, got "
                                   f"{json.dumps(boxes)[:60]}; {form}")
            self.regions[source] = [tuple(int(v) for v in box) for box in boxes]
            if any(b[2] <= b[0] or b[3] <= b[1] for b in self.regions[source]):
                raise FogreidError(f"--rois {path}: {source}: each region is [x1, y1, x2, y2] with x2 > x1, y2 > y1")

    def __call__(self, images: list[np.ndarray], sources: list[str], indices=None) -> list[list[Region]]:
        out = []
        for image, source in zip(images, sources, strict=True):
            h, w = image.shape[:2]
            boxes = self.regions.get(source, self.regions.get("default", []))
            for box in boxes:  # a region outside the frame would be an empty crop
                if min(w, box[2]) - max(0, box[0]) < 2 or min(h, box[3]) - max(0, box[1]) < 2:
                    raise FogreidError(f"--rois: region {list(box)} lies outside the {w}x{h} frame of {source}; "
                                       f"give [x1, y1, x2, y2] within 0..{w}, 0..{h}")
            out.append([Region((float(max(0, x1)), float(max(0, y1)), float(min(w, x2)), float(min(h, y2))))
                        for x1, y1, x2, y2 in boxes])
        return out


class PublicDetections:
    """Detections read from MOTChallenge `det.txt` files, one per source (in the order of the
    sources): `frame, id, left, top, width, height, conf, ...` with frames counted from 1. The
    way MOT benchmarks separate tracking from detection, and a detector for the generated city."""

    def __init__(self, files: list[str | Path], sources: list[str], min_conf: float = 0.0) -> None:
        if len(files) != len(sources):
            raise FogreidError(f"--detections: {len(files)} file(s) for {len(sources)} source(s); give one per source")
        self.by_source: dict[str, dict[int, list[Region]]] = {}
        for path, source in zip(files, sources, strict=True):
            from fogreid.file_kinds import expect

            path = Path(path)
            expect(path, "--detections", "text", "det.txt", {"onnx": "--detector"})
            table: dict[int, list[Region]] = {}
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                raise FogreidError(f"--detections {path}: not a text file; give MOTChallenge det.txt rows") from None
            for n, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    f, _, x, y, w, h, conf = (float(v) for v in line.split(",")[:7])
                except ValueError:
                    raise FogreidError(f"--detections {path}:{n}: expected MOTChallenge rows 'frame, id, left, top, "
                                       f"width, height, conf, ...', got {line[:60]!r}") from None
                if not all(np.isfinite(v) for v in (f, x, y, w, h, conf)) or f != int(f) or f < 1 or f > 1e9:
                    raise FogreidError(f"--detections {path}:{n}: {line[:60]!r} holds NaN, an infinite value or a "
                                       f"frame that is not a whole number from 1; fix or drop the row")
                if conf >= min_conf:
                    table.setdefault(int(f), []).append(Region((x, y, x + w, y + h), conf))
            self.by_source[source] = table

    def __call__(self, images: list[np.ndarray], sources: list[str], indices=None) -> list[list[Region]]:
        if indices is None:
            raise FogreidError("public detections need the frame numbers of the frames")
        out = []
        for image, source, index in zip(images, sources, indices, strict=True):
            h, w = image.shape[:2]
            out.append([Region((max(r.xyxy[0], 0.0), max(r.xyxy[1], 0.0), min(r.xyxy[2], float(w)),
                                min(r.xyxy[3], float(h))), r.score, r.label)
                        for r in self.by_source.get(source, {}).get(index + 1, [])])
        return out


# ---------------------------------------------------------------------------------------- Ultralytics policy
def letterbox(image: np.ndarray, shape: tuple[int, int], auto: bool = False, stride: int = 32) -> np.ndarray:
    """Ultralytics' LetterBox (centre, scale up, grey 114; `auto`: pad only to a stride multiple)."""
    import cv2

    h0, w0 = image.shape[:2]
    r = min(shape[0] / h0, shape[1] / w0)
    new_unpad = round(w0 * r), round(h0 * r)
    dw, dh = shape[1] - new_unpad[0], shape[0] - new_unpad[1]
    if auto:
        dw, dh = np.mod(dw, stride), np.mod(dh, stride)
    dw, dh = dw / 2, dh / 2
    if (w0, h0) != new_unpad:
        image = cv2.resize(image, new_unpad, interpolation=cv2.INTER_LINEAR)
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    return cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(114, 114, 114))


def scale_boxes(input_shape: tuple[int, int], boxes: np.ndarray, frame_shape: tuple[int, int]) -> np.ndarray:
    """Input-pixel xyxy boxes back to the frame and clipped to it (Ultralytics' scale_boxes)."""
    gain = min(input_shape[0] / frame_shape[0], input_shape[1] / frame_shape[1])
    pad_x = round((input_shape[1] - round(frame_shape[1] * gain)) / 2 - 0.1)
    pad_y = round((input_shape[0] - round(frame_shape[0] * gain)) / 2 - 0.1)
    boxes = boxes.astype(np.float32).copy()
    boxes[:, [0, 2]] -= pad_x
    boxes[:, [1, 3]] -= pad_y
    boxes[:, :4] /= gain
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, frame_shape[1])
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, frame_shape[0])
    return boxes


def xywh2xyxy(xywh: np.ndarray) -> np.ndarray:
    xy, half = xywh[:, :2], xywh[:, 2:4] / 2
    return np.concatenate([xy - half, xy + half], axis=1)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy NMS as torchvision.ops.nms: best first, drop boxes with IoU > `iou` to a kept one."""
    order = np.argsort(-scores, kind="stable")
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        xx1, yy1 = np.maximum(boxes[i, 0], boxes[rest, 0]), np.maximum(boxes[i, 1], boxes[rest, 1])
        xx2, yy2 = np.minimum(boxes[i, 2], boxes[rest, 2]), np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
        order = rest[inter / (areas[i] + areas[rest] - inter + 1e-12) <= iou]
    return np.array(keep, dtype=np.int64)


def select(candidates: np.ndarray, conf: float, iou: float, classes: np.ndarray | None, max_det: int) -> np.ndarray:
    """Ultralytics' selection on (N, 4 + C) rows of xyxy + class scores -> (K, 6) xyxy, score, class."""
    scores = candidates[:, 4:]
    cls = scores.argmax(axis=1)                      # the top class over all classes
    best = scores[np.arange(len(scores)), cls]
    keep = best > conf
    if classes is not None:
        keep &= np.isin(cls, classes)                # then the class filter
    x = np.concatenate([candidates[keep, :4], best[keep, None], cls[keep, None].astype(np.float32)], axis=1)
    if len(x) > MAX_NMS:
        x = x[np.argsort(-x[:, 4], kind="stable")[:MAX_NMS]]
    picked = nms(x[:, :4] + x[:, 5:6] * MAX_WH, x[:, 4], iou)[:max_det]   # per class, by offsetting
    return x[picked]


def _metadata(session) -> dict:
    """Ultralytics' ONNX metadata (values are Python literals as text; read with literal_eval, which
    evaluates no code, as ultralytics/nn/autobackend.py does)."""
    raw = dict(session.get_modelmeta().custom_metadata_map)
    meta = {}
    for key, value in raw.items():
        if key in ("imgsz", "names", "args", "end2end", "stride", "batch"):
            try:
                meta[key] = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                continue
        else:
            meta[key] = value
    return meta


class OnnxDetector:
    """An Ultralytics ONNX detector run by ONNX Runtime. See the module docstring."""

    def __init__(self, path: str | Path, conf: float = 0.25, iou: float = 0.7, max_det: int = 300,
                 classes: list[str | int] | None = None, imgsz: tuple[int, int] | None = None,
                 layout: str = "auto", device: str = "auto") -> None:
        from fogreid.runtime.backends import onnxruntime_session

        path = Path(path)
        if not path.is_file():
            raise FogreidError(f"--detector file not found: {path}")
        if layout not in ("auto", "v8", "v5", "end2end"):
            raise FogreidError(f"--detector-layout {layout!r}: choose auto, v8, v5 or end2end")
        self.path, self.conf, self.iou, self.max_det, self.layout = path, conf, iou, max_det, layout
        self.invalid = 0   # rows dropped for NaN / inf values or empty boxes (RunStats.invalid_boxes)
        self.session = onnxruntime_session(path, device)
        self.meta = _metadata(self.session)
        inp = self.session.get_inputs()[0]
        if len(inp.shape) != 4 or inp.shape[1] not in (3, None) and not isinstance(inp.shape[1], str):
            raise FogreidError(f"--detector {path}: expected an image input (B, 3, H, W), found {inp.shape}")
        self.input_name = inp.name
        self.dtype = np.float16 if "float16" in inp.type else np.float32
        self.batch = inp.shape[0] if isinstance(inp.shape[0], int) else None   # None: dynamic
        self.dynamic = not (isinstance(inp.shape[2], int) and isinstance(inp.shape[3], int))
        self.stride = int(self.meta.get("stride", 32)) if str(self.meta.get("stride", 32)).isdigit() else 32
        if not self.dynamic:
            self.size = (int(inp.shape[2]), int(inp.shape[3]))
        else:
            size = self.meta.get("imgsz", imgsz)
            if size is None:
                raise FogreidError(f"--detector {path}: its input {inp.shape} has no fixed size and no `imgsz` "
                                   f"metadata; pass --det-imgsz H [W]")
            size = [size] if isinstance(size, int) else list(size)
            self.size = (int(size[0]), int(size[-1]))
        names = self.meta.get("names")
        self.names: dict[int, str] | None = ({int(k): str(v) for k, v in names.items()} if isinstance(names, dict)
                                             else {i: str(v) for i, v in enumerate(names)} if isinstance(names, list)
                                             else None)
        self.classes = self._wanted(classes)

    def _wanted(self, classes: list[str | int] | None) -> np.ndarray | None:
        names = self.names
        if names is None:
            names = COCO_VEHICLES if classes is None or all(isinstance(c, str) for c in classes) else {}
        wanted = []
        for c in classes if classes is not None else VEHICLE_NAMES:
            if isinstance(c, int) or str(c).isdigit():
                wanted.append(int(c))
            else:
                wanted += [i for i, n in names.items() if n.lower() == str(c).lower()]
        if not wanted:
            raise FogreidError(f"--detector {self.path}: none of the classes {list(classes or VEHICLE_NAMES)} are "
                               f"among its class names ({', '.join(list(names.values())[:12]) or 'none given'}); "
                               f"choose them with --det-classes NAME|ID ...")
        return np.array(sorted(set(wanted)))

    def label(self, cls: int) -> str:
        return (self.names or COCO_VEHICLES).get(cls, str(cls))

    # ------------------------------------------------------------------------------------------------ running
    def __call__(self, images: list[np.ndarray], sources: list[str] | None = None, indices=None) -> list[list[Region]]:
        rows = self.detect(images)
        return [[Region(tuple(float(v) for v in r[:4]), float(r[4]), self.label(int(r[5]))) for r in found]
                for found in rows]

    def detect(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """(K, 6) arrays of x1, y1, x2, y2, score, class in frame pixels, one per image."""
        step = self.batch or max(len(images), 1)
        out = []
        for start in range(0, len(images), step):
            out += self._run(images[start:start + step])
        return out

    def _run(self, images: list[np.ndarray]) -> list[np.ndarray]:
        # Ultralytics pads to the minimal stride multiple only on dynamic inputs with equal frame shapes.
        auto = self.dynamic and len({im.shape for im in images}) == 1
        boxed = [letterbox(im, self.size, auto=auto, stride=self.stride) for im in images]
        blob = np.stack(boxed)[..., ::-1].transpose(0, 3, 1, 2).astype(self.dtype) / self.dtype(255)
        if self.batch and len(images) < self.batch:  # a fixed-batch model: pad the batch, ignore the extra rows
            blob = np.concatenate([blob, np.zeros((self.batch - len(images), *blob.shape[1:]), self.dtype)])
        try:
            raw = np.asarray(self.session.run(None, {self.input_name: np.ascontiguousarray(blob)})[0], np.float32)
        except Exception as exc:  # ONNX Runtime's own errors: shape or type the model does not take
            raise FogreidError(f"--detector {self.path}: ONNX Runtime failed on a {blob.shape} input "
                               f"({str(exc).splitlines()[0][:200]})") from None
        layout = self._layout(raw.shape)
        results = []
        for i, image in enumerate(images):
            pred = raw[i]
            if layout == "end2end":
                bad = _invalid_rows(pred[:, :4], pred[:, 4:6], self.conf)
                self.invalid += int(bad.sum())
                pred = pred[~bad]
                keep = pred[:, 4] > self.conf
                if self.classes is not None:
                    keep &= np.isin(pred[:, 5].astype(np.int64), self.classes)
                found = pred[np.nonzero(keep)[0][:self.max_det], :6]
            else:
                nc = len(self.names) if self.names else None
                if layout == "v8":  # (4 + C [+ extra], N)
                    nc = nc or pred.shape[0] - 4
                    cand = np.concatenate([xywh2xyxy(pred[:4].T), pred[4:4 + nc].T], axis=1)
                else:               # v5: (N, 5 + C [+ extra]); objectness first, then class scores x objectness
                    nc = nc or pred.shape[1] - 5
                    pred = pred[~(pred[:, 4] <= self.conf)]   # NaN objectness stays, to be counted below
                    cand = np.concatenate([xywh2xyxy(pred[:, :4]), pred[:, 5:5 + nc] * pred[:, 4:5]], axis=1)
                bad = _invalid_rows(cand[:, :4], cand[:, 4:], self.conf)
                self.invalid += int(bad.sum())
                found = select(cand[~bad], self.conf, self.iou, self.classes, self.max_det)
            found = found.copy()
            found[:, :4] = scale_boxes(boxed[i].shape[:2], found[:, :4], image.shape[:2])
            results.append(found)
        return results

    def _layout(self, shape: tuple[int, ...]) -> str:
        if self.layout != "auto":
            return self.layout
        args = self.meta.get("args") if isinstance(self.meta.get("args"), dict) else {}
        end2end = self.meta.get("end2end") is True or args.get("nms") is True  # Ultralytics' own flags
        if len(shape) == 3:
            nc = len(self.names) if self.names else None
            if shape[2] == 6 and (end2end or nc is None or shape[1] != 4 + nc):
                return "end2end"
            if nc is not None:  # the class count tells (+32 rows of mask coefficients for -seg models)
                if shape[1] in (4 + nc, 4 + nc + 32):
                    return "v8"
                if shape[2] in (5 + nc, 5 + nc + 32):
                    return "v5"
            elif shape[1] > 4 and shape[2] > shape[1]:  # no names: N (thousands) is the longer axis
                return "v8"
            elif shape[2] > 5 and shape[1] > shape[2]:
                return "v5"
        raise FogreidError(f"--detector {self.path}: output shape {tuple(shape)} is not an Ultralytics detection "
                           f"output (B, 4+C, N), (B, N, 5+C) or (B, N, 6)"
                           + (f" for its {len(self.names)} classes" if self.names else "")
                           + "; pass --detector-layout v8|v5|end2end if it is one")

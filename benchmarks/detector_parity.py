"""fogreid's detector against Ultralytics' own predictor, on real Ultralytics ONNX exports.

    pip install --no-deps ultralytics ultralytics-thop polars psutil   # (its opencv-python would shadow
    YOLO_AUTOINSTALL=false python benchmarks/detector_parity.py          #  the headless wheel: --no-deps)

Builds YOLO models from Ultralytics' own configs (random weights: no download; the class
biases are raised so that a frame gives a few hundred candidates), exports each layout
(raw v8 / v11 heads, nms=True, the end-to-end YOLOv10 / YOLO26 heads, rectangular, dynamic,
batch 4) and compares, frame by frame, the boxes `YOLO(model.onnx).predict` keeps with those
fogreid's OnnxDetector keeps with the same thresholds and classes: same kept set (matched by
IoU), largest corner difference in pixels.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("YOLO_AUTOINSTALL", "false")
os.environ.setdefault("YOLO_OFFLINE", "1")

import numpy as np

VEHICLES = [2, 3, 5, 7]
LAYOUTS = [  # name, model config, export arguments
    ("v8 raw 640", "yolov8n.yaml", {}),
    ("v11 raw 640", "yolo11n.yaml", {}),
    ("v11 raw 256x416", "yolo11n.yaml", {"imgsz": (256, 416)}),
    ("v11 dynamic", "yolo11n.yaml", {"dynamic": True}),
    ("v11 batch 4", "yolo11n.yaml", {"batch": 4}),
    ("v8 nms=True", "yolov8n.yaml", {"nms": True}),
    # this Ultralytics keeps the one-to-one head only with nms=False
    ("v10 end-to-end", "yolov10n.yaml", {"nms": False}),
    ("yolo26 end-to-end", "yolo26n.yaml", {"nms": False}),
    ("yolo26 raw (one-to-many)", "yolo26n.yaml", {}),
]


def frames(n: int = 4) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        h, w = [(480, 640), (720, 1280), (480, 640), (600, 800)][i % 4]
        image = np.full((h, w, 3), 90, np.uint8)
        for _ in range(12):  # coloured blocks: something for random weights to respond to
            x, y = rng.integers(0, w - 120), rng.integers(0, h - 80)
            image[y:y + rng.integers(30, 80), x:x + rng.integers(40, 120)] = rng.integers(0, 255, 3)
        out.append(image)
    return out


def compare(ours: np.ndarray, theirs: np.ndarray) -> tuple[int, int, float]:
    """(matched, unmatched boxes in either set, largest corner difference of matched boxes in px)."""
    if not len(ours) or not len(theirs):
        return 0, len(ours) + len(theirs), 0.0
    diff = np.abs(ours[:, None, :4] - theirs[None, :, :4]).max(axis=2)
    same_class = ours[:, None, 5] == theirs[None, :, 5]
    diff = np.where(same_class, diff, np.inf)
    matched, worst, used = 0, 0.0, set()
    for i in np.argsort(diff.min(axis=1)):
        j = int(np.argmin(np.where([k in used for k in range(len(theirs))], np.inf, diff[i])))
        if diff[i, j] <= 2.0 and j not in used:
            used.add(j)
            matched += 1
            worst = max(worst, float(diff[i, j]))
    return matched, len(ours) + len(theirs) - 2 * matched, worst


def main() -> None:
    import torch
    import ultralytics
    from ultralytics import YOLO
    from ultralytics.utils import YAML

    from fogreid.runtime.regions import OnnxDetector

    work = Path(tempfile.mkdtemp(prefix="fogreid-detparity-"))
    os.chdir(work)  # Ultralytics writes exports of a model built from a config into the working directory
    coco_names = YAML.load(Path(ultralytics.__file__).parent / "cfg" / "datasets" / "coco.yaml")["names"]
    images = frames()
    conf, iou = 0.25, 0.7
    print(f"{'layout':<20}{'output':<18}{'frames':>7}{'boxes (ultra)':>15}{'same set':>10}{'max px diff':>13}")
    for name, cfg, export_args in LAYOUTS:
        torch.manual_seed(0)
        try:
            yolo = YOLO(cfg)
        except Exception as exc:  # a config this Ultralytics version does not have
            print(f"{name:<20}skipped: {str(exc).splitlines()[0][:60]}")
            continue
        with torch.no_grad():  # raise the class biases: random weights otherwise score ~1e-4 everywhere
            for mod in yolo.model.modules():
                if not (hasattr(mod, "nc") and hasattr(mod, "cv2")):  # the Detect head
                    continue
                for attr in ("cv3", "one2one_cv3"):
                    for branch in getattr(mod, attr, None) or []:
                        last = list(branch.modules())[-1]
                        # person and the vehicles compete, boxes differ by location: top class, filter, NMS all matter
                        last.weight.mul_(1e7)  # the features feeding it are ~1e-8 at random init
                        last.bias.fill_(-8.0)
                        last.bias[[0, 2, 3, 5, 7]] = -1.5
        yolo.model.names = coco_names  # written into the export's metadata: fogreid picks vehicles by name
        imgsz = export_args.pop("imgsz", 640)
        # exported from memory: a saved .pt is half precision, which would flush the tiny random features to 0
        onnx_path = yolo.export(format="onnx", imgsz=imgsz, simplify=False, verbose=False, **export_args)
        theirs_model = YOLO(onnx_path, task="detect")
        ours = OnnxDetector(onnx_path, conf=conf, iou=iou, device="cpu")
        batch = 4 if export_args.get("batch") == 4 else 1
        groups = [images[i:i + batch] for i in range(0, len(images), batch)]
        total, same, worst, nbox = 0, True, 0.0, 0
        for group in groups:
            results = theirs_model.predict(group, conf=conf, iou=iou, classes=VEHICLES, imgsz=imgsz, verbose=False)
            mine = ours.detect(group)
            for res, m in zip(results, mine, strict=True):
                t = np.concatenate([res.boxes.xyxy.numpy(), res.boxes.conf.numpy()[:, None],
                                    res.boxes.cls.numpy()[:, None]], axis=1)
                matched, unmatched, diff = compare(m, t)
                total += 1
                nbox += len(t)
                same &= unmatched == 0
                worst = max(worst, diff)
        shape = str(tuple(ours.session.get_outputs()[0].shape))
        print(f"{name:<20}{shape:<18}{total:>7}{nbox:>15}{'yes' if same else 'NO':>10}{worst:>13.3f}", flush=True)


if __name__ == "__main__":
    sys.exit(main())

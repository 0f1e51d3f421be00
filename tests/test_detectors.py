"""Ultralytics ONNX detector layouts, built here as small ONNX graphs with known outputs (no weights):
the boxes must come back where the test put them, with Ultralytics' selection policy."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from fogreid.errors import FogreidError
from fogreid.runtime.regions import OnnxDetector, letterbox

COCO = {i: f"class{i}" for i in range(80)} | {0: "person", 2: "car", 3: "motorcycle", 5: "bus", 7: "truck"}


def make_detector(path, out, input_shape, metadata=None, shift=None):
    """A detector whose output is the constant `out` (1, A, N), plus mean(image) x `shift` per image, so
    frames of different brightness in one batch get different, known boxes. Batch follows the input."""
    nodes = [helper.make_node("ReduceMean", ["images"], ["m"], axes=[1, 2, 3], keepdims=0),
             helper.make_node("Unsqueeze", ["m", "axes12"], ["m3"]),
             helper.make_node("Mul", ["m3", "shift"], ["moved"]),
             helper.make_node("Add", ["dets", "moved"], ["output0"])]
    shift = np.zeros_like(out) if shift is None else shift.astype(np.float32)
    inits = [numpy_helper.from_array(out.astype(np.float32), "dets"), numpy_helper.from_array(shift, "shift"),
             numpy_helper.from_array(np.array([1, 2], np.int64), "axes12")]
    graph = helper.make_graph(nodes, "detector",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, input_shape)],
                              [helper.make_tensor_value_info("output0", TensorProto.FLOAT,
                                                             [input_shape[0], *out.shape[1:]])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=str(value))
    onnx.save(model, str(path))
    return path


def to_input(frame_boxes, frame_shape, input_shape):
    """Frame xyxy -> input-pixel xyxy under Ultralytics' letterbox (non-auto)."""
    gain = min(input_shape[0] / frame_shape[0], input_shape[1] / frame_shape[1])
    pad_x = round((input_shape[1] - round(frame_shape[1] * gain)) / 2 - 0.1)
    pad_y = round((input_shape[0] - round(frame_shape[0] * gain)) / 2 - 0.1)
    b = np.array(frame_boxes, np.float64) * gain
    return b + [pad_x, pad_y, pad_x, pad_y]


def v8_output(rows, nc=80, n=64):
    """rows: (input xyxy, {class: score}) -> raw head (1, 4 + nc, n) in cx, cy, w, h."""
    out = np.zeros((1, 4 + nc, n), np.float32)
    for i, (xyxy, scores) in enumerate(rows):
        x1, y1, x2, y2 = xyxy
        out[0, :4, i] = [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]
        for c, s in scores.items():
            out[0, 4 + c, i] = s
    return out


FRAME = (480, 640)
A = (100, 100, 200, 180)
POLICY_ROWS = [  # frame boxes and class scores: what Ultralytics keeps is marked
    (A, {2: 0.9}),                             # kept: a car
    ((102, 101, 201, 181), {2: 0.8}),          # suppressed: same car, IoU > 0.7
    ((101, 100, 200, 181), {7: 0.85}),         # kept: overlaps A but a truck (NMS is per class)
    ((300, 200, 400, 300), {0: 0.95, 2: 0.6}),  # dropped: top class person, then the class filter
    ((300, 320, 380, 400), {2: 0.25}),         # dropped: score must be > conf (0.25)
    ((600, 400, 700, 500), {5: 0.5}),          # kept: a bus, clipped to the frame
]
KEPT = [(A, 0.9, "car"), ((101, 100, 200, 181), 0.85, "truck"), ((600, 400, 640, 480), 0.5, "bus")]


def check(found, expected, tol=1e-3):
    assert len(found) == len(expected), found
    for region, (xyxy, score, label) in zip(sorted(found, key=lambda r: -r.score), expected, strict=True):
        assert np.abs(np.array(region.xyxy) - xyxy).max() <= tol and region.score == pytest.approx(score, abs=1e-6)
        assert region.label == label


@pytest.mark.parametrize("size", [(640, 640), (256, 416)], ids=["square", "rectangular"])
def test_raw_v8_head_policy(tmp_path, size):
    rows = [(to_input(b, FRAME, size), s) for b, s in POLICY_ROWS]
    det = OnnxDetector(make_detector(tmp_path / "v8.onnx", v8_output(rows), [1, 3, *size], {"names": COCO}),
                       device="cpu")
    check(det([np.zeros((*FRAME, 3), np.uint8)])[0], KEPT, tol=1e-3 / min(size[0] / 480, size[1] / 640) + 1e-3)


def test_raw_v5_head_uses_objectness(tmp_path):
    size = (320, 320)
    out = np.zeros((1, 200, 85), np.float32)  # no names: N, the longer axis, tells the layout
    for i, (box, obj, scores) in enumerate([(A, 0.5, {2: 0.9}),               # 0.45: kept
                                            ((300, 200, 400, 300), 0.2, {2: 1.0}),  # objectness <= conf: out
                                            ((400, 100, 500, 160), 0.9, {7: 0.5})]):  # 0.45: kept
        x1, y1, x2, y2 = to_input(box, FRAME, size)
        out[0, i, :5] = [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, obj]
        for c, s in scores.items():
            out[0, i, 5 + c] = s
    det = OnnxDetector(make_detector(tmp_path / "v5.onnx", out, [1, 3, *size]), device="cpu")  # no metadata
    check(det([np.zeros((*FRAME, 3), np.uint8)])[0], [(A, 0.45, "car"), ((400, 100, 500, 160), 0.45, "truck")],
          tol=0.01)


def test_end_to_end_output_filters_classes_and_max_det(tmp_path):
    size = (320, 320)
    out = np.zeros((1, 300, 6), np.float32)
    boxes = [(A, 0.9, 2), ((300, 200, 400, 300), 0.95, 0), ((10, 10, 60, 60), 0.3, 7), ((20, 300, 90, 360), 0.2, 2)]
    for i, (box, score, cls) in enumerate(boxes):
        out[0, i] = [*to_input(box, FRAME, size), score, cls]
    path = make_detector(tmp_path / "e2e.onnx", out, [1, 3, *size], {"names": COCO, "end2end": True})
    check(OnnxDetector(path, device="cpu")([np.zeros((*FRAME, 3), np.uint8)])[0],
          [(A, 0.9, "car"), ((10, 10, 60, 60), 0.3, "truck")], tol=0.01)
    one = OnnxDetector(path, device="cpu", max_det=1)([np.zeros((*FRAME, 3), np.uint8)])[0]
    assert len(one) == 1 and one[0].label == "car"  # max_det counts after the class filter, as Ultralytics'


def test_vehicle_classes_by_name_from_metadata(tmp_path):
    names = {0: "person", 1: "car", 2: "tree"}  # a custom model: its "car" is not COCO's index 2
    size = (320, 320)
    rows = [(to_input(A, FRAME, size), {1: 0.9}), (to_input((300, 200, 400, 300), FRAME, size), {2: 0.9})]
    det = OnnxDetector(make_detector(tmp_path / "c.onnx", v8_output(rows, nc=3), [1, 3, *size], {"names": names}),
                       device="cpu")
    check(det([np.zeros((*FRAME, 3), np.uint8)])[0], [(A, 0.9, "car")], tol=0.01)
    assert [r.label for r in OnnxDetector(det.path, classes=["tree"], device="cpu")(
        [np.zeros((*FRAME, 3), np.uint8)])[0]] == ["tree"]
    with pytest.raises(FogreidError, match="none of the classes"):
        OnnxDetector(det.path, classes=["bicycle"], device="cpu")


def test_dynamic_input_size_from_metadata_and_batches(tmp_path):
    """Dynamic batch and size: imgsz from metadata, Ultralytics' minimal (stride-multiple) letterbox,
    and several frames of a batch each get their own boxes."""
    shift = np.zeros((1, 84, 64), np.float32)
    shift[0, 0, 0] = 255.0  # box 0 moves right by the image's mean pixel value
    # 480x640 into 320: scale 0.5, 240 rows padded to a multiple of 32 -> a 256 x 320 input, pad 8 on top
    out = v8_output([((50, 8 + 50, 100, 8 + 100), {2: 0.9})])
    path = make_detector(tmp_path / "dyn.onnx", out, ["batch", 3, "height", "width"],
                         {"names": COCO, "imgsz": [320, 320], "stride": 32}, shift=shift)
    det = OnnxDetector(path, device="cpu")
    assert det.size == (320, 320) and det.batch is None
    frames = [np.full((*FRAME, 3), v, np.uint8) for v in (0, 10, 20)]
    found = det(frames)
    for v, regions in zip((0, 10, 20), found, strict=True):
        # in the 256-row letterboxed input the mean is (240 * v + 16 * 114) / 256; x moves by that, x2 by it
        mean = (240 * v + 16 * 114) / 256
        assert len(regions) == 1
        assert np.allclose(regions[0].xyxy, [(50 + mean) * 2, 100, (100 + mean) * 2, 200], atol=0.05)
    assert letterbox(frames[0], (320, 320), auto=True).shape == (256, 320, 3)


def test_fixed_batch_of_four_runs_any_number_of_frames(tmp_path):
    shift = np.zeros((1, 84, 64), np.float32)
    shift[0, 0, 0] = 255.0
    size = (320, 320)
    out = v8_output([(to_input((100, 100, 200, 200), (320, 320), size), {2: 0.9})])
    det = OnnxDetector(make_detector(tmp_path / "b4.onnx", out, [4, 3, *size], {"names": COCO}, shift=shift),
                       device="cpu")
    assert det.batch == 4
    values = [0, 5, 10, 15, 20, 25]
    found = det([np.full((320, 320, 3), v, np.uint8) for v in values])
    assert [r[0].xyxy[0] for r in found] == pytest.approx([100 + v for v in values], abs=0.05)


def test_clear_errors_name_the_shape(tmp_path):
    bad = make_detector(tmp_path / "bad.onnx", np.zeros((1, 7, 3), np.float32), [1, 3, 64, 64])
    with pytest.raises(FogreidError, match=r"output shape \(1, 7, 3\)"):
        OnnxDetector(bad, device="cpu")([np.zeros((64, 64, 3), np.uint8)])
    dyn = make_detector(tmp_path / "dyn.onnx", np.zeros((1, 84, 64), np.float32), [1, 3, "h", "w"])
    with pytest.raises(FogreidError, match="no fixed size and no `imgsz` metadata; pass --det-imgsz"):
        OnnxDetector(dyn, device="cpu")
    assert OnnxDetector(dyn, imgsz=(320, 320), device="cpu").size == (320, 320)

"""The fog gate of `fogreid run --defog auto`: fog density per frame (dark channel prior) on a
generated city with a clear and a dense-fog camera, and the run itself: the same events whatever
the gate decides, the clear camera's saved view left as it is, the foggy one's defogged."""

import importlib.util
import json
import subprocess

import cv2
import numpy as np
import pytest

from fogreid.data.synth_video import CityConfig, make_city
from fogreid.runtime.fog_gate import DEFAULT_THRESHOLD, FogGate, fog_density

CITY = CityConfig(cameras=2, vehicles=3, seconds=3.0, fps=8.0, height=144, width=256, fog=(0.0, 3.5),
                  cross=(1.0, 1.5), transit=(0.2, 0.5))


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    return make_city(tmp_path_factory.mktemp("gate_city"), CITY)


def frames(video) -> list[np.ndarray]:
    capture, out = cv2.VideoCapture(str(video)), []
    while True:
        ok, frame = capture.read()
        if not ok:
            return out
        out.append(frame)


def test_density_separates_a_clear_camera_from_a_foggy_one(city):
    clear, foggy = ([fog_density(f) for f in frames(v)] for v in city["videos"])
    assert max(clear) < DEFAULT_THRESHOLD < min(foggy), (min(clear), max(clear), min(foggy), max(foggy))
    assert fog_density(np.zeros((48, 64, 3), np.uint8)) < 0.2     # black: no airlight, no fog
    assert fog_density(np.full((48, 64, 3), 200, np.uint8)) > 0.9  # a flat grey wall of fog


def test_gate_follows_each_source_and_does_not_flicker():
    gate, clear, fog = FogGate("auto", 0.5), np.zeros((48, 64, 3), np.uint8), np.full((48, 64, 3), 200, np.uint8)
    assert [gate.foggy("a", clear) for _ in range(3)] == [False] * 3
    assert [gate.foggy("b", fog) for _ in range(3)] == [True] * 3
    # One foggy-looking frame on the clear source moves its running mean by a fifth: no switch.
    assert gate.foggy("a", fog) is False and gate.foggy("a", clear) is False
    assert gate.frames == {"foggy": 3, "clear": 5}
    assert "3 of 8 frames defogged" in gate.describe()
    assert FogGate("never").foggy("b", fog) is False and FogGate("always").foggy("a", clear) is True
    with pytest.raises(ValueError, match="defog mode"):
        FogGate("sometimes")


def test_auto_keeps_the_events_and_defogs_only_the_foggy_camera(exported, city, tmp_path, fogreid_cmd):
    _, result = exported
    out = {}
    for mode in ("auto", "always", "never"):
        folder = tmp_path / mode
        cmd = fogreid_cmd + ["run", "--model", str(result.files["onnx"]), "--backend", "onnxruntime",
                             "--source", *map(str, city["videos"]), "--detections", *map(str, city["det"]),
                             "--fps", "8", "--events", str(folder / "events.jsonl"),
                             "--save-video", str(folder / "view.mp4"), "--defog-view", "frame", "--defog", mode]
        folder.mkdir()
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        stats = json.loads(done.stdout.strip().splitlines()[-1])
        events = [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]
        for event in events:
            event.pop("time", None)
        out[mode] = stats, events, [frames(folder / f"view_{i}.mp4") for i in range(2)], done.stderr
    frames_per_camera = len(out["auto"][2][0])
    assert out["auto"][0]["clear_views"] == frames_per_camera          # the clear camera, every frame
    assert out["always"][0]["clear_views"] == 0 and out["never"][0]["clear_views"] == 2 * frames_per_camera
    assert "defog auto" in out["auto"][3] and f"{frames_per_camera} of {2 * frames_per_camera} frames" in out["auto"][3]
    # Matches do not depend on the view: the same detections, tracks, global ids and matches in every mode.
    assert out["auto"][1] == out["always"][1] == out["never"][1] and out["auto"][1]
    # The clear camera is shown as in `never`, the foggy one as in `always` (same encoder input, same bytes).
    auto, always, never = (out[m][2] for m in ("auto", "always", "never"))
    assert all(np.array_equal(a, n) for a, n in zip(auto[0], never[0], strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(auto[1], always[1], strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(always[1], never[1], strict=True))


def test_defog_options_need_a_defog_view(exported, city, fogreid_cmd, tmp_path):
    _, result = exported
    base = fogreid_cmd + ["run", "--model", str(result.files["onnx"]), "--source", str(city["videos"][0])]
    for extra, says in ((["--defog", "never"], "add --defog-view"),
                        (["--fog-threshold", "0.5", "--embed-defogged", "never"], "--fog-threshold is for"),
                        (["--save-video", str(tmp_path / "v.mp4"), "--defog-view", "--defog", "always",
                          "--embed-defogged", "always", "--fog-threshold", "0.5"], "--fog-threshold is for"),
                        (["--save-video", str(tmp_path / "v.mp4"), "--defog-view", "--fog-threshold", "nan"],
                         "--fog-threshold")):
        done = subprocess.run(base + extra, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and says in done.stderr and "Traceback" not in done.stderr, done.stderr


class Embeddings:
    """A publisher that keeps each detection's embedding, per camera and frame."""

    def __init__(self):
        self.rows = {}

    def __call__(self, event, embedding):
        if event["event"] == "detection":
            self.rows[event["source"], event["frame"], tuple(event["box"])] = embedding

    def flush(self):
        pass


class CountingModel:
    """The deployed model, counting the crops it is called on."""

    def __init__(self, model):
        self.model, self.imgsz, self.crops = model, model.imgsz, 0

    def __call__(self, crops):
        self.crops += len(crops)
        return self.model(crops)


def test_embed_defogged_on_the_foggy_camera_only(exported, city):
    from fogreid.runtime.backends import load_deployed
    from fogreid.runtime.pipeline import RunOptions, run_stream
    from fogreid.runtime.regions import PublicDetections
    from fogreid.runtime.tracking import TrackingConfig

    _, result = exported
    videos, dets = list(map(str, city["videos"])), list(map(str, city["det"]))
    runs = {}
    with load_deployed(result.files["onnx"], "onnxruntime") as model:
        for mode in ("never", "always", "auto"):
            counted, seen = CountingModel(model), Embeddings()
            run_stream(counted, RunOptions(videos, PublicDetections(dets, videos), tracking=TrackingConfig(fps=8),
                                           publish=seen, embed_defogged=mode, stats_every=1e9))
            runs[mode] = seen.rows, counted.crops
        crops = {m: n for m, (_, n) in runs.items()}
        never, always, auto = (runs[m][0] for m in ("never", "always", "auto"))
        assert never.keys() == always.keys() == auto.keys() and never
        clear, foggy = videos
        for key in never:
            same_as = never if key[0] == clear else always          # auto: a second pass where there is fog
            assert np.array_equal(auto[key], same_as[key]), key
            if key[0] == foggy:
                assert not np.allclose(always[key], never[key], atol=1e-3)
        assert crops["always"] == 2 * crops["never"] and crops["never"] < crops["auto"] < crops["always"]
        # The second pass is the model on its own defogged crop.
        key = next(k for k in never if k[0] == foggy)
        frame = frames(foggy)[key[1]]
        x1, y1, x2, y2 = key[2]
        from fogreid.data.image_io import resize_for_model

        defogged, _ = model(resize_for_model(frame[y1:y2, x1:x2], model.imgsz)[None])
        assert np.allclose(model(defogged)[1][0], always[key], atol=1e-4)


def test_the_cut_embedder_defogs_only_the_foggy_crops(exported, city):
    """`fogreid run`'s default (--embed-defogged auto, no view): the graph cut down to its
    embedding for every crop, the whole graph only to defog the foggy camera's crops; the same
    embeddings as the whole graph alone."""
    from fogreid.runtime.backends import load_deployed
    from fogreid.runtime.pipeline import RunOptions, run_stream
    from fogreid.runtime.regions import PublicDetections
    from fogreid.runtime.tracking import TrackingConfig

    _, result = exported
    videos, dets = list(map(str, city["videos"])), list(map(str, city["det"]))

    def options(seen):
        return RunOptions(videos, PublicDetections(dets, videos), tracking=TrackingConfig(fps=8), publish=seen,
                          embed_defogged="auto", stats_every=1e9)

    onnx = result.files["onnx"]
    with (load_deployed(onnx, "onnxruntime") as whole,
          load_deployed(onnx, "onnxruntime", embedding_only=True) as cut,
          load_deployed(onnx, "onnxruntime", defogged_only=True) as defog):
        one, alone = Embeddings(), CountingModel(whole)
        stats_one = run_stream(alone, options(one))
        two, defogging, embedding = Embeddings(), CountingModel(whole), CountingModel(cut)
        stats_two = run_stream(defogging, options(two), embedder=embedding)
        three = Embeddings()   # as `fogreid run` loads it: the graph cut down to each output
        run_stream(defog, options(three), embedder=cut)
        crops = np.random.default_rng(0).integers(0, 256, (3, *whole.imgsz, 3), dtype=np.uint8)
        defogged, none = defog(crops)
        assert none is None and np.array_equal(defogged, whole(crops)[0])
        with load_deployed(onnx, "openvino", defogged_only=True) as defog_openvino:
            assert np.abs(defog_openvino(crops)[0].astype(int) - defogged).max() <= 1
        with pytest.raises(ValueError, match="defogged_only"):
            run_stream(defog, options(Embeddings()))
    assert one.rows.keys() == two.rows.keys() == three.rows.keys() and one.rows
    for key in one.rows:
        assert np.allclose(one.rows[key], two.rows[key], atol=1e-5), key
        assert np.allclose(one.rows[key], three.rows[key], atol=1e-5), key
    foggy_crops = sum(1 for key in one.rows if key[0] == videos[1])
    assert stats_one.defogged_embeddings == stats_two.defogged_embeddings == foggy_crops > 0
    # The whole graph ran on the foggy crops only; the cut one on every crop (the foggy ones defogged).
    assert defogging.crops == foggy_crops and embedding.crops == stats_two.crops
    with pytest.raises(ValueError, match="cuts_for_embedding"):
        run_stream(whole, RunOptions(videos, PublicDetections(dets, videos), embed_defogged="always"), embedder=cut)


def test_run_embeds_defogged_crops_by_default_without_a_gallery(exported, city, fogreid_cmd):
    from fogreid.runtime.pipeline import default_embed_defogged

    assert default_embed_defogged(None) == "auto" and default_embed_defogged(object()) == "never"
    _, result = exported
    done = subprocess.run(fogreid_cmd + ["run", "--model", str(result.files["onnx"]),
                                         "--source", *map(str, city["videos"]), "--detections",
                                         *map(str, city["det"]), "--fps", "8"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout.strip().splitlines()[-1])
    assert 0 < stats["defogged_embeddings"] < stats["crops"], stats
    assert "cut down to its defogged output" in done.stderr and "cut down to its embedding" in done.stderr
    if importlib.util.find_spec("openvino") is not None:   # --backend auto measured each graph, and says which
        choices = [line.split(":")[0] for line in done.stderr.splitlines() if line.startswith("backend auto")]
        assert sorted(choices) == ["backend auto (defogged image only)", "backend auto (embedding only)"], choices

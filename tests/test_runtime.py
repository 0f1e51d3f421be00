"""The runtime with real components: OpenCV-written videos, an ffmpeg stream on loopback,
ONNX Runtime models, a detector made here, and the fogreid run command under SIGTERM."""

import json
import shutil
import signal
import socket
import subprocess
import time

import numpy as np
import pytest

from fogreid.data.synth_video import make_video
from fogreid.errors import FogreidError
from fogreid.runtime.backends import load_deployed
from fogreid.runtime.gallery import Gallery, build_gallery
from fogreid.runtime.pipeline import RunOptions, run_stream
from fogreid.runtime.regions import FixedRegions
from fogreid.runtime.sources import SourceReader, parse_source

from conftest import SMALL

FFMPEG = shutil.which("ffmpeg")


@pytest.fixture(scope="module")
def video(trained, tmp_path_factory):
    _, ids = trained
    return make_video(tmp_path_factory.mktemp("video"), SMALL, ids[:8], frames=60, hold=15)


@pytest.fixture(scope="module")
def onnx_model(trained, tmp_path_factory):
    from fogreid.export.exporter import ExportOptions, export
    from fogreid.export.formats import parse_formats

    ckpt, _ = trained
    return export(ckpt, parse_formats("onnx"), tmp_path_factory.mktemp("rt_export"),
                  ExportOptions(progress=False)).files["onnx"]


def accuracy(events_path, video):
    truth = json.loads((video["video"].parent / "truth.json").read_text())
    events = [json.loads(line) for line in events_path.read_text().splitlines()]
    assert all(e["event"] == "detection" and e["track_id"] is None for e in events)  # fixed regions: no tracks
    right = sum(e["match"] is not None
                and e["match"]["id"] == str(truth["ids"][e["frame"]][truth["rois"].index(e["box"])])
                for e in events)
    return events, right / max(len(events), 1)


def test_video_with_gallery_finds_the_right_vehicles(onnx_model, video, tmp_path):
    with load_deployed(onnx_model) as model:
        gallery = build_gallery(model, video["gallery"], progress=False)
        gallery.save(tmp_path / "g.npz")
        opts = RunOptions([str(video["video"])], FixedRegions(video["rois"]), Gallery.load(tmp_path / "g.npz"),
                          events=tmp_path / "events.jsonl", save_video=tmp_path / "out.mp4", defog_view=True,
                          min_score=0.0)
        stats = run_stream(model, opts)
        # a gallery of images embedded as given never meets defogged-crop embeddings
        with pytest.raises(ValueError, match="--embed-defogged never with --gallery"):
            run_stream(model, RunOptions(opts.sources, opts.regions, opts.gallery, embed_defogged="auto"))
    assert stats.frames == 60 and stats.crops == 240 and stats.dropped == 0  # a file drops nothing
    events, right = accuracy(tmp_path / "events.jsonl", video)
    print(f"\nright identity for {right:.0%} of {len(events)} crops")
    assert len(events) == 240 and right >= 0.6
    import cv2

    written = cv2.VideoCapture(str(tmp_path / "out.mp4"))
    assert int(written.get(cv2.CAP_PROP_FRAME_COUNT)) == 60 and written.read()[1].shape == (480, 640, 3)


def test_checkpoint_and_onnx_backends_agree(trained, onnx_model):
    ckpt, _ = trained
    frames = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    with load_deployed(ckpt) as a, load_deployed(onnx_model) as b:
        (da, ea), (db, eb) = a(frames), b(frames)
        assert a.imgsz == b.imgsz == (64, 64)
        assert (ea * eb).sum(axis=1).min() > 0.9999 and np.abs(da.astype(int) - db.astype(int)).max() <= 1
        with pytest.raises(FogreidError, match=r"expected uint8 crops \(B, 64, 64, 3\)"):
            b(frames.astype(np.float32))


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_embedding_only_skips_the_defog_head_and_changes_no_embedding(onnx_model, video, engine, tmp_path):
    """A run that never looks at the defogged crops loads the graph cut down to its embedding
    (`fogreid run` does so): the same embeddings to the bit, the same events, and a run that
    pastes defogged crops is refused such a model rather than drawing nothing."""
    crops = np.random.default_rng(1).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    with load_deployed(onnx_model, engine) as full, load_deployed(onnx_model, engine, embedding_only=True) as cut:
        (d_full, e_full), (d_cut, e_cut) = full(crops), cut(crops)
        assert d_full.shape == (5, 64, 64, 3) and d_cut is None
        np.testing.assert_array_equal(e_cut, e_full)
        gallery = build_gallery(full, video["gallery"], progress=False)
        runs = {}
        for name, model in (("full", full), ("cut", cut)):
            opts = RunOptions([str(video["video"])], FixedRegions(video["rois"]), gallery,
                              events=tmp_path / f"{name}.jsonl", save_video=tmp_path / f"{name}.mp4", min_score=0.0)
            runs[name] = run_stream(model, opts)
        with pytest.raises(ValueError, match="embedding_only"):
            run_stream(cut, RunOptions(opts.sources, opts.regions, save_video=tmp_path / "v.mp4", defog_view=True))
        runner = cut.runner   # only the embedding output exists in the engine
        assert len(runner.sess.get_outputs() if engine == "onnxruntime" else runner.compiled.outputs) == 1
    assert runs["cut"].crops == runs["full"].crops == 240
    events = {name: [{k: v for k, v in json.loads(line).items() if k != "time"}
                     for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()] for name in runs}
    assert len(events["cut"]) == 240 and events["cut"] == events["full"]   # matches and scores included


def test_folder_source_and_bad_sources(video, tmp_path):
    folder = tmp_path / "frames"
    for pid in sorted((video["gallery"]).iterdir())[:3]:
        shutil.copytree(pid, folder, dirs_exist_ok=True)
    reader = SourceReader(parse_source(str(folder)), queue_size=2)
    reader.start()
    got = []
    while not reader.exhausted:
        frame = reader.take(0.2)
        if frame is not None:
            got.append(frame.index)
    assert got == list(range(len(list(folder.iterdir()))))
    assert "nvarguscamerasrc sensor-id=1" in parse_source("csi:1:1280x720@60").target
    with pytest.raises(FogreidError, match="no such file or folder"):
        parse_source(str(tmp_path / "missing.mp4"))
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("not a video")
    with pytest.raises(FogreidError, match="is a text file, not a video"):   # refused before any thread starts
        parse_source(str(not_video))
    not_video.write_bytes(bytes(range(256)) * 64)   # binary garbage: only the decoder can tell
    reader = SourceReader(parse_source(str(not_video)))
    reader.run()
    assert "cannot open or read" in reader.error


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(video_path, port):
    return subprocess.Popen([FFMPEG, "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", str(video_path),
                             "-c:v", "mpeg4", "-q:v", "5", "-f", "mpegts", "-listen", "1", f"http://127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.mark.skipif(FFMPEG is None, reason="ffmpeg is not installed (.ci/run installs Debian's package)")
def test_live_stream_drops_oldest_and_reconnects(video):
    port = free_port()
    server = serve(video["video"], port)
    reader = SourceReader(parse_source(f"http://127.0.0.1:{port}"), queue_size=3, backoff=(0.2, 1.0))
    try:
        time.sleep(0.5)
        reader.start()
        first = []
        deadline = time.time() + 20
        while len(first) < 15 and time.time() < deadline:
            frame = reader.take(0.2)
            if frame is not None:
                first.append(frame)
                time.sleep(0.1)  # a consumer slower than 25 fps: the queue drops the oldest
        assert len(first) == 15 and reader.dropped > 0
        server.kill()
        server.wait()
        time.sleep(1.5)
        server = serve(video["video"], port)  # the camera comes back
        seen = len(first)
        deadline = time.time() + 30
        while reader.reconnects == 0 or reader.read <= seen + 10:
            reader.take(0.2)
            assert time.time() < deadline, f"no reconnect: read {reader.read}, reconnects {reader.reconnects}"
        assert reader.reconnects >= 1
    finally:
        reader.stop_event.set()
        server.kill()
        reader.join(timeout=10)
    assert not reader.is_alive()


@pytest.mark.skipif(FFMPEG is None, reason="ffmpeg is not installed (.ci/run installs Debian's package)")
def test_sigterm_flushes_events_and_video(fogreid_cmd, onnx_model, video, tmp_path):
    port = free_port()
    server = serve(video["video"], port)
    events, out = tmp_path / "events.jsonl", tmp_path / "live.mp4"
    try:
        time.sleep(0.5)
        run = subprocess.Popen(fogreid_cmd + ["run", "--model", str(onnx_model), "--source", f"http://127.0.0.1:{port}",
                                              "--rois", str(video["rois"]), "--events", str(events),
                                              "--save-video", str(out)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 60
        while not (events.exists() and len(events.read_text().splitlines()) >= 40):
            assert run.poll() is None and time.time() < deadline, run.stderr.read() if run.poll() is not None else ""
            time.sleep(0.2)
        run.send_signal(signal.SIGTERM)
        stdout, stderr = run.communicate(timeout=30)
    finally:
        server.kill()
    assert run.returncode == 0, stderr
    stats = json.loads(stdout.strip().splitlines()[-1])
    lines = events.read_text().splitlines()
    assert all(json.loads(line)["source"].startswith("http://") for line in lines)  # every line complete
    assert len(lines) == 4 * stats["frames"]
    import cv2

    assert int(cv2.VideoCapture(str(out)).get(cv2.CAP_PROP_FRAME_COUNT)) == stats["frames"] > 0


def test_gallery_from_another_model_is_refused(onnx_model, video, tmp_path):
    gallery = Gallery(np.ones((2, 128), np.float32) / np.sqrt(128), ["a", "b"], ["x", "y"],
                      {"name": "other", "input_size": [64, 64], "embedding_dim": 128})
    gallery.save(tmp_path / "other.npz")
    with load_deployed(onnx_model) as model:
        opts = RunOptions([str(video["video"])], FixedRegions(video["rois"]), Gallery.load(tmp_path / "other.npz"))
        with pytest.raises(FogreidError, match="rebuild the gallery with this model"):
            run_stream(model, opts)


def test_doctor_and_bench(fogreid_cmd, onnx_model):
    doctor = subprocess.run(fogreid_cmd + ["doctor"], capture_output=True, text=True, check=True).stdout
    assert "CPUExecutionProvider" in doctor.split("providers that create a session:")[1].split("\n")[0]
    assert "FFMPEG" in doctor
    bench = subprocess.run(fogreid_cmd + ["bench", "--model", str(onnx_model), "--batch", "1,4", "--seconds", "0.3"],
                           capture_output=True, text=True, check=True).stdout
    rows = [line.split() for line in bench.splitlines() if line.strip() and line.split()[0] in ("1", "4")]
    assert len(rows) == 2 and all(float(r[1]) > 0 for r in rows)


def test_first_event_is_quick_and_torch_is_never_imported(onnx_model, video, tmp_path):
    """The ONNX path (sources, regions, ONNX Runtime, events) must not import torch: it costs seconds."""
    import sys

    events = tmp_path / "events.jsonl"
    code = ("import sys, json; from fogreid.cli import main; "
            f"rc = main(['run', '--model', {str(onnx_model)!r}, '--source', {str(video['video'])!r}, '--rois', "
            f"{str(video['rois'])!r}, '--events', {str(events)!r}, '--max-frames', '5']); "
            "print('TORCH', 'torch' in sys.modules); sys.exit(rc)")
    started = time.perf_counter()
    run = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not (events.exists() and events.read_text()) and run.poll() is None:
        time.sleep(0.01)
    first = time.perf_counter() - started
    stdout, stderr = run.communicate(timeout=120)
    assert run.returncode == 0, stderr
    assert "TORCH False" in stdout
    stats = json.loads(stdout.splitlines()[-2])
    print(f"\nfirst event {first:.2f} s after the process started ({stats['first_event_s']} s after the pipeline did)")
    assert first < 20  # 2 s on an idle machine (README); shared CI machines are slower


def test_silent_source_is_reported_not_ignored(fogreid_cmd, onnx_model, tmp_path):
    port = free_port()  # nothing listens there: every open fails
    run = subprocess.run(fogreid_cmd + ["run", "--model", str(onnx_model), "--source", f"http://127.0.0.1:{port}",
                                        "--stall-seconds", "1", "--max-backoff", "0.5", "--max-retries", "6"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert f"source http://127.0.0.1:{port}: no frame for" in run.stderr and "retrying" in run.stderr
    stats = json.loads(run.stdout.strip().splitlines()[-1])
    assert stats["stalled"] == [f"http://127.0.0.1:{port}"] and stats["frames"] == 0 and stats["errors"]


def test_rtsp_transport_reaches_opencv(monkeypatch):
    import os

    from fogreid.runtime.sources import set_rtsp_transport

    monkeypatch.setenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp|stimeout;5000000")
    set_rtsp_transport("udp")
    assert os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] == "rtsp_transport;udp|stimeout;5000000"
    with pytest.raises(FogreidError, match="choose tcp or udp"):
        set_rtsp_transport("http")

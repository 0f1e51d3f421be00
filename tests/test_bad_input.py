"""A user's mistakes, tried on every verb as a newcomer would make them.

Each case runs the command line in-process (`fogreid.cli.main`) and asserts what the user
sees: exit 2 for a mistake of theirs, 1 for a machine that cannot serve the request; one or
two lines on stderr that name the option or file (and no traceback); nothing left at the
output path the command was asked to write; and an answer within 15 s (most cases answer
before any heavy import). The shared fixtures (one small checkpoint, its ONNX export, a
short video) are built once per session.
"""

from __future__ import annotations

import json
import os
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from fogreid.cli import main

SIZE = 64


@dataclass
class Files:
    root: Path
    ckpt: Path
    onnx: Path
    empty: Path
    text: Path
    images: Path
    video: Path
    gallery: Path
    data: Path


@pytest.fixture(scope="session")
def files(tmp_path_factory) -> Files:
    import cv2
    import torch

    from fogreid.export import ExportOptions, export, parse_formats
    from fogreid.model import build_sjdl, preset, save_checkpoint

    root = tmp_path_factory.mktemp("bad_input")
    torch.manual_seed(0)
    ckpt = root / "edge.pt"
    save_checkpoint(ckpt, build_sjdl(preset("edge", input_size=(SIZE, SIZE), num_ids=4)).eval())
    onnx = export(ckpt, parse_formats("onnx"), root / "deploy", ExportOptions(progress=False)).files["onnx"]
    (root / "empty.pt").write_bytes(b"")
    (root / "notes.txt").write_text("not a model\n")
    images = root / "images" / "car1"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(16):  # the fewest INT8 calibration takes
        cv2.imwrite(str(images / f"{i}.jpg"), rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    video = root / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (96, 64))
    for i in range(20):
        writer.write(np.full((64, 96, 3), 10 * i, np.uint8))
    writer.release()
    from fogreid.runtime import build_gallery, load_model

    with load_model(onnx) as model:
        build_gallery(model, images.parent, progress=False).save(root / "gallery.npz")
    data = root / "data"
    (data / "FVRID_syn").mkdir(parents=True)
    return Files(root, ckpt, onnx, root / "empty.pt", root / "notes.txt", images.parent, video,
                 root / "gallery.npz", data)


@dataclass
class Case:
    argv: list[str]
    code: int = 2
    says: tuple[str, ...] = ()          # each must appear on stderr (an option or a file name)
    absent: tuple[str, ...] = ()        # output paths that must not exist afterwards
    setup: object = None                # f(files, tmp) run first
    keep: tuple[str, ...] = field(default=())  # paths whose content must be unchanged


def t(*argv: str, code: int = 2, says=(), absent=(), setup=None, keep=()) -> Case:
    return Case(list(argv), code, tuple([says] if isinstance(says, str) else says), tuple(absent), setup, tuple(keep))


# {ckpt} {onnx} {empty} {text} {images} {video} {gallery} {data}: the shared files; {tmp}: a fresh folder.
CASES = {
    # ---------------------------------------------------------------- train
    "train-ids-per-batch-0": t("train", "--data", "{data}", "--out", "{tmp}/run", "--ids-per-batch", "0",
                               says="--ids-per-batch", absent=["{tmp}/run"]),
    "train-instances-per-id-0": t("train", "--data", "{data}", "--out", "{tmp}/run", "--instances-per-id", "0",
                                  says="--instances-per-id", absent=["{tmp}/run"]),
    "train-ids-per-batch-1": t("train", "--data", "{data}", "--out", "{tmp}/run", "--ids-per-batch", "1",
                               says="ids-per-batch", absent=["{tmp}/run"]),
    "train-epochs-0": t("train", "--data", "{data}", "--out", "{tmp}/run", "--epochs", "0", says="--epochs",
                        absent=["{tmp}/run"]),
    "train-epochs-negative": t("train", "--data", "{data}", "--out", "{tmp}/run", "--epochs", "-3", says="--epochs",
                               absent=["{tmp}/run"]),
    "train-set-epochs-0": t("train", "--data", "{data}", "--out", "{tmp}/run", "--set", "optim.epochs=0",
                            says="epochs", absent=["{tmp}/run"]),
    "train-no-data": t("train", "--out", "{tmp}/run", says="--data", absent=["{tmp}/run"]),
    "train-data-missing": t("train", "--data", "{tmp}/nowhere", "--out", "{tmp}/run", says="--data",
                            absent=["{tmp}/run"]),
    "train-imgsz-0": t("train", "--data", "{data}", "--out", "{tmp}/run", "--imgsz", "0", says="--imgsz"),
    "train-imgsz-three": t("train", "--data", "{data}", "--out", "{tmp}/run", "--imgsz", "64", "64", "64",
                           says="--imgsz", absent=["{tmp}/run"]),
    "train-set-no-equals": t("train", "--data", "{data}", "--out", "{tmp}/run", "--set", "optim.epochs",
                             says="--set", absent=["{tmp}/run"]),
    "train-set-unknown-key": t("train", "--data", "{data}", "--out", "{tmp}/run", "--set", "optim.epoch=3",
                               says="epoch", absent=["{tmp}/run"]),
    "train-config-missing": t("train", "--data", "{data}", "--out", "{tmp}/run", "--config", "{tmp}/c.yaml",
                              says="c.yaml", absent=["{tmp}/run"]),
    "train-resume-none-yet": t("train", "--data", "{data}", "--out", "{tmp}/run", "--resume", says="--resume",
                               absent=["{tmp}/run"]),
    "train-resume-empty-file": t("train", "--data", "{data}", "--out", "{tmp}/run", "--resume", "{empty}",
                                 says="empty.pt", absent=["{tmp}/run"]),
    "train-stage-without-rvsl": t("train", "--data", "{data}", "--out", "{tmp}/run", "--stage", "2",
                                  says="--stage", absent=["{tmp}/run"]),
    "train-out-is-a-file": t("train", "--data", "{data}", "--out", "{text}", says="notes.txt"),
    "train-into-a-previous-run": t("train", "--data", "{data}", "--out", "{tmp}/run",
                                   says=("--out", "--resume", "--overwrite"), setup=lambda f, tmp: _previous_run(tmp),
                                   keep=["{tmp}/run/last.pt", "{tmp}/run/best.pt", "{tmp}/run/history.jsonl"]),
    "train-resume-and-overwrite": t("train", "--data", "{data}", "--out", "{tmp}/run", "--resume", "--overwrite",
                                    says="--overwrite", setup=lambda f, tmp: _previous_run(tmp),
                                    keep=["{tmp}/run/last.pt", "{tmp}/run/history.jsonl"]),
    "train-locked-out": t("train", "--data", "{data}", "--out", "{tmp}/run", says=("--out", "fogreid train"),
                          setup=lambda f, tmp: _hold_lock(tmp / "run")),
    # ---------------------------------------------------------------- synth
    "synth-ids-0": t("synth", "--out", "{tmp}/d", "--ids", "0", says="--ids", absent=["{tmp}/d"]),
    "synth-ids-2": t("synth", "--out", "{tmp}/d", "--ids", "2", says="--ids", absent=["{tmp}/d"]),
    "synth-cams-0": t("synth", "--out", "{tmp}/d", "--cams", "0", says="--cams", absent=["{tmp}/d"]),
    "synth-per-cam-0": t("synth", "--out", "{tmp}/d", "--per-cam", "0", says="--per-cam", absent=["{tmp}/d"]),
    "synth-size-8": t("synth", "--out", "{tmp}/d", "--size", "8", says="--size", absent=["{tmp}/d"]),
    "synth-queries-too-many": t("synth", "--out", "{tmp}/d", "--cams", "2", "--per-cam", "1", "--queries-per-id", "2",
                                says="--queries-per-id", absent=["{tmp}/d"]),
    "synth-out-is-a-file": t("synth", "--out", "{text}", says="notes.txt"),
    "synth-refuses-real-download": t("synth", "--out", "{tmp}/fvrid", says=("--out", "--overwrite"),
                                     setup=lambda f, tmp: _fake_download(tmp / "fvrid"),
                                     keep=["{tmp}/fvrid/FVRID_syn/train_foggy/0001_c001_1.jpg"]),
    "synth-refuses-foreign-folder": t("synth", "--out", "{tmp}/mine", says=("--out", "thesis.tex"),
                                      setup=lambda f, tmp: _write(tmp / "mine" / "thesis.tex", "draft"),
                                      keep=["{tmp}/mine/thesis.tex"]),
    "synth-seed-not-a-number": t("synth", "--out", "{tmp}/d", "--seed", "x", says="--seed", absent=["{tmp}/d"]),
    # ---------------------------------------------------------------- eval
    "eval-checkpoint-missing": t("eval", "--checkpoint", "{tmp}/nope.pt", "--data", "{data}", says="nope.pt"),
    "eval-checkpoint-zero-bytes": t("eval", "--checkpoint", "{empty}", "--data", "{data}", says="empty.pt"),
    "eval-checkpoint-text": t("eval", "--checkpoint", "{text}", "--data", "{data}", says="notes.txt"),
    "eval-batch-0": t("eval", "--checkpoint", "{ckpt}", "--data", "{data}", "--batch", "0", says="--batch"),
    "eval-data-missing": t("eval", "--checkpoint", "{ckpt}", "--data", "{tmp}/nowhere", says="--data"),
    "eval-dataset-unknown": t("eval", "--checkpoint", "{ckpt}", "--data", "{data}", "--dataset", "market",
                              says="--dataset"),
    # ---------------------------------------------------------------- export
    "export-checkpoint-zero-bytes": t("export", "--checkpoint", "{empty}", "--out", "{tmp}/x", says="empty.pt",
                                      absent=["{tmp}/x"]),
    "export-checkpoint-text": t("export", "--checkpoint", "{text}", "--out", "{tmp}/x", says="notes.txt",
                                absent=["{tmp}/x/model.onnx"]),
    "export-format-unknown": t("export", "--checkpoint", "{ckpt}", "--out", "{tmp}/x", "--format", "tflite",
                               says="--format", absent=["{tmp}/x"]),
    "export-format-typo": t("export", "--checkpoint", "{ckpt}", "--out", "{tmp}/x", "--format", "onx",
                            says=("--format", "onnx"), absent=["{tmp}/x"]),
    "export-int8-no-calib": t("export", "--checkpoint", "{ckpt}", "--out", "{tmp}/x", "--format", "onnx-int8",
                              says="--calib-images", absent=["{tmp}/x/model.onnx"]),
    "export-calib-folder-missing": t("export", "--checkpoint", "{ckpt}", "--out", "{tmp}/x", "--format", "onnx-int8",
                                     "--calib-images", "{tmp}/nocalib", says="--calib-images", absent=["{tmp}/x"]),
    "export-calib-folder-empty": t("export", "--checkpoint", "{ckpt}", "--out", "{tmp}/x", "--format", "onnx-int8",
                                   "--calib-images", "{tmp}", says="no images", absent=["{tmp}/x"]),
    "export-calib-num-0": t("export", "--checkpoint", "{ckpt}", "--out", "{tmp}/x", "--calib-num", "0",
                            says="--calib-num", absent=["{tmp}/x"]),
    "export-batch-backwards": t("export", "--checkpoint", "{ckpt}", "--out", "{tmp}/x", "--batch", "8:1:32",
                                says="--batch", absent=["{tmp}/x"]),
    "export-batch-words": t("export", "--checkpoint", "{ckpt}", "--out", "{tmp}/x", "--batch", "big",
                            says="--batch", absent=["{tmp}/x"]),
    "export-out-is-a-file": t("export", "--checkpoint", "{ckpt}", "--out", "{text}", says="notes.txt"),
    "export-imgsz-0": t("export", "--checkpoint", "{ckpt}", "--out", "{tmp}/x", "--imgsz", "0", says="--imgsz",
                        absent=["{tmp}/x"]),
    "export-workspace-negative": t("export", "--checkpoint", "{ckpt}", "--out", "{tmp}/x", "--workspace", "-1",
                                   says="--workspace", absent=["{tmp}/x"]),
    "export-keep-fp-file-missing": t("export", "--checkpoint", "{ckpt}", "--out", "{tmp}/x", "--keep-fp",
                                     "@{tmp}/keep.txt", says="--keep-fp", absent=["{tmp}/x"]),
    # ---------------------------------------------------------------- calibrate
    "calibrate-onnx-missing": t("calibrate", "--onnx", "{tmp}/m.onnx", "--images", "{images}", "--out", "{tmp}/c",
                                says="m.onnx", absent=["{tmp}/c"]),
    "calibrate-onnx-is-text": t("calibrate", "--onnx", "{text}", "--images", "{images}", "--out", "{tmp}/c",
                                says="notes.txt", absent=["{tmp}/c/model_int8.onnx"]),
    "calibrate-num-0": t("calibrate", "--onnx", "{onnx}", "--images", "{images}", "--out", "{tmp}/c", "--num", "0",
                         says="--num", absent=["{tmp}/c"]),
    "calibrate-images-missing": t("calibrate", "--onnx", "{onnx}", "--images", "{tmp}/none", "--out", "{tmp}/c",
                                  says="--images", absent=["{tmp}/c"]),
    "calibrate-out-is-a-file": t("calibrate", "--onnx", "{onnx}", "--images", "{images}", "--out", "{text}",
                                 says="notes.txt"),
    "calibrate-already-int8": t("calibrate", "--onnx", "{tmp}/model_int8.onnx", "--images", "{images}", "--out",
                                "{tmp}/c", says="model_int8.onnx", setup=lambda f, tmp: _qdq_model(f, tmp),
                                absent=["{tmp}/c/model_int8.onnx"]),
    # ---------------------------------------------------------------- validate
    "validate-checkpoint-missing": t("validate", "--checkpoint", "{tmp}/no.pt", "--model", "{onnx}", "--images",
                                     "{images}", says="no.pt"),
    "validate-model-missing": t("validate", "--checkpoint", "{ckpt}", "--model", "{tmp}/no.onnx", "--images",
                                "{images}", says="no.onnx"),
    "validate-html-is-a-folder": t("validate", "--checkpoint", "{ckpt}", "--model", "{onnx}", "--images", "{images}",
                                   "--html", "{tmp}", says="--html"),
    "validate-html-under-a-file": t("validate", "--checkpoint", "{ckpt}", "--model", "{onnx}", "--images",
                                    "{images}", "--html", "{text}/r.html", says="--html"),
    "validate-report-not-json": t("validate", "--checkpoint", "{ckpt}", "--model", "{onnx}", "--images", "{images}",
                                  "--report", "{tmp}/r.txt", says="--report", absent=["{tmp}/r.txt"]),
    "validate-limit-0": t("validate", "--checkpoint", "{ckpt}", "--model", "{onnx}", "--images", "{images}",
                          "--limit", "0", says="--limit"),
    "validate-threshold-unknown": t("validate", "--checkpoint", "{ckpt}", "--model", "{onnx}", "--images", "{images}",
                                    "--threshold", "cosine=0.9", says="cosine"),
    "validate-threshold-not-number": t("validate", "--checkpoint", "{ckpt}", "--model", "{onnx}", "--images",
                                       "{images}", "--threshold", "cosine_min=high", says="cosine_min"),
    "validate-images-missing": t("validate", "--checkpoint", "{ckpt}", "--model", "{onnx}", "--images", "{tmp}/no",
                                 says="--images"),
    "validate-top-0": t("validate", "--checkpoint", "{ckpt}", "--model", "{onnx}", "--images", "{images}",
                        "--top", "0", says="--top"),
    # ---------------------------------------------------------------- gallery
    "gallery-model-missing": t("gallery", "--model", "{tmp}/no.onnx", "--images", "{images}", "--out", "{tmp}/g.npz",
                               says="no.onnx", absent=["{tmp}/g.npz"]),
    "gallery-images-missing": t("gallery", "--model", "{onnx}", "--images", "{tmp}/none", "--out", "{tmp}/g.npz",
                                says="--images", absent=["{tmp}/g.npz"]),
    "gallery-out-is-a-folder": t("gallery", "--model", "{onnx}", "--images", "{images}", "--out", "{tmp}",
                                 says="--out"),
    "gallery-corrupt-image": t("gallery", "--model", "{onnx}", "--images", "{tmp}/imgs", "--out", "{tmp}/g.npz",
                               says="bad.jpg", setup=lambda f, tmp: _write(tmp / "imgs" / "car" / "bad.jpg", "x"),
                               absent=["{tmp}/g.npz"]),
    "gallery-model-unknown-suffix": t("gallery", "--model", "{text}", "--images", "{images}", "--out", "{tmp}/g.npz",
                                      says="notes.txt", absent=["{tmp}/g.npz"]),
    # ---------------------------------------------------------------- run
    "run-model-missing": t("run", "--model", "{tmp}/no.onnx", "--source", "{video}", says="no.onnx"),
    "run-source-missing": t("run", "--model", "{onnx}", "--source", "{tmp}/no.mp4", says="no.mp4"),
    "run-batch-0": t("run", "--model", "{onnx}", "--source", "{video}", "--batch", "0", says="--batch"),
    "run-top-k-0": t("run", "--model", "{onnx}", "--source", "{video}", "--top-k", "0", says="--top-k"),
    "run-queue-0": t("run", "--model", "{onnx}", "--source", "{video}", "--queue", "0", says="--queue"),
    "run-min-score-5": t("run", "--model", "{onnx}", "--source", "{video}", "--min-score", "5", says="--min-score"),
    "run-max-frames-0": t("run", "--model", "{onnx}", "--source", "{video}", "--max-frames", "0",
                          says="--max-frames"),
    "run-max-retries-negative": t("run", "--model", "{onnx}", "--source", "{video}", "--max-retries", "-1",
                                  says="--max-retries"),
    "run-rois-outside-frame": t("run", "--model", "{onnx}", "--source", "{video}", "--rois", "{tmp}/r.json",
                                says="--rois", setup=lambda f, tmp: _write(tmp / "r.json", "[[500, 500, 600, 600]]")),
    "run-rois-not-json": t("run", "--model", "{onnx}", "--source", "{video}", "--rois", "{text}", says="notes.txt"),
    "run-detector-is-our-model": t("run", "--model", "{onnx}", "--source", "{video}", "--detector", "{onnx}",
                                   says="--detector"),
    "run-detector-is-a-classifier": t("run", "--model", "{onnx}", "--source", "{video}", "--detector",
                                      "{tmp}/cls.onnx", says="--detector",
                                      setup=lambda f, tmp: _classifier(tmp / "cls.onnx")),
    "run-gallery-half-copied": t("run", "--model", "{onnx}", "--source", "{video}", "--gallery", "{tmp}/g.npz",
                                 says="g.npz", setup=lambda f, tmp: _write(
                                     tmp / "g.npz", f.gallery.read_bytes()[: f.gallery.stat().st_size // 2])),
    "run-gallery-text": t("run", "--model", "{onnx}", "--source", "{video}", "--gallery", "{text}",
                          says="notes.txt"),
    "run-save-video-under-a-file": t("run", "--model", "{onnx}", "--source", "{video}", "--save-video",
                                     "{text}/out.mp4", says="--save-video"),
    "run-save-video-folder": t("run", "--model", "{onnx}", "--source", "{video}", "--save-video", "{tmp}",
                               says="--save-video"),
    "run-events-exists": t("run", "--model", "{onnx}", "--source", "{video}", "--events", "{tmp}/e.jsonl",
                           says=("--events", "--overwrite"), setup=lambda f, tmp: _write(tmp / "e.jsonl", '{"a": 1}\n'),
                           keep=["{tmp}/e.jsonl"]),
    "run-events-is-the-saved-video": t("run", "--model", "{onnx}", "--source", "{video}", "--events", "{tmp}/o.mp4",
                                       "--save-video", "{tmp}/o.mp4", says=("--save-video", "--events"),
                                       absent=["{tmp}/o.mp4"]),
    "run-events-folder": t("run", "--model", "{onnx}", "--source", "{video}", "--events", "{tmp}", says="--events"),
    "run-defog-view-without-video": t("run", "--model", "{onnx}", "--source", "{video}", "--defog-view",
                                      says="--save-video"),
    "run-device-cuda-without-cuda": t("run", "--model", "{onnx}", "--source", "{video}", "--device", "cuda",
                                      code=1, says="--device"),
    "run-truncated-video": t("run", "--model", "{onnx}", "--source", "{tmp}/cut.mp4", code=1, says="cut.mp4",
                             setup=lambda f, tmp: _truncated(f.video, tmp / "cut.mp4")),
    "run-dead-stream-bounded": t("run", "--model", "{onnx}", "--source", "rtsp://127.0.0.1:9/x", "--max-retries", "0",
                                 code=1, says="rtsp://127.0.0.1:9/x"),
    "run-dead-stream-gives-up": t("run", "--model", "{onnx}", "--source", "rtsp://127.0.0.1:9/x", "--give-up-after",
                                  "1", code=1, says=("rtsp://127.0.0.1:9/x", "--give-up-after")),
    "run-give-up-after-0": t("run", "--model", "{onnx}", "--source", "{video}", "--give-up-after", "0",
                             says="--give-up-after"),
    "run-det-conf-above-1": t("run", "--model", "{onnx}", "--source", "{video}", "--det-conf", "1.5",
                              says="--det-conf"),
    "run-fps-0": t("run", "--model", "{onnx}", "--source", "{video}", "--fps", "0", says="--fps"),
    # ---------------------------------------------------------------- bench
    "bench-model-missing": t("bench", "--model", "{tmp}/no.onnx", says="no.onnx"),
    "bench-batch-0": t("bench", "--model", "{onnx}", "--batch", "0", says="--batch"),
    "bench-batch-words": t("bench", "--model", "{onnx}", "--batch", "a,b", says="--batch"),
    "bench-seconds-0": t("bench", "--model", "{onnx}", "--seconds", "0", says="--seconds"),
    "bench-warmup-negative": t("bench", "--model", "{onnx}", "--warmup", "-1", says="--warmup"),
    "bench-device-cuda-without-cuda": t("bench", "--model", "{onnx}", "--device", "cuda", code=1, says="--device"),
    # ---------------------------------------------------------------- demo / info
    "demo-out-is-a-file": t("demo", "--out", "{text}", says="notes.txt"),
    "demo-checkpoint-missing": t("demo", "--out", "{tmp}/demo", "--checkpoint", "{tmp}/no.pt", says="no.pt",
                                 absent=["{tmp}/demo"]),
    "demo-checkpoint-zero-bytes": t("demo", "--out", "{tmp}/demo", "--checkpoint", "{empty}", says="empty.pt",
                                    absent=["{tmp}/demo"]),
    "demo-checkpoint-text": t("demo", "--out", "{tmp}/demo", "--checkpoint", "{text}", says="notes.txt",
                              absent=["{tmp}/demo"]),
    "info-checkpoint-zero-bytes": t("info", "--checkpoint", "{empty}", says="empty.pt"),
    "info-checkpoint-text": t("info", "--checkpoint", "{text}", says="notes.txt"),
    "info-imgsz-0": t("info", "--imgsz", "0", says="--imgsz"),
    "info-preset-unknown": t("info", "--preset", "large", says="--preset"),
    # ---------------------------------------------------------------- check / eval-mtmc / synth-video / doctor
    "check-artifact-missing": t("check", "{tmp}/no.onnx", says="no.onnx"),
    "check-checkpoint-not-onnx": t("check", "{ckpt}", says="edge.pt"),
    "eval-mtmc-city-missing": t("eval-mtmc", "--city", "{tmp}/nocity", "--events", "{tmp}/e.jsonl", says="nocity"),
    "synth-video-cameras-0": t("synth-video", "--out", "{tmp}/city", "--cameras", "0", says="--cameras",
                               absent=["{tmp}/city"]),
    "synth-video-out-is-a-file": t("synth-video", "--out", "{text}", "--seconds", "1", says="notes.txt"),
    "doctor-unknown-option": t("doctor", "--json", says="--json"),
    "unknown-verb": t("serve", says="serve"),
    "unknown-option": t("info", "--checkpont", "x.pt", says="--checkpont"),
}


def _previous_run(tmp: Path) -> None:
    for name in ("last.pt", "best.pt"):
        _write(tmp / "run" / name, b"a previous run's checkpoint")
    _write(tmp / "run" / "history.jsonl", '{"epoch": 1}\n')


def _write(path: Path, content) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)


def _fake_download(root: Path) -> None:
    _write(root / "FVRID_syn" / "train_foggy" / "0001_c001_1.jpg", b"\xff\xd8 a real FVRID image \xff\xd9")
    _write(root / "FVRID_real" / "README.txt", "from the authors")


_HELD = []


def _hold_lock(folder: Path) -> None:
    from fogreid.fileio import folder_lock

    lock = folder_lock(folder, "fogreid train")  # as a first run would
    lock.__enter__()
    _HELD.append(lock)


def _qdq_model(f: Files, tmp: Path) -> None:
    from fogreid.calibration import calibrate

    calibrate(f.onnx, [f.images], tmp, num=16, progress=False)


def _classifier(path: Path) -> None:
    import torch

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(4, 10))
    torch.onnx.export(net, torch.zeros(1, 3, 32, 32), str(path), input_names=["images"], dynamo=False)


def _truncated(video: Path, out: Path) -> None:
    """The clip cut at 60 %, as a copy interrupted mid-file leaves it (mp4 index first, as
    `ffmpeg -movflags +faststart` and most cameras write it)."""
    import shutil
    import subprocess

    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("ffmpeg is not installed (apt-get install ffmpeg)")
    full = out.with_name("full.mp4")
    subprocess.run([ffmpeg, "-loglevel", "error", "-y", "-i", str(video), "-c", "copy", "-movflags", "+faststart",
                    str(full)], check=True)
    data = full.read_bytes()
    out.write_bytes(data[: int(len(data) * 0.6)])


def fill(text: str, f: Files, tmp: Path) -> str:
    return text.format(tmp=tmp, **{k: getattr(f, k) for k in ("ckpt", "onnx", "empty", "text", "images", "video",
                                                              "gallery", "data")})


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input(name, files, tmp_path, capsys):
    case = CASES[name]
    if case.setup:
        case.setup(files, tmp_path)
    kept = {p: Path(fill(p, files, tmp_path)).read_bytes() for p in case.keep}
    argv = [fill(a, files, tmp_path) for a in case.argv]
    capsys.readouterr()
    start = time.perf_counter()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    finally:
        while _HELD:
            _HELD.pop().__exit__(None, None, None)
    seconds = time.perf_counter() - start
    err = capsys.readouterr().err
    # Progress ([step] lines, tqdm bars) is not the message; the message is the rest.
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("[") and "%|" not in line]
    assert code == case.code, f"exit {code}, expected {case.code}; stderr:\n{err}"
    assert "Traceback" not in err
    assert 1 <= len(lines) <= 2, f"expected one or two lines on stderr, got:\n{err}"
    for word in case.says:
        assert fill(word, files, tmp_path) in err, f"{word!r} not named in: {err}"
    for path in case.absent:
        assert not Path(fill(path, files, tmp_path)).exists(), f"{path} was left behind"
    for path, content in kept.items():
        assert Path(fill(path, files, tmp_path)).read_bytes() == content, f"{path} was changed"
    assert seconds < 15, f"took {seconds:.1f} s"


# ------------------------------------------------------------------ no output over an input (issue 23)
# Every (verb, output option) with the output set to one of the verb's inputs: refused before any
# work, one line naming the option, and the input byte for byte as it was.
OUTPUT_OVER_INPUT = {
    ("train", "--out"): ["train", "--data", "{data}", "--config", "{text}", "--out", "{text}"],
    ("export", "--out"): ["export", "--checkpoint", "{ckpt}", "--out", "{ckpt}"],
    ("calibrate", "--out"): ["calibrate", "--onnx", "{onnx}", "--images", "{images}", "--out", "{onnx}"],
    ("validate", "--report"): ["validate", "--checkpoint", "{ckpt}", "--model", "{onnx}", "--images", "{images}",
                               "--report", "{ckpt}"],
    ("validate", "--html"): ["validate", "--checkpoint", "{ckpt}", "--model", "{onnx}", "--images", "{images}",
                             "--html", "{onnx}"],
    ("validate", "--per-layer"): ["validate", "--checkpoint", "{ckpt}", "--model", "{tmp}/model_int8.onnx",
                                  "--images", "{images}", "--per-layer", "{ckpt}"],  # an INT8 model, as it needs
    ("gallery", "--out"): ["gallery", "--model", "{onnx}", "--images", "{images}", "--out", "{onnx}"],
    ("run", "--events"): ["run", "--model", "{onnx}", "--source", "{video}", "--gallery", "{gallery}",
                          "--events", "{gallery}"],
    ("run", "--save-video"): ["run", "--model", "{onnx}", "--source", "{video}", "--save-video", "{video}"],
    ("demo", "--out"): ["demo", "--checkpoint", "{ckpt}", "--out", "{ckpt}"],
}
SETUP = {("validate", "--per-layer"): _qdq_model, "validate-per-layer-is-the-model": _qdq_model}  # model_int8.onnx
# More inputs of the same verbs, as a user would mistype them.
MORE_OVER_INPUT = {
    "train-out-is-resume": ["train", "--data", "{data}", "--resume", "{ckpt}", "--out", "{ckpt}"],
    "run-events-is-the-source": ["run", "--model", "{onnx}", "--source", "{video}", "--events", "{video}"],
    "run-events-is-the-model": ["run", "--model", "{onnx}", "--source", "{video}", "--events", "{onnx}"],
    "run-save-video-is-the-second-source": ["run", "--model", "{onnx}", "--source", "{tmp}/in/cam.mp4",
                                            "{tmp}/in/clip_1.mp4", "--save-video", "{tmp}/in/clip.mp4"],
    "run-save-video-through-a-symlink": ["run", "--model", "{onnx}", "--source", "{video}", "--save-video",
                                         "{tmp}/link.mp4"],
    "validate-per-layer-is-the-model": ["validate", "--checkpoint", "{ckpt}", "--model", "{tmp}/model_int8.onnx",
                                        "--images", "{images}", "--per-layer", "{tmp}/model_int8.onnx"],
}
# Output options with nothing to protect: these verbs read no file, or the option is an input.
NO_INPUT = {("synth", "--out"), ("synth-video", "--out"), ("eval-mtmc", "--events")}
OUTPUT_OPTIONS = {"--out", "--events", "--save-video", "--report", "--html", "--per-layer"}


def _own_copies(f: Files, tmp: Path) -> Files:
    """The shared files copied into tmp/in: a case that destroys its input destroys only a copy."""
    import dataclasses
    import shutil

    (tmp / "in").mkdir()
    copies = {k: Path(shutil.copy(getattr(f, k), tmp / "in" / getattr(f, k).name))
              for k in ("ckpt", "onnx", "text", "video", "gallery")}
    shutil.copy(f.video, tmp / "in" / "cam.mp4")
    shutil.copy(f.video, tmp / "in" / "clip_1.mp4")
    (tmp / "link.mp4").symlink_to(copies["video"])
    return dataclasses.replace(f, **copies)


def test_every_output_option_is_in_the_table():
    import argparse

    from fogreid.cli import build_parser

    verbs = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    found = {(name, option) for name, sub in verbs.choices.items() for action in sub._actions
             for option in action.option_strings if option in OUTPUT_OPTIONS}
    assert found - NO_INPUT - set(OUTPUT_OVER_INPUT) == set()


@pytest.mark.parametrize("key", list(OUTPUT_OVER_INPUT) + list(MORE_OVER_INPUT),
                         ids=[" ".join(k) for k in OUTPUT_OVER_INPUT] + list(MORE_OVER_INPUT))
def test_an_output_never_overwrites_an_input(key, files, tmp_path, capsys):
    import hashlib

    own = _own_copies(files, tmp_path)
    if key in SETUP:
        SETUP[key](own, tmp_path)
    argv = OUTPUT_OVER_INPUT.get(key) or MORE_OVER_INPUT[key]
    argv = [fill(a, own, tmp_path) for a in argv]
    inputs = [Path(a) for a in argv if Path(a).is_file()]
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in inputs}
    option = next(a for a in reversed(argv) if a in OUTPUT_OPTIONS)
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, f"exit {code}; stderr:\n{err}"
    assert "Traceback" not in err and option in lines[0] and "choose another" in lines[0], lines[0]
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in inputs} == before


def test_gallery_leaves_a_users_temp_files_alone(files, tmp_path, capsys):
    # Issue 23: `fogreid gallery --out dir/g.npz` deleted the user's 3-hour-old dir/.thesis.draft.tmp.
    draft = tmp_path / "dir" / ".thesis.draft.tmp"
    _write(draft, "three hours of writing")
    os.utime(draft, (time.time() - 3 * 3600,) * 2)
    assert main(["gallery", "--model", str(files.onnx), "--images", str(files.images), "--out",
                 str(tmp_path / "dir" / "g.npz"), "--quiet"]) == 0
    assert draft.read_text() == "three hours of writing" and (tmp_path / "dir" / "g.npz").is_file()


def test_events_are_replaced_with_overwrite_never_appended(files, tmp_path, capsys):
    events = tmp_path / "events.jsonl"
    argv = ["run", "--model", str(files.onnx), "--source", str(files.video), "--events", str(events),
            "--max-frames", "3"]
    assert main(argv) == 0
    first = events.read_text().splitlines()
    assert first and main(argv) == 2 and events.read_text().splitlines() == first  # refused, untouched
    events.write_text('{"a previous run": 1}\n' * 100)
    assert main(argv + ["--overwrite"]) == 0
    again = events.read_text().splitlines()
    assert len(again) == len(first) and all(json.loads(line)["source"] == str(files.video) for line in again)

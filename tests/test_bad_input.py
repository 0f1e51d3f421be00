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
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from fogreid.cli import main

from conftest import Files, free_ports  # noqa: F401  (Files: what the shared `files` fixture holds)

SIZE = 64




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
    "run-source-twice": t("run", "--model", "{onnx}", "--source", "{video}", "{video}", says="given twice"),
    "run-batch-0": t("run", "--model", "{onnx}", "--source", "{video}", "--batch", "0", says="--batch"),
    "run-top-k-0": t("run", "--model", "{onnx}", "--source", "{video}", "--top-k", "0", says="--top-k"),
    "run-queue-0": t("run", "--model", "{onnx}", "--source", "{video}", "--queue", "0", says="--queue"),
    "run-min-score-5": t("run", "--model", "{onnx}", "--source", "{video}", "--min-score", "5", says="--min-score"),
    "run-assoc-threshold-word": t("run", "--model", "{onnx}", "--source", "{video}", "--assoc-threshold", "automatic",
                                  says="--assoc-threshold"),
    "run-gallery-with-defogged-embeddings": t("run", "--model", "{onnx}", "--source", "{video}", "--gallery",
                                              "{gallery}", "--embed-defogged", "auto",
                                              says="--embed-defogged never with --gallery"),
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
    # ---------------------------------------------------------------- numbers out of range (issue 23, item 2):
    # refused while the command line is read, NaN and inf included, the range in the message.
    "synth-seed-negative": t("synth", "--out", "{tmp}/d", "--seed", "-1", says=("--seed", "4294967295"),
                             absent=["{tmp}/d"]),
    "synth-seed-above-32-bits": t("synth", "--out", "{tmp}/d", "--seed", "4294967296", says="--seed",
                                  absent=["{tmp}/d"]),
    "synth-video-seed-negative": t("synth-video", "--out", "{tmp}/city", "--seed", "-1", says="--seed",
                                   absent=["{tmp}/city"]),
    "demo-seed-above-32-bits": t("demo", "--out", "{tmp}/demo", "--seed", str(2**40), says="--seed",
                                 absent=["{tmp}/demo"]),
    "train-seed-negative": t("train", "--data", "{data}", "--out", "{tmp}/run", "--seed", "-1", says="--seed",
                             absent=["{tmp}/run"]),
    "synth-size-huge": t("synth", "--out", "{tmp}/d", "--size", "100000", says=("--size", "4096"),
                         absent=["{tmp}/d"]),
    "synth-video-size-huge": t("synth-video", "--out", "{tmp}/city", "--size", "100000", "100000",
                               says="--size", absent=["{tmp}/city"]),
    "train-imgsz-huge": t("train", "--data", "{data}", "--out", "{tmp}/run", "--imgsz", "100000",
                          says=("--imgsz", "4096"), absent=["{tmp}/run"]),
    "export-imgsz-huge": t("export", "--checkpoint", "{ckpt}", "--out", "{tmp}/x", "--imgsz", "100000",
                           says="--imgsz", absent=["{tmp}/x"]),
    "info-imgsz-huge": t("info", "--imgsz", "100000", says="--imgsz"),
    "run-det-imgsz-huge": t("run", "--model", "{onnx}", "--source", "{video}", "--det-imgsz", "100000",
                            says="--det-imgsz"),
    "eval-batch-huge": t("eval", "--checkpoint", "{ckpt}", "--data", "{data}", "--batch", "100000000",
                         says="--batch"),
    "bench-batch-huge": t("bench", "--model", "{onnx}", "--batch", "1,100000000", says="--batch"),
    "bench-seconds-inf": t("bench", "--model", "{onnx}", "--seconds", "inf", says="--seconds"),  # a hang before
    "bench-seconds-nan": t("bench", "--model", "{onnx}", "--seconds", "nan", says="--seconds"),
    "run-fps-inf": t("run", "--model", "{onnx}", "--source", "{video}", "--fps", "inf", says="--fps"),
    "run-fps-tiny": t("run", "--model", "{onnx}", "--source", "{video}", "--fps", "1e-9", says="--fps"),
    "run-lost-seconds-inf": t("run", "--model", "{onnx}", "--source", "{video}", "--lost-seconds", "inf",
                              says="--lost-seconds"),
    "run-give-up-after-inf": t("run", "--model", "{onnx}", "--source", "{video}", "--give-up-after", "inf",
                               says="--give-up-after"),
    "run-max-gap-nan": t("run", "--model", "{onnx}", "--source", "{video}", "--max-gap", "nan", says="--max-gap"),
    "synth-video-fps-inf": t("synth-video", "--out", "{tmp}/city", "--fps", "inf", says="--fps",
                             absent=["{tmp}/city"]),
    "synth-video-fps-tiny": t("synth-video", "--out", "{tmp}/city", "--fps", "1e-9", says="--fps",
                              absent=["{tmp}/city"]),
    "synth-video-seconds-inf": t("synth-video", "--out", "{tmp}/city", "--seconds", "inf", says="--seconds",
                                 absent=["{tmp}/city"]),
    "synth-video-fog-nan": t("synth-video", "--out", "{tmp}/city", "--fog", "1", "nan", says="--fog",
                             absent=["{tmp}/city"]),
    "synth-video-fog-inf": t("synth-video", "--out", "{tmp}/city", "--fog", "inf", says="--fog",
                             absent=["{tmp}/city"]),
    "export-workspace-inf": t("export", "--checkpoint", "{ckpt}", "--out", "{tmp}/x", "--workspace", "inf",
                              says="--workspace", absent=["{tmp}/x"]),
    "export-int8-budget-nan": t("export", "--checkpoint", "{ckpt}", "--out", "{tmp}/x", "--int8-budget", "nan",
                                says="--int8-budget", absent=["{tmp}/x"]),
    "calibrate-int8-budget-above-1": t("calibrate", "--onnx", "{onnx}", "--images", "{images}", "--out", "{tmp}/c",
                                       "--int8-budget", "1.5", says="--int8-budget", absent=["{tmp}/c"]),
    "serve-http-port-above-65535": t("serve", "--model", "{onnx}", "--http-port", "70000",
                                     says=("--http-port", "65535")),
    "serve-grpc-port-0": t("serve", "--model", "{onnx}", "--grpc-port", "0", says="--grpc-port"),
    "serve-queue-delay-negative": t("serve", "--model", "{onnx}", "--queue-delay-us", "-1",
                                    says="--queue-delay-us"),
    "serve-ports-equal": t("serve", "--model", "{onnx}", "--http-port", "8001", says=("--http-port", "--grpc-port")),
    "associate-threshold-nan": t("associate", "--bus", "redis://127.0.0.1:9/x", "--threshold", "nan",
                                 says="--threshold"),
    "associate-min-score-nan": t("associate", "--bus", "redis://127.0.0.1:9/x", "--min-score", "nan",
                                 says="--min-score"),
    "associate-idle-exit-nan": t("associate", "--bus", "redis://127.0.0.1:9/x", "--idle-exit", "nan",
                                 says="--idle-exit"),  # a hang before
    "associate-max-delay-inf": t("associate", "--bus", "redis://127.0.0.1:9/x", "--max-delay", "inf",
                                 says="--max-delay"),
    "associate-expect-sources-0": t("associate", "--bus", "redis://127.0.0.1:9/x", "--expect-sources", "0",
                                    says="--expect-sources"),
    "validate-threshold-nan": t("validate", "--checkpoint", "{ckpt}", "--model", "{onnx}", "--images", "{images}",
                                "--threshold", "cosine_min=nan", says=("--threshold", "cosine_min")),
    "validate-threshold-inf": t("validate", "--checkpoint", "{ckpt}", "--model", "{onnx}", "--images", "{images}",
                                "--threshold", "psnr_db=inf", says="psnr_db"),
    # --set goes through the typed config's ranges: the key, the value and the range named.
    "train-set-real-every-0": t("train", "--data", "{data}", "--out", "{tmp}/run", "--set", "data.real_every=0",
                                says=("data.real_every=0", "from 1"), absent=["{tmp}/run"]),
    "train-set-lr-nan": t("train", "--data", "{data}", "--out", "{tmp}/run", "--set", "optim.lr=nan",
                          says="optim.lr", absent=["{tmp}/run"]),
    "train-set-seed-above-32-bits": t("train", "--data", "{data}", "--out", "{tmp}/run", "--set", "seed=4294967296",
                                      says="seed", absent=["{tmp}/run"]),
    "train-set-input-size-huge": t("train", "--data", "{data}", "--out", "{tmp}/run", "--set",
                                   "model.imgsz=[100000, 100000]", says="model.imgsz", absent=["{tmp}/run"]),
    "train-set-broken-yaml": t("train", "--data", "{data}", "--out", "{tmp}/run", "--set", "optim.milestones=[1,",
                               says="optim.milestones", absent=["{tmp}/run"]),
    "train-config-nan": t("train", "--data", "{data}", "--out", "{tmp}/run", "--config", "{tmp}/c.yaml",
                          says=("c.yaml", "loss.tv_weight"), absent=["{tmp}/run"],
                          setup=lambda f, tmp: _write(tmp / "c.yaml", "loss:\n  tv_weight: .nan\n")),
    # ---------------------------------------------------------------- NaN never passes (issue 23, item 3)
    "eval-checkpoint-nan-weight": t("eval", "--checkpoint", "{tmp}/nan.pt", "--data", "{data}", says="nan.pt",
                                    setup=lambda f, tmp: _nan_checkpoint(f, tmp / "nan.pt")),
    "export-checkpoint-nan-weight": t("export", "--checkpoint", "{tmp}/nan.pt", "--out", "{tmp}/x", says="nan.pt",
                                      setup=lambda f, tmp: _nan_checkpoint(f, tmp / "nan.pt"),
                                      absent=["{tmp}/x/model.onnx"]),
    "info-checkpoint-nan-weight": t("info", "--checkpoint", "{tmp}/nan.pt", says="nan.pt",
                                    setup=lambda f, tmp: _nan_checkpoint(f, tmp / "nan.pt")),
    "demo-checkpoint-nan-weight": t("demo", "--out", "{tmp}/demo", "--checkpoint", "{tmp}/nan.pt", says="nan.pt",
                                    setup=lambda f, tmp: _nan_checkpoint(f, tmp / "nan.pt"), absent=["{tmp}/demo"]),
    "gallery-model-nan-weight": t("gallery", "--model", "{tmp}/nan.onnx", "--images", "{images}", "--out",
                                  "{tmp}/g.npz", says="nan.onnx", setup=lambda f, tmp: _nan_onnx(f, tmp / "nan.onnx"),
                                  absent=["{tmp}/g.npz"]),
    "bench-model-nan-weight": t("bench", "--model", "{tmp}/nan.onnx", says="nan.onnx",
                                setup=lambda f, tmp: _nan_onnx(f, tmp / "nan.onnx")),
    "calibrate-onnx-nan-weight": t("calibrate", "--onnx", "{tmp}/nan.onnx", "--images", "{images}", "--out",
                                   "{tmp}/c", says="nan.onnx", setup=lambda f, tmp: _nan_onnx(f, tmp / "nan.onnx"),
                                   absent=["{tmp}/c/model_int8.onnx"]),
    "validate-model-nan-weight": t("validate", "--checkpoint", "{ckpt}", "--model", "{tmp}/nan.onnx", "--images",
                                   "{images}", says="nan.onnx", setup=lambda f, tmp: _nan_onnx(f, tmp / "nan.onnx")),
    "run-gallery-nan-row": t("run", "--model", "{onnx}", "--source", "{video}", "--gallery", "{tmp}/g.npz",
                             "--events", "{tmp}/e.jsonl", says="g.npz", absent=["{tmp}/e.jsonl"],
                             setup=lambda f, tmp: _nan_gallery(f, tmp / "g.npz")),
    "associate-gallery-nan-row": t("associate", "--bus", "redis://127.0.0.1:9/x", "--gallery", "{tmp}/g.npz",
                                   says="g.npz", setup=lambda f, tmp: _nan_gallery(f, tmp / "g.npz")),
}


def _nan_checkpoint(f: Files, path: Path) -> None:
    """The shared checkpoint with one NaN in one weight, as a diverged run saves it."""
    import torch

    state = torch.load(f.ckpt, map_location="cpu", weights_only=True)
    name = next(k for k, v in state["model"].items() if v.is_floating_point() and v.numel() > 1)
    state["model"][name].view(-1)[1] = float("nan")
    torch.save(state, path)


def _nan_onnx(f: Files, path: Path) -> None:
    """The shared ONNX export with one weight set to NaN."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(f.onnx))
    index = next(i for i, t in enumerate(proto.graph.initializer)
                 if t.data_type == onnx.TensorProto.FLOAT and np.prod(t.dims) > 1)
    weights = numpy_helper.to_array(proto.graph.initializer[index]).copy()
    weights.flat[0] = np.nan
    proto.graph.initializer[index].CopyFrom(numpy_helper.from_array(weights, proto.graph.initializer[index].name))
    onnx.save(proto, str(path))


def _nan_gallery(f: Files, path: Path) -> None:
    """The shared gallery with one embedding row NaN."""
    with np.load(f.gallery, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["embeddings"] = arrays["embeddings"].copy()
    arrays["embeddings"][1] = np.nan
    np.savez(path, **arrays)


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
    # Progress ([step] lines, tqdm bars) and the engine `--backend auto` chose (one line per graph
    # loaded) are not the message; the message is the rest.
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("[", "backend auto"))
             and "%|" not in line]
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



def test_rvsl_under_torchrun_is_refused_before_anything_is_written(files, tmp_path, capsys, monkeypatch):
    """RVSL has no DDP: under torchrun every process would train it whole into the same --out."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    out = tmp_path / "run"
    code = main(["train", "--data", str(files.data), "--out", str(out), "--mode", "rvsl", "--init", str(files.ckpt)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--mode rvsl" in err[0] and "without torchrun" in err[0]
    assert not out.exists()

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


# ------------------------------------------------------------------ every number has a range (issue 23, item 2)
def test_every_numeric_option_is_range_checked():
    """No option reads a bare int or float: each takes a type from fogreid/cli/common.py (or the
    typed config) that carries its range, and `--help` shows that range."""
    import argparse

    from fogreid.cli import build_parser

    verbs = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    bare = [(name, a.option_strings) for name, sub in verbs.choices.items() for a in sub._actions
            if a.type in (int, float)]
    assert bare == []
    typed = [(name, a) for name, sub in verbs.choices.items() for a in sub._actions if hasattr(a.type, "range")]
    assert len(typed) > 50
    for name, action in typed:
        help_text = verbs.choices[name].format_help().replace("\n", " ")
        assert " ".join(action.type.range.describe().split()) in " ".join(help_text.split()), (name, action)


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "1e400"])
def test_no_float_type_takes_a_non_finite_number(text):
    import argparse

    from fogreid.cli import common

    for name in ("finite_float", "positive_float", "nonnegative_float", "unit_float", "cosine_float", "fps",
                 "seconds", "seconds_or_zero"):
        with pytest.raises(argparse.ArgumentTypeError, match="out of range"):
            getattr(common, name)(text)


# ------------------------------------------------------------------ NaN never passes (issue 23, item 3)
def test_loaders_refuse_non_finite_values_naming_the_file(files, tmp_path):
    from fogreid.errors import FogreidError
    from fogreid.model.checkpoint import read_checkpoint
    from fogreid.onnx_graph import load
    from fogreid.runtime import load_deployed
    from fogreid.runtime.gallery import Gallery

    _nan_checkpoint(files, tmp_path / "nan.pt")
    with pytest.raises(FogreidError, match=r"nan\.pt: weight model\..* NaN or infinite"):
        read_checkpoint(tmp_path / "nan.pt")
    _nan_onnx(files, tmp_path / "nan.onnx")
    with pytest.raises(FogreidError, match=r"nan\.onnx: weight .* NaN or infinite"):
        load(tmp_path / "nan.onnx")
    with pytest.raises(FogreidError, match=r"nan\.onnx"):
        load_deployed(tmp_path / "nan.onnx")
    _nan_gallery(files, tmp_path / "g.npz")
    with pytest.raises(FogreidError, match=r"g\.npz: 1 of \d+ embeddings hold NaN or infinite values \(row 1"):
        Gallery.load(tmp_path / "g.npz")
    # the good files still load
    read_checkpoint(files.ckpt), load(files.onnx), Gallery.load(files.gallery)


def test_a_model_giving_nan_embeddings_is_stopped():
    from collections import OrderedDict

    from polygraphy.backend.base import BaseRunner
    from polygraphy.common import TensorMetadata

    from fogreid.errors import FogreidError
    from fogreid.runtime.backends import DeployedModel

    class NanRunner(BaseRunner):  # an engine whose outputs overflow: no weights to inspect at load
        def activate_impl(self):
            pass

        def get_input_metadata_impl(self):
            return TensorMetadata().add("frames", np.uint8, (-1, 32, 32, 3))

        def infer_impl(self, feed_dict):
            n = len(feed_dict["frames"])
            embedding = np.ones((n, 8), np.float32)
            embedding[-1, 3] = np.nan
            return OrderedDict(defogged=feed_dict["frames"], embedding=embedding)

        def deactivate_impl(self):
            pass

    with DeployedModel(NanRunner(name="nan-engine"), "model.engine") as model:
        with pytest.raises(FogreidError, match=r"model\.engine: .*NaN or infinite embeddings for 1 of 3 crops"):
            model(np.zeros((3, 32, 32, 3), np.uint8))


def test_events_are_strict_json():
    from fogreid.errors import FogreidError
    from fogreid.runtime.pipeline import event_line

    assert json.loads(event_line({"source": "cam", "score": 0.5})) == {"source": "cam", "score": 0.5}
    with pytest.raises(FogreidError, match="score"):
        event_line({"source": "cam", "frame": 3, "score": float("nan")})


def _bad_box_detector(path: Path) -> Path:
    """An end-to-end detector (x1, y1, x2, y2, score, class rows in input pixels) whose output holds one
    good car and five broken rows above the score threshold; zero rows below it are padding."""
    from test_detectors import make_detector

    nan, inf = np.nan, np.inf
    rows = [[8, 8, 40, 40, 0.9, 2],           # the good box
            [nan, 8, 40, 40, 0.9, 2],         # NaN corner
            [8, 8, inf, 40, 0.9, 2],          # infinite corner
            [40, 8, 8, 40, 0.9, 2],           # negative width
            [8, 20, 40, 20, 0.9, 2],          # zero height
            [8, 8, 40, 40, nan, 2]]           # NaN score
    out = np.zeros((1, 10, 6), np.float32)
    out[0, :len(rows)] = rows
    return make_detector(path, out, [1, 3, SIZE, SIZE], {"names": {2: "car"}, "end2end": True})


def test_detector_boxes_that_are_not_boxes_are_dropped_and_counted(files, tmp_path, capsys):
    from fogreid.runtime.regions import OnnxDetector

    path = _bad_box_detector(tmp_path / "det.onnx")
    detector = OnnxDetector(path, device="cpu")
    found = detector([np.zeros((64, 96, 3), np.uint8)])[0]
    assert len(found) == 1 and all(np.isfinite(found[0].xyxy)) and detector.invalid == 5

    events = tmp_path / "events.jsonl"
    capsys.readouterr()
    code = main(["run", "--model", str(files.onnx), "--source", str(files.video), "--detector", str(path),
                 "--no-track", "--max-frames", "3", "--events", str(events), "--device", "cpu"])
    out, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["invalid_boxes"] == 15 and summary["crops"] == 3   # 5 per frame dropped, the car kept
    assert "dropped 15 boxes" in err and str(path) in err and "Traceback" not in err

    def no_constant(name):
        raise AssertionError(f"{name} in the events file")

    lines = events.read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(line, parse_constant=no_constant)["box"] for line in lines)


def test_dropping_invalid_regions_from_any_source():
    from fogreid.runtime.regions import Region, drop_invalid

    good = Region((1.0, 2.0, 30.0, 40.0), 0.8)
    kept, dropped = drop_invalid([good, Region((np.nan, 2.0, 30.0, 40.0)), Region((1.0, 2.0, np.inf, 40.0)),
                                  Region((30.0, 2.0, 1.0, 40.0)), Region((1.0, 2.0, 30.0, 2.0)),
                                  Region((1.0, 2.0, 30.0, 40.0), float("nan"))])
    assert kept == [good] and dropped == 5


# ------------------------------------------------------------------ no hang: serve (issue 23, item 5)
def test_serve_refuses_a_port_in_use(files, capsys):
    import socket

    http, grpc, metrics = free_ports(3)
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", grpc))
        holder.listen()
        capsys.readouterr()
        code = main(["serve", "--model", str(files.onnx), "--http-port", str(http), "--grpc-port", str(grpc),
                     "--metrics-port", str(metrics)])
    err = capsys.readouterr().err
    assert code == 1 and f"--grpc-port {grpc}" in err and len(err.strip().splitlines()) == 1, err


def _fake_pytriton(monkeypatch, server_alive: bool) -> None:
    """Just enough of PyTriton for `fogreid serve`: a Triton whose server never comes up. With
    `server_alive` False the tritonserver process has exited at once, logging why; PyTriton then
    waits for its HTTP endpoint (two minutes, or for ever), as the fake does."""
    import sys
    import types

    class Server:
        _tritonserver_running_cmd = object()

        def is_alive(self):
            return server_alive

        def logs(self):
            return ("I0101 00:00:00 server.cc:1] Started\n"
                    "E0101 00:00:00 main.cc:2] failed to start GRPC service: Address already in use\n")

    class Triton:
        def __init__(self, config=None):
            self.config, self._triton_server = config, None

        def __enter__(self):
            self._triton_server = Server()
            for _ in range(1200):   # PyTriton's wait_for_server_ready: a poll loop
                time.sleep(0.1)
            raise TimeoutError("Triton Inference Server is not ready after timeout.")

        def stop(self):
            return True

    modules = {"pytriton": types.ModuleType("pytriton"), "pytriton.decorators": types.ModuleType("d"),
               "pytriton.model_config": types.ModuleType("m"), "pytriton.triton": types.ModuleType("t")}
    modules["pytriton.decorators"].batch = lambda f: f
    modules["pytriton.model_config"].DynamicBatcher = modules["pytriton.model_config"].ModelConfig = dict
    modules["pytriton.model_config"].Tensor = dict
    modules["pytriton.triton"].Triton = Triton
    modules["pytriton.triton"].TritonConfig = dict
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setenv("LD_LIBRARY_PATH", os.environ.get("LD_LIBRARY_PATH", ""))


@pytest.mark.parametrize("server_alive", [False, True], ids=["server-exits", "server-never-ready"])
def test_serve_ends_with_the_reason_when_triton_does_not_start(files, monkeypatch, capsys, server_alive):
    _fake_pytriton(monkeypatch, server_alive)
    http, grpc, metrics = free_ports(3)
    capsys.readouterr()
    start = time.perf_counter()
    code = main(["serve", "--model", str(files.onnx), "--backend", "onnxruntime", "--http-port", str(http),
                 "--grpc-port", str(grpc), "--metrics-port", str(metrics), "--start-timeout", "2"])
    seconds = time.perf_counter() - start
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, err
    if server_alive:
        assert "not serving 2 s after it was started" in lines[0] and "--start-timeout" in lines[0]
    else:
        assert "exited while starting" in lines[0] and "Address already in use" in lines[0]
    assert seconds < 10, f"took {seconds:.1f} s"

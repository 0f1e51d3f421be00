from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from fogreid.data.synth import SynthConfig, generate

# `make test` runs two pytest-xdist workers: each gets its share of the cores for torch's
# OpenMP pool, and so do the `fogreid` processes the tests start (they inherit the variable).
# With two threads each on two cores, the clean-clone CI used 2.2 CPU minutes more than the
# serial run of the same tests (26.7 against 24.5).
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _threads = str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    os.environ["OMP_NUM_THREADS"] = _threads
    torch.set_num_threads(int(_threads))

SMALL = SynthConfig(ids=40, cams=4, per_cam=2, imgsz=128, seed=7)


def built_once(tmp_path_factory, name: str, build):
    """`build(folder)` run once per test session, even when pytest-xdist runs it in several worker
    processes (`make test` runs two): the first worker to get here builds under a file lock in the
    session's shared temporary folder, the others wait and reuse it. Only for read-only results."""
    import json

    from filelock import FileLock

    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return build(tmp_path_factory.mktemp(name))
    shared = tmp_path_factory.getbasetemp().parent     # the same for every worker of this session
    folder, done = shared / name, shared / f"{name}.json"
    with FileLock(str(shared / f"{name}.lock")):
        if not done.is_file():
            folder.mkdir(exist_ok=True)
            done.write_text(json.dumps(build(folder), default=str))
    return json.loads(done.read_text())


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """A small generated FVRID dataset shared by the data tests (read-only)."""
    def build(root):
        generate(root, SMALL, progress=False)
        return str(root)
    return Path(built_once(tmp_path_factory, "fvrid", build))


@pytest.fixture
def fogreid_cmd() -> list[str]:
    """The installed console script, so the entry point itself is exercised."""
    script = Path(sys.executable).parent / "fogreid"
    return [str(script)] if script.exists() else [sys.executable, "-m", "fogreid"]


SIZE = (64, 64)


def foggy_frames(root, n=24, split="query"):
    from fogreid.calibration.images import build_calibration_set

    return build_calibration_set([root / "FVRID_syn" / f"{split}_foggy"], SIZE, num=n, progress=False).images


def make_checkpoint(path, root, **overrides):
    """A model whose BatchNorm statistics come from foggy images (as after training), not the init."""
    from fogreid.model.build import build_model
    from fogreid.model.checkpoint import save_checkpoint
    from fogreid.model.config import preset
    from fogreid.pixels import frames_to_images

    torch.manual_seed(0)
    net = build_model(preset("edge", imgsz=SIZE, **overrides)).train()
    with torch.no_grad():
        images = frames_to_images(torch.from_numpy(foggy_frames(root, 64, "train")))
        for batch in images.split(16):
            net(batch)
    save_checkpoint(path, net.eval())
    return path


def free_ports(n: int) -> list[int]:
    """n TCP ports free on loopback right now (bound, read, released), for servers a test starts."""
    import socket

    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def run_onnx(path, frames):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"frames": frames})


def compare(path, model, frames):
    with torch.no_grad():
        defogged, embedding = model(torch.from_numpy(frames))
    got_defogged, got_embedding = run_onnx(path, frames)
    assert got_defogged.dtype == np.uint8 and got_embedding.dtype == np.float32
    cosine = (got_embedding * embedding.numpy()).sum(axis=1)
    grey = np.abs(got_defogged.astype(int) - defogged.numpy().astype(int))
    return cosine, grey


@pytest.fixture(scope="session")
def exported(synth_root, tmp_path_factory):
    """A checkpoint and its onnx, onnx-fp16, onnx-int8 exports (+ engine-fp16 where TensorRT exists)."""
    from fogreid.export.exporter import ExportOptions, ExportResult, export
    from fogreid.export.formats import parse_formats

    def build(out):
        ckpt = make_checkpoint(out / "edge.pt", synth_root)
        opts = ExportOptions(calib_images=[str(synth_root / "FVRID_syn" / "train_foggy"),
                                           str(synth_root / "FVRID_real" / "train_foggy")],
                             calib_num=96, data_root=str(synth_root), progress=False)
        result = export(ckpt, parse_formats("onnx,onnx-fp16,onnx-int8,engine-fp16"), out / "artifacts", opts)
        return {"ckpt": str(ckpt), "files": {name: str(path) for name, path in result.files.items()},
                "not_built": result.not_built, "manifest": str(result.manifest), "checks": result.checks}
    built = built_once(tmp_path_factory, "export", build)
    return Path(built["ckpt"]), ExportResult({name: Path(path) for name, path in built["files"].items()},
                                             built["not_built"], Path(built["manifest"]), built["checks"])


@pytest.fixture(scope="session")
def trained(synth_root, tmp_path_factory):
    """A briefly trained JDL model (64 px) and the training identities it knows."""
    from fogreid.data.datasets import load_fvrid
    from fogreid.train.config import build_config
    from fogreid.train.loop import train

    def build(out):
        cfg = build_config(None, ["mode=jdl", f"data.root={synth_root}", "model.imgsz=[64, 64]",
                                  "optim.epochs=15", "optim.lr=1e-3", "optim.warmup_epochs=1", "optim.milestones=[12]",
                                  "optim.gamma=0.1", "data.ids_per_batch=4", "data.instances_per_id=4",
                                  "data.num_workers=0", "data.val_fraction=0"])
        train(cfg, out, progress=False)
        return str(out / "last.pt")
    train_ids = sorted({r.pid for r in load_fvrid(synth_root, "syn").train})
    return Path(built_once(tmp_path_factory, "trained", build)), train_ids


# CI installs every dependency a test may skip for (Debian's ffmpeg and redis-server, the PyTriton
# environment): there a skip means a broken install step, not a missing optional tool, so with
# FOGREID_NO_SKIPS=1 (set by .ci/run) any skip but TensorRT's, which no CPU machine can have, fails the run.
ALLOWED_SKIP = "TensorRT is not installed"
_unexpected_skips: list[str] = []


def pytest_runtest_logreport(report):
    if report.skipped and os.environ.get("FOGREID_NO_SKIPS") == "1":
        reason = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if ALLOWED_SKIP not in reason:
            _unexpected_skips.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session, exitstatus):
    if _unexpected_skips:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    for line in _unexpected_skips:
        terminalreporter.write_line(f"SKIPPED WHERE CI MUST RUN IT (FOGREID_NO_SKIPS=1): {line}", red=True)


# The small artifacts that tests/test_bad_input.py and tests/test_battery.py damage and misuse:
# built once per session here, since a fixture imported into two test modules is built twice.
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
    from fogreid.model import build_model, preset, save_checkpoint

    root = tmp_path_factory.mktemp("bad_input")
    torch.manual_seed(0)
    ckpt = root / "edge.pt"
    save_checkpoint(ckpt, build_model(preset("edge", imgsz=(64, 64), num_ids=4)).eval())
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
    from fogreid.runtime import build_gallery, load_deployed

    with load_deployed(onnx) as model:
        build_gallery(model, images.parent, progress=False).save(root / "gallery.npz")
    data = root / "data"
    (data / "FVRID_syn").mkdir(parents=True)
    return Files(root, ckpt, onnx, root / "empty.pt", root / "notes.txt", images.parent, video,
                 root / "gallery.npz", data)


# The quick demo is the longest test by far (3 minutes of the suite): run first, so that with two
# pytest-xdist workers (`make test`) the other works through the rest meanwhile, instead of it
# starting last and running alone.
RUN_FIRST = ("test_demo.py",)


def pytest_collection_modifyitems(session, config, items):
    items.sort(key=lambda item: item.path.name not in RUN_FIRST)   # stable: order kept otherwise

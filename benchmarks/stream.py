"""`fogreid run`'s pipeline, measured on this CPU.

    python benchmarks/stream.py [--checkpoint CKPT] [--imgsz 128] [--seconds 20] [--rounds 2]

1. **Live**: one 640x480 stream at 25 fps with four vehicles per frame (the generated foggy video
   served on loopback by ffmpeg in real time, -re), fixed regions: fps, latency, drops, per
   precision (PyTorch, ONNX Runtime FP32 and INT8).
2. **Capacity with the detector on, 4 sources**: the same video copied to four files, read as
   fast as the pipeline goes, with an ONNX detector in front (a stand-in with the compute of a
   small YOLO at 320 px, built here, whose boxes are the video's four vehicles), ByteTrack and
   track-level ReID: frames per second with the stages one after another (`--serial`) and
   pipelined, the ReID graph whole and cut down to its embedding (what `fogreid run` loads when
   it shows no defogged crops), and `fogreid run`'s default without a gallery (`--embed-defogged
   auto`: crops of foggy frames defogged by the graph cut down to its defogged output, then
   embedded by the one cut down to its embedding),
   interleaved `--rounds` times, with the share of crops embedded from their defogged crop.
3. **Peak memory of `fogreid run` with 4 sources**: the same run as (2), pipelined, as a
   `fogreid run` child process (benchmarks/peak_memory.py: peak RSS of the process, sampled peak
   PSS of its tree), with `--backend auto` (which loads both CPU engines to measure them when
   OpenVINO is installed) and with `--backend onnxruntime`.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def standin_detector(path: Path, rois: list[list[int]], size: int = 320, frame=(480, 640)) -> Path:
    """An ONNX detector with a YOLO-n-sized convolution stack (its features feed the output with
    weight 0) and the raw v8 layout (1, 84, N): the four regions as cars, plus empty candidates."""
    import torch

    scale = min(size / frame[0], size / frame[1])
    left, top = (size - frame[1] * scale) / 2, (size - frame[0] * scale) / 2
    n = (size // 8) ** 2 + (size // 16) ** 2 + (size // 32) ** 2   # a YOLO head's candidates
    out = torch.zeros(1, 84, n)
    for i, (x1, y1, x2, y2) in enumerate(rois):
        out[0, :4, i] = torch.tensor([left + (x1 + x2) / 2 * scale, top + (y1 + y2) / 2 * scale,
                                      (x2 - x1) * scale * 0.9, (y2 - y1) * scale * 0.9])
        out[0, 4 + 2, i] = 0.9

    class StandIn(torch.nn.Module):
        def __init__(self):
            super().__init__()
            chans = [3, 16, 32, 64, 128, 256]
            layers = []
            for a, b in zip(chans[:-1], chans[1:], strict=True):
                layers += [torch.nn.Conv2d(a, b, 3, 2, 1), torch.nn.SiLU(), torch.nn.Conv2d(b, b, 3, 1, 1),
                           torch.nn.SiLU()]
            self.body = torch.nn.Sequential(*layers)
            self.register_buffer("dets", out)

        def forward(self, images):
            return self.dets + 0.0 * self.body(images).mean()

    torch.onnx.export(StandIn().eval(), torch.zeros(1, 3, size, size), str(path), input_names=["images"],
                      output_names=["output0"], dynamo=False, opset_version=17)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="default: a fresh edge model (speed does not depend on weights)")
    parser.add_argument("--imgsz", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skip-live", action="store_true", help="only the capacity comparison")
    args = parser.parse_args()

    import torch

    from fogreid.data.synth import SynthConfig, generate
    from fogreid.data.synth_video import make_video
    from fogreid.export.exporter import ExportOptions, export
    from fogreid.export.formats import parse_formats
    from fogreid.model.build import build_model
    from fogreid.model.checkpoint import save_checkpoint
    from fogreid.model.config import preset
    from fogreid.runtime.backends import load_deployed
    from fogreid.runtime.pipeline import RunOptions, run_stream
    from fogreid.runtime.regions import FixedRegions, OnnxDetector
    from fogreid.runtime.tracking import TrackingConfig

    work = Path(tempfile.mkdtemp(prefix="fogreid-stream-"))
    data = SynthConfig(ids=24, cams=3, imgsz=args.imgsz)
    generate(work / "data", data, progress=False)
    video = make_video(work / "video", data, list(range(12)), frames=250, hold=25)
    checkpoint = args.checkpoint
    if checkpoint is None:
        torch.manual_seed(0)
        checkpoint = work / "edge.pt"
        save_checkpoint(checkpoint, build_model(preset("edge", imgsz=(args.imgsz, args.imgsz))).eval())
    files = export(checkpoint, parse_formats("onnx,onnx-int8"), work / "export",
                   ExportOptions(imgsz=(args.imgsz, args.imgsz), calib_num=128, progress=False,
                                 calib_images=[str(work / "data" / "FVRID_syn" / "train_foggy")])).files

    if not args.skip_live and shutil.which("ffmpeg") is not None:
        rows = []
        for label, model_path in (("PyTorch FP32", checkpoint), ("ONNX Runtime FP32", files["onnx"]),
                                  ("ONNX Runtime INT8", files["onnx-int8"])):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            server = subprocess.Popen(["ffmpeg", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i",
                                       str(video["video"]), "-c:v", "mpeg4", "-q:v", "4", "-f", "mpegts", "-listen",
                                       "1", f"http://127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
            time.sleep(0.5)
            stop = threading.Event()
            timer = threading.Timer(args.seconds, stop.set)
            try:
                with load_deployed(model_path, "torch" if label.startswith("PyTorch") else "onnxruntime") as model:
                    opts = RunOptions([f"http://127.0.0.1:{port}"], FixedRegions(video["rois"]), batch=args.batch,
                                      stats_every=1e9)
                    timer.start()
                    stats = run_stream(model, opts, stop)
            finally:
                timer.cancel()
                server.kill()
            rows.append((label, stats))
        print(f"\none live 640x480 stream at 25 fps, 4 vehicles per frame, edge preset at {args.imgsz}px, "
              f"{args.seconds:.0f} s each")
        print(f"{'model':<22}{'fps':>7}{'p50 ms':>8}{'p95 ms':>8}{'dropped':>9}")
        for label, s in rows:
            print(f"{label:<22}{s.fps:>7.1f}{s.latency_p50_ms:>8.0f}{s.latency_p95_ms:>8.0f}{s.dropped:>9}")

    import json

    rois = json.loads(video["rois"].read_text())["default"]
    detector_path = standin_detector(work / "detector.onnx", rois)
    # Four files, not one path four times: a source is named by its path, and one name given twice
    # would be one source read by four readers (one tracker, one frame cap).
    sources = []
    for i in range(4):
        copy = work / "video" / f"camera{i}.mp4"
        shutil.copyfile(video["video"], copy)
        sources.append(str(copy))
    # The default backend (`auto`: the faster CPU engine for this file at this batch, measured at load),
    # the whole graph (before) and cut down to the embedding (what `fogreid run`
    # loads when it shows no defogged crops), stages one after another (before) and pipelined, and
    # `fogreid run`'s default without a gallery (--embed-defogged auto: the graph cut down to its
    # embedding embeds, the one cut down to its defogged output defogs the crops of foggy frames
    # first), all interleaved.
    rows = [(graph, mode) for graph in ("whole graph", "embedding only") for mode in ("serial", "pipelined")]
    rows.append(("defogged in fog", "pipelined"))
    results: dict[tuple[str, str], list] = {row: [] for row in rows}
    with load_deployed(files["onnx-int8"], "auto", batch=args.batch) as whole, \
            load_deployed(files["onnx-int8"], "auto", batch=args.batch, embedding_only=True) as cut, \
            load_deployed(files["onnx-int8"], "auto", batch=args.batch, defogged_only=True) as defog:
        models = {"whole graph": (whole, None), "embedding only": (cut, None), "defogged in fog": (defog, cut)}
        for _ in range(args.rounds):
            for graph, mode in rows:
                model, embedder = models[graph]
                opts = RunOptions(sources, OnnxDetector(detector_path, device="cpu"), batch=args.batch,
                                  stats_every=1e9, tracking=TrackingConfig(), pipelined=mode == "pipelined",
                                  max_frames=150, embed_defogged="never" if embedder is None else "auto")
                results[graph, mode].append(run_stream(model, opts, embedder=embedder))
    print(f"\ncapacity, 4 file sources (one 640x480 video copied to four files), detector on (stand-in, 320 px), "
          f"ByteTrack, INT8 ReID at {args.imgsz}px on {whole.name} / {cut.name} / {defog.name}, 150 frames per source, "
          f"{args.rounds} interleaved rounds")
    print(f"{'ReID graph':<16}{'stages':<12}{'fps (all sources)':>19}{'crops/s':>9}{'first event s':>15}"
          f"{'defogged first':>16}")
    for (graph, mode), runs in results.items():
        fps = [s.fps for s in runs]
        print(f"{graph:<16}{mode:<12}{np.mean(fps):>13.1f} ±{np.std(fps):>4.1f}"
              f"{np.mean([s.crops / s.seconds for s in runs]):>9.1f}"
              f"{np.mean([s.first_event_s or float('nan') for s in runs]):>15.2f}"
              f"{np.mean([s.defogged_embeddings / max(s.crops, 1) for s in runs]):>15.0%}")

    import os

    from peak_memory import fogreid_cli, run_measured

    print(f"\npeak memory of `fogreid run`, the run above as a child process (pipelined, --batch {args.batch}), "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'--backend':<12}{'engine':<13}{'exit':>5}{'s':>6}{'peak RSS MiB':>14}{'peak PSS tree MiB':>19}")
    for backend in ("auto", "onnxruntime"):
        r = run_measured(fogreid_cli() + ["run", "--model", str(files["onnx-int8"]), "--backend", backend, "--source",
                                          *sources, "--detector", str(detector_path), "--max-frames", "150",
                                          "--batch", str(args.batch),
                                          "--events", str(work / f"events-{backend}.jsonl")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        engine = next((line.split()[1].split(":")[0] for line in (r["stderr"] or "").splitlines()
                       if line.startswith("[run] ")), "?")
        print(f"{backend:<12}{engine:<13}{r['rc']:>5}{r['seconds']:>6.0f}{r['peak_rss_mib']:>14.0f}"
              f"{r['peak_tree_pss_mib']:>19.0f}")


if __name__ == "__main__":
    main()

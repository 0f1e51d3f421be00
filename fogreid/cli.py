"""The `fogreid` command line: one verb per job.

Each verb's module is imported only when it runs, so `fogreid --help` stays fast and a
machine without TensorRT or OpenCV can still use the verbs that need neither. A
FogreidError (a user mistake or an unusable input) prints its message and exits 2.
"""

from __future__ import annotations

import argparse
import sys

from fogreid import __version__
from fogreid.errors import FogreidError


def _size(values: list[int]) -> tuple[int, int]:
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])


def cmd_synth(args: argparse.Namespace) -> int:
    from fogreid.data.synth import SynthConfig, generate

    cfg = SynthConfig(ids=args.ids, cams=args.cams, per_cam=args.per_cam, queries_per_id=args.queries_per_id,
                      size=args.size, seed=args.seed)
    manifest = generate(args.out, cfg, progress=not args.quiet)
    total = sum(manifest["images"].values())
    print(f"wrote {total} images ({', '.join(f'{k}: {v}' for k, v in sorted(manifest['images'].items()))}) "
          f"to {args.out}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from fogreid.model.summary import format_summary, summarize

    if args.checkpoint:
        from fogreid.model.checkpoint import load_model

        net, title = load_model(args.checkpoint), f"checkpoint {args.checkpoint}"
    else:
        from fogreid.model.config import preset
        from fogreid.model.build import build_sjdl

        net, title = build_sjdl(preset(args.preset)), f"preset {args.preset}"
    size = _size(args.imgsz) if args.imgsz else net.config.input_size
    cfg = net.config
    print(f"{title}: {cfg.backbone}{'-IBN-a' if cfg.ibn else ''}, deformable branch "
          f"{'on' if cfg.deform_branch else 'off'}, defog {'on' if cfg.defog else 'off'}, "
          f"embedding {net.embedding_dim}-d, input {size[0]}x{size[1]}")
    print(format_summary(summarize(net, size), f"cost per image at {size[0]}x{size[1]}:"))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from fogreid.demo import run_demo

    run_demo(args.out, quick=args.quick, checkpoint=args.checkpoint, seed=args.seed)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fogreid.train.config import build_config
    from fogreid.train.loop import train

    flags = {"mode": args.mode, "model.backbone": args.backbone, "preset": args.preset,
             "model.input_size": list(_size(args.imgsz)) if args.imgsz else None,
             "optim.epochs": args.epochs, "data.ids_per_batch": args.ids_per_batch,
             "data.instances_per_id": args.instances_per_id, "device": args.device, "seed": args.seed,
             "data.root": args.data, "pretrained": args.pretrained, "stage": args.stage}
    cfg = build_config(args.config, args.set or [], flags)
    if cfg.mode == "rvsl":
        from fogreid.train.rvsl import train_rvsl

        train_rvsl(cfg, args.out, init=args.init, progress=not args.quiet)
        return 0
    resume = args.resume
    if resume == "auto":
        resume = str(Path(args.out) / "last.pt")
        if not Path(resume).is_file():
            raise FogreidError(f"--resume: {resume} does not exist yet; start without --resume")
    train(cfg, args.out, resume=resume, progress=not args.quiet)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import json

    import torch

    from fogreid.data.datasets import load_dataset
    from fogreid.model.fused import FusedDefogReID
    from fogreid.train.evaluate import evaluate
    from fogreid.devices import pick_device

    device = pick_device(args.device)
    model = FusedDefogReID.from_checkpoint(args.checkpoint, map_location=device)
    split = load_dataset(args.dataset if args.dataset != "fvrid" else f"fvrid-{args.split}", args.data)
    with torch.inference_mode():
        metrics = evaluate(model, split, batch_size=args.batch, progress=not args.json)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        print(f"{split.name}: {metrics['num_queries']} queries, {len(split.gallery)} gallery images")
        print(f"mAP {metrics['mAP']:.4f}  Rank-1 {metrics['rank1']:.4f}  Rank-5 {metrics['rank5']:.4f}  "
              f"Rank-10 {metrics['rank10']:.4f}")
        if "psnr" in metrics:
            print(f"defogged vs clear: PSNR {metrics['psnr']:.2f} dB  SSIM {metrics['ssim']:.4f}  "
                  f"(foggy input: PSNR {metrics['psnr_foggy']:.2f} dB  SSIM {metrics['ssim_foggy']:.4f})")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from fogreid.export.exporter import ExportOptions, export
    from fogreid.export.formats import parse_batch, parse_formats

    formats = parse_formats(args.format)
    opts = ExportOptions(imgsz=_size(args.imgsz) if args.imgsz else None, batch=parse_batch(args.batch),
                         calib_images=args.calib_images or [], calib_method=args.calib_method,
                         calib_num=args.calib_num, data_root=args.data, int8_mode=args.int8_mode,
                         dla_core=args.dla_core, workspace_gib=args.workspace, keep_fp=_names(args.keep_fp),
                         progress=not args.quiet)
    result = export(args.checkpoint, formats, args.out, opts)
    print(f"wrote {', '.join(str(p) for p in result.files.values())}")
    print(f"manifest: {result.manifest}")
    if result.not_built:
        print(f"not built: {', '.join(result.not_built)} (see above); build them on the target with "
              f"{result.files.get('trtexec.sh', 'trtexec')}", file=sys.stderr)
        return 1
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from fogreid.calibration.calibrate import calibrate

    result = calibrate(args.onnx, args.images, args.out, args.method, args.num, args.data,
                       _names(args.keep_fp), progress=not args.quiet)
    print(f"wrote {result.qdq_onnx} (Q/DQ INT8), {result.cache} (TensorRT calibration cache) and "
          f"{result.cache.with_name('calibration.json')}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from fogreid.validate.compare import validate

    result = validate(args.checkpoint, args.model, args.images, args.data, args.backend, args.precision,
                      args.threshold or [], limit=args.limit, device=args.device)
    print(f"{result.artifact} ({result.backend}, {result.precision}) vs {result.checkpoint} on {result.images} images")
    for key, value in result.figures.items():
        print(f"  {key:<24} {value:.4f}" if isinstance(value, float) else f"  {key:<24} {value}")
    if args.report:
        from fogreid.validate.report import write_json

        write_json(result, args.report)
        print(f"report: {args.report}")
    if args.html:
        from fogreid.validate.report import write_html

        write_html(result, args.html)
        print(f"html report: {args.html}")
    if args.per_layer:
        from fogreid.validate.per_layer import rank_layers

        rank_layers(args.checkpoint, args.model, args.per_layer_images or args.images or [], args.per_layer,
                    top=args.top)
    if result.passed:
        print("PASS")
        return 0
    for check in result.checks:
        if not check.passed:
            print(f"FAIL: {check.describe()}", file=sys.stderr)
    return 1


def cmd_run(args: argparse.Namespace) -> int:
    import json
    import signal
    import threading

    from fogreid.runtime.backends import load_model
    from fogreid.runtime.gallery import Gallery
    from fogreid.runtime.pipeline import RunOptions, run_stream, stats_dict
    from fogreid.runtime.regions import FixedRegions, FullFrame, OnnxDetector

    if args.detector:
        regions = OnnxDetector(args.detector, score=args.det_score, device=args.device, layout=args.detector_layout)
    elif args.rois:
        regions = FixedRegions(args.rois)
    else:
        regions = FullFrame()
    gallery = Gallery.load(args.gallery) if args.gallery else None
    if args.defog_view and not args.save_video:
        raise FogreidError("--defog-view draws into the saved video: add --save-video OUT.mp4")
    opts = RunOptions(args.source, regions, gallery, args.events, args.save_video, args.defog_view, args.batch,
                      queue_size=args.queue, top_k=args.top_k, min_score=args.min_score, max_frames=args.max_frames,
                      reconnect=not args.no_reconnect, max_retries=args.max_retries)
    stop = threading.Event()

    def request_stop(signum, _frame):
        print(f"\n[run] {signal.Signals(signum).name}: finishing the batch in flight and closing outputs",
              file=sys.stderr)
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    with load_model(args.model, args.backend, args.device) as model:
        print(f"[run] {model.name} on {', '.join(args.source)}", file=sys.stderr)
        stats = run_stream(model, opts, stop)
    print(json.dumps(stats_dict(stats)))
    for error in stats.errors:
        print(f"fogreid run: source error: {error}", file=sys.stderr)
    return 1 if stats.errors and stats.frames == 0 else 0


def cmd_gallery(args: argparse.Namespace) -> int:
    from fogreid.runtime.backends import load_model
    from fogreid.runtime.gallery import build_gallery

    with load_model(args.model, args.backend, args.device) as model:
        gallery = build_gallery(model, args.images, progress=not args.quiet)
    gallery.save(args.out)
    print(f"wrote {args.out}: {len(gallery.labels)} images of {len(set(gallery.labels))} identities, "
          f"{gallery.embeddings.shape[1]}-d")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from fogreid.runtime.doctor import report

    for name, value in report():
        print(f"{name:<12} {value}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import numpy as np

    from fogreid.runtime.backends import load_model
    from fogreid.runtime.bench import measure

    batches = [int(b) for b in args.batch.split(",")]
    with load_model(args.model, args.backend, args.device) as model:
        h, w = model.input_size
        print(f"{model.name}, input {h}x{w}")
        print(f"{'batch':>6}{'img/s':>10}{'ms/batch p50':>14}{'p95':>8}")
        rng = np.random.default_rng(0)
        for batch in batches:
            timing = measure(model, rng.integers(0, 256, (batch, h, w, 3), dtype=np.uint8), args.seconds, args.warmup)
            print(f"{batch:>6}{timing.images_per_s:>10.1f}{timing.p50_ms:>14.2f}{timing.p95_ms:>8.2f}")
    return 0


def _names(value: str | None) -> list[str]:
    """A comma list, or @FILE with one name per line (as `fogreid validate --per-layer` writes)."""
    if not value:
        return []
    if value.startswith("@"):
        from pathlib import Path

        path = Path(value[1:])
        if not path.is_file():
            raise FogreidError(f"--keep-fp {value}: file not found")
        return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return [n.strip() for n in value.split(",") if n.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fogreid", description=(
        "Foggy-weather vehicle re-identification: data, the SJDL defog + ReID network, "
        "and its deployment."))
    parser.add_argument("--version", action="version", version=f"fogreid {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="COMMAND", required=True)

    p = verbs.add_parser("demo", help="the main job on generated data (start here)")
    p.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    p.add_argument("--quick", action="store_true", help="a smaller dataset for a fast check")
    p.add_argument("--checkpoint", help="use this checkpoint instead of a fresh edge model")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=cmd_demo)

    p = verbs.add_parser("train", help="train the joint defog + ReID network")
    p.add_argument("--data", help="dataset root with FVRID_syn/ (and FVRID_real/ for --mode sjdl)")
    p.add_argument("--out", required=True, help="run folder: last.pt, best.pt, metrics")
    p.add_argument("--config", help="YAML file of settings (see fogreid/train/config.py)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting, e.g. loss.tv_weight=0.02")
    p.add_argument("--mode", choices=["sjdl", "jdl", "reid", "rvsl"], help="default sjdl")
    p.add_argument("--stage", choices=["1", "2", "3", "all"], help="rvsl: which stage (default all, in order)")
    p.add_argument("--init", help="rvsl: initialise the stage from this checkpoint (e.g. RUN/stage1/best.pt)")
    p.add_argument("--preset", choices=["paper", "edge"], help="model preset (default edge)")
    p.add_argument("--backbone", choices=["resnet18", "resnet34", "resnet50"])
    p.add_argument("--imgsz", type=int, nargs="+", metavar="PX", help="input size H [W]")
    p.add_argument("--epochs", type=int)
    p.add_argument("--ids-per-batch", type=int, help="P identities per batch")
    p.add_argument("--instances-per-id", type=int, help="K images per identity")
    p.add_argument("--pretrained", help="'imagenet' or an ImageNet weights file for the encoder")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--seed", type=int)
    p.add_argument("--resume", nargs="?", const="auto", help="continue from a last.pt (default: OUT/last.pt)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=cmd_train)

    p = verbs.add_parser("eval", help="mAP / CMC and defog PSNR / SSIM of a checkpoint")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True, help="dataset root")
    p.add_argument("--dataset", default="fvrid", choices=["fvrid", "veri776", "veriwild"])
    p.add_argument("--split", default="syn", choices=["syn", "real"], help="FVRID part (default syn)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(run=cmd_eval)

    p = verbs.add_parser("export", help="export a checkpoint to ONNX (FP32/FP16/INT8) and TensorRT engines")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--format", default="onnx",
                   help="comma list of onnx, onnx-fp16, onnx-int8, engine-fp16, engine-int8 (default onnx)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--imgsz", type=int, nargs="+", metavar="PX", help="input size H [W] (default: the checkpoint's)")
    p.add_argument("--batch", default="1:8:32", help="TensorRT profile MIN:OPT:MAX (default 1:8:32)")
    p.add_argument("--calib-images", nargs="+", metavar="DIR", help="folders of foggy images for INT8")
    p.add_argument("--calib-method", default="minmax", choices=["minmax", "entropy", "percentile"],
                   help="activation ranges (default minmax: entropy's clipping costs ReID embeddings most)")
    p.add_argument("--calib-num", type=int, default=512, help="calibration images (default 512)")
    p.add_argument("--data", help="dataset root: refuse calibration images of its test identities")
    p.add_argument("--int8-mode", default="auto", choices=["auto", "explicit", "implicit"],
                   help="TensorRT INT8: Q/DQ ONNX (explicit) or calibrator + cache (implicit; DLA, JetPack 6)")
    p.add_argument("--keep-fp", help="nodes to keep in floating point: a comma list or @FILE")
    p.add_argument("--dla-core", type=int, help="build for this DLA core (GPU fallback allowed)")
    p.add_argument("--workspace", type=float, default=4.0, help="TensorRT workspace limit in GiB (default 4)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=cmd_export)

    p = verbs.add_parser("calibrate", help="INT8 calibration of an ONNX model on foggy images")
    p.add_argument("--onnx", required=True, help="an FP32 model exported by fogreid")
    p.add_argument("--images", required=True, nargs="+", metavar="DIR", help="folders of foggy images")
    p.add_argument("--data", help="dataset root: refuse images of its test query/gallery identities")
    p.add_argument("--out", required=True)
    p.add_argument("--method", default="minmax", choices=["minmax", "entropy", "percentile"],
                   help="activation ranges (default minmax: entropy's clipping costs ReID embeddings most)")
    p.add_argument("--num", type=int, default=512)
    p.add_argument("--keep-fp", help="nodes to keep in floating point: a comma list or @FILE")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=cmd_calibrate)

    p = verbs.add_parser("validate", help="is an exported artifact as accurate as the PyTorch model?")
    p.add_argument("--checkpoint", required=True, help="the PyTorch checkpoint the artifact was exported from")
    p.add_argument("--model", required=True, help="the artifact: .onnx (any precision) or a TensorRT engine")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--images", nargs="+", metavar="DIR", help="folders of foggy images")
    source.add_argument("--data", help="dataset root: its query/gallery, for mAP / Rank-1 of both models")
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "onnxruntime", "tensorrt"])
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"], help="default: from the artifact's metadata")
    p.add_argument("--threshold", action="append", metavar="NAME=VALUE",
                   help="override a threshold, e.g. cosine_min=0.97 (see fogreid/validate/compare.py)")
    p.add_argument("--limit", type=int, default=256, help="images used from --images (default 256)")
    p.add_argument("--device", default="auto")
    p.add_argument("--report", metavar="OUT.json")
    p.add_argument("--html", metavar="OUT.html")
    p.add_argument("--per-layer", metavar="OUT.txt", help="INT8: rank the layers that lose most; write the ones "
                   "to keep in float to OUT.txt (then: fogreid export --keep-fp @OUT.txt)")
    p.add_argument("--per-layer-images", nargs="+", metavar="DIR",
                   help="calibration images for --per-layer (default: --images)")
    p.add_argument("--top", type=int, default=5, help="layers to keep in float with --per-layer (default 5)")
    p.set_defaults(run=cmd_validate)

    p = verbs.add_parser("run", help="defog + ReID on video files, folders, cameras and streams")
    p.add_argument("--model", required=True, help="a checkpoint (.pt), ONNX file or TensorRT engine")
    p.add_argument("--source", required=True, nargs="+", help="video file, image folder, /dev/videoN, rtsp://, "
                   "http://, udp:// URL, gst:PIPELINE or csi:N[:WxH@FPS]; several at once")
    p.add_argument("--gallery", help="a gallery from `fogreid gallery` to match against")
    regions = p.add_mutually_exclusive_group()
    regions.add_argument("--detector", help="a YOLO-style ONNX vehicle detector (see fogreid/runtime/regions.py)")
    regions.add_argument("--rois", help='JSON of fixed regions: {"default": [[x1, y1, x2, y2], ...]}')
    regions.add_argument("--full-frame", action="store_true", help="the whole frame is one crop (default)")
    p.add_argument("--det-score", type=float, default=0.35, help="detector score threshold")
    p.add_argument("--detector-layout", default="auto", choices=["auto", "v8", "v5"],
                   help="detector output layout (auto: told from the shape)")
    p.add_argument("--events", help="write match events as JSON lines here")
    p.add_argument("--save-video", help="write the annotated video here (one file per source)")
    p.add_argument("--defog-view", action="store_true", help="show the defogged crops in the saved video")
    p.add_argument("--batch", type=int, default=16, help="crops per inference batch")
    p.add_argument("--top-k", type=int, default=1)
    p.add_argument("--min-score", type=float, default=0.5, help="cosine below which a match is 'unknown'")
    p.add_argument("--queue", type=int, default=2, help="frames buffered per live source before the oldest drop")
    p.add_argument("--max-frames", type=int, help="stop after this many frames per source")
    p.add_argument("--no-reconnect", action="store_true", help="end when a live source drops")
    p.add_argument("--max-retries", type=int, help="give up on a live source after this many reconnects")
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "onnxruntime", "tensorrt"])
    p.add_argument("--device", default="auto")
    p.set_defaults(run=cmd_run)

    p = verbs.add_parser("gallery", help="embed labelled vehicle images into a gallery")
    p.add_argument("--model", required=True)
    p.add_argument("--images", required=True, help="ROOT/<id>/*.jpg, or VeRi/FVRID-named files")
    p.add_argument("--out", required=True, help="gallery file (.npz)")
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "onnxruntime", "tensorrt"])
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=cmd_gallery)

    p = verbs.add_parser("doctor", help="what works on this machine: CUDA, ONNX Runtime, TensorRT, OpenCV, Jetson")
    p.set_defaults(run=cmd_doctor)

    p = verbs.add_parser("bench", help="throughput and latency of a model at several batch sizes")
    p.add_argument("--model", required=True)
    p.add_argument("--batch", default="1,8,32", help="comma list of batch sizes")
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "onnxruntime", "tensorrt"])
    p.add_argument("--device", default="auto")
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--warmup", type=int, default=3)
    p.set_defaults(run=cmd_bench)

    p = verbs.add_parser("synth", help="generate a foggy vehicle dataset in FVRID's layout")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--ids", type=int, default=100, help="synthetic identities (real-like: half as many)")
    p.add_argument("--cams", type=int, default=5, help="cameras per domain")
    p.add_argument("--per-cam", type=int, default=2, help="frames per identity and camera")
    p.add_argument("--queries-per-id", type=int, default=2, help="query images per test identity")
    p.add_argument("--size", type=int, default=128, help="image size in pixels (square)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=cmd_synth)

    p = verbs.add_parser("info", help="parameters and GFLOPs of each branch of a model")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--preset", default="edge", choices=["paper", "edge"])
    group.add_argument("--checkpoint", help="a fogreid checkpoint")
    p.add_argument("--imgsz", type=int, nargs="+", metavar="PX", help="input size: H [W] (default: the model's)")
    p.set_defaults(run=cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except FogreidError as exc:
        print(f"fogreid {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fogreid {args.verb}: interrupted", file=sys.stderr)
        return 130

"""`fogreid run`: defog + ReID on video files, folders, cameras and streams."""

from __future__ import annotations

import argparse
import os
import sys

from fogreid.cli.common import (
    add_backend_options,
    batch_size,
    cosine_float,
    cosine_or_auto,
    fps,
    imgsz_px,
    input_file,
    int_in,
    output_file,
    seconds,
    seconds_or_zero,
    unit_float,
)
from fogreid.errors import FogreidError


def add_parser(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("run", help="defog + ReID on video files, folders, cameras and streams")
    p.add_argument("--model", required=True, help="a checkpoint (.pt), ONNX file or TensorRT engine")
    p.add_argument("--source", required=True, nargs="+", help="video file, image folder, /dev/videoN, rtsp://, "
                   "http://, udp:// URL, gst:PIPELINE or csi:N[:WxH@FPS]; several at once")
    p.add_argument("--gallery", help="a gallery from `fogreid gallery` to match against")
    regions = p.add_mutually_exclusive_group()
    regions.add_argument("--detector", help="an Ultralytics ONNX detector (YOLOv5/v8/v11 raw heads, nms=True or "
                         "end-to-end YOLOv10/YOLO26 exports; see fogreid/runtime/regions.py)")
    regions.add_argument("--detections", nargs="+", metavar="DET.txt", help="MOTChallenge det.txt files, one per "
                         "source, instead of a detector")
    regions.add_argument("--rois", help='JSON of fixed regions: {"default": [[x1, y1, x2, y2], ...]}')
    regions.add_argument("--full-frame", action="store_true", help="the whole frame is one crop (default)")
    p.add_argument("--det-conf", type=unit_float, default=0.25, help="detector score threshold (Ultralytics' conf)")
    p.add_argument("--det-iou", type=unit_float, default=0.7, help="NMS IoU threshold (Ultralytics' iou)")
    p.add_argument("--max-det", type=int_in(1, 30_000), default=300, help="boxes kept per frame at most")
    p.add_argument("--det-classes", nargs="+", help="classes to keep, by name or id (default: car, motorcycle, "
                   "bus, truck, van, ... from the model's names)")
    p.add_argument("--det-imgsz", type=imgsz_px, nargs="+", metavar="PX", help="detector input H [W] for a dynamic "
                   "model without imgsz metadata")
    p.add_argument("--detector-layout", default="auto", choices=["auto", "v8", "v5", "end2end"],
                   help="detector output layout (auto: from the names metadata and the shape)")
    track = p.add_mutually_exclusive_group()
    track.add_argument("--track", dest="track", action="store_true", default=None,
                       help="track vehicles (ByteTrack) and identify per track "
                       "(default with --detector or --detections)")
    track.add_argument("--no-track", dest="track", action="store_false", default=None,
                       help="identify every crop on its own")
    p.add_argument("--lost-seconds", type=seconds, default=1.0, help="a track unseen this long ends")
    p.add_argument("--fps", type=fps, default=25.0, help="frame rate of the sources, for the tracker")
    p.add_argument("--no-global-ids", action="store_true", help="no association of tracks across cameras")
    p.add_argument("--assoc-threshold", type=cosine_or_auto, default="auto",
                   help="cosine for a track to join a vehicle seen before (in another camera, or earlier); "
                   "auto (default): learnt per camera pair from the tracks, as fog moves cosines")
    p.add_argument("--max-gap", type=seconds, help="seconds a vehicle may take from one camera to the next")
    p.add_argument("--min-transit", type=seconds_or_zero, default=0.0,
                   help="seconds a vehicle needs at least between cameras")
    p.add_argument("--overlapping-cameras", action="store_true", help="cameras see the same place at once")
    p.add_argument("--rtsp-transport", default="tcp", choices=["tcp", "udp"],
                   help="RTSP over TCP (default) or UDP (for cameras/servers that only send UDP)")
    p.add_argument("--stall-seconds", type=seconds, default=5.0, help="report a source silent this long")
    p.add_argument("--max-backoff", type=seconds, default=2.0, help="longest wait between reconnects (seconds)")
    p.add_argument("--serial", action="store_true", help="run the stages one after another (no pipelining)")
    p.add_argument("--events", help="write match events as JSON lines here (a new file; see --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --events file (without it an "
                   "existing one is refused: a second run's events appended would count every vehicle twice)")
    p.add_argument("--publish", metavar="redis://HOST:PORT/STREAM",
                   help="also send every event with its embedding to this Redis stream (see `fogreid associate`)")
    p.add_argument("--save-video", help="write the annotated video here (one file per source)")
    p.add_argument("--defog-view", nargs="?", const="crops", choices=["crops", "frame"],
                   help="the saved video shows the defogged crops (crops, the default) or whole defogged "
                        "frames (frame: the model_defog_frame.onnx beside --model, or --defog-model)")
    p.add_argument("--defog-model", help="the whole-frame defog graph for --defog-view frame")
    p.add_argument("--defog", choices=["auto", "always", "never"], help="with --defog-view: which frames' views are "
                   "defogged (auto, the default: those whose dark-channel fog density reaches --fog-threshold, "
                   "per source; clear frames are shown as they are and skip the whole-frame graph)")
    p.add_argument("--fog-threshold", type=unit_float, metavar="DENSITY",
                   help="fog density (0 clear, 1 opaque) from which --defog auto defogs the view and "
                   "--embed-defogged auto embeds the defogged crop (default 0.65)")
    p.add_argument("--embed-defogged", choices=["auto", "always", "never"],
                   help="identify a vehicle by the embedding of the model's defogged crop (a second pass) instead "
                   "of the crop: auto on frames whose fog density reaches --fog-threshold (the default without "
                   "--gallery), always, or never (the default with --gallery, and the only choice with one); a "
                   "ReID-only model is never run twice")
    p.add_argument("--batch", type=batch_size, default=16, help="crops per inference batch")
    p.add_argument("--top-k", type=int_in(1, 1000), default=1, help="gallery matches kept per crop in the events")
    p.add_argument("--min-score", type=cosine_float, default=0.5, help="cosine below which a match is 'unknown'")
    p.add_argument("--queue", type=int_in(1, 10_000), default=2,
                   help="frames buffered per live source before the oldest drop")
    p.add_argument("--max-frames", type=int_in(1), help="stop after this many frames per source")
    p.add_argument("--no-reconnect", action="store_true", help="end when a live source drops")
    p.add_argument("--max-retries", type=int_in(0), help="give up on a live source after this many reconnects "
                   "(default: retry for ever, saying so on stderr: cameras come back)")
    p.add_argument("--give-up-after", type=seconds, metavar="SECONDS",
                   help="give up on a live source after this long without a frame (default: never)")
    add_backend_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    check_files(args)   # a mistake is reported before the model loads
    import importlib
    import json
    import threading

    from fogreid.runtime.gallery import Gallery
    from fogreid.runtime.pipeline import stats_dict

    tracked = bool(args.detector or args.detections) if args.track is None else args.track
    if tracked:  # ByteTrack's imports take seconds: load them while the models load
        threading.Thread(target=importlib.import_module, args=("trackers",), daemon=True).start()
    regions = build_regions(args)
    gallery = Gallery.load(args.gallery) if args.gallery else None
    if gallery is not None:
        from fogreid.runtime.gallery import model_identity

        gallery.check_identity(model_identity(args.model))   # before the model loads: a cheap refusal
    publisher = None
    if args.publish:
        from fogreid.runtime.bus import BusUnavailable, RedisPublisher, parse_bus_url
        from fogreid.runtime.gallery import model_identity

        try:
            publisher = RedisPublisher(parse_bus_url(args.publish, "--publish"), model_identity(args.model))
        except BusUnavailable as exc:
            print(f"fogreid run: error: --publish: {exc}", file=sys.stderr)
            return 1
    opts = run_options(args, regions, gallery, publisher, tracked)
    stats = stream(args, opts, publisher)
    if stats is None:
        return 1
    print(json.dumps(stats_dict(stats)))
    if opts.fog_gate is not None:
        print(f"fogreid run: {opts.fog_gate.describe()}", file=sys.stderr)
    return report_problems(args, stats)


def check_files(args: argparse.Namespace) -> None:
    """Every file the run reads or writes, and the options that only make sense together."""
    from fogreid.runtime.pipeline import default_embed_defogged

    if args.embed_defogged is None:
        args.embed_defogged = default_embed_defogged(args.gallery)
    input_file(args.model, "--model", "model", "model", {"npz": "--gallery", "json": "--rois", "text": "--detections"})
    input_file(args.gallery, "--gallery", "gallery", "gallery", {"onnx": "--model", "checkpoint": "--model"})
    input_file(args.detector, "--detector", "ONNX detector", "onnx", {"npz": "--gallery"})
    input_file(args.rois, "--rois", "JSON", "json", {"onnx": "--model or --detector", "npz": "--gallery",
                                                  "jsonl": "an events file? give the ROI JSON"})
    from fogreid.runtime.sources import parse_source, refuse_repeated

    refuse_repeated(args.source)
    for source in args.source:  # a FIFO, /dev/null or a text file: refused here, not after the model loads
        if os.path.lexists(source):
            parse_source(source)
    for path in args.detections or []:
        input_file(path, "--detections", "det.txt", "text", {"onnx": "--detector"})
    from fogreid.fileio import refuse_outputs_over_inputs
    from fogreid.runtime.pipeline import saved_video_paths

    refuse_outputs_over_inputs(
        {"--events": args.events,
         "--save-video": saved_video_paths(args.save_video, args.source) if args.save_video else None},
        {"--model": args.model, "--source": args.source, "--gallery": args.gallery, "--detector": args.detector,
         "--detections": args.detections, "--rois": args.rois, "--defog-model": args.defog_model})
    output_file(args.events, "--events")
    if args.events and os.path.isfile(args.events) and not args.overwrite:
        raise FogreidError(f"--events {args.events}: exists (a previous run's?); add --overwrite to replace it, or "
                           f"choose another file")
    output_file(args.save_video, "--save-video", (".mp4", ".avi", ".mkv", ".mov"))
    if args.defog_view and not args.save_video:
        raise FogreidError("--defog-view draws into the saved video: add --save-video OUT.mp4")
    if args.defog_model and args.defog_view != "frame":
        raise FogreidError("--defog-model is for --defog-view frame")
    input_file(args.defog_model, "--defog-model", "defog frame graph", "onnx")
    if args.gallery and args.embed_defogged != "never":
        from fogreid.runtime.pipeline import GALLERY_AND_DEFOGGED_EMBEDDINGS

        raise FogreidError(GALLERY_AND_DEFOGGED_EMBEDDINGS)
    if args.defog and not args.defog_view:
        raise FogreidError("--defog chooses which saved frames are defogged: add --defog-view")
    view_auto = args.defog_view and args.defog in (None, "auto")
    if args.fog_threshold is not None and not view_auto and args.embed_defogged != "auto":
        raise FogreidError("--fog-threshold is for --defog auto (with --defog-view) and --embed-defogged auto, "
                           f"not --defog {args.defog or 'auto'} with --embed-defogged {args.embed_defogged}")
    if args.det_imgsz is not None and len(args.det_imgsz) not in (1, 2):
        raise FogreidError("--det-imgsz takes H or H W")


def build_regions(args: argparse.Namespace):
    """Where the vehicles are: a detector, public detections, fixed ROIs or the whole frame."""
    from fogreid.runtime.regions import FixedRegions, FullFrame, OnnxDetector, PublicDetections

    if args.detector:
        imgsz = (args.det_imgsz[0], args.det_imgsz[-1]) if args.det_imgsz else None
        return OnnxDetector(args.detector, conf=args.det_conf, iou=args.det_iou, max_det=args.max_det,
                            classes=args.det_classes, imgsz=imgsz, layout=args.detector_layout, device=args.device)
    if args.detections:
        return PublicDetections(args.detections, args.source)
    return FixedRegions(args.rois) if args.rois else FullFrame()


def run_options(args: argparse.Namespace, regions, gallery, publisher, tracked: bool):
    from fogreid.runtime.association import AssociationConfig
    from fogreid.runtime.pipeline import RunOptions
    from fogreid.runtime.tracking import TrackingConfig

    tracking = (TrackingConfig(fps=args.fps, lost_seconds=args.lost_seconds, min_score=args.min_score)
                if tracked else None)
    association = (AssociationConfig(threshold=args.assoc_threshold, gallery_threshold=args.min_score,
                                     max_gap=args.max_gap, min_transit=args.min_transit,
                                     overlapping_cameras=args.overlapping_cameras)
                   if tracked and not args.no_global_ids else None)
    defog_frames = None
    if args.defog_view == "frame":
        from fogreid.runtime.frame_defog import FrameDefogger, find_frame_graph

        # The graph is an ONNX file whatever --model is: with --backend torch or tensorrt it runs on ONNX Runtime.
        backend = args.backend if args.backend in ("auto", "onnxruntime", "openvino") else "onnxruntime"
        defog_frames = FrameDefogger(args.defog_model or find_frame_graph(args.model), args.device, backend)
    from fogreid.runtime.fog_gate import DEFAULT_THRESHOLD, FogGate

    fog_threshold = DEFAULT_THRESHOLD if args.fog_threshold is None else args.fog_threshold
    fog_gate = FogGate(args.defog or "auto", fog_threshold) if args.defog_view else None
    return RunOptions(args.source, regions, gallery, args.events, args.save_video, args.defog_view == "crops",
                      args.batch, queue_size=args.queue, top_k=args.top_k, min_score=args.min_score,
                      max_frames=args.max_frames, reconnect=not args.no_reconnect, max_retries=args.max_retries,
                      give_up_after=args.give_up_after, video_fps=args.fps,
                      tracking=tracking, association=association, pipelined=not args.serial,
                      stall_seconds=args.stall_seconds, backoff=(min(0.5, args.max_backoff), args.max_backoff),
                      rtsp_transport=args.rtsp_transport, defog_frames=defog_frames, fog_gate=fog_gate,
                      embed_defogged=args.embed_defogged, fog_threshold=fog_threshold,
                      publish=publisher, overwrite=args.overwrite)


def stream(args: argparse.Namespace, opts, publisher):
    """Load the model and run the sources until they end or SIGINT / SIGTERM; None when the
    bus went away (the error is printed)."""
    import contextlib
    import signal
    import threading

    from fogreid.runtime.backends import load_deployed
    from fogreid.runtime.pipeline import needs_defogged_crops, run_stream

    stop = threading.Event()

    def request_stop(signum, _frame):
        print(f"\n[run] {signal.Signals(signum).name}: finishing the batch in flight and closing outputs",
              file=sys.stderr)
        stop.set()

    # The handlers are this run's: put back afterwards (a caller in the same process keeps its own).
    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        cut = cuts_graph(args, opts)
        with load_deployed(args.model, args.backend, args.device, batch=args.batch, defogged_only=cut,
                           embedding_only=not needs_defogged_crops(opts)) as model, \
                (load_deployed(args.model, args.backend, args.device, batch=args.batch, embedding_only=True) if cut
                 else contextlib.nullcontext()) as embedder:
            print(f"[run] {model.name} on {', '.join(args.source)}"
                  + (f" (cut down to its defogged output, for the crops of foggy frames; embeddings by "
                     f"{embedder.name}, the graph cut down to its embedding)" if embedder else ""), file=sys.stderr)
            if publisher is None:
                return run_stream(model, opts, stop, embedder)
            from fogreid.runtime.bus import BusUnavailable
            from fogreid.runtime.sources import parse_source

            try:
                stats = run_stream(model, opts, stop, embedder)
                for source in args.source:
                    publisher.end(parse_source(source).name)
                publisher.close()
            except BusUnavailable as exc:
                print(f"fogreid run: error: --publish: {exc}", file=sys.stderr)
                return None
            print(f"[run] published {publisher.sent} events to {args.publish}", file=sys.stderr)
            return stats
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def cuts_graph(args: argparse.Namespace, opts) -> bool:
    """Whether the run loads the file twice, cut down to its defogged output (for the crops of
    foggy frames) and to its embedding (for every crop, those defogged): where it defogs only the
    crops of foggy frames (pipeline.cuts_for_embedding) and the file runs on an engine that can
    cut the graph (ONNX Runtime and OpenVINO; a checkpoint or a TensorRT engine computes both
    outputs anyway). With `--backend auto` each graph gets the engine measured faster for it (for
    the whole graph and its embedding they differ: docs/benchmarks.md, CPU engines); every
    embedding comes from the one cut graph."""
    from fogreid.runtime.backends import artifact_kind
    from fogreid.runtime.pipeline import cuts_for_embedding

    return cuts_for_embedding(opts) and artifact_kind(args.model, args.backend) in ("onnxruntime", "openvino")


def report_problems(args: argparse.Namespace, stats) -> int:
    """Warnings and source errors on stderr; the exit code."""
    if stats.invalid_boxes:
        origin = (f"--detector {args.detector}" if args.detector else f"--detections {' '.join(args.detections)}"
                  if args.detections else "the regions")
        print(f"fogreid run: warning: dropped {stats.invalid_boxes} boxes with NaN or infinite values or no area, "
              f"from {origin} (`invalid_boxes` above); check that it is a working detector", file=sys.stderr)
    for error in stats.errors:
        print(f"fogreid run: source error: {error}", file=sys.stderr)
    for source in stats.stalled:
        print(f"fogreid run: source {source} went {args.stall_seconds:g} s or more without a frame", file=sys.stderr)
    # A failed source fails the run, even when another produced frames; a stall only when nothing came.
    return 1 if stats.errors or (stats.stalled and stats.frames == 0) else 0

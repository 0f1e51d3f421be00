"""`fogreid run`: defog + ReID on video files, folders, cameras and streams."""

from __future__ import annotations

import argparse
import sys

from fogreid.errors import FogreidError


def add_parser(verbs: argparse._SubParsersAction) -> None:
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
    p.add_argument("--publish", metavar="redis://HOST:PORT/STREAM",
                   help="also send every event with its embedding to this Redis stream (see `fogreid associate`)")
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
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
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
    if gallery is not None:
        from fogreid.runtime.gallery import model_identity

        gallery.check_identity(model_identity(args.model))   # before the model loads: a cheap refusal
    if args.defog_view and not args.save_video:
        raise FogreidError("--defog-view draws into the saved video: add --save-video OUT.mp4")
    publisher = None
    if args.publish:
        from fogreid.runtime.bus import BusUnavailable, RedisPublisher, parse_bus_url
        from fogreid.runtime.gallery import model_identity

        try:
            publisher = RedisPublisher(parse_bus_url(args.publish, "--publish"), model_identity(args.model))
        except BusUnavailable as exc:
            print(f"fogreid run: error: --publish: {exc}", file=sys.stderr)
            return 1
    opts = RunOptions(args.source, regions, gallery, args.events, args.save_video, args.defog_view, args.batch,
                      queue_size=args.queue, top_k=args.top_k, min_score=args.min_score, max_frames=args.max_frames,
                      reconnect=not args.no_reconnect, max_retries=args.max_retries, publish=publisher)
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
    if publisher is not None:
        publisher.close()
        print(f"[run] published {publisher.sent} events to {args.publish}", file=sys.stderr)
    print(json.dumps(stats_dict(stats)))
    for error in stats.errors:
        print(f"fogreid run: source error: {error}", file=sys.stderr)
    return 1 if stats.errors and stats.frames == 0 else 0

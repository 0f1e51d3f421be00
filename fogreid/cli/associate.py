"""`fogreid associate`: the central matcher of a Redis Streams bus (see fogreid/runtime/bus.py)."""

from __future__ import annotations

import argparse
import sys

from fogreid.cli.common import cosine_float, cosine_or_auto, int_in, seconds, seconds_or_zero


def add_parser(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("associate", help="central matcher: global vehicle ids for the events of many `fogreid run "
                                           "--publish` nodes, from a Redis stream")
    p.add_argument("--bus", required=True, metavar="redis://HOST:PORT/STREAM",
                   help="the stream the edge nodes publish to; results go to STREAM:global")
    p.add_argument("--gallery", help="a gallery from `fogreid gallery`: names identities it knows")
    p.add_argument("--group", default="fogreid-matcher", help="consumer group name (default fogreid-matcher)")
    p.add_argument("--consumer", help="this matcher's consumer name (default HOST-PID)")
    p.add_argument("--claim-idle", type=seconds_or_zero, default=5.0,
                   help="take over entries another consumer left pending this many seconds (default 5)")
    p.add_argument("--threshold", type=cosine_or_auto, default="auto", help="cosine to join a known identity, or "
                   "auto (default, as fogreid run's): learnt per camera pair from the tracks")
    p.add_argument("--min-score", type=cosine_float, default=0.5,
                   help="gallery cosine below which a track stays unknown (default 0.5, as fogreid run's)")
    p.add_argument("--max-gap", type=seconds, help="most seconds between leaving one camera and entering another")
    p.add_argument("--min-transit", type=seconds_or_zero, default=0.0, help="least such seconds (default 0)")
    p.add_argument("--overlapping-cameras", action="store_true", help="cameras may see one vehicle at once")
    p.add_argument("--max-delay", type=seconds_or_zero, default=10.0, help="seconds an event may wait for the other "
                   "cameras' clocks to pass its own (events are associated in time order; default 10)")
    p.add_argument("--expect-sources", type=int_in(1, 10_000), default=1,
                   help="wait for this many cameras to publish before associating (default 1)")
    p.add_argument("--idle-exit", type=seconds, help="stop after this many seconds without a new event (default: run)")
    p.add_argument("--max-events", type=int_in(1), help="stop after processing this many events")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import json
    import signal
    import threading

    from fogreid.cli.common import input_file
    from fogreid.runtime.association import AssociationConfig, CrossCameraAssociator
    from fogreid.runtime.bus import BusUnavailable, Matcher, MatcherOptions, parse_bus_url
    from fogreid.runtime.gallery import Gallery
    from fogreid.runtime.tracking import TrackingConfig

    input_file(args.gallery, "--gallery", "gallery", "gallery", {"onnx": "`fogreid run --model`"})
    url = parse_bus_url(args.bus)
    gallery = Gallery.load(args.gallery) if args.gallery else None
    # the same settings `fogreid run` gives its own TrackBook and associator
    config = AssociationConfig(threshold=args.threshold, gallery_threshold=args.min_score,
                               max_gap=args.max_gap, min_transit=args.min_transit,
                               overlapping_cameras=args.overlapping_cameras)
    opts = MatcherOptions(group=args.group, claim_idle_ms=int(args.claim_idle * 1000), idle_exit=args.idle_exit,
                          max_entries=args.max_events, max_delay=args.max_delay,
                          expect_sources=args.expect_sources)
    if args.consumer:
        opts.consumer = args.consumer
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        matcher = Matcher(url, CrossCameraAssociator(config, gallery), opts,
                          gallery.model.get("checkpoint_sha256") if gallery else None,
                          TrackingConfig(min_score=args.min_score), gallery)
        print(f"[associate] {url.stream} on {url.host}:{url.port}, group {opts.group}, consumer {opts.consumer}",
              file=sys.stderr, flush=True)
        matcher.run(stop)
    except BusUnavailable as exc:
        print(f"fogreid associate: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        import redis

        if isinstance(exc, redis.RedisError):
            print(f"fogreid associate: error: Redis at {url.host}:{url.port}: {exc}", file=sys.stderr)
            return 1
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if matcher.invalid:
        print(f"fogreid associate: warning: {matcher.invalid} events carried NaN or infinite embeddings (a damaged "
              f"model on their node?) and got no global id", file=sys.stderr)
    print(json.dumps({"processed": matcher.processed, "claimed": matcher.claimed, "replayed": matcher.replayed,
                      "invalid": matcher.invalid,
                      "identities": len(matcher.associator.identities), "results": url.results}))
    return 0

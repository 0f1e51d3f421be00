"""`fogreid run`: defog + ReID on live or recorded streams.

  capture threads (sources.py)  ->  regions of each frame (regions.py)  ->  crops resized
  by the runtime's one resize function  ->  batches across frames and sources  ->  the model
  (backends.py)  ->  gallery matching (gallery.py)  ->  events (JSON lines), annotated video

A stop request (Ctrl-C / SIGTERM sets `stop`) ends the loop after the batch in flight;
every output is then flushed and closed, so the events file and the video are complete.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from fogreid.data.image_io import resize_for_model
from fogreid.runtime.gallery import Gallery
from fogreid.runtime.sources import Frame, SourceReader, parse_source


@dataclass
class RunOptions:
    sources: list[str]
    regions: object                     # FullFrame | FixedRegions | OnnxDetector
    gallery: Gallery | None = None
    events: Path | None = None
    save_video: Path | None = None
    defog_view: bool = False
    batch: int = 16
    max_wait: float = 0.03              # seconds to fill a batch before running a partial one
    queue_size: int = 2                 # frames buffered per live source: latency is bounded by it
    top_k: int = 1
    min_score: float = 0.0              # matches below this cosine are reported as unknown
    max_frames: int | None = None       # per source; for tests and benchmarks
    reconnect: bool = True
    max_retries: int | None = None
    stats_every: float = 2.0
    publish: object = None              # callable(event, embedding) and .flush(): the bus (runtime/bus.py)
    video_fps: float = 25.0


@dataclass
class RunStats:
    frames: int = 0
    crops: int = 0
    matched: int = 0
    dropped: int = 0
    reconnects: int = 0
    seconds: float = 0.0
    fps: float = 0.0
    latency_p50_ms: float = 0.0
    latency_p95_ms: float = 0.0
    errors: list[str] = field(default_factory=list)


class Outputs:
    """The events file and one video writer per source, opened on first use, closed once."""

    def __init__(self, opts: RunOptions) -> None:
        self.opts = opts
        self.events = open(opts.events, "a", buffering=1) if opts.events else None
        self.writers: dict[str, object] = {}

    def video(self, source: str, shape: tuple[int, int]):
        import cv2

        if self.opts.save_video is None:
            return None
        if source not in self.writers:
            path = Path(self.opts.save_video)
            if len(self.opts.sources) > 1:
                path = path.with_name(f"{path.stem}_{self.opts.sources.index(source)}{path.suffix}")
            path.parent.mkdir(parents=True, exist_ok=True)
            self.writers[source] = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), self.opts.video_fps,
                                                   (shape[1], shape[0]))
        return self.writers[source]

    def close(self) -> None:
        for writer in self.writers.values():
            writer.release()
        if self.events:
            self.events.flush()
            self.events.close()


def annotate(image: np.ndarray, boxes, labels: list[str], colours: list[tuple[int, int, int]]) -> np.ndarray:
    import cv2

    for (x1, y1, x2, y2), label, colour in zip(boxes, labels, colours):
        cv2.rectangle(image, (x1, y1), (x2, y2), colour, 2)
        cv2.putText(image, label, (x1 + 2, max(y1 - 5, 12)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA)
    return image


def run_stream(model, opts: RunOptions, stop: threading.Event | None = None) -> RunStats:
    stop = stop or threading.Event()
    if opts.gallery is not None:
        probe = model(np.zeros((1, *model.input_size, 3), np.uint8))[1]
        opts.gallery.check_model(probe.shape[1], model.input_size)
    readers = [SourceReader(parse_source(s), opts.queue_size, opts.reconnect, max_retries=opts.max_retries,
                            stop=stop) for s in opts.sources]
    for reader in readers:
        reader.start()
    outputs = Outputs(opts)
    stats, latencies, started, last_report = RunStats(), [], time.perf_counter(), time.perf_counter()
    taken = {r.spec.name: 0 for r in readers}
    try:
        while not stop.is_set():
            frames = _collect(readers, opts, taken, stats.crops / max(stats.frames, 1) if stats.frames else 1.0)
            if not frames:
                if all(r.exhausted or (opts.max_frames and taken[r.spec.name] >= opts.max_frames) for r in readers):
                    break
                continue
            _process(model, frames, opts, outputs, stats, latencies)
            if time.perf_counter() - last_report >= opts.stats_every:
                _summarise(stats, latencies, readers, started)
                print(f"[run] {stats.fps:.1f} fps | latency p50 {stats.latency_p50_ms:.0f} ms p95 "
                      f"{stats.latency_p95_ms:.0f} ms | {stats.crops} crops, {stats.matched} matched | dropped "
                      f"{stats.dropped} | reconnects {stats.reconnects}", file=sys.stderr, flush=True)
                last_report = time.perf_counter()
    finally:
        stop.set()
        outputs.close()
        for reader in readers:
            reader.join(timeout=5)
        _summarise(stats, latencies, readers, started)
        stats.errors = [f"{r.spec.name}: {r.error}" for r in readers if r.error]
    return stats


def _collect(readers: list[SourceReader], opts: RunOptions, taken: dict[str, int],
             crops_per_frame: float = 1.0) -> list[Frame]:
    """What is ready now, round-robin across sources, up to about one batch of crops.

    Only the first frame is waited for (up to max_wait); after it, only frames already queued
    are taken: waiting to fill a batch would add its whole duration to every frame's latency."""
    frames: list[Frame] = []
    budget = max(1, int(opts.batch / max(crops_per_frame, 1e-3)))
    deadline = time.perf_counter() + opts.max_wait
    while len(frames) < budget:
        got = False
        for reader in readers:
            if len(frames) >= budget or (opts.max_frames and taken[reader.spec.name] >= opts.max_frames):
                continue
            frame = reader.take(timeout=0.005 if not frames else 0.0)
            if frame is not None:
                frames.append(frame)
                taken[reader.spec.name] += 1
                got = True
        if not got and (frames or time.perf_counter() >= deadline or all(r.exhausted for r in readers)):
            break
    return frames


def _process(model, frames: list[Frame], opts: RunOptions, outputs: Outputs, stats: RunStats,
             latencies: list[float]) -> None:
    import cv2

    crops, owners = [], []
    regions = opts.regions([frame.image for frame in frames], [frame.source for frame in frames])
    for i, (frame, found) in enumerate(zip(frames, regions)):
        for (x1, y1, x2, y2) in (r.box for r in found):
            crops.append(resize_for_model(frame.image[y1:y2, x1:x2], model.input_size))
            owners.append(i)
    defogged, embeddings = [], []
    for start in range(0, len(crops), opts.batch):
        d, e = model(np.stack(crops[start:start + opts.batch]))
        defogged.append(d)
        embeddings.append(e)
    defogged_all = np.concatenate(defogged) if defogged else np.zeros((0, *model.input_size, 3), np.uint8)
    emb = np.concatenate(embeddings) if embeddings else np.zeros((0, 1), np.float32)
    matches = opts.gallery.match(emb, opts.top_k) if opts.gallery is not None and len(emb) else None
    done = time.time()
    crop_index = 0
    for i, (frame, found) in enumerate(zip(frames, regions)):
        boxes, labels, colours = [], [], []
        canvas = frame.image.copy()
        for box, det_score in ((r.box, r.score) for r in found):
            event = {"time": round(frame.time, 3), "source": frame.source, "frame": frame.index,
                     "box": list(box), "detection_score": round(det_score, 4), "match": None}
            label, colour = "vehicle", (200, 200, 200)
            if matches is not None:
                idx, score = matches[0][crop_index], matches[1][crop_index]
                top = [{"id": opts.gallery.labels[j], "score": round(float(s), 4)} for j, s in zip(idx, score)]
                event["top_k"] = top
                if top[0]["score"] >= opts.min_score:
                    event["match"] = top[0]
                    stats.matched += 1
                    label, colour = f"{top[0]['id']} {top[0]['score']:.2f}", (60, 220, 60)
                else:
                    label = f"unknown {top[0]['score']:.2f}"
            if opts.defog_view:
                x1, y1, x2, y2 = box
                canvas[y1:y2, x1:x2] = cv2.resize(defogged_all[crop_index], (x2 - x1, y2 - y1))
            if outputs.events:
                outputs.events.write(json.dumps(event) + "\n")
            if opts.publish is not None:
                opts.publish(event, emb[crop_index])
            boxes.append(box)
            labels.append(label)
            colours.append(colour)
            crop_index += 1
        writer = outputs.video(frame.source, frame.image.shape[:2])
        if writer is not None:
            writer.write(annotate(canvas, boxes, labels, colours))
        latencies.append(done - frame.time)
        stats.frames += 1
    stats.crops += len(crops)
    if outputs.events:
        outputs.events.flush()
    if opts.publish is not None:
        opts.publish.flush()


def _summarise(stats: RunStats, latencies: list[float], readers: list[SourceReader], started: float) -> None:
    stats.seconds = time.perf_counter() - started
    stats.fps = stats.frames / max(stats.seconds, 1e-9)
    recent = np.array(latencies[-2000:]) * 1000 if latencies else np.zeros(1)
    stats.latency_p50_ms, stats.latency_p95_ms = float(np.percentile(recent, 50)), float(np.percentile(recent, 95))
    stats.dropped = sum(r.dropped for r in readers)
    stats.reconnects = sum(r.reconnects for r in readers)


def stats_dict(stats: RunStats) -> dict:
    return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in asdict(stats).items()}

"""`fogreid run`: defog + ReID on live or recorded streams, as three overlapping stages.

  capture threads (sources.py)
    -> [detect]  regions of a batch of frames (regions.py), tracks per source (tracking.py),
                 crops resized by the runtime's one resize function
    -> [reid]    the model on the crops, batched across frames and sources (backends.py),
                 gallery top-k
    -> [write]   track identities and global ids (tracking.py, association.py), events
                 (JSON lines), annotated videos
Stages hand work over through bounded queues (`stage_queue` items each), so detection of the
next frames, inference of these and writing of the previous ones run at once and the
throughput is set by the slowest stage, not by their sum. `pipelined=False` runs the same
stages one after another in one thread (for comparison).

A stop request (Ctrl-C / SIGTERM sets `stop`) ends capture; the work in flight drains and
every output is then flushed and closed, so the events file and the videos are complete.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from fogreid.data.image_io import resize_for_model
from fogreid.errors import FogreidError
from fogreid.runtime.association import AssociationConfig, CrossCameraAssociator
from fogreid.runtime.fog_gate import DEFAULT_THRESHOLD, MODES, FogGate, fog_density
from fogreid.runtime.gallery import Gallery
from fogreid.runtime.regions import Region, drop_invalid
from fogreid.runtime.sources import Frame, SourceReader, parse_source, refuse_repeated
from fogreid.runtime.tracking import SourceTracker, TrackBook, TrackingConfig, crop_quality

# A gallery holds embeddings of its images as given; matched against defogged-crop embeddings it
# finds the wrong vehicles (a generated foggy video: 53 % right instead of 78 %).
GALLERY_AND_DEFOGGED_EMBEDDINGS = ("--embed-defogged embeds the defogged crops, but a gallery holds embeddings of "
                                   "its images as given: use --embed-defogged never with --gallery")


@dataclass
class RunOptions:
    sources: list[str]
    regions: object                     # FullFrame | FixedRegions | OnnxDetector | PublicDetections:
                                        # (images, sources, frame indices) -> regions per image
    gallery: Gallery | None = None
    events: Path | None = None
    save_video: Path | None = None
    defog_view: bool = False            # paste the defogged crops into the saved video (or see defog_frames)
    batch: int = 16
    max_wait: float = 0.03              # seconds to wait for the first frame of a batch
    queue_size: int = 2                 # frames buffered per live source: latency is bounded by it
    top_k: int = 1
    min_score: float = 0.0              # matches below this cosine are reported as unknown
    max_frames: int | None = None       # per source; for tests and benchmarks
    reconnect: bool = True
    max_retries: int | None = None
    give_up_after: float | None = None  # seconds a live source may go without a frame before it is given up
    stats_every: float = 2.0
    video_fps: float = 25.0
    tracking: TrackingConfig | None = None        # None: no tracks (fixed regions, full frame)
    association: AssociationConfig | None = None  # None: no global ids across cameras
    min_crop: int = 8                   # crops smaller than this (pixels, either side) are not identified
    pipelined: bool = True
    stage_queue: int = 2                # batches waiting between two stages
    stall_seconds: float = 5.0          # a source with no frame for this long is reported
    backoff: tuple[float, float] = (0.5, 2.0)   # reconnect delay: first, cap (seconds)
    rtsp_transport: str = "tcp"
    defog_frames: object = None         # a frame -> defogged frame callable (frame_defog.FrameDefogger):
                                        # the saved video shows whole defogged frames under the annotations
    fog_gate: object = None             # fog_gate.FogGate: which frames' views are defogged (None: all of them)
    embed_defogged: str = "never"       # embed the model's defogged crop instead of the crop: auto (on frames
                                        # whose fog density reaches fog_threshold), always, never (fogreid
                                        # run's default: default_embed_defogged)
    fog_threshold: float = DEFAULT_THRESHOLD
    publish: object = None              # callable(event, embedding) and .flush(): the bus (runtime/bus.py)
    overwrite: bool = False             # replace an existing events file (else refused: never appended to)


@dataclass
class RunStats:
    frames: int = 0
    crops: int = 0
    matched: int = 0
    tracks: int = 0
    global_ids: int = 0
    dropped: int = 0
    invalid_boxes: int = 0              # regions dropped for NaN / inf values or an empty box (regions.drop_invalid)
    clear_views: int = 0                # saved frames the fog gate showed as they are (not defogged)
    defogged_embeddings: int = 0        # crops identified by their defogged crop (--embed-defogged)
    reconnects: int = 0
    seconds: float = 0.0
    fps: float = 0.0
    latency_p50_ms: float = 0.0
    latency_p95_ms: float = 0.0
    first_event_s: float | None = None  # from run_stream's start to the first event written
    stalled: list[str] = field(default_factory=list)   # sources that went `stall_seconds` with no frame
    errors: list[str] = field(default_factory=list)


@dataclass
class Work:
    """One batch of frames on its way through the stages."""

    frames: list[Frame]
    regions: list[list[Region]]
    track_ids: list[list[int]]
    crops: np.ndarray | None = None     # (K, H, W, 3) uint8 for the regions kept
    owners: list[tuple[int, int]] = field(default_factory=list)   # (frame, region) of each crop
    defogged: np.ndarray | None = None
    embeddings: np.ndarray | None = None
    matches: tuple[np.ndarray, np.ndarray] | None = None
    alive: list[set[int] | None] = field(default_factory=list)   # per frame: its source's live tracks after it
    embed_defogged: list[bool] = field(default_factory=list)     # per crop: embedded from its defogged crop
    densities: list[float | None] = field(default_factory=list)  # per frame: fog density, when a gate measures it


def saved_video_paths(save_video: str | Path, sources: list[str]) -> list[Path]:
    """The video written for each source: `save_video` itself, or OUT_<i>.mp4 for several sources."""
    path = Path(save_video)
    if len(sources) == 1:
        return [path]
    return [path.with_name(f"{path.stem}_{i}{path.suffix}") for i in range(len(sources))]


def open_events(path: str | Path, overwrite: bool = False):
    """A new events file, or a replaced one with `overwrite`; never appended to: a second run's
    events after the first's count every vehicle twice (eval-mtmc then scored IDF1 124.8 %). Lines
    are written as they come, so a reader can follow the file live; a pipe or device is a stream
    and is written as it is."""
    path = Path(path)
    if path.exists() and not path.is_file():
        return open(path, "a", buffering=1)
    return open(path, "w" if overwrite else "x", buffering=1)


def event_line(event: dict) -> str:
    """One event as a JSON line. Strict JSON: a NaN or inf (which json.dumps would write as the
    non-JSON `NaN`) is refused; the values are checked where they are made (models, galleries
    and detectors refuse or drop non-finite numbers), so this is a last guard."""
    try:
        return json.dumps(event, allow_nan=False)
    except ValueError:
        bad = [k for k, v in event.items() if isinstance(v, float) and not np.isfinite(v)]
        raise FogreidError(f"an event of {event.get('source')} frame {event.get('frame')} holds a non-finite number "
                           f"({', '.join(bad) or 'nested'}); not written: the events file stays valid JSON") from None


class Outputs:
    """The events file and one video writer per source, opened on first use, closed once.
    `draw` decides what a saved frame shows; extend it for other views."""

    def __init__(self, opts: RunOptions) -> None:
        self.opts = opts
        self.events = open_events(opts.events, opts.overwrite) if opts.events else None
        self.writers: dict[str, object] = {}

    def write_events(self, events: list[dict]) -> None:
        if self.events:
            for event in events:
                self.events.write(event_line(event) + "\n")
        if self.opts.publish is not None:   # a track's end tells the central matcher (runtime/bus.py)
            for event in events:
                if event["event"] == "track_end":
                    self.opts.publish(event, np.zeros(0, np.float32))

    def video(self, source: str, shape: tuple[int, int]):
        import cv2

        if self.opts.save_video is None:
            return None
        if source not in self.writers:
            path = saved_video_paths(self.opts.save_video, self.opts.sources)[self.opts.sources.index(source)]
            path.parent.mkdir(parents=True, exist_ok=True)
            self.writers[source] = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), self.opts.video_fps,
                                                   (shape[1], shape[0]))
        return self.writers[source]

    def draw(self, frame: Frame, boxes, labels, colours, defogged: list[np.ndarray],
             density: float | None = None) -> np.ndarray:
        import cv2

        # The gate decides the view only: events and identities never depend on it.
        foggy = self.opts.fog_gate is None or self.opts.fog_gate.foggy(frame.source, frame.image, density)
        whole = self.opts.defog_frames is not None and foggy
        canvas = self.opts.defog_frames(frame.image) if whole else frame.image.copy()
        if self.opts.defog_view and foggy:
            for (x1, y1, x2, y2), crop in zip(boxes, defogged, strict=True):
                if x2 > x1 and y2 > y1:
                    canvas[y1:y2, x1:x2] = cv2.resize(crop, (x2 - x1, y2 - y1))
        return annotate(canvas, boxes, labels, colours)

    def close(self) -> None:
        for writer in self.writers.values():
            writer.release()
        if self.events:
            self.events.flush()
            self.events.close()


def annotate(image: np.ndarray, boxes, labels: list[str], colours: list[tuple[int, int, int]]) -> np.ndarray:
    import cv2

    # Text about 2.5 % of the frame's height, on a filled box of the label's colour: readable on a
    # 640x480 or 1920x1080 frame, over fog or a defogged view alike.
    scale = max(0.4, image.shape[0] / 900)
    thickness = max(1, round(scale * 2))
    for (x1, y1, x2, y2), label, colour in zip(boxes, labels, colours, strict=True):
        cv2.rectangle(image, (x1, y1), (x2, y2), colour, thickness)
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        top = max(y1 - th - base - 4, 0)
        cv2.rectangle(image, (x1, top), (x1 + tw + 4, top + th + base + 4), colour, -1)
        cv2.putText(image, label, (x1 + 2, top + th + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness,
                    cv2.LINE_AA)
    return image


def default_embed_defogged(gallery) -> str:
    """`fogreid run`'s --embed-defogged when none is given: `auto` (in fog the joint model finds a
    vehicle across cameras far better by its defogged crop; docs/benchmarks.md, Multi-camera
    tracking), but `never` with a gallery, whose embeddings are of its images as given."""
    return "never" if gallery is not None else "auto"


def cuts_for_embedding(opts: RunOptions) -> bool:
    """Whether the run identifies most crops by the embedding alone and defogs only some: with
    --embed-defogged auto and no defogged view, a crop on a clear frame needs only the
    embedding's part of the graph, a crop on a foggy one the defog part first, then the
    embedding's part on its defogged crop. The CLI then loads the artifact twice, cut down to its
    defogged output (the model) and to its embedding (`Pipeline`'s `embedder`), where the engine
    can cut it (fogreid/cli/run.py, cuts_graph)."""
    return opts.embed_defogged == "auto" and not opts.defog_view


def needs_defogged_crops(opts: RunOptions) -> bool:
    """Whether a run looks at the model's defogged crops: pasted into the saved video, or embedded
    again (--embed-defogged). When not, the CLI loads the model `embedding_only`, which on the
    CPU engines skips the defog head, the larger part of each call (docs/benchmarks.md, Streams)."""
    return opts.defog_view or opts.embed_defogged != "never"


class Pipeline:
    """The three stages of one run. `run()` drives them and returns the figures."""

    def __init__(self, model, opts: RunOptions, stop: threading.Event, embedder=None) -> None:
        if opts.tracking is not None:
            import trackers  # noqa: F401  (a second of imports, before the clock starts, not at the first frame)
        if opts.embed_defogged not in MODES:
            raise ValueError(f"embed_defogged {opts.embed_defogged!r}: choose {', '.join(MODES)}")
        if opts.embed_defogged != "never" and opts.gallery is not None:
            raise ValueError(GALLERY_AND_DEFOGGED_EMBEDDINGS)
        if getattr(model, "embedding_only", False) and needs_defogged_crops(opts):
            raise ValueError("this run pastes or embeds the defogged crops, but the model was loaded "
                             "embedding_only: load it without (see needs_defogged_crops)")
        if embedder is not None and not cuts_for_embedding(opts):
            raise ValueError("an embedder is for embed_defogged='auto' without a defogged view (cuts_for_embedding)")
        if getattr(model, "defogged_only", False) and embedder is None:
            raise ValueError("the model was loaded defogged_only: pass the embedder that embeds the crops")
        if embedder is not None and tuple(embedder.imgsz) != tuple(model.imgsz):
            raise ValueError(f"the embedder takes {embedder.imgsz} crops, the model {model.imgsz}: load the same file")
        refuse_repeated(opts.sources)
        self.model, self.opts, self.stop = model, opts, stop
        self.embedder = embedder   # the same artifact cut down to its embedding (cuts_for_embedding), or None
        self.started = time.perf_counter()
        self.stats, self.latencies = RunStats(), []
        self.readers = [SourceReader(parse_source(s), opts.queue_size, opts.reconnect, backoff=opts.backoff,
                                     max_retries=opts.max_retries, stop=stop, rtsp_transport=opts.rtsp_transport,
                                     give_up_after=opts.give_up_after)
                        for s in opts.sources]
        self.taken = {r.spec.name: 0 for r in self.readers}
        self.recorded = all(not r.spec.live for r in self.readers)   # a replay: processed in clock order
        self.trackers: dict[str, SourceTracker] = {}
        associator = (CrossCameraAssociator(opts.association, opts.gallery) if opts.association is not None
                      else None)
        self.book = TrackBook(opts.tracking, opts.gallery, associator) if opts.tracking is not None else None
        self.associator = associator
        # Its own gate, so that the view's --defog mode never changes an identity.
        self.embed_gate = FogGate(opts.embed_defogged, opts.fog_threshold)
        # Both gates read one measurement of a frame (2 ms at 640x480), taken in the detect stage.
        self.measure_fog = opts.embed_defogged == "auto" or (opts.fog_gate is not None and opts.fog_gate.mode == "auto")
        self.passthrough: bool | None = None   # the model's defogged output is its input (a ReID-only model)
        self.defogged_embeddings = 0
        self.outputs = Outputs(opts)
        self.failure: BaseException | None = None
        self.last_report = time.perf_counter()
        self.invalid_boxes = 0   # dropped here; a detector counts those it drops itself (`invalid`)

    # ------------------------------------------------------------------------------------------ stage 1: detect
    def detect(self, frames: list[Frame]) -> Work:
        opts = self.opts
        regions = opts.regions([f.image for f in frames], [f.source for f in frames], [f.index for f in frames])
        checked = [drop_invalid(found) for found in regions]
        regions = [found for found, _ in checked]
        self.invalid_boxes += sum(bad for _, bad in checked)
        track_ids, alive = [], []
        for frame, found in zip(frames, regions, strict=True):
            if opts.tracking is None:
                track_ids.append([-2] * len(found))   # -2: not tracked at all
                alive.append(None)
                continue
            if frame.source not in self.trackers:
                self.trackers[frame.source] = SourceTracker(opts.tracking)
            track_ids.append(self.trackers[frame.source].update(found))
            alive.append(self.trackers[frame.source].alive())   # a snapshot: `write` ends the others after this frame
        crops, owners, defog_first = [], [], []
        densities = [fog_density(f.image) if self.measure_fog else None for f in frames]
        for i, (frame, found, ids) in enumerate(zip(frames, regions, track_ids, strict=True)):
            foggy = self.embed_gate.foggy(frame.source, frame.image, densities[i]) if found else False
            for j, (region, tid) in enumerate(zip(found, ids, strict=True)):
                x1, y1, x2, y2 = region.box
                if tid == -1 or min(x2 - x1, y2 - y1) < opts.min_crop:
                    continue  # a tentative track, or a crop too small to identify
                crops.append(resize_for_model(frame.image[y1:y2, x1:x2], self.model.imgsz))
                owners.append((i, j))
                defog_first.append(foggy)
        return Work(frames, regions, track_ids, np.stack(crops) if crops else None, owners, alive=alive,
                    embed_defogged=defog_first, densities=densities)

    # ------------------------------------------------------------------------------------------ stage 2: reid
    def reid(self, work: Work) -> Work:
        if work.crops is None:
            return work
        defogged, embeddings = [], []
        for start in range(0, len(work.crops), self.opts.batch):
            crops = work.crops[start:start + self.opts.batch]
            again = np.flatnonzero(work.embed_defogged[start:start + len(crops)])
            d, e = (self.embed(crops, again) if self.embedder is None else self.embed_cut(crops, again))
            defogged.append(d)
            embeddings.append(e)
        work.defogged = None if defogged[0] is None else np.concatenate(defogged)
        work.embeddings = np.concatenate(embeddings)
        if self.opts.gallery is not None:
            work.matches = self.opts.gallery.match(work.embeddings, self.opts.top_k)
        return work

    def embed(self, crops: np.ndarray, again: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        """(defogged, embeddings) of a batch from the one model; the crops at `again` are
        embedded again from their defogged crops. In fog the joint model's encoder finds a vehicle
        far better in its own defogged crop than in the foggy one (docs/benchmarks.md,
        multi-camera tracking): a second pass."""
        d, e = self.model(crops)
        self.check_passthrough(d, crops)
        if len(again) and not self.passthrough:
            e[again] = self.model(np.ascontiguousarray(d[again]))[1]
            self.defogged_embeddings += len(again)
        return d, e

    def embed_cut(self, crops: np.ndarray, again: np.ndarray) -> tuple[None, np.ndarray]:
        """(None, embeddings) of a batch: the model (the CLI loads it cut down to its defogged
        output) only defogs the crops at `again`, and the embedder (the graph cut down to its
        embedding) embeds every crop, those defogged, so a clear camera never pays for the defog
        head, a foggy one never for a foggy crop's embedding, and every embedding comes from one graph."""
        if len(again) and not self.passthrough:
            defogged = self.model(np.ascontiguousarray(crops[again]))[0]
            self.check_passthrough(defogged, crops[again])
            if not self.passthrough:
                crops = crops.copy()
                crops[again] = defogged
                self.defogged_embeddings += len(again)
        return None, self.embedder(np.ascontiguousarray(crops))[1]

    def check_passthrough(self, defogged: np.ndarray | None, crops: np.ndarray) -> None:
        """On the first batch: is the model's defogged output its input (a ReID-only model)?"""
        if self.passthrough is None and defogged is not None:
            self.passthrough = np.array_equal(defogged, crops)

    # ------------------------------------------------------------------------------------------ stage 3: write
    def write(self, work: Work) -> None:
        """Events, published messages and video frames for one batch of frames, then the flushes."""
        crop_of = {owner: k for k, owner in enumerate(work.owners)}
        done = time.time()
        for i, (frame, found, ids) in enumerate(zip(work.frames, work.regions, work.track_ids, strict=True)):
            events, drawn = [], []   # drawn: (box, label, colour, defogged crop) per identified region
            for j, (region, tid) in enumerate(zip(found, ids, strict=True)):
                k = crop_of.get((i, j))
                if k is None:
                    continue
                event, track_events, label, colour, quality = self.identify(work, frame, region, tid, k)
                events += track_events + [event]
                if self.opts.publish is not None:   # the event, its crop's embedding, and what the tracker used
                    self.opts.publish(event if quality is None else
                                      dict(event, clock=float(frame.clock), quality=float(quality)),
                                      work.embeddings[k])
                drawn.append((region.box, label, colour, None if work.defogged is None else work.defogged[k]))
            if self.book is not None and work.alive[i] is not None:
                # Tracks ByteTrack dropped at this frame end here, not at the batch's end, so what the
                # associator has seen when it decides the next track never depends on the batching.
                events += self.book.end(frame.source, work.alive[i])
            self.emit_frame(frame, events, drawn, done, work.densities[i])
        self.flush(work)

    def identify(self, work: Work, frame, region, tid: int, k: int):
        """The detection event of one region (crop k): gallery top-k, and with tracking its track's
        global id and identity. Returns (event, track events, label, colour, tracker quality or None)."""
        opts, stats = self.opts, self.stats
        event = {"event": "detection", "time": round(frame.time, 3), "source": frame.source,
                 "frame": frame.index, "box": list(region.box), "detection_score": round(region.score, 4),
                 "label": region.label, "track_id": tid if tid >= 0 else None, "global_id": None,
                 "match": None}
        label, colour, track_events, quality = region.label, (200, 200, 200), [], None
        if work.matches is not None:
            idx, score = work.matches[0][k], work.matches[1][k]
            event["top_k"] = [{"id": opts.gallery.labels[m], "score": round(float(s), 4)}
                              for m, s in zip(idx, score, strict=True)]
        if self.book is not None and tid >= 0:
            quality = crop_quality(region, frame.image.shape[:2], self.model.imgsz)
            track_events = self.book.observe(frame.source, tid, frame.index, frame.clock, work.embeddings[k], quality)
            stats.tracks += sum(e["event"] == "track_start" for e in track_events)
            track = self.book.tracks[(frame.source, tid)]
            event["global_id"] = track.global_id
            if track.identity is not None:
                event["match"] = {"id": track.identity, "score": round(track.identity_score, 4)}
            label = f"#{tid}" + (f" g{track.global_id}" if track.global_id is not None else "")
        elif work.matches is not None and event["top_k"][0]["score"] >= opts.min_score:
            event["match"] = event["top_k"][0]
        if event["match"] is not None:
            stats.matched += 1
            label, colour = f"{label} {event['match']['id']} {event['match']['score']:.2f}", (60, 220, 60)
        return event, track_events, label, colour, quality

    def emit_frame(self, frame, events: list[dict], drawn: list[tuple], done: float,
                   density: float | None = None) -> None:
        """One frame's events to the events file and its annotated image to the saved video."""
        stats = self.stats
        self.outputs.write_events(events)
        if events and stats.first_event_s is None:
            stats.first_event_s = time.perf_counter() - self.started
        writer = self.outputs.video(frame.source, frame.image.shape[:2])
        if writer is not None:
            boxes, labels, colours, defogged = map(list, zip(*drawn, strict=True)) if drawn else ([], [], [], [])
            writer.write(self.outputs.draw(frame, boxes, labels, colours, defogged, density))
        self.latencies.append(done - frame.time)
        stats.frames += 1
        stats.crops += len(drawn)

    def flush(self, work: Work) -> None:
        """Flush the outputs, report now and then."""
        if self.outputs.events:
            self.outputs.events.flush()
        if self.opts.publish is not None:
            self.opts.publish.flush()
        if self.associator is not None:
            self.stats.global_ids = len(self.associator.identities)
        if time.perf_counter() - self.last_report >= self.opts.stats_every:
            self.report()

    # ------------------------------------------------------------------------------------------ driving
    def run(self) -> RunStats:
        for reader in self.readers:
            reader.start()
        if self.opts.gallery is not None:  # readers already fill their queues meanwhile
            probe = self.model(np.zeros((1, *self.model.imgsz, 3), np.uint8))[1]
            self.opts.gallery.check_model(probe.shape[1], self.model.imgsz)
        try:
            if self.opts.pipelined:
                self._run_threads()
            else:
                for frames in self._batches():
                    self.write(self.reid(self.detect(frames)))
            if self.failure is not None:
                raise self.failure
            if self.book is not None:  # the run is over: so is every track still open
                for reader in self.readers:
                    self.outputs.write_events(self.book.end(reader.spec.name))
        finally:
            self.stop.set()
            self.outputs.close()
            for reader in self.readers:
                reader.join(timeout=5)
            self._summarise()
            self.stats.errors = [f"{r.spec.name}: {r.error}" for r in self.readers if r.error]
        return self.stats

    def _run_threads(self) -> None:
        to_reid: queue.Queue = queue.Queue(self.opts.stage_queue)
        to_write: queue.Queue = queue.Queue(self.opts.stage_queue)
        done = object()

        def stage(name, take, give, body):
            try:
                while True:
                    item = take.get()
                    if item is done:
                        break
                    out = body(item)
                    if give is not None:
                        give.put(out)
            except BaseException as exc:  # a stage's failure ends the run and is raised by run()
                self.failure = self.failure or exc
                self.stop.set()
                while take.get() is not done:  # drain so that the stage before never blocks
                    pass
            finally:
                if give is not None:
                    give.put(done)

        threads = [threading.Thread(target=stage, args=("reid", to_reid, to_write, self.reid), daemon=True),
                   threading.Thread(target=stage, args=("write", to_write, None, self.write), daemon=True)]
        for t in threads:
            t.start()
        try:
            for frames in self._batches():
                to_reid.put(self.detect(frames))
        except BaseException as exc:
            self.failure = self.failure or exc
            self.stop.set()
        finally:
            to_reid.put(done)
            for t in threads:
                t.join()

    def _batches(self):
        while not self.stop.is_set():
            self._watch_sources()
            frames = self._collect()
            if frames:
                yield frames
            elif all(r.exhausted or self._capped(r) for r in self.readers):
                return

    def _capped(self, reader: SourceReader) -> bool:
        return bool(self.opts.max_frames) and self.taken[reader.spec.name] >= self.opts.max_frames

    def _collect(self) -> list[Frame]:
        """What is ready now, round-robin across sources, up to about one batch of crops.

        Only the first frame is waited for (up to max_wait); after it, only frames already queued
        are taken: waiting to fill a batch would add its whole duration to every frame's latency.
        Recorded sources only (files, folders): frames in clock order instead (`_collect_recorded`)."""
        opts = self.opts
        per_frame = self.stats.crops / self.stats.frames if self.stats.frames else 1.0
        budget = max(1, int(opts.batch / max(per_frame, 1e-3)))
        if self.recorded:
            return self._collect_recorded(budget)
        frames: list[Frame] = []
        deadline = time.perf_counter() + opts.max_wait
        while len(frames) < budget:
            got = False
            for reader in self.readers:
                if len(frames) >= budget or self._capped(reader):
                    continue
                frame = reader.take(timeout=0.005 if not frames else 0.0)
                if frame is not None:
                    frames.append(frame)
                    self.taken[reader.spec.name] += 1
                    got = True
            if not got and (frames or time.perf_counter() >= deadline or all(r.exhausted for r in self.readers)):
                break
        return frames

    def _collect_recorded(self, budget: int) -> list[Frame]:
        """Up to `budget` frames of recorded sources, merged by their clocks (ties: the order the
        sources were given). A frame is taken only once every unfinished source has one waiting, so
        a replay is processed in the same order however fast each file decodes, and tracks, global
        ids and events come out the same on every run. Nothing is dropped from a file, so waiting
        costs no frame."""
        frames: list[Frame] = []
        deadline = time.perf_counter() + self.opts.max_wait
        while len(frames) < budget and not self.stop.is_set():
            heads, waiting = [], False
            for order, reader in enumerate(self.readers):
                if self._capped(reader):
                    continue
                head = reader.peek(timeout=0.0 if frames else 0.005)
                if head is not None:
                    heads.append((head.clock, order, reader))
                elif not reader.exhausted:
                    waiting = True   # its next frame may come before every head we hold
            if waiting:
                if frames or time.perf_counter() >= deadline:
                    break   # `_batches` asks again (and watches for a stalled source meanwhile)
                continue
            if not heads:
                break
            _, _, reader = min(heads, key=lambda h: h[:2])
            frames.append(reader.take(timeout=0.0))
            self.taken[reader.spec.name] += 1
        return frames

    def _watch_sources(self) -> None:
        """A source silent for `stall_seconds` is reported once per silence, never ignored."""
        now = time.time()
        for reader in self.readers:
            if reader.finished or self._capped(reader) or reader.buffer:
                continue  # over, or frames waiting: not silent
            silent = now - (reader.last_frame_time or reader.start_time or now)
            if silent >= self.opts.stall_seconds and not reader.stall_reported:
                reader.stall_reported = True
                why = f" ({reader.last_failure})" if reader.last_failure else ""
                print(f"[run] source {reader.spec.name}: no frame for {silent:.0f} s{why}; retrying",
                      file=sys.stderr, flush=True)
                if reader.spec.name not in self.stats.stalled:
                    self.stats.stalled.append(reader.spec.name)

    def report(self) -> None:
        self._summarise()
        s = self.stats
        print(f"[run] {s.fps:.1f} fps | latency p50 {s.latency_p50_ms:.0f} ms p95 {s.latency_p95_ms:.0f} ms | "
              f"{s.crops} crops, {s.matched} matched, {s.tracks} tracks | dropped {s.dropped} | reconnects "
              f"{s.reconnects}" + (f" | invalid boxes {s.invalid_boxes}" if s.invalid_boxes else ""),
              file=sys.stderr, flush=True)
        self.last_report = time.perf_counter()

    def _summarise(self) -> None:
        s = self.stats
        s.seconds = time.perf_counter() - self.started
        s.fps = s.frames / max(s.seconds, 1e-9)
        recent = np.array(self.latencies[-2000:]) * 1000 if self.latencies else np.zeros(1)
        s.latency_p50_ms, s.latency_p95_ms = float(np.percentile(recent, 50)), float(np.percentile(recent, 95))
        s.dropped = sum(r.dropped for r in self.readers)
        s.invalid_boxes = self.invalid_boxes + int(getattr(self.opts.regions, "invalid", 0))
        s.reconnects = sum(r.reconnects for r in self.readers)
        s.clear_views = self.opts.fog_gate.frames["clear"] if self.opts.fog_gate is not None else 0
        s.defogged_embeddings = self.defogged_embeddings


def run_stream(model, opts: RunOptions, stop: threading.Event | None = None, embedder=None) -> RunStats:
    """Run the sources of `opts` through `model` (a DeployedModel) until they end or `stop` is set.
    `embedder`: the same artifact loaded `embedding_only`, for a run that `cuts_for_embedding`."""
    return Pipeline(model, opts, stop or threading.Event(), embedder).run()


def stats_dict(stats: RunStats) -> dict:
    return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in asdict(stats).items()}

"""Vehicles followed from frame to frame, and identified once per track.

`SourceTracker` runs ByteTrack (Roboflow's `trackers` package, a maintained implementation:
Kalman motion, two-stage association of high- and low-score boxes) on one source's regions.
A new track is tentative for its first frame (ByteTrack's `minimum_consecutive_frames`);
its detections carry a track id from its second frame on (the pipeline identifies and reports
only those). Track ids are numbered per source from 1, in the order the tracks appear, so a
source's ids never depend on the other sources (ByteTrack's own counter is shared by the whole
process); (source, track id) names a track.

`TrackBook` keeps each track's ReID state: its embedding is the quality-weighted running
mean of its crops' embeddings (quality: detection score x crop size relative to the model
input, halved for crops cut by the frame border), and its gallery identity is decided on
that mean, per track: once it has `min_crops` crops, and changed later only when another
gallery identity beats the current one by `switch_margin` (so it does not flicker from
frame to frame). It emits one event when a track starts, when its identity changes and when
it ends; with a `CrossCameraAssociator` each track also gets a global id across cameras.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fogreid.runtime.association import CrossCameraAssociator, TrackSummary
from fogreid.runtime.regions import Region


@dataclass
class TrackingConfig:
    fps: float = 25.0                 # of the source: ByteTrack's lost buffer is counted in frames
    lost_seconds: float = 1.0         # a track unseen this long ends
    activation: float = 0.5           # detection score that may start a track
    high_score: float = 0.5           # ByteTrack's first-stage (high score) threshold
    min_iou: float = 0.1              # IoU to continue a track
    min_crops: int = 3                # crops before a track's identity is decided
    switch_margin: float = 0.05       # cosine by which a new identity must beat the current one
    min_score: float = 0.5            # gallery cosine below which a track stays unknown


class SourceTracker:
    """ByteTrack on one source: regions in, a track id per region out (-1: tentative, not yet a track)."""

    def __init__(self, config: TrackingConfig) -> None:
        from trackers import ByteTrackTracker

        # ByteTrack counts its lost buffer in frames and scales it by frame_rate / 30: at 30 it is frames as given.
        self.tracker = ByteTrackTracker(lost_track_buffer=max(1, int(round(config.lost_seconds * config.fps))),
                                        frame_rate=30.0, track_activation_threshold=config.activation,
                                        minimum_consecutive_frames=2, minimum_iou_threshold=config.min_iou,
                                        high_conf_det_threshold=config.high_score)
        self.local_ids: dict[int, int] = {}   # ByteTrack's process-wide id -> this source's id
        self.next_id = 1

    def _local(self, tracker_id: int) -> int:
        if tracker_id not in self.local_ids:
            self.local_ids[tracker_id] = self.next_id
            self.next_id += 1
        return self.local_ids[tracker_id]

    def update(self, regions: list[Region]) -> list[int]:
        import supervision as sv

        if regions:
            detections = sv.Detections(xyxy=np.array([r.xyxy for r in regions], np.float32),
                                       confidence=np.array([r.score for r in regions], np.float32),
                                       class_id=np.zeros(len(regions), int),
                                       data={"index": np.arange(len(regions))})
        else:
            detections = sv.Detections.empty()
            detections.data["index"] = np.zeros(0, int)
        tracked = self.tracker.update(detections)  # reorders, and drops low-score boxes that start nothing
        ids = [-1] * len(regions)
        if len(tracked) and "index" in tracked.data:
            # In the order of the regions, so two tracks born in one frame are numbered the same every run.
            for index, track_id in sorted(zip(tracked.data["index"], tracked.tracker_id, strict=True)):
                if track_id >= 0:
                    ids[int(index)] = self._local(int(track_id))
        kept = {int(t.tracker_id) for t in self.tracker.tracks if t.tracker_id >= 0}
        self.local_ids = {raw: own for raw, own in self.local_ids.items() if raw in kept}   # forget ended tracks
        return ids

    def alive(self) -> set[int]:
        return set(self.local_ids.values())   # `update` keeps only the ids of tracks ByteTrack still holds


def crop_quality(region: Region, frame_shape: tuple[int, int], imgsz: tuple[int, int]) -> float:
    x1, y1, x2, y2 = region.xyxy
    size = min(1.0, float(np.sqrt(max(x2 - x1, 0) * max(y2 - y1, 0) / (imgsz[0] * imgsz[1]))))
    cut = x1 <= 1 or y1 <= 1 or x2 >= frame_shape[1] - 1 or y2 >= frame_shape[0] - 1
    return max(region.score, 1e-3) * max(size, 1e-3) * (0.5 if cut else 1.0)


@dataclass
class Track:
    camera: str
    track_id: int
    first_frame: int
    start: float
    last_frame: int = 0
    end: float = 0.0
    crops: int = 0
    weight: float = 0.0
    embedding_sum: np.ndarray | None = field(default=None, repr=False)
    identity: str | None = None
    identity_score: float = 0.0
    global_id: int | None = None

    @property
    def embedding(self) -> np.ndarray:
        mean = self.embedding_sum / max(self.weight, 1e-12)
        return mean / max(float(np.linalg.norm(mean)), 1e-12)

    def summary(self, ended: bool = False) -> TrackSummary:
        return TrackSummary(self.camera, self.track_id, self.start, self.end, self.embedding, ended)

    def event(self, kind: str) -> dict:
        return {"event": kind, "time": round(self.end, 3), "source": self.camera, "track_id": self.track_id,
                "global_id": self.global_id, "first_frame": self.first_frame, "last_frame": self.last_frame,
                "crops": self.crops, "duration": round(self.end - self.start, 3),
                "match": None if self.identity is None else {"id": self.identity,
                                                             "score": round(self.identity_score, 4)}}


class TrackBook:
    """Every track's embedding, identity and global id, across sources."""

    def __init__(self, config: TrackingConfig, gallery=None, associator: CrossCameraAssociator | None = None) -> None:
        self.config, self.gallery, self.associator = config, gallery, associator
        self.tracks: dict[tuple[str, int], Track] = {}

    def observe(self, camera: str, track_id: int, frame: int, time: float, embedding: np.ndarray,
                quality: float) -> list[dict]:
        key = (camera, track_id)
        track = self.tracks.get(key)
        events = []
        if track is None:
            track = self.tracks[key] = Track(camera, track_id, frame, time)
        track.last_frame, track.end, track.crops = frame, time, track.crops + 1
        track.weight += quality
        weighted = embedding * quality
        track.embedding_sum = weighted if track.embedding_sum is None else track.embedding_sum + weighted
        if track.crops < self.config.min_crops:
            return events
        decided = track.crops == self.config.min_crops
        changed = self._identify(track)
        if self.associator is not None:
            track.global_id = self.associator.update(track.summary()).global_id
        if decided:
            events.append(track.event("track_start"))
        elif changed:
            events.append(track.event("track_change"))
        return events

    def end(self, camera: str, alive: set[int] | None = None) -> list[dict]:
        """Ends the camera's tracks not in `alive` (None: all of them)."""
        events = []
        for key in [k for k in self.tracks if k[0] == camera and (alive is None or k[1] not in alive)]:
            track = self.tracks.pop(key)
            if track.crops >= self.config.min_crops:  # tracks too short to be decided were never announced
                if self.associator is not None:
                    self.associator.update(track.summary(ended=True))
                events.append(track.event("track_end"))
        return events

    def _identify(self, track: Track) -> bool:
        """Re-decides the track's identity on its mean embedding; True if it changed."""
        if self.gallery is None or not len(self.gallery.labels):
            return False
        indices, scores = self.gallery.match(track.embedding[None], min(5, len(self.gallery.labels)))
        best, best_score = str(self.gallery.labels[int(indices[0, 0])]), float(scores[0, 0])
        if best_score < self.config.min_score:
            best = None
        current = next((float(s) for i, s in zip(indices[0], scores[0], strict=True)
                        if str(self.gallery.labels[int(i)]) == track.identity), 0.0)
        if best == track.identity:
            track.identity_score = best_score
            return False
        if track.identity is not None and best is not None and best_score < current + self.config.switch_margin:
            track.identity_score = current
            return False
        if track.identity is not None and best is None:
            track.identity_score = current
            return False  # a weaker mean does not make a known vehicle unknown
        track.identity, track.identity_score = best, best_score if best is not None else 0.0
        return track.crops > self.config.min_crops

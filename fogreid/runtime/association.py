"""One identity across cameras: tracks from several cameras joined into global vehicle ids.

`CrossCameraAssociator` is online and does no I/O: feed it a `TrackSummary` (camera, track
id, time span, the track's embedding) whenever a track starts, improves or ends, and it
answers the track's global id. A message bus, a database or a test drives it the same way.

A track joins an existing global identity when
  * the gallery names it (best gallery cosine >= `gallery_threshold`) and that name already
    has a global id, or
  * its embedding's cosine to the identity's (the mean of the identity's tracks) is the best
    and >= the threshold of the two cameras (below),
and the identity is *possible* for it:
  * not on another live track of the same camera at the same time (one vehicle, one track);
  * unless `overlapping_cameras`, not on a track of another camera whose time span overlaps
    this one (cameras that do not see the same road at once);
  * `min_transit` <= (this track's start - the identity's last sighting end) <= `max_gap`
    seconds, for sightings in other cameras;
  * `transitions` (if given): the identity's last camera -> this camera is an allowed move.
Otherwise it gets a new global id. A track keeps the global id it was first given (identity
decided once per track, stable); its embedding keeps refining the identity's.

`threshold="auto"` (the default) adapts to each camera, because fog moves cosines: a dense-fog
camera's crops share a look (grey, low contrast) that pulls all its embeddings towards one
another and away from other cameras', so one fixed cosine joins strangers in clear weather and
misses the same vehicle in fog. Two corrections, both learnt online from the tracks themselves:
  * each embedding first loses `camera_debias` x its camera's mean track embedding (the look
    that every vehicle of that camera shares), then is renormalised;
  * a camera pair's threshold is mean + `auto_sigmas` x std of the cosines between its cameras'
    finished tracks (almost all of them different vehicles), never under `auto_floor`; until the
    pair has `auto_min_pairs` cosines, `start_threshold` holds.
A number for `threshold` is one fixed cosine for every camera pair, with no debiasing.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

# Bounds on what the adaptive threshold remembers: the finished tracks a new one is compared with
# per camera, and the cosines kept per camera pair (recent ones: the fog changes through a day).
RECENT_TRACKS = 200
RECENT_COSINES = 5000


@dataclass
class TrackSummary:
    camera: str
    track_id: int
    start: float                 # seconds (any clock, the same for every camera)
    end: float                   # last time seen so far
    embedding: np.ndarray        # (D,) the track's mean embedding (normalised here)
    ended: bool = False          # the track is over (no more updates will come)


@dataclass
class AssociationConfig:
    threshold: float | str = "auto"           # cosine to join an identity seen before, or "auto" (per camera pair)
    gallery_threshold: float = 0.5            # cosine for the gallery to name a track
    max_gap: float | None = None              # seconds from leaving one camera to entering another
    min_transit: float = 0.0                  # seconds, the least such gap
    overlapping_cameras: bool = False         # may one vehicle be seen by two cameras at once?
    transitions: dict[str, set[str]] | None = None   # camera -> cameras a vehicle can go to next
    start_threshold: float = 0.6              # "auto": a camera pair's threshold until it has auto_min_pairs cosines
    auto_sigmas: float = 2.0                  # "auto": how far above the pair's mean cosine a match must be
    auto_floor: float = 0.3                   # "auto": the least threshold
    auto_min_pairs: int = 50
    camera_debias: float = 0.5                # "auto": share of the camera's mean embedding taken off

    def __post_init__(self) -> None:
        if self.threshold != "auto" and not isinstance(self.threshold, (int, float)):
            raise ValueError(f"threshold must be a cosine or 'auto', not {self.threshold!r}")


@dataclass
class Assignment:
    global_id: int
    label: str | None            # gallery name of the identity, if any
    score: float                 # cosine that decided it (1.0 for a new identity)
    new: bool                    # a new identity was created for this track


@dataclass
class _Identity:
    global_id: int
    label: str | None
    tracks: dict[tuple[str, int], TrackSummary] = field(default_factory=dict)

    def embedding(self) -> np.ndarray:
        mean = np.mean([t.embedding for t in self.tracks.values()], axis=0)
        return mean / max(float(np.linalg.norm(mean)), 1e-12)

    def last(self, excluding: tuple[str, int]) -> TrackSummary | None:
        others = [t for key, t in self.tracks.items() if key != excluding]
        return max(others, key=lambda t: t.end) if others else None


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


class CameraStatistics:
    """What `threshold="auto"` learns online: each camera's mean track embedding, and per camera
    pair the cosines between the two cameras' finished tracks."""

    def __init__(self, config: AssociationConfig) -> None:
        self.config = config
        self._latest: dict[str, dict[int, np.ndarray]] = {}     # camera -> track id -> its latest embedding
        self._sums: dict[str, np.ndarray] = {}                   # camera -> the sum of those
        self._finished: dict[str, deque] = {}                    # camera -> recent finished (debiased) embeddings
        self._finished_keys: set[tuple[str, int]] = set()
        self._cosines: dict[tuple[str, str], deque] = {}

    def debiased(self, camera: str, track_id: int, embedding: np.ndarray) -> np.ndarray:
        """`embedding` (unit length) less camera_debias x the camera's mean, once the camera has 3 tracks."""
        latest = self._latest.setdefault(camera, {})
        previous = latest.get(track_id)
        total = self._sums.get(camera, np.zeros(embedding.shape, np.float64)) + embedding
        self._sums[camera] = total - previous if previous is not None else total
        latest[track_id] = embedding
        if len(latest) < 3:
            return embedding
        return _unit(embedding - self.config.camera_debias * (self._sums[camera] / len(latest))).astype(np.float32)

    def finished(self, track: TrackSummary) -> None:
        """Adds the cosines between a finished track and the recent finished tracks of other cameras."""
        key = (track.camera, track.track_id)
        if key in self._finished_keys:
            return
        self._finished_keys.add(key)
        for camera, embeddings in self._finished.items():
            if camera != track.camera and embeddings:
                cosines = self._cosines.setdefault(_pair(camera, track.camera), deque(maxlen=RECENT_COSINES))
                cosines.extend((np.stack(embeddings) @ track.embedding).tolist())
        self._finished.setdefault(track.camera, deque(maxlen=RECENT_TRACKS)).append(track.embedding)

    def threshold(self, camera_a: str, camera_b: str) -> float:
        cfg = self.config
        cosines = self._cosines.get(_pair(camera_a, camera_b), ())
        if len(cosines) < cfg.auto_min_pairs:
            return cfg.start_threshold
        values = np.asarray(cosines)
        return max(cfg.auto_floor, float(values.mean() + cfg.auto_sigmas * values.std()))


def _pair(camera_a: str, camera_b: str) -> tuple[str, str]:
    return (camera_a, camera_b) if camera_a <= camera_b else (camera_b, camera_a)


class CrossCameraAssociator:
    """Online association of tracks into global ids. Not thread-safe: one caller at a time."""

    def __init__(self, config: AssociationConfig | None = None, gallery=None) -> None:
        self.config = config or AssociationConfig()
        self.gallery = gallery        # anything with .match(queries, k) -> (indices, scores) and .labels
        self.identities: dict[int, _Identity] = {}
        self.of_track: dict[tuple[str, int], int] = {}
        self._next = 1
        self.cameras = CameraStatistics(self.config) if self.config.threshold == "auto" else None

    def update(self, track: TrackSummary) -> Assignment:
        track.embedding = _unit(np.asarray(track.embedding, np.float32).reshape(-1))
        if self.cameras is not None:
            track.embedding = self.cameras.debiased(track.camera, track.track_id, track.embedding)
            if track.ended:
                self.cameras.finished(track)
        key = (track.camera, track.track_id)
        if key in self.of_track:  # decided once; the identity's embedding follows the track
            identity = self.identities[self.of_track[key]]
            identity.tracks[key] = track
            return Assignment(identity.global_id, identity.label, float(identity.embedding() @ track.embedding), False)
        label, label_score = self._gallery_label(track.embedding)
        candidates = [i for i in self.identities.values() if self._possible(i, track)]
        chosen, score = None, 1.0
        if label is not None:
            chosen = next((i for i in candidates if i.label == label), None)
            score = label_score
        if chosen is None and candidates:
            scores = np.array([float(i.embedding() @ track.embedding) for i in candidates])
            best = int(scores.argmax())
            joins = scores[best] >= self._threshold(candidates[best], track)
            if joins and (label is None or candidates[best].label in (None, label)):
                chosen, score = candidates[best], float(scores[best])
                chosen.label = chosen.label or label
        new = chosen is None
        if new:
            chosen = _Identity(self._next, label)
            self.identities[chosen.global_id] = chosen
            self._next += 1
            score = label_score if label is not None else 1.0
        chosen.tracks[key] = track
        self.of_track[key] = chosen.global_id
        return Assignment(chosen.global_id, chosen.label, score, new)

    def _threshold(self, identity: _Identity, track: TrackSummary) -> float:
        """The cosine `track` needs to join `identity`: fixed, or that of the camera pair of the
        identity's last sighting and the track."""
        if self.cameras is None:
            return float(self.config.threshold)
        return self.cameras.threshold(identity.last((track.camera, track.track_id)).camera, track.camera)

    def global_id(self, camera: str, track_id: int) -> int | None:
        return self.of_track.get((camera, track_id))

    def _gallery_label(self, embedding: np.ndarray) -> tuple[str | None, float]:
        if self.gallery is None or not len(self.gallery.labels):
            return None, 0.0
        indices, scores = self.gallery.match(embedding[None], 1)
        if float(scores[0, 0]) < self.config.gallery_threshold:
            return None, float(scores[0, 0])
        return str(self.gallery.labels[int(indices[0, 0])]), float(scores[0, 0])

    def _possible(self, identity: _Identity, track: TrackSummary) -> bool:
        cfg, key = self.config, (track.camera, track.track_id)
        for other in identity.tracks.values():
            overlap = other.start <= track.end and track.start <= other.end
            if other.camera == track.camera and overlap:
                return False          # one vehicle is one track in a camera
            if other.camera != track.camera and overlap and not cfg.overlapping_cameras:
                return False
        last = identity.last(key)
        if last is None or last.camera == track.camera:
            return True
        gap = track.start - last.end
        if cfg.overlapping_cameras and gap < 0:
            gap = cfg.min_transit   # seen by both at once: no transit to check
        if gap < cfg.min_transit or (cfg.max_gap is not None and gap > cfg.max_gap):
            return False
        return cfg.transitions is None or track.camera in cfg.transitions.get(last.camera, set())

"""One identity across cameras: tracks from several cameras joined into global vehicle ids.

`CrossCameraAssociator` is online and does no I/O: feed it a `TrackSummary` (camera, track
id, time span, the track's embedding) whenever a track starts, improves or ends, and it
answers the track's global id. A message bus, a database or a test drives it the same way.

A track joins an existing global identity when
  * the gallery names it (best gallery cosine >= `gallery_threshold`) and that name already
    has a global id, or
  * its embedding's cosine to the identity's (the mean of the identity's tracks) is the best
    and >= `threshold`,
and the identity is *possible* for it:
  * not on another live track of the same camera at the same time (one vehicle, one track);
  * unless `overlapping_cameras`, not on a track of another camera whose time span overlaps
    this one (cameras that do not see the same road at once);
  * `min_transit` <= (this track's start - the identity's last sighting end) <= `max_gap`
    seconds, for sightings in other cameras;
  * `transitions` (if given): the identity's last camera -> this camera is an allowed move.
Otherwise it gets a new global id. A track keeps the global id it was first given (identity
decided once per track, stable); its embedding keeps refining the identity's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


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
    threshold: float = 0.6                    # cosine to join an identity seen before
    gallery_threshold: float = 0.5            # cosine for the gallery to name a track
    max_gap: float | None = None              # seconds from leaving one camera to entering another
    min_transit: float = 0.0                  # seconds, the least such gap
    overlapping_cameras: bool = False         # may one vehicle be seen by two cameras at once?
    transitions: dict[str, set[str]] | None = None   # camera -> cameras a vehicle can go to next


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


class CrossCameraAssociator:
    """Online association of tracks into global ids. Not thread-safe: one caller at a time."""

    def __init__(self, config: AssociationConfig | None = None, gallery=None) -> None:
        self.config = config or AssociationConfig()
        self.gallery = gallery        # anything with .match(queries, k) -> (indices, scores) and .labels
        self.identities: dict[int, _Identity] = {}
        self.of_track: dict[tuple[str, int], int] = {}
        self._next = 1

    def update(self, track: TrackSummary) -> Assignment:
        emb = np.asarray(track.embedding, np.float32).reshape(-1)
        track.embedding = emb / max(float(np.linalg.norm(emb)), 1e-12)
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
            if scores[best] >= self.config.threshold and (label is None or candidates[best].label in (None, label)):
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

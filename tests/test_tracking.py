"""Tracking (ByteTrack from the `trackers` package) and track-level ReID."""

import numpy as np

from fogreid.runtime.association import CrossCameraAssociator
from fogreid.runtime.gallery import Gallery
from fogreid.runtime.regions import Region
from fogreid.runtime.tracking import SourceTracker, TrackBook, TrackingConfig


def unit(seed, near=None, noise=0.1, dim=32):
    rng = np.random.default_rng(seed)
    v = rng.normal(size=dim) if near is None else near + noise * rng.normal(size=dim)
    return (v / np.linalg.norm(v)).astype(np.float32)


def test_bytetrack_keeps_ids_of_moving_vehicles_and_ends_lost_ones():
    tracker = SourceTracker(TrackingConfig(fps=10, lost_seconds=0.5))
    seen = []
    for t in range(12):
        regions = [Region((10.0 + 8 * t, 50.0, 90.0 + 8 * t, 110.0), 0.9, "car")]
        if t < 6:  # a second car, leaving after frame 5
            regions.append(Region((400.0 - 6 * t, 200.0, 480.0 - 6 * t, 260.0), 0.8, "car"))
        seen.append(tracker.update(regions))
    assert seen[0] == [-1, -1]                       # tentative on its first frame
    a, b = seen[1]
    assert a >= 0 and b >= 0 and a != b
    assert all(ids[0] == a for ids in seen[1:]) and all(ids[1] == b for ids in seen[1:6])
    assert tracker.alive() == {a}                    # b unseen for > 0.5 s: ended


def test_track_identity_is_a_weighted_mean_decided_per_track_and_stable():
    X, Y = unit(1), unit(2)
    gallery = Gallery(np.stack([X, Y]), ["car-x", "car-y"], ["x", "y"])
    book = TrackBook(TrackingConfig(min_crops=3, switch_margin=0.05, min_score=0.3), gallery,
                     CrossCameraAssociator())
    events = []
    for f in range(3):
        events += book.observe("cam1", 7, f, f * 0.1, unit(10 + f, X), quality=1.0)
    assert [e["event"] for e in events] == ["track_start"]
    assert events[0]["match"]["id"] == "car-x" and events[0]["global_id"] == 1 and events[0]["track_id"] == 7
    # one bad crop of low quality does not move the identity
    assert book.observe("cam1", 7, 3, 0.3, Y, quality=0.1) == []
    assert book.tracks[("cam1", 7)].identity == "car-x"
    # the weighted mean: a high-quality crop counts more than a low-quality one
    track = book.tracks[("cam1", 7)]
    assert float(track.embedding @ X) > float(track.embedding @ Y)
    # sustained evidence for another vehicle (e.g. an ID switch of the tracker) changes it, once
    changes = []
    for f in range(4, 20):
        changes += book.observe("cam1", 7, f, f * 0.1, unit(100 + f, Y), quality=1.0)
    assert [e["event"] for e in changes] == ["track_change"] and changes[0]["match"]["id"] == "car-y"
    ended = book.end("cam1", alive=set())
    assert [e["event"] for e in ended] == ["track_end"] and ended[0]["last_frame"] == 19 and not book.tracks


def test_short_tracks_are_never_announced():
    book = TrackBook(TrackingConfig(min_crops=3))
    assert book.observe("cam1", 1, 0, 0.0, unit(1), 1.0) == []
    assert book.end("cam1") == []

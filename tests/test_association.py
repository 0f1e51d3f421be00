"""Cross-camera association: the time, camera and gallery rules, with a real Gallery."""

import numpy as np
import pytest

from fogreid.runtime.association import AssociationConfig, CrossCameraAssociator, TrackSummary
from fogreid.runtime.gallery import Gallery


def unit(seed, near=None, noise=0.1, dim=32):
    rng = np.random.default_rng(seed)
    v = rng.normal(size=dim) if near is None else near + noise * rng.normal(size=dim)
    return (v / np.linalg.norm(v)).astype(np.float32)


X, Y = unit(1), unit(2)


def test_same_vehicle_in_two_cameras_gets_one_global_id():
    assoc = CrossCameraAssociator(AssociationConfig(threshold=0.7))
    a = assoc.update(TrackSummary("cam1", 1, 0.0, 5.0, unit(10, X)))
    b = assoc.update(TrackSummary("cam1", 2, 0.0, 5.0, unit(11, Y)))
    c = assoc.update(TrackSummary("cam2", 3, 8.0, 9.0, unit(12, X)))
    d = assoc.update(TrackSummary("cam2", 4, 8.5, 9.0, unit(13, Y)))
    assert a.new and b.new and a.global_id != b.global_id
    assert (c.global_id, d.global_id) == (a.global_id, b.global_id) and not c.new and c.score > 0.7
    # stable: a track keeps its id even when its embedding drifts
    assert assoc.update(TrackSummary("cam2", 3, 8.0, 10.0, Y)).global_id == a.global_id
    assert assoc.global_id("cam2", 4) == b.global_id


def test_one_vehicle_is_one_track_per_camera_at_a_time():
    assoc = CrossCameraAssociator()
    a = assoc.update(TrackSummary("cam1", 1, 0.0, 5.0, X))
    b = assoc.update(TrackSummary("cam1", 2, 3.0, 4.0, X))          # same look, same camera, same time
    assert b.global_id != a.global_id
    c = assoc.update(TrackSummary("cam1", 3, 9.0, 10.0, unit(5, X)))  # later in the same camera: the same car
    assert c.global_id == a.global_id


def test_time_and_camera_constraints():
    cfg = AssociationConfig(max_gap=10.0, min_transit=2.0, transitions={"cam1": {"cam2"}})
    assoc = CrossCameraAssociator(cfg)
    a = assoc.update(TrackSummary("cam1", 1, 0.0, 5.0, X))
    assert assoc.update(TrackSummary("cam2", 2, 5.5, 6.0, X)).global_id != a.global_id   # faster than min_transit
    assoc = CrossCameraAssociator(cfg)
    a = assoc.update(TrackSummary("cam1", 1, 0.0, 5.0, X))
    assert assoc.update(TrackSummary("cam2", 2, 30.0, 31.0, X)).global_id != a.global_id  # later than max_gap
    assoc = CrossCameraAssociator(cfg)
    a = assoc.update(TrackSummary("cam1", 1, 0.0, 5.0, X))
    assert assoc.update(TrackSummary("cam3", 2, 8.0, 9.0, X)).global_id != a.global_id   # cam1 -> cam3 not a road
    assoc = CrossCameraAssociator(cfg)
    a = assoc.update(TrackSummary("cam1", 1, 0.0, 5.0, X))
    assert assoc.update(TrackSummary("cam2", 2, 8.0, 9.0, X)).global_id == a.global_id
    # cameras that do not overlap: one vehicle cannot be in both at once
    assoc = CrossCameraAssociator()
    a = assoc.update(TrackSummary("cam1", 1, 0.0, 5.0, X))
    assert assoc.update(TrackSummary("cam2", 2, 4.0, 6.0, X)).global_id != a.global_id
    assoc = CrossCameraAssociator(AssociationConfig(overlapping_cameras=True))
    a = assoc.update(TrackSummary("cam1", 1, 0.0, 5.0, X))
    assert assoc.update(TrackSummary("cam2", 2, 4.0, 6.0, X)).global_id == a.global_id


def test_gallery_names_tracks_and_joins_them():
    gallery = Gallery(np.stack([X, Y]), ["car7", "van2"], ["x.jpg", "y.jpg"])
    assoc = CrossCameraAssociator(AssociationConfig(threshold=0.99, gallery_threshold=0.5), gallery)
    a = assoc.update(TrackSummary("cam1", 1, 0.0, 5.0, unit(20, X, noise=0.15)))
    b = assoc.update(TrackSummary("cam2", 2, 8.0, 9.0, unit(21, X, noise=0.15)))  # below 0.99 to a, named car7
    unknown = assoc.update(TrackSummary("cam2", 3, 8.0, 9.0, unit(3)))
    assert a.label == b.label == "car7" and b.global_id == a.global_id
    assert unknown.label is None and unknown.new


def two_camera_road(look: float, fog: float, vehicles: int = 30, dim: int = 32) -> list[TrackSummary]:
    """Each vehicle passes a clear camera, then a foggy one. `look`: a direction every vehicle's
    embedding shares (look-alike vehicles); `fog`: one more that only the foggy camera adds."""
    rng = np.random.default_rng(0)
    shared, haze = unit(100), unit(101)
    tracks = []
    for i in range(vehicles):
        v = unit(200 + i)
        clear = v + look * shared + 0.15 * rng.normal(size=dim)
        foggy = v + look * shared + fog * haze + 0.15 * rng.normal(size=dim)
        tracks.append(TrackSummary("clear", i, 10.0 * i, 10.0 * i + 3, clear.astype(np.float32), ended=True))
        tracks.append(TrackSummary("fog", i, 10.0 * i + 5, 10.0 * i + 8, foggy.astype(np.float32), ended=True))
    return tracks


def joined(threshold, tracks: list[TrackSummary]) -> tuple[int, int]:
    """(vehicles given one id in both cameras, distinct ids among the clear camera's vehicles)."""
    assoc = CrossCameraAssociator(AssociationConfig(threshold=threshold))
    ids = {(t.camera, t.track_id): assoc.update(t).global_id for t in tracks}
    vehicles = len(tracks) // 2
    return (sum(ids["clear", i] == ids["fog", i] for i in range(vehicles)),
            len({ids["clear", i] for i in range(vehicles)}))


def test_auto_threshold_follows_a_vehicle_into_fog_where_a_fixed_one_loses_it():
    road = two_camera_road(look=0.0, fog=1.0)
    assert joined(0.6, road)[0] <= 1            # fog pulls the same vehicle's cosines under 0.6
    same, distinct = joined("auto", road)
    assert same >= 18 and distinct >= 28        # the camera's shared look taken off, the pair's own threshold


def test_auto_threshold_keeps_look_alike_strangers_apart():
    road = two_camera_road(look=1.0, fog=0.0)
    assert joined(0.6, road)[1] <= 20           # 30 vehicles merged into 19 identities
    same, distinct = joined("auto", road)
    assert distinct >= 26 and same >= 24


def test_association_threshold_is_a_cosine_or_auto():
    with pytest.raises(ValueError, match="cosine or 'auto'"):
        AssociationConfig(threshold="0.6")

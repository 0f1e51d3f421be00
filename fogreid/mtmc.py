"""Multi-camera tracking scores of `fogreid run` events against MOTChallenge ground truth,
computed by `motmetrics` (the py-motmetrics package used by MOTChallenge's devkit).

Per camera: the detection events' (frame, track_id, box) against gt.txt: IDF1, MOTA, ID
switches, precision, recall. Across cameras (as the AI City Challenge's MTMC track scores):
all cameras in one sequence, hypotheses named by `global_id` and ground truth by the vehicle
id, which is the same in every camera, so a vehicle given a new global id in the next camera
costs IDF1 there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fogreid.errors import FogreidError

METRICS = ["idf1", "mota", "num_switches", "precision", "recall", "num_frames"]
IOU = 0.5   # a hypothesis box matches a true one at IoU >= 0.5 (MOTChallenge's threshold)


@dataclass
class CameraTruth:
    name: str
    frames: dict[int, list[tuple[int, tuple[float, float, float, float]]]]   # frame (1-based) -> [(id, xywh)]


def read_mot(path: str | Path) -> dict[int, list[tuple[int, tuple[float, float, float, float]]]]:
    from fogreid.file_kinds import expect

    path = Path(path)
    if not path.exists():
        raise FogreidError(f"ground truth not found: {path}")
    expect(path, "", "text", "MOTChallenge gt.txt")
    frames: dict[int, list] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise FogreidError(f"{path}: not a text file; give MOTChallenge gt.txt rows") from None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            f, i, x, y, w, h = (float(v) for v in line.split(",")[:6])
        except ValueError:
            raise FogreidError(f"{path}:{n}: not a MOTChallenge row "
                               "(frame, id, left, top, width, height, ...)") from None
        if not all(np.isfinite(v) for v in (f, i, x, y, w, h)) or f != int(f) or i != int(i) or abs(f) > 1e9:
            raise FogreidError(f"{path}:{n}: {line[:60]!r} holds NaN, an infinite value or a frame or id that is "
                               f"not a whole number; fix the row")
        frames.setdefault(int(f), []).append((int(i), (x, y, w, h)))
    return frames


def read_events(path: str | Path) -> list[dict]:
    """The detection events of a `fogreid run --events` file, each checked for what scoring reads:
    a JSON object per line with `source` (text), `frame` (a whole number from 0), `box` (four
    finite numbers) and `track_id` / `global_id` (whole numbers or null)."""
    from fogreid.file_kinds import TEXT, expect, sniff

    path = Path(path)
    if not path.exists():
        raise FogreidError(f"events file not found: {path}; write one with `fogreid run ... --events FILE`")
    if not (sniff(path) == TEXT and path.read_bytes()[:1] == b"{"):   # lines of JSON, one broken: named below
        expect(path, "--events", "jsonl", "events (JSON lines)", {"json": "--city (its folder)"})
    events = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise FogreidError(f"--events {path}: not a text file; give the JSON-lines events of `fogreid run`") from None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            event = json.loads(line, parse_constant=_no_constant)
        except ValueError:
            raise FogreidError(f"{path}:{n}: not a JSON line (strict JSON: no NaN or Infinity); give the events "
                               f"file of `fogreid run --events`") from None
        if not isinstance(event, dict):
            raise FogreidError(f"{path}:{n}: a JSON {type(event).__name__}, not an event object; give the events "
                               f"file of `fogreid run --events`")
        if event.get("event", "detection") == "detection":
            _check_event(event, f"{path}:{n}")
            events.append(event)
    return events


def _no_constant(name: str):
    raise ValueError(name)


def _whole(value, low: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _check_event(event: dict, where: str) -> None:
    problems = []
    if not isinstance(event.get("source"), str) or not event.get("source"):
        problems.append("no 'source' (the video it came from)")
    if not _whole(event.get("frame")):
        problems.append(f"'frame' is {json.dumps(event.get('frame'))}, not a whole number from 0")
    box = event.get("box")
    if not (isinstance(box, list) and len(box) == 4 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in box)):
        problems.append(f"'box' is {json.dumps(box)[:40]}, not [x1, y1, x2, y2]")
    for key in ("track_id", "global_id"):
        if event.get(key) is not None and not _whole(event.get(key), -(2**62)):
            problems.append(f"'{key}' is {json.dumps(event.get(key))[:20]}, not a whole number or null")
    if problems:
        raise FogreidError(f"{where}: not a detection event of `fogreid run`: {'; '.join(problems)}")


def read_city(city: Path) -> dict:
    """city.json of `fogreid synth-video`: cameras (names of its folders), frames, fog_beta per camera."""
    from fogreid.file_kinds import FOLDER, describe, expect, sniff

    if sniff(city) != FOLDER:
        kind = sniff(city)
        raise FogreidError(f"--city {city}: {'not found' if kind == 'missing' else 'is ' + describe(kind)}; give "
                           f"the folder `fogreid synth-video --out` wrote")
    info_path = city / "city.json"
    if not info_path.exists():
        raise FogreidError(f"{city}: no city.json; generate a city with `fogreid synth-video --out {city}`")
    expect(info_path, "--city", "json", "city.json")
    fix = f"regenerate the city with `fogreid synth-video --out {city}`"
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"), parse_constant=_no_constant)
    except ValueError:
        raise FogreidError(f"{info_path}: not valid JSON; {fix}") from None
    if not isinstance(info, dict):
        raise FogreidError(f"{info_path}: holds a JSON {type(info).__name__}, not the city's description; {fix}")
    cameras, frames, betas = info.get("cameras"), info.get("frames"), info.get("fog_beta")
    if not (isinstance(cameras, list) and cameras and all(
            isinstance(c, str) and c and c == Path(c).name and c not in (".", "..") for c in cameras)):
        raise FogreidError(f"{info_path}: 'cameras' is {json.dumps(cameras)[:60]}, not a list of camera folder "
                           f"names; {fix}")
    if not _whole(frames, 1) or frames > 10**8:
        raise FogreidError(f"{info_path}: 'frames' is {json.dumps(frames)[:30]}, not a whole number from 1; {fix}")
    if not (isinstance(betas, list) and len(betas) == len(cameras) and all(
            isinstance(b, (int, float)) and not isinstance(b, bool) and np.isfinite(b) for b in betas)):
        raise FogreidError(f"{info_path}: 'fog_beta' is {json.dumps(betas)[:60]}, not one finite number per "
                           f"camera ({len(cameras)}); {fix}")
    return info


def iou_distance(objs: np.ndarray, hyps: np.ndarray) -> np.ndarray:
    """1 - IoU of (left, top, width, height) boxes, NaN (no match) below IoU 0.5: what
    motmetrics.distances.iou_matrix(max_iou=0.5) computes; that one calls np.asfarray, gone in NumPy 2."""
    if not len(objs) or not len(hyps):
        return np.empty((len(objs), len(hyps)))
    a0, a1 = objs[:, None, :2], objs[:, None, :2] + objs[:, None, 2:]
    b0, b1 = hyps[None, :, :2], hyps[None, :, :2] + hyps[None, :, 2:]
    inter = np.prod(np.clip(np.minimum(a1, b1) - np.maximum(a0, b0), 0, None), axis=2)
    union = np.prod(objs[:, 2:], axis=1)[:, None] + np.prod(hyps[:, 2:], axis=1)[None] - inter
    dist = 1 - inter / np.maximum(union, 1e-12)
    dist[dist > 1 - IOU] = np.nan
    return dist


def score(truth: list[CameraTruth], events: list[dict], sources: dict[str, str], frames: int):
    """(per-camera table, cross-camera row) as pandas DataFrames. `sources`: event source -> camera name."""
    import motmetrics as mm

    by_camera: dict[str, dict[int, list[dict]]] = {t.name: {} for t in truth}
    for event in events:
        camera = sources.get(event["source"])
        if camera is None or event.get("track_id") is None:
            continue  # another source, or a detection that never became a track
        by_camera[camera].setdefault(int(event["frame"]) + 1, []).append(event)
    accs, overall = [], mm.MOTAccumulator(auto_id=False)
    for k, cam in enumerate(truth):
        acc = mm.MOTAccumulator(auto_id=False)
        for f in range(1, frames + 1):
            gt = cam.frames.get(f, [])
            hyp = by_camera[cam.name].get(f, [])
            boxes = np.array([[e["box"][0], e["box"][1], e["box"][2] - e["box"][0], e["box"][3] - e["box"][1]]
                              for e in hyp], np.float64).reshape(-1, 4)
            dist = iou_distance(np.array([b for _, b in gt], np.float64).reshape(-1, 4), boxes)
            # motmetrics (with pandas >= 3) wants numeric ids; a track with no global id stands alone
            acc.update([i for i, _ in gt], [int(e["track_id"]) for e in hyp], dist, frameid=f)
            global_ids = [int(e["global_id"]) if e.get("global_id") is not None
                          else 10**9 + k * 10**6 + int(e["track_id"]) for e in hyp]
            overall.update([i for i, _ in gt], global_ids, dist, frameid=k * (frames + 1) + f)
        accs.append(acc)
    mh = mm.metrics.create()
    per_camera = mh.compute_many(accs, metrics=METRICS, names=[t.name for t in truth], generate_overall=True)
    cross = mh.compute(overall, metrics=METRICS, name="cross-camera")
    return per_camera, cross


def evaluate_city(city: str | Path, events_path: str | Path) -> dict:
    """Scores the events of `fogreid run` on a generated city (fogreid synth-video)."""
    city = Path(city)
    info = read_city(city)
    truth = [CameraTruth(name, read_mot(city / name / "gt" / "gt.txt")) for name in info["cameras"]]
    events = read_events(events_path)
    sources = {}
    for event in events:  # a source is a camera's video (any spelling of its path)
        for name in info["cameras"]:
            if Path(event["source"]).parent.name == name:
                sources[event["source"]] = name
    if events and not sources:
        raise FogreidError(f"{events_path}: none of its sources is a camera of {city} ({', '.join(info['cameras'])})")
    per_camera, cross = score(truth, events, sources, int(info["frames"]))
    rows = {}
    for name, row in list(per_camera.iterrows()) + list(cross.iterrows()):
        rows[str(name)] = {"idf1": round(float(row["idf1"]) * 100, 1), "mota": round(float(row["mota"]) * 100, 1),
                           "id_switches": int(row["num_switches"]),
                           "precision": round(float(row["precision"]) * 100, 1),
                           "recall": round(float(row["recall"]) * 100, 1)}
    for name, beta in zip(info["cameras"], info["fog_beta"], strict=True):
        rows[name]["fog_beta"] = beta
    return rows


def format_table(rows: dict) -> str:
    lines = [f"{'camera':<14}{'fog beta':>9}{'IDF1':>7}{'MOTA':>7}{'IDsw':>6}{'prec':>7}{'recall':>8}"]
    for name, r in rows.items():
        beta = f"{r['fog_beta']:g}" if "fog_beta" in r else "-"
        lines.append(f"{name:<14}{beta:>9}{r['idf1']:>7.1f}{r['mota']:>7.1f}{r['id_switches']:>6}"
                     f"{r['precision']:>7.1f}{r['recall']:>8.1f}")
    return "\n".join(lines)

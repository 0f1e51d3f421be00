"""Generated foggy videos with known identities.

`make_video`: a foggy street video for the stream pipeline's tests
and the demo: each 640x480 frame holds four camera views (2 x 2 tiles), each showing one
vehicle of the generated dataset; the vehicles change every `hold` frames. Written beside
it: `rois.json` (the four tiles), `truth.json` (vehicle id per tile per frame) and a
gallery folder `gallery/<id>/*.jpg` with other foggy views of the same vehicles.

`make_city`: a generated foggy city for multi-camera tracking: several cameras along a road,
vehicles (the dataset generator's looks) driving through their views in order, a fog density
per camera, the ground truth in MOTChallenge's format with one vehicle id across cameras,
public detections (the truth with misses and jitter, as MOTChallenge's det.txt) and a gallery.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fogreid.data.synth import SynthConfig, _background, _rng, draw_camera, draw_vehicle, render

TILE = (240, 320)  # height, width of one camera view


def make_video(out: str | Path, cfg: SynthConfig, ids: list[int], frames: int = 100, hold: int = 25,
               fps: float = 25.0, gallery_views: int = 3, seed: int = 0) -> dict:
    import cv2
    import torch

    from fogreid.data.fog import synthetic_fog
    from fogreid.data.image_io import write_image
    from fogreid.pixels import frames_to_images, images_to_frames

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    domain = 0  # the synthetic domain's identities and cameras, as in FVRID_syn
    cams = [draw_camera(_rng(cfg.seed, domain + 100, c), real=False) for c in range(4)]
    backgrounds = [_background(cam, 2 * TILE[0]) for cam in cams]
    looks = {pid: draw_vehicle(_rng(cfg.seed, domain, pid)) for pid in ids}
    fog_rng = torch.Generator().manual_seed(seed)

    def view(pid: int, cam: int, key: int) -> np.ndarray:
        image, depth = render(looks[pid], cams[cam], _rng(seed, 7, pid, cam, key), TILE[0], backgrounds[cam])
        foggy = synthetic_fog(frames_to_images(torch.from_numpy(image[None])), fog_rng,
                              torch.from_numpy(depth)[None, None])[0]
        return cv2.resize(images_to_frames(foggy)[0].numpy(), (TILE[1], TILE[0]), interpolation=cv2.INTER_LINEAR)

    writer = cv2.VideoWriter(str(out / "video.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), fps, (2 * TILE[1], 2 * TILE[0]))
    truth = []
    for index in range(frames):
        segment = index // hold
        shown = [ids[(segment * 4 + k) % len(ids)] for k in range(4)]
        frame = np.zeros((2 * TILE[0], 2 * TILE[1], 3), np.uint8)
        for k, pid in enumerate(shown):
            y, x = (k // 2) * TILE[0], (k % 2) * TILE[1]
            frame[y:y + TILE[0], x:x + TILE[1]] = view(pid, k, 1000 + index)
        writer.write(frame)
        truth.append(shown)
    writer.release()
    rois = [[(k % 2) * TILE[1], (k // 2) * TILE[0], (k % 2 + 1) * TILE[1], (k // 2 + 1) * TILE[0]] for k in range(4)]
    (out / "rois.json").write_text(json.dumps({"default": rois}))
    (out / "truth.json").write_text(json.dumps({"rois": rois, "ids": truth}))
    for pid in ids:  # other views of each vehicle, from the cameras that will see it
        cams_seen = sorted({k for row in truth for k, p in enumerate(row) if p == pid}) or [0]
        for v in range(gallery_views):
            cam = cams_seen[v % len(cams_seen)]
            write_image(out / "gallery" / str(pid) / f"{pid}_{cam}_{v}.jpg", view(pid, cam, v), 95)
    return {"video": out / "video.mp4", "rois": out / "rois.json", "truth": truth, "gallery": out / "gallery"}


# --------------------------------------------------------------------------------------------- the city
@dataclass
class CityConfig:
    """A few cameras along a road; vehicles drive past them in order, with fog per camera."""

    cameras: int = 3
    vehicles: int = 8
    seconds: float = 16.0
    fps: float = 10.0
    height: int = 240
    width: int = 416
    fog: tuple[float, ...] = (1.0, 2.5, 4.0)  # scattering beta per camera (cycled); 0: clear
    airlight: float = 0.8
    cross: tuple[float, float] = (2.5, 4.0)   # seconds a vehicle takes to cross a camera's view
    transit: tuple[float, float] = (1.0, 3.0)  # seconds from one camera's view to the next
    det_miss: float = 0.03                    # share of boxes missing from the public detections
    det_jitter: float = 2.0                   # pixels of noise on the public detections' corners
    seed: int = 0
    domain: int = 0                           # looks and fog: 0 synthetic (as FVRID_syn), 1 real-like (FVRID_real)
    first_id: int = 10_000                    # vehicle ids (looks) start here: none of a training set's
    pairs_every: int = 0                      # >0: every k-th frame's clear render and foggy frame as PNGs


def _sprite(look, cam, seed: int, key: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """The vehicle as drawn by the dataset generator, cut out: uint8 (h, w, 3) BGR and alpha (h, w)."""
    size = 2 * height
    blank = (np.zeros((2 * size, 2 * size, 3), np.float32), np.ones((2 * size, 2 * size), np.float32))  # drawn at 2x
    image, depth = render(look, cam, _rng(seed, 11, key), size, blank)
    alpha = np.clip((1.0 - depth) / max(1.0 - cam.vehicle_depth, 1e-3), 0, 1)
    ys, xs = np.nonzero(alpha > 0.05)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    import cv2

    scale = height / (y1 - y0)
    w = max(int(round((x1 - x0) * scale)), 1)
    sprite = cv2.resize(image[y0:y1, x0:x1], (w, height), interpolation=cv2.INTER_AREA)
    mask = cv2.resize(alpha[y0:y1, x0:x1], (w, height), interpolation=cv2.INTER_AREA)
    return sprite, mask


def _plan_city(cfg: CityConfig) -> list[dict]:
    """Each vehicle's visits: camera, entry time, crossing time, lane, direction."""
    rng = _rng(cfg.seed, 12)
    plans = []
    spacing = max(cfg.seconds - (cfg.cameras - 1) * (cfg.cross[1] + cfg.transit[1]) - cfg.cross[1], 1.0)
    for v in range(cfg.vehicles):
        first = int(rng.integers(0, max(cfg.cameras - 1, 1)))
        last = int(rng.integers(first + 1, cfg.cameras)) if cfg.cameras > 1 else 0
        t = float(rng.uniform(0, spacing))
        visits = []
        for cam in range(first, last + 1):
            cross = float(rng.uniform(*cfg.cross))
            visits.append({"camera": cam, "enter": t, "cross": cross, "lane": int(rng.integers(0, 2))})
            t += cross + float(rng.uniform(*cfg.transit))
        plans.append({"id": cfg.first_id + v, "visits": visits})
    return plans


@dataclass
class CityFrame:
    """One clear frame of one camera, before fog: what make_city fogs and writes, and what the
    whole-frame defog training draws its scenes from (fogreid/data/scenes.py)."""

    camera: int
    index: int                  # 0-based frame number
    image: np.ndarray           # float32 (h, w, 3) BGR in [0, 255]
    depth: np.ndarray           # float32 (h, w) in [0, 1]: 0 near, 1 far
    boxes: list[tuple[int, int, int, int, int]]   # (vehicle id, left, top, width, height), far lane first


def city_frames(cfg: CityConfig, cameras: Iterable[int] | None = None) -> Iterator[CityFrame]:
    """The clear frames of `cfg`'s cameras (all by default), camera by camera, frame by frame."""
    import cv2

    h, w = cfg.height, cfg.width
    plans = _plan_city(cfg)
    looks = {p["id"]: draw_vehicle(_rng(cfg.seed, cfg.domain, p["id"])) for p in plans}
    lanes = (0.62, 0.9)                       # ground line of the far and near lane, as a share of the height
    sprite_h = (int(0.3 * h), int(0.4 * h))   # far lane vehicles look smaller
    frames = int(round(cfg.seconds * cfg.fps))
    for c in range(cfg.cameras) if cameras is None else cameras:
        cam = draw_camera(_rng(cfg.seed, 100 + cfg.domain, c), real=cfg.domain == 1)
        square, square_depth = _background(cam, max(h, w))
        background = cv2.resize(square, (w, h)).astype(np.float32)
        bg_depth = cv2.resize(square_depth, (w, h))
        sprites = {}
        direction = -1 if cam.facing_left else 1
        for f in range(frames):
            t = f / cfg.fps
            image, depth = background.copy(), bg_depth.copy()
            present = []
            for plan in plans:
                for visit in plan["visits"]:
                    if visit["camera"] == c and visit["enter"] <= t < visit["enter"] + visit["cross"]:
                        present.append((visit["lane"], plan["id"], (t - visit["enter"]) / visit["cross"]))
            boxes = []
            for lane, pid, progress in sorted(present):  # the far lane first: the near one occludes it
                if (pid, lane) not in sprites:
                    sprites[(pid, lane)] = _sprite(looks[pid], cam, cfg.seed, pid * 10 + c, sprite_h[lane])
                sprite, alpha = sprites[(pid, lane)]
                sh, sw = alpha.shape
                travel = w + sw
                x = int(round(-sw + progress * travel)) if direction > 0 else int(round(w - progress * travel))
                y = int(lanes[lane] * h) - sh
                x0, x1, y0, y1 = max(x, 0), min(x + sw, w), max(y, 0), min(y + sh, h)
                if x1 - x0 < 0.25 * sw:
                    continue  # mostly outside the frame: not in the ground truth
                a = alpha[y0 - y:y1 - y, x0 - x:x1 - x, None]
                image[y0:y1, x0:x1] = image[y0:y1, x0:x1] * (1 - a) + sprite[y0 - y:y1 - y, x0 - x:x1 - x] * a
                depth[y0:y1, x0:x1] = np.where(a[..., 0] > 0.5, cam.vehicle_depth, depth[y0:y1, x0:x1])
                boxes.append((pid, x0, y0, x1 - x0, y1 - y0))
            yield CityFrame(c, f, image, depth, boxes)


def make_city(out: str | Path, cfg: CityConfig | None = None) -> dict:
    """Writes out/cam<k>/{video.mp4, gt/gt.txt, det/det.txt, seqinfo.ini}, out/gallery/<id>/*.jpg and
    out/city.json (with `pairs_every`, also out/cam<k>/pairs/<frame>_{clear,foggy}.png). gt.txt and
    det.txt are in MOTChallenge's format (frame and box 1-based / pixels: frame, id, left, top,
    width, height, conf, class, visibility); the id of a vehicle is the same in every camera (the
    multi-camera ground truth)."""
    import cv2
    import torch

    from fogreid.data.fog import CameraFog, scatter
    from fogreid.data.image_io import write_image

    cfg = CityConfig() if cfg is None else cfg
    out = Path(out)
    h, w = cfg.height, cfg.width
    plans = _plan_city(cfg)
    frames = int(round(cfg.seconds * cfg.fps))
    rng = _rng(cfg.seed, 13)
    truth: dict[int, list] = {}
    writer = None
    for frame_info in city_frames(cfg):
        c, f = frame_info.camera, frame_info.index
        if f == 0:   # a new camera
            beta = cfg.fog[c % len(cfg.fog)]
            # The real-like domain's cameras get its fog too (patchy, tinted, low contrast, blurred,
            # noisy: fogreid.data.fog.RealFogRanges), drawn once per camera; the synthetic one, plain scattering.
            camera_fog = (CameraFog.draw(torch.Generator().manual_seed(cfg.seed * 1000 + c)) if cfg.domain == 1
                          else None)
            noise = torch.Generator().manual_seed(cfg.seed * 1000 + 500 + c)
            d = out / f"cam{c}"
            (d / "gt").mkdir(parents=True, exist_ok=True)
            (d / "det").mkdir(parents=True, exist_ok=True)
            writer = cv2.VideoWriter(str(d / "video.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), cfg.fps, (w, h))
            gt_rows, det_rows = [], []
        for pid, x0, y0, bw, bh in frame_info.boxes:
            gt_rows.append((f + 1, pid, x0, y0, bw, bh, 1, 3, 1.0))
            if rng.random() >= cfg.det_miss:
                jx0, jy0, jx1, jy1 = rng.normal(0, cfg.det_jitter, 4)
                det_rows.append((f + 1, -1, x0 + jx0, y0 + jy0, bw + jx1 - jx0, bh + jy1 - jy0,
                                 round(float(rng.uniform(0.6, 0.95)), 3), -1, -1))
        image, depth = frame_info.image, frame_info.depth
        clear = torch.from_numpy(np.clip(image, 0, 255) / 255.0).permute(2, 0, 1)[None].float()
        if camera_fog is None:
            foggy = scatter(clear, torch.from_numpy(depth)[None, None], torch.tensor([beta]),
                            torch.tensor([cfg.airlight]))
        else:
            foggy = camera_fog.apply(clear, torch.from_numpy(depth)[None, None], beta, noise)
        frame = (foggy[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8)
        writer.write(frame)
        if cfg.pairs_every and f % cfg.pairs_every == 0:   # lossless, to judge whole-frame defog against
            write_image(d / "pairs" / f"{f + 1:06d}_clear.png", np.clip(image, 0, 255).round().astype(np.uint8))
            write_image(d / "pairs" / f"{f + 1:06d}_foggy.png", frame)
        for row in gt_rows:
            if row[0] == f + 1 and len(truth.setdefault(row[1], [])) < 3 and f % 5 == 0:
                truth[row[1]].append((c, frame[row[3]:row[3] + row[5], row[2]:row[2] + row[4]].copy()))
        if f == frames - 1:   # the camera's last frame
            writer.release()
            (d / "gt" / "gt.txt").write_text("".join(",".join(f"{v:.2f}" if isinstance(v, float) else str(v)
                                                              for v in row) + "\n" for row in gt_rows))
            (d / "det" / "det.txt").write_text("".join(",".join(f"{v:.2f}" if isinstance(v, float) else str(v)
                                                                for v in row) + "\n" for row in det_rows))
            (d / "seqinfo.ini").write_text(f"[Sequence]\nname=cam{c}\nimDir=img1\nframeRate={cfg.fps:g}\n"
                                           f"seqLength={frames}\nimWidth={w}\nimHeight={h}\nimExt=.jpg\n")
    for pid, views in truth.items():  # a gallery: crops of each vehicle, as an operator would collect them
        for k, (c, crop) in enumerate(views):
            write_image(out / "gallery" / str(pid) / f"{pid}_c{c}_{k}.jpg", crop, 95)
    info = {"cameras": [f"cam{c}" for c in range(cfg.cameras)], "fog_beta": [cfg.fog[c % len(cfg.fog)]
            for c in range(cfg.cameras)], "fps": cfg.fps, "frames": frames, "vehicles": [p["id"] for p in plans],
            "plans": plans, "config": {k: v for k, v in asdict(cfg).items()}}
    (out / "city.json").write_text(json.dumps(info, indent=1))
    return {"root": out, "videos": [out / f"cam{c}" / "video.mp4" for c in range(cfg.cameras)],
            "gt": [out / f"cam{c}" / "gt" / "gt.txt" for c in range(cfg.cameras)],
            "det": [out / f"cam{c}" / "det" / "det.txt" for c in range(cfg.cameras)], "gallery": out / "gallery"}

"""The generated default dataset: procedurally drawn vehicles in FVRID's layout.

Each identity has a fixed look (body type, colour, stripe, roof rack, window shade,
rims, a sticker, proportions); each camera its own viewpoint (facing, perspective),
scale, light, background and distance. Vehicles are drawn as polygons in the vehicle's
own side-view coordinates and projected into the image, so the same vehicle looks
consistent across cameras and different from its look-alikes in small details.

Clear images get FVRID_syn's scattering fog (with the rendered depth map); a second set
of identities, seen by a second set of cameras, gets the real-like fog (FVRID_real), and
their clear renders go to FVRID_clear (real clear images of that camera domain, for RVSL)
and, for the test images only, to FVRID_real/{query,gallery}_clear_eval (evaluation only:
`fogreid eval --split real` scores the defogged images against them; no reader gives them
to training). Every random
draw comes from a seed derived from (seed, domain, identity, camera, frame), so the same
seed gives the same bytes, and adding identities does not change the existing ones.
"""

from __future__ import annotations

import json
import os
from dataclasses import InitVar, asdict, dataclass
from pathlib import Path

import numpy as np

from fogreid._deprecated import renamed
from fogreid.errors import FogreidError

BODY_TYPES = ("sedan", "hatchback", "suv", "van", "pickup", "bus")
COLOURS_BGR = {
    "white": (235, 235, 235), "black": (30, 30, 30), "silver": (185, 185, 180), "grey": (110, 110, 110),
    "red": (40, 40, 200), "blue": (190, 90, 30), "navy": (100, 40, 20), "green": (60, 140, 40),
    "yellow": (40, 210, 230), "orange": (30, 120, 235), "brown": (40, 70, 110), "beige": (160, 200, 215),
}
RIMS_BGR = ((200, 200, 200), (40, 40, 40), (60, 170, 210))

# Side-view shapes in vehicle coordinates: x along the length (0 = rear, 1 = front),
# y up from the ground in units of the vehicle's height. `aspect` = height / length.
SHAPES: dict[str, dict] = {
    "sedan": dict(aspect=0.36, hull=[(0, .2), (0, .5), (.05, .56), (.26, .6), (.37, .96), (.68, .96), (.82, .62),
                                    (.98, .56), (1, .45), (1, .2)],
                  windows=[[(.3, .62), (.39, .9), (.5, .9), (.5, .62)], [(.52, .62), (.52, .9), (.66, .9), (.78, .62)]],
                  wheels=(.2, .8), roof=(.37, .68)),
    "hatchback": dict(aspect=0.42, hull=[(0, .2), (0, .55), (.04, .6), (.3, .62), (.42, .96), (.88, .94),
                                         (.98, .6), (1, .2)],
                      windows=[[(.34, .64), (.44, .9), (.6, .9), (.6, .64)],
                               [(.62, .64), (.62, .9), (.86, .88), (.94, .64)]],
                      wheels=(.18, .82), roof=(.42, .88)),
    "suv": dict(aspect=0.46, hull=[(0, .18), (0, .58), (.04, .62), (.2, .64), (.28, .97), (.93, .97), (.98, .64),
                                   (1, .18)],
                windows=[[(.24, .66), (.3, .92), (.55, .92), (.55, .66)],
                         [(.57, .66), (.57, .92), (.9, .92), (.95, .66)]],
                wheels=(.19, .81), roof=(.28, .93)),
    "van": dict(aspect=0.52, hull=[(0, .16), (0, .97), (.82, .97), (.98, .55), (1, .16)],
                windows=[[(.84, .6), (.84, .9), (.95, .6)], [(.55, .62), (.55, .9), (.78, .9), (.78, .62)]],
                wheels=(.17, .82), roof=(.05, .8)),
    "pickup": dict(aspect=0.42, hull=[(0, .2), (0, .58), (.52, .58), (.55, .97), (.8, .97), (.86, .62),
                                      (1, .56), (1, .2)],
                   windows=[[(.58, .64), (.58, .9), (.78, .9), (.83, .64)]],
                   wheels=(.18, .8), roof=(.55, .8)),
    "bus": dict(aspect=0.38, hull=[(0, .14), (0, .97), (1, .97), (1, .14)],
                windows=[[(x, .55), (x, .88), (x + .13, .88), (x + .13, .55)] for x in (.04, .2, .36, .52, .68, .84)],
                wheels=(.15, .85), roof=(.1, .9)),
}


@dataclass(frozen=True)
class VehicleLook:
    body: str
    colour: tuple[int, int, int]
    length: float
    height: float
    stripe: tuple[int, int, int] | None
    stripe_y: float
    roof_rack: bool
    window_shade: int
    rim: tuple[int, int, int]
    sticker: tuple[int, int, int] | None
    sticker_x: float
    sticker_round: bool


@dataclass(frozen=True)
class CameraLook:
    facing_left: bool
    perspective: float            # 0: pure side view; up to 0.5: strong three-quarter view
    scale: float                  # vehicle length / image width
    centre_y: float               # ground line, fraction of the image height
    light: float
    tint: tuple[float, float, float]
    sky: tuple[int, int, int]
    road: int
    horizon: float
    buildings: tuple[tuple[float, float, float, int], ...]  # (x0, x1, top, grey)
    vehicle_depth: float


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in key]))


def draw_vehicle(rng: np.random.Generator) -> VehicleLook:
    names = list(COLOURS_BGR)
    colour = np.array(COLOURS_BGR[names[rng.integers(len(names))]]) + rng.integers(-18, 19, 3)
    has_stripe, has_sticker = rng.random() < 0.5, rng.random() < 0.6
    return VehicleLook(
        body=BODY_TYPES[rng.integers(len(BODY_TYPES))],
        colour=tuple(int(c) for c in np.clip(colour, 0, 255)),
        length=float(rng.uniform(0.9, 1.08)), height=float(rng.uniform(0.9, 1.1)),
        stripe=tuple(int(c) for c in rng.integers(0, 256, 3)) if has_stripe else None,
        stripe_y=float(rng.uniform(0.3, 0.48)), roof_rack=bool(rng.random() < 0.35),
        window_shade=int(rng.integers(25, 120)), rim=RIMS_BGR[rng.integers(len(RIMS_BGR))],
        sticker=tuple(int(c) for c in rng.integers(0, 256, 3)) if has_sticker else None,
        sticker_x=float(rng.uniform(0.3, 0.7)), sticker_round=bool(rng.random() < 0.5))


def draw_camera(rng: np.random.Generator, real: bool) -> CameraLook:
    # The real-like cameras: stronger perspective, duller light, greyer skies.
    sky = rng.integers(150, 230, 3) if not real else np.full(3, rng.integers(120, 190)) + rng.integers(-10, 11, 3)
    buildings = tuple((float(x0), float(x0 + rng.uniform(0.08, 0.3)), float(rng.uniform(0.05, 0.35)),
                       int(rng.integers(60, 200))) for x0 in np.sort(rng.uniform(-0.1, 1.0, rng.integers(2, 6))))
    return CameraLook(
        facing_left=bool(rng.random() < 0.5),
        perspective=float(rng.uniform(0.0, 0.35) if not real else rng.uniform(0.2, 0.5)),
        scale=float(rng.uniform(0.62, 0.86)), centre_y=float(rng.uniform(0.72, 0.84)),
        light=float(rng.uniform(0.8, 1.15) if not real else rng.uniform(0.65, 1.0)),
        tint=tuple(float(t) for t in rng.uniform(-0.08, 0.08, 3)),
        sky=tuple(int(c) for c in np.clip(sky, 0, 255)), road=int(rng.integers(70, 140)),
        horizon=float(rng.uniform(0.35, 0.55)), buildings=buildings,
        vehicle_depth=float(rng.uniform(0.3, 0.55)))


def _background(cam: CameraLook, size: int) -> tuple[np.ndarray, np.ndarray]:
    import cv2

    image = np.empty((size, size, 3), np.float32)
    depth = np.empty((size, size), np.float32)
    horizon = int(cam.horizon * size)
    rows = np.linspace(0, 1, size, dtype=np.float32)[:, None]
    image[:horizon] = np.array(cam.sky, np.float32) * (1.0 + 0.15 * rows[:horizon, :, None])
    image[horizon:] = cam.road
    depth[:horizon] = 1.0
    depth[horizon:] = np.linspace(0.9, 0.1, size - horizon, dtype=np.float32)[:, None]
    for x0, x1, top, grey in cam.buildings:
        p0 = (int(x0 * size), int(top * size))
        p1 = (int(x1 * size), horizon)
        cv2.rectangle(image, p0, p1, (grey, grey, grey * 0.95), -1)
        cv2.rectangle(depth, p0, p1, 0.85, -1)
    lane_y = int((cam.horizon + 1) / 2 * size)
    cv2.line(image, (0, lane_y), (size, lane_y + size // 20), (220, 220, 220), max(size // 90, 1))
    return image, depth


def _projection(cam: CameraLook, look: VehicleLook, size: int, jitter: np.ndarray) -> np.ndarray:
    """3x3 homography from vehicle coordinates (x in [0, 1], y up in [0, 1]) to pixels."""
    import cv2

    length = cam.scale * look.length * size * (1 + jitter[0])
    height = length * SHAPES[look.body]["aspect"] * look.height
    x0 = (size - length) / 2 + jitter[1] * size
    ground = cam.centre_y * size + jitter[2] * size
    k = min(max(cam.perspective + jitter[3], 0.0), 0.6)
    # The far end (the front when facing right) shrinks and rises, as in a three-quarter view.
    near = [(x0, ground), (x0, ground - height)]
    far = [(x0 + length * (1 - 0.2 * k), ground - 0.25 * k * height),
           (x0 + length * (1 - 0.2 * k), ground - height * (1 - 0.15 * k))]
    src = np.float32([(0, 0), (0, 1), (1, 0), (1, 1)])
    dst = np.float32(near + far)
    if cam.facing_left:
        dst[:, 0] = size - dst[:, 0]
    return cv2.getPerspectiveTransform(src, dst)


def _poly(points, homography: np.ndarray, scale: int = 16) -> np.ndarray:
    import cv2

    pts = cv2.perspectiveTransform(np.float32(points).reshape(-1, 1, 2), homography)
    return np.round(pts * scale).astype(np.int32)  # fixed point for sub-pixel anti-aliasing


def _circle(cx: float, cy: float, r: float, aspect: float, n: int = 24) -> list[tuple[float, float]]:
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return [(cx + r * np.cos(a), cy + r * np.sin(a) / aspect) for a in angles]


def render(look: VehicleLook, cam: CameraLook, rng: np.random.Generator, size: int,
           background: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """One clear frame: uint8 (size, size, 3) BGR and its depth map in [0, 1]."""
    import cv2

    canvas = 2 * size  # draw at twice the size, then area-average: smooth edges
    image, depth = (a.copy() for a in background)
    jitter = rng.uniform([-0.05, -0.04, -0.03, -0.05], [0.05, 0.04, 0.03, 0.05])
    hom = _projection(cam, look, canvas, jitter)
    shape = SHAPES[look.body]
    aa = dict(lineType=cv2.LINE_AA, shift=4)
    aspect = shape["aspect"] * look.height
    body_mask = np.zeros((canvas, canvas), np.uint8)
    cv2.fillPoly(body_mask, [_poly(shape["hull"], hom)], 255, **aa)

    vehicle = np.zeros_like(image)
    vehicle[:] = look.colour
    if look.stripe is not None:
        band = [(0, look.stripe_y), (1, look.stripe_y), (1, look.stripe_y + 0.06), (0, look.stripe_y + 0.06)]
        cv2.fillPoly(vehicle, [_poly(band, hom)], look.stripe, **aa)
    for window in shape["windows"]:
        cv2.fillPoly(vehicle, [_poly(window, hom)], (look.window_shade,) * 3, **aa)
    if look.sticker is not None:
        r = 0.045
        pts = (_circle(look.sticker_x, 0.4, r, aspect) if look.sticker_round else
               [(look.sticker_x - r, .4 - r / aspect), (look.sticker_x + r, .4 - r / aspect),
                (look.sticker_x + r, .4 + r / aspect), (look.sticker_x - r, .4 + r / aspect)])
        cv2.fillPoly(vehicle, [_poly(pts, hom)], look.sticker, **aa)
    cv2.fillPoly(vehicle, [_poly([(.96, .42), (1, .42), (1, .5), (.96, .5)], hom)], (200, 245, 250), **aa)
    cv2.fillPoly(vehicle, [_poly([(0, .42), (.03, .42), (.03, .5), (0, .5)], hom)], (30, 30, 210), **aa)
    alpha = body_mask.astype(np.float32)[..., None] / 255
    image = image * (1 - alpha) + vehicle * alpha

    parts_mask = np.zeros_like(body_mask)
    if look.roof_rack:
        r0, r1 = shape["roof"]
        rack = [(r0, 1.0), (r1, 1.0), (r1, 1.07), (r0, 1.07)]
        cv2.fillPoly(image, [_poly(rack, hom)], (45, 45, 45), **aa)
        cv2.fillPoly(parts_mask, [_poly(rack, hom)], 255, **aa)
    for wx in shape["wheels"]:
        radius = 0.085
        tyre = _poly(_circle(wx, 0.11 + radius, radius, aspect), hom)
        cv2.fillPoly(image, [tyre], (25, 25, 25), **aa)
        cv2.fillPoly(parts_mask, [tyre], 255, **aa)
        cv2.fillPoly(image, [_poly(_circle(wx, 0.11 + radius, radius * 0.55, aspect), hom)], look.rim, **aa)
    mask = np.maximum(body_mask, parts_mask) > 127
    depth[mask] = cam.vehicle_depth

    light = cam.light * (1 + rng.uniform(-0.08, 0.08)) * (1 + np.array(cam.tint, np.float32))
    image = np.clip(image * light, 0, 255)
    image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    depth = cv2.resize(depth, (size, size), interpolation=cv2.INTER_AREA)
    return np.round(image).astype(np.uint8), depth


@dataclass(frozen=True)
class SynthConfig:
    ids: int = 100                # synthetic identities; the real-like set gets half as many
    cams: int = 5
    per_cam: int = 2              # frames of each identity in each camera that sees it
    queries_per_id: int = 2
    imgsz: int = 128              # image size: the side of the square images, pixels
    seed: int = 0
    train_fraction: float = 0.5
    size: InitVar[int | None] = None   # deprecated: imgsz

    def __post_init__(self, size: int | None) -> None:
        if size is not None:
            renamed("SynthConfig(size=...)", "SynthConfig(imgsz=...)", stacklevel=4)
            object.__setattr__(self, "imgsz", size)

    def check(self) -> None:
        if self.ids < 4 or self.cams < 2 or self.per_cam < 1 or self.imgsz < 32:
            raise FogreidError("synth needs --ids >= 4, --cams >= 2, --per-cam >= 1 and --imgsz >= 32")
        if self.queries_per_id >= self.cams * self.per_cam:
            raise FogreidError("--queries-per-id must leave gallery images of each test identity")


@dataclass(frozen=True)
class _Item:
    pid: int
    cam: int
    frame: int
    split: str


def _plan(cfg: SynthConfig, domain: int, pids: list[int]) -> list[_Item]:
    """Which identity is seen by which camera, in which split."""
    rng = _rng(cfg.seed, domain, 1_000_000)
    order = rng.permutation(len(pids))
    n_train = max(2, int(round(len(pids) * cfg.train_fraction)))
    train = {pids[i] for i in order[:n_train]}
    items = []
    for pid in pids:
        id_rng = _rng(cfg.seed, domain, 2_000_000 + pid)
        n_cams = int(id_rng.integers(max(2, (cfg.cams + 1) // 2), cfg.cams + 1))
        cams = sorted(id_rng.choice(cfg.cams, n_cams, replace=False).tolist())
        frames = [(c, f) for c in cams for f in range(cfg.per_cam)]
        if pid in train:
            items += [_Item(pid, c, f, "train") for c, f in frames]
            continue
        # Queries from different cameras where possible; the rest is gallery.
        query_cams = id_rng.choice(cams, min(cfg.queries_per_id, len(cams)), replace=False).tolist()
        queries = {(c, int(id_rng.integers(cfg.per_cam))) for c in query_cams}
        items += [_Item(pid, c, f, "query" if (c, f) in queries else "gallery") for c, f in frames]
    return items


def file_name(item: _Item) -> str:
    return f"{item.pid:05d}_c{item.cam + 1:03d}_{item.frame:06d}_0.jpg"


MARKER = "fogreid_synth.json"  # written last by generate(): the folder's FVRID_* parts are fogreid's own
OWN = ("FVRID_syn", "FVRID_real", "FVRID_clear", MARKER)


def check_target(out: str | Path, overwrite: bool = False) -> None:
    """Refuse a non-empty folder that `generate` did not write (no marker), unless `overwrite`:
    pointed at a real FVRID download, generate would otherwise replace its FVRID_* folders."""
    final = Path(out)
    if final.exists() and not final.is_dir():
        raise FogreidError(f"--out {final}: is a file, not a folder; choose a folder path")
    if not final.is_dir() or overwrite or (final / MARKER).is_file():
        return
    # Our own half-written folders from an interrupted run do not count (they are removed below).
    found = sorted(p.name for p in final.iterdir() if not p.name.startswith(".synth-"))
    if found:
        listed = ", ".join(found[:4]) + (", ..." if len(found) > 4 else "")
        raise FogreidError(f"--out {final}: the folder holds {listed}, "
                           f"which fogreid synth did not write (no {MARKER}); choose an empty or new folder, or pass "
                           f"--overwrite to replace {', '.join(OWN[:3])} there")


def generate(out: str | Path, cfg: SynthConfig = SynthConfig(), progress: bool = True, overwrite: bool = False) -> dict:
    """Write FVRID_syn and FVRID_real under `out`; returns the manifest (also written as
    `out/fogreid_synth.json`). A non-empty `out` without that marker is refused unless
    `overwrite`; then only FVRID_syn, FVRID_real, FVRID_clear and the marker are replaced."""
    cfg.check()
    check_target(out, overwrite)
    import shutil
    import tempfile

    import torch

    from fogreid.data.fog import jpeg_qualities, real_like_fog, synthetic_fog
    from fogreid.data.image_io import write_image
    from fogreid.pixels import frames_to_images, images_to_frames

    final = Path(out)
    final.mkdir(parents=True, exist_ok=True)
    for stale in final.glob(".synth-*"):  # an interrupted run's half-written dataset
        shutil.rmtree(stale, ignore_errors=True)
    # Write beside the target and swap in when complete: a re-run with other settings never
    # mixes two datasets, and an interrupted run leaves the previous one intact.
    out = Path(tempfile.mkdtemp(prefix=".synth-", dir=final))
    n_real = max(cfg.ids // 2, 4)
    domains = {"syn": (0, list(range(cfg.ids))), "real": (1, list(range(cfg.ids, cfg.ids + n_real)))}
    counts: dict[str, int] = {}
    bar = _progress(sum(len(_plan(cfg, d, p)) for d, p in domains.values()), progress)
    for name, (domain, pids) in domains.items():
        items = _plan(cfg, domain, pids)
        looks = {pid: draw_vehicle(_rng(cfg.seed, domain, pid)) for pid in pids}
        cams = {c: draw_camera(_rng(cfg.seed, domain + 100, c), real=name == "real") for c in range(cfg.cams)}
        backgrounds = {c: _background(cam, 2 * cfg.imgsz) for c, cam in cams.items()}
        fog_rng = torch.Generator().manual_seed(cfg.seed * 1000 + domain)
        for start in range(0, len(items), 64):  # fixed chunks: the fog draws stay reproducible
            chunk = items[start:start + 64]
            rendered = [render(looks[i.pid], cams[i.cam], _rng(cfg.seed, domain, i.pid, i.cam, i.frame),
                               cfg.imgsz, backgrounds[i.cam]) for i in chunk]
            clear = np.stack([r[0] for r in rendered])
            depth = torch.from_numpy(np.stack([r[1] for r in rendered]))[:, None]
            images = frames_to_images(torch.from_numpy(clear))
            if name == "syn":
                foggy = images_to_frames(synthetic_fog(images, fog_rng, depth)[0]).numpy()
                qualities = [95] * len(chunk)
            else:
                foggy = images_to_frames(real_like_fog(images, fog_rng, depth)).numpy()
                qualities = jpeg_qualities(fog_rng, len(chunk))
            base = out / f"FVRID_{name}"
            for item, clear_img, foggy_img, quality in zip(chunk, clear, foggy, qualities, strict=True):
                # Clear images: paired with the foggy ones in FVRID_syn; for the real-like
                # cameras, unpaired in FVRID_clear (RVSL's stage 2 learns from them).
                clear_dir = base if name == "syn" else out / "FVRID_clear"
                write_image(clear_dir / f"{item.split}_clear" / file_name(item), clear_img, 95)
                if name == "real" and item.split != "train":
                    # For scoring the defogged test images only (PSNR / SSIM of `fogreid eval
                    # --split real`): the real domain stays unlabelled for defogging.
                    write_image(base / f"{item.split}_clear_eval" / file_name(item), clear_img, 95)
                write_image(base / f"{item.split}_foggy" / file_name(item), foggy_img, quality)
                counts[f"{name}/{item.split}"] = counts.get(f"{name}/{item.split}", 0) + 1
            bar.update(len(chunk))
    bar.close()
    manifest = {"generator": "fogreid.synth", "config": asdict(cfg), "images": counts,
                "identities": {"syn": cfg.ids, "real": n_real}}
    (out / "fogreid_synth.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    for name in ("FVRID_syn", "FVRID_real", "FVRID_clear", "fogreid_synth.json"):
        old = final / name
        if old.is_dir():
            shutil.rmtree(old)
        os.replace(out / name, old)
    out.rmdir()
    return manifest


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="synth", unit="img", disable=not enabled)

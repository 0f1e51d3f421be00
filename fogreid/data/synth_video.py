"""A generated foggy street video with known identities, for the stream pipeline's tests
and the demo: each 640x480 frame holds four camera views (2 x 2 tiles), each showing one
vehicle of the generated dataset; the vehicles change every `hold` frames. Written beside
it: `rois.json` (the four tiles), `truth.json` (vehicle id per tile per frame) and a
gallery folder `gallery/<id>/*.jpg` with other foggy views of the same vehicles.
"""

from __future__ import annotations

import json
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

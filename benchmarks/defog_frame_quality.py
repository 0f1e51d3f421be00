"""How good is whole-frame defog? PSNR / SSIM of the defog-frame graph's model (`DefogFrame`,
fogreid/export/frame_graph.py) against the clear render of generated 640x480 camera frames, and
the colour cast it gives what is grey there (`colour_cast`) and the noise it leaves where the
scene is flat (`noise_levels`), synthetic and real-like fog (scattering beta 1, 2.5 and 4, one
camera each; `--fog` and `--city-seed` make other cities), beside the foggy frame itself and the
dark channel prior (fogreid/data/dehaze.py), at several `downscale`s (the network at 1/K of the
frame, its maps upsampled by the guided filter; K=1 is the whole frame); at each checkpoint's
default K per camera too, with the share of the frame made darker than the clear render
(`darker_share`).
Writes a picture per domain (rows of a frame per camera: foggy, the first checkpoint at K=1 where K=1
is measured, each checkpoint at its default K, clear).

    python benchmarks/defog_frame_quality.py --checkpoint RUN/best.pt [MORE.pt ...] [--out runs/frame_quality]
        [--city-seed 7 --fog 1 2.5 4]
"""

from __future__ import annotations

import argparse
from pathlib import Path

FOG = (1.0, 2.5, 4.0)   # the cameras' scattering beta
CITY_SEED = 7


def city_config(real_like: bool, seed: int = CITY_SEED, fog: tuple[float, ...] = FOG):
    from fogreid.data.synth_video import CityConfig

    return CityConfig(cameras=len(fog), vehicles=6, seconds=6.0, fps=10.0, height=480, width=640, fog=tuple(fog),
                      seed=seed, domain=int(real_like), pairs_every=15)


def frame_pairs(out: Path, real_like: bool, seed: int = CITY_SEED, fog: tuple[float, ...] = FOG
                ) -> list[tuple[Path, Path]]:
    """(foggy, clear) PNGs of a generated 640x480 city with a camera per fog level (made once
    under `out`; another seed or fog than the benchmark's gets a folder of its own)."""
    import json

    from fogreid.data.synth_video import make_city

    name = "city_real" if real_like else "city_syn"
    if (seed, tuple(fog)) != (CITY_SEED, FOG):
        name += f"_seed{seed}_fog{'-'.join(f'{b:g}' for b in fog)}"
    folder = out / name
    if not (folder / "city.json").is_file():
        make_city(folder, city_config(real_like, seed, fog))
    if json.loads((folder / "city.json").read_text())["fog_beta"] != list(fog):
        raise SystemExit(f"{folder} holds a city with other fog: remove it or give another --out")
    foggy = sorted(folder.glob("cam*/pairs/*_foggy.png"))
    return [(f, f.with_name(f.name.replace("_foggy", "_clear"))) for f in foggy]


# Depths of the generated street (fogreid/data/synth.py: sky 1.0, buildings 0.85, road 0.9 -> 0.1).
DEPTHS = {"sky": 1.0, "buildings": 0.85, "middle road": 0.5, "near road": 0.1}
GREY = 5 / 255    # a clear pixel this close to grey in every channel is grey (`colour_cast`)


def per_camera_scores(frames: list, clear, per_camera: int, fog: list[float]) -> str:
    """PSNR / SSIM and `darker_share` of each camera's frames."""
    import torch

    from fogreid.metrics import psnr, ssim
    from fogreid.pixels import frames_to_images

    images = torch.cat([frames_to_images(torch.from_numpy(f)[None]) for f in frames])
    cells = []
    for c, beta in enumerate(fog):
        x, y = images[c * per_camera:(c + 1) * per_camera], clear[c * per_camera:(c + 1) * per_camera]
        cells.append(f"beta {beta:g} {float(psnr(x, y).mean()):.2f} / {float(ssim(x, y).mean()):.3f}, "
                     f"darker {darker_share(x, y):.1%}")
    return "; ".join(cells)


def what_fog_leaves(real_like: bool, seed: int = CITY_SEED, fog: tuple[float, ...] = FOG) -> None:
    """Per camera: how many grey levels of a clear difference of 0.3 (a coloured sky against the
    airlight, a building against the sky) are left in the foggy frame at each depth, t * 0.3 * 255
    (and the camera's contrast loss for real-like fog, at the density field's thinnest and
    thickest), beside its sensor noise: below a level, or below the noise, nothing can bring it back."""
    import math

    import torch

    from fogreid.data.fog import CameraFog

    cfg = city_config(real_like, seed, fog)
    for c, beta in enumerate(cfg.fog):
        densities, contrast, noise = (1.0,), 1.0, "none"
        if real_like:   # the camera's fog as make_city draws it
            fog = CameraFog.draw(torch.Generator().manual_seed(cfg.seed * 1000 + c))
            densities = (float(fog.density.max()), float(fog.density.min()))   # thickest, thinnest
            contrast, noise = fog.contrast, f"{fog.noise_sigma * 255:.1f} levels"
        left = []
        for name, depth in DEPTHS.items():
            levels = [0.3 * 255 * contrast * math.exp(-beta * k * depth) for k in densities]
            left.append(f"{name} {' to '.join(f'{v:.1f}' for v in levels)}")
        print(f"  camera {c} (beta {beta}), levels left of a 0.3 difference: {', '.join(left)}; "
              f"sensor noise {noise}")


def colour_cast(images, clear) -> float:
    """The colour given to what is grey in the clear render (roads, buildings, tyres): the mean
    distance of its pixels from grey (each channel from the mean of the three), in grey levels."""
    def colour(x):
        return x - x.mean(dim=1, keepdim=True)

    grey = (colour(clear).abs().amax(dim=1, keepdim=True) < GREY).float()
    return float((colour(images).abs().mean(dim=1, keepdim=True) * grey).sum() / grey.sum()) * 255


DARKER = 0.12   # a defogged pixel whose grey level is this far below the clear render's is darker


def darker_share(images, clear) -> float:
    """The share of pixels made darker than the clear render by more than DARKER (31 grey levels,
    the mean of the channels): a sky or far wall inverted as if its fog were denser than it is."""
    return float(((images.mean(dim=1) - clear.mean(dim=1)) < -DARKER).float().mean())


def noise_levels(frames: list, clear_frames: list) -> tuple[float, float]:
    """(fine, blotch): what varies where the clear render is flat, in grey levels (std over those
    pixels and channels). Fine: each pixel less its 5x5 mean (sensor noise, grain); blotch: the 5x5
    mean less the 21x21 mean (noise or transmission errors a few pixels wide, what the eye sees as
    mottling). The generated scenes are flat-coloured shapes, so in the clear render both are 0
    away from edges; the foggy input's own figures are its camera's noise."""
    import cv2
    import numpy as np

    fine, blotch = [], []
    for frame, clear in zip(frames, clear_frames, strict=True):
        x, flat_render = frame.astype(np.float32), clear.astype(np.float32)
        mean5 = cv2.blur(x, (5, 5))
        edges = np.abs(flat_render - cv2.blur(flat_render, (5, 5))).max(axis=2)
        for values, window, out in ((x - mean5, 7, fine), (mean5 - cv2.blur(x, (21, 21)), 23, blotch)):
            flat = cv2.dilate(edges, np.ones((window, window), np.uint8)) < 0.5
            out.append(values[flat])
    return float(np.concatenate(fine).std()), float(np.concatenate(blotch).std())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, nargs="+", help="checkpoints with the scatter defog head")
    parser.add_argument("--downscale", type=int, nargs="+", default=[1, 2, 3, 4, 6])
    parser.add_argument("--out", default="runs/frame_quality")
    parser.add_argument("--city-seed", type=int, default=CITY_SEED, help="the generated city's seed")
    parser.add_argument("--fog", type=float, nargs="+", default=list(FOG), help="a camera per scattering beta")
    args = parser.parse_args()

    import cv2
    import numpy as np
    import torch

    from fogreid.data.dehaze import dehaze_dcp
    from fogreid.data.image_io import read_image
    from fogreid.export.frame_graph import DefogFrame, default_downscale
    from fogreid.metrics import psnr, ssim
    from fogreid.model.checkpoint import load_network
    from fogreid.pixels import frames_to_images

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    nets = {path: load_network(path) for path in args.checkpoint}

    def score(frames: list[np.ndarray], clear: torch.Tensor, clear_frames: list[np.ndarray]) -> str:
        images = torch.cat([frames_to_images(torch.from_numpy(f)[None]) for f in frames])
        fine, blotch = noise_levels(frames, clear_frames)
        return (f"{float(psnr(images, clear).mean()):6.2f} dB  {float(ssim(images, clear).mean()):.3f}  "
                f"cast {colour_cast(images, clear):4.1f}  noise {fine:4.2f} / {blotch:4.2f}")

    for domain in ("syn", "real"):
        pairs = frame_pairs(out, domain == "real", args.city_seed, tuple(args.fog))
        foggy = [read_image(f) for f, _ in pairs]
        clear_frames = [read_image(c) for _, c in pairs]
        clear = torch.cat([frames_to_images(torch.from_numpy(c)[None]) for c in clear_frames])
        per_camera = len(pairs) // len(args.fog)
        shown = [per_camera * c + 1 for c in range(len(args.fog))]     # one frame of each camera
        print(f"\n{'synthetic' if domain == 'syn' else 'real-like'} fog, {len(pairs)} frames 640x480 "
              f"(beta {' / '.join(f'{b:g}' for b in args.fog)}, city seed {args.city_seed}), mean PSNR and SSIM "
              f"against the clear render, the colour cast on what is grey there and the noise (fine / blotch) "
              f"where it is flat (grey levels)")
        what_fog_leaves(domain == "real", args.city_seed, tuple(args.fog))
        print(f"  foggy input                  {score(foggy, clear, clear_frames)}")
        print(f"  dark channel prior           {score([dehaze_dcp(f) for f in foggy], clear, clear_frames)}")
        rows = [np.hstack([foggy[i] for i in shown])]
        for path, net in nets.items():
            default = default_downscale(net.config.imgsz)
            for k in args.downscale:
                model = DefogFrame(net, k)
                with torch.inference_mode():
                    frames = [model(torch.from_numpy(f)[None])[0].numpy() for f in foggy]
                mark = " (default)" if k == default else ""
                name = "/".join(Path(path).parts[-3:])
                print(f"  {name:<28} K={k}{mark:<10} {score(frames, clear, clear_frames)}")
                if k == default or (path == args.checkpoint[0] and k == 1):
                    rows.append(np.hstack([frames[i] for i in shown]))
                if k == default:
                    print(f"    per camera: {per_camera_scores(frames, clear, per_camera, args.fog)}")
        rows.append(np.hstack([clear_frames[i] for i in shown]))
        picture = out / f"frames_{domain}.png"
        cv2.imwrite(str(picture), np.vstack(rows)[::2, ::2])
        print(f"  picture: {picture} (rows: foggy, the first checkpoint at K=1 if measured, each checkpoint at "
              f"its default K, in order, clear)")


if __name__ == "__main__":
    main()

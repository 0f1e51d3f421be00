"""benchmarks/defog_frame_quality.py's figures for what an operator sees beside PSNR / SSIM: the
colour cast on what is grey and the noise left where the scene is flat, on frames made to have each."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "defog_frame_quality.py"
spec = importlib.util.spec_from_file_location("defog_frame_quality", SCRIPT)
quality = importlib.util.module_from_spec(spec)
spec.loader.exec_module(quality)


def scene() -> np.ndarray:
    """A clear 120x160 frame of flat shapes: a grey road, a coloured wall, a dark car."""
    frame = np.full((120, 160, 3), 110, np.uint8)
    frame[:50] = (200, 160, 120)
    frame[70:100, 40:90] = 30
    return frame


def test_noise_levels_tell_grain_from_blotches_and_ignore_edges():
    clear = scene()
    rng = np.random.default_rng(0)
    assert quality.noise_levels([clear], [clear]) == (0.0, 0.0)   # edges alone are not noise
    grain = np.clip(clear + rng.normal(0, 4, clear.shape), 0, 255).astype(np.uint8)
    fine, blotch = quality.noise_levels([grain], [clear])
    assert 3.3 < fine < 4.3 and blotch < 1.0
    smooth = cv2.GaussianBlur(rng.normal(0, 1, clear.shape).astype(np.float32), (0, 0), 3)
    mottled = np.clip(clear + smooth * (4 / smooth.std()), 0, 255).astype(np.uint8)
    fine, blotch = quality.noise_levels([mottled], [clear])
    assert blotch > 2.0 and fine < blotch / 2


def test_colour_cast_is_the_colour_given_to_what_is_grey():
    clear = torch.from_numpy(scene()).permute(2, 0, 1)[None].float() / 255
    assert quality.colour_cast(clear, clear) == 0.0           # the wall's own colour is not a cast
    green = clear.clone()
    green[:, 1] += 6 / 255                                   # green up by 6 levels: 4 from the grey mean
    cast = quality.colour_cast(green, clear)
    assert abs(cast - (4 + 2 + 2) / 3) < 0.01


def test_darker_share_counts_what_is_made_darker_than_clear_only():
    clear = torch.full((1, 3, 10, 10), 0.7)
    defogged = clear.clone()
    defogged[:, :, :4] -= 0.2      # 40 % of the frame 51 levels darker: counted
    defogged[:, :, 4:6] += 0.2     # brighter (fog left in): not darker
    defogged[:, :, 6:8] -= 0.1     # darker, but within DARKER
    assert abs(quality.darker_share(defogged, clear) - 0.4) < 1e-6 and quality.darker_share(clear, clear) == 0.0

"""A classic single-image dehazer: the dark channel prior (He, Sun and Tang, CVPR 2009)
with guided-filter refinement. The "dehaze first, then ReID" baseline of the accuracy table.
"""

from __future__ import annotations

import numpy as np


def _box(image: np.ndarray, radius: int) -> np.ndarray:
    import cv2

    return cv2.boxFilter(image, -1, (2 * radius + 1, 2 * radius + 1), borderType=cv2.BORDER_REFLECT)


def guided_filter(guide: np.ndarray, source: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al.'s guided filter with a grey guide: edge-preserving smoothing of `source`."""
    mean_i, mean_p = _box(guide, radius), _box(source, radius)
    cov = _box(guide * source, radius) - mean_i * mean_p
    var = _box(guide * guide, radius) - mean_i * mean_i
    a = cov / (var + eps)
    b = mean_p - a * mean_i
    return _box(a, radius) * guide + _box(b, radius)


def coarse_transmission(hazy: np.ndarray, patch: int = 15, omega: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """The dark channel prior's estimate before refinement: (transmission (H, W), airlight (3,)) of
    a float BGR image in [0, 1]. Shared by the dehazer and the runtime's fog gate."""
    import cv2

    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (patch, patch))
    dark = cv2.erode(hazy.min(axis=2), kernel)
    # Airlight: the brightest input pixel among the 0.1% haziest (highest dark channel).
    count = max(int(dark.size * 0.001), 1)
    haziest = np.argpartition(dark.ravel(), -count)[-count:]
    candidates = hazy.reshape(-1, 3)[haziest]
    airlight = np.maximum(candidates[candidates.sum(axis=1).argmax()], 1e-3)
    return 1.0 - omega * cv2.erode((hazy / airlight).min(axis=2), kernel), airlight


def dehaze_dcp(image: np.ndarray, patch: int = 15, omega: float = 0.95, t_min: float = 0.1) -> np.ndarray:
    """uint8 BGR in, uint8 BGR out."""
    import cv2

    hazy = image.astype(np.float32) / 255.0
    transmission, airlight = coarse_transmission(hazy, patch, omega)
    grey = cv2.cvtColor(hazy, cv2.COLOR_BGR2GRAY)
    transmission = guided_filter(grey, transmission, radius=max(patch * 2, 8), eps=1e-3)
    restored = (hazy - airlight) / np.maximum(transmission, t_min)[..., None] + airlight
    return np.clip(restored * 255.0 + 0.5, 0, 255).astype(np.uint8)

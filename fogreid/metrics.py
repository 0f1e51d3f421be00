"""Retrieval and image-quality metrics, shared by training, validation and the demo.

Retrieval follows the Market-1501 / VeRi protocol: for each query, gallery images of the
same vehicle seen by the same camera are removed (they would be near-duplicates), a
query with no remaining true match is skipped, and the result is mAP and the CMC curve.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fogreid.errors import FogreidError


@dataclass
class RetrievalResult:
    mAP: float
    cmc: np.ndarray          # cmc[k] = fraction of queries with a true match in the top k+1
    num_queries: int         # queries that had a valid match and were scored

    def rank(self, k: int) -> float:
        return float(self.cmc[min(k, len(self.cmc)) - 1])

    def as_dict(self) -> dict:
        return {"mAP": float(self.mAP), "rank1": self.rank(1), "rank5": self.rank(5),
                "rank10": self.rank(10), "num_queries": self.num_queries}


def cosine_distance(query: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """1 - cosine similarity; rows are normalised here, so any features can be passed."""
    q = query / np.maximum(np.linalg.norm(query, axis=1, keepdims=True), 1e-12)
    g = gallery / np.maximum(np.linalg.norm(gallery, axis=1, keepdims=True), 1e-12)
    return 1.0 - q @ g.T


def evaluate_rank(distmat: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray,
                  q_camids: np.ndarray, g_camids: np.ndarray, max_rank: int = 10) -> RetrievalResult:
    distmat = np.asarray(distmat)
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    q_camids, g_camids = np.asarray(q_camids), np.asarray(g_camids)
    if distmat.shape != (len(q_pids), len(g_pids)):
        raise ValueError(f"distance matrix {distmat.shape} does not match "
                         f"{len(q_pids)} queries x {len(g_pids)} gallery images")
    order = np.argsort(distmat, axis=1, kind="stable")
    all_cmc, all_ap = [], []
    for qi in range(len(q_pids)):
        ranked = order[qi]
        keep = ~((g_pids[ranked] == q_pids[qi]) & (g_camids[ranked] == q_camids[qi]))
        hits = (g_pids[ranked][keep] == q_pids[qi]).astype(np.float64)
        if not hits.any():
            continue
        cmc = np.minimum(hits.cumsum(), 1.0)
        cmc = np.pad(cmc[:max_rank], (0, max(0, max_rank - len(cmc))), mode="edge")
        all_cmc.append(cmc)
        precision = hits.cumsum() / np.arange(1, len(hits) + 1)
        all_ap.append(float((precision * hits).sum() / hits.sum()))
    if not all_cmc:
        raise FogreidError("no query has a true match in the gallery from another camera; "
                           "check that query and gallery share vehicle ids")
    return RetrievalResult(float(np.mean(all_ap)), np.mean(all_cmc, axis=0), len(all_cmc))


def ssim(a, b, window: int = 11, sigma: float = 1.5):
    """Structural similarity per image of two float (B, C, H, W) batches in [0, 1]
    (Gaussian window, the constants of Wang et al. 2004). Returns a (B,) tensor."""
    import torch
    import torch.nn.functional as F

    coords = torch.arange(window, dtype=a.dtype, device=a.device) - window // 2
    g = torch.exp(-coords ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :]).expand(a.shape[1], 1, window, window)

    def blur(x):
        return F.conv2d(x, kernel, groups=a.shape[1])

    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b = blur(a * a) - mu_a ** 2, blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return ssim_map.mean(dim=(1, 2, 3))


def psnr(a, b):
    """Peak signal-to-noise ratio in dB per image of two float (B, C, H, W) batches in [0, 1]."""
    import torch

    mse = ((a - b) ** 2).mean(dim=(1, 2, 3)).clamp_min(1e-10)
    return 10 * torch.log10(1.0 / mse)

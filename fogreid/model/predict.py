"""Run the deploy module over image files in batches (PyTorch backend)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from fogreid.data.image_io import load_for_model
from fogreid.model.fused import FusedDefogReID


def image_batches(paths: Sequence[str | Path], size: tuple[int, int], batch_size: int) -> Iterator[np.ndarray]:
    """uint8 (B, H, W, 3) BGR batches, decoded and resized as the runtime does."""
    for start in range(0, len(paths), batch_size):
        yield np.stack([load_for_model(p, size) for p in paths[start:start + batch_size]])


@torch.inference_mode()
def predict(model: FusedDefogReID, paths: Sequence[str | Path], batch_size: int = 32,
            keep_defogged: bool = False, desc: str = "inference", progress: bool = True,
            ) -> tuple[np.ndarray, np.ndarray | None]:
    """Embeddings (N, D) float32 and, if asked, defogged frames (N, H, W, 3) uint8."""
    from tqdm import tqdm

    device = next(model.parameters()).device
    embeddings, defogged = [], []
    with tqdm(total=len(paths), desc=desc, unit="img", disable=not progress) as bar:
        for batch in image_batches(paths, model.input_size, batch_size):
            images, emb = model(torch.from_numpy(batch).to(device))
            embeddings.append(emb.cpu().numpy())
            if keep_defogged:
                defogged.append(images.cpu().numpy())
            bar.update(len(batch))
    return np.concatenate(embeddings), (np.concatenate(defogged) if keep_defogged else None)

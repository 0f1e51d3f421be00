"""Evaluation through the deploy contract: uint8 frames into the deployed model (the PyTorch
`FusedDefogReID`, or any artifact loaded with `fogreid.runtime.backends.load_deployed`),
retrieval (mAP / CMC with the same-id-same-camera filter) on the embeddings, PSNR / SSIM of
the defogged frames against the clear images where they exist."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fogreid.data.datasets import ReIDSplit
from fogreid.data.image_io import image_batches
from fogreid.metrics import cosine_distance, evaluate_rank, psnr, ssim
from fogreid.model.fused import FusedDefogReID
from fogreid.pixels import frames_to_images


def _infer_fn(model):
    """uint8 numpy frames -> (defogged torch uint8, embeddings numpy), for either kind of model."""
    if isinstance(model, torch.nn.Module):
        device = next(model.parameters()).device

        def infer(frames):
            defogged, emb = model(torch.from_numpy(frames).to(device))
            return defogged.cpu(), emb.float().cpu().numpy()
        return infer, model.net.config.defog

    def infer(frames):
        defogged, emb = model(frames)
        return torch.from_numpy(defogged), emb
    return infer, True


@torch.inference_mode()
def evaluate(model: FusedDefogReID, split: ReIDSplit, batch_size: int = 64, progress: bool = True,
             desc: str = "eval") -> dict:
    from tqdm import tqdm

    infer, has_defog = _infer_fn(model)
    records = split.query + split.gallery
    embeddings, image_scores = [], {"psnr": [], "ssim": [], "psnr_foggy": [], "ssim_foggy": []}
    paired = split.paired and has_defog
    clear_batches = image_batches([r.clear_path for r in records], model.imgsz, batch_size) if paired else None
    with tqdm(total=len(records), desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for frames in image_batches([r.path for r in records], model.imgsz, batch_size):
            defogged, emb = infer(frames)
            embeddings.append(emb)
            if clear_batches is not None:
                clear = frames_to_images(torch.from_numpy(next(clear_batches)))
                restored, foggy = frames_to_images(defogged), frames_to_images(torch.from_numpy(frames))
                image_scores["psnr"].append(psnr(restored, clear))
                image_scores["ssim"].append(ssim(restored, clear))
                image_scores["psnr_foggy"].append(psnr(foggy, clear))
                image_scores["ssim_foggy"].append(ssim(foggy, clear))
            bar.update(len(frames))
    emb = np.concatenate(embeddings)
    nq = len(split.query)
    result = evaluate_rank(cosine_distance(emb[:nq], emb[nq:]), [r.pid for r in split.query],
                           [r.pid for r in split.gallery], [r.camid for r in split.query],
                           [r.camid for r in split.gallery])
    metrics = result.as_dict()
    metrics["cmc"] = [float(x) for x in result.cmc]
    if paired:
        metrics.update({k: float(torch.cat(v).mean()) for k, v in image_scores.items()})
    return metrics


def leave_one_out(split: ReIDSplit) -> ReIDSplit:
    """Every image of a held-out validation split as a query against all the others.

    Under the VeRi protocol a query's own image (and its vehicle's other images from the
    same camera) leaves the gallery, so this is leave-one-out retrieval: about as many
    queries as images instead of one per identity, which is what ranking checkpoints needs.
    """
    images = list(split.query) + list(split.gallery)
    return ReIDSplit(split.name, [], images, images, split.paired)


def test_checkpoint(path: Path, root: str | Path, device, progress: bool = False) -> dict:
    """The test figures of a best.pt on the synthetic, clear (and real-like) test sets, and the
    same with the BatchNorm statistics it had before precise BN ("test_ema_bn"), which
    shows what precise BN is worth."""
    from fogreid.data.datasets import load_fvrid
    from fogreid.model.checkpoint import load_network, read_checkpoint

    net = load_network(path, map_location=device)
    splits = {"syn": load_fvrid(root, "syn"), "clear": load_fvrid(root, "clear")}
    if (Path(root) / "FVRID_real").is_dir():
        splits["real"] = load_fvrid(root, "real")
    result = {"test": {k: evaluate(FusedDefogReID(net), s, progress=progress, desc=f"test {k}")
                       for k, s in splits.items()}}
    ema = read_checkpoint(path, map_location=device).get("bn_ema") or {}
    if ema:
        net.load_state_dict(ema, strict=False)
        result["test_ema_bn"] = {k: evaluate(FusedDefogReID(net), s, progress=False) for k, s in splits.items()}
    return result
